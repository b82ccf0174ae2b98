"""Resumable CycleGAN training loop.

A checkpoint (``checkpoint.pt``, written atomically) is saved at the end of every epoch and
on pre-emption (SIGTERM outside SLURM; inside a SLURM job the launcher's signal handlers
and :func:`gensyn.base.preemption.checkpoint_point`, called after every iteration): networks,
optimisers, LR schedulers,
image pools, epoch, position in the epoch, loss sums and the RNG states of python, numpy,
torch and CUDA. Because every random choice of the data pipeline is a function of
``(seed, epoch)`` (see :mod:`gensyn.gan.data`), a resumed run continues with exactly the
batches, learning rates and pool draws the uninterrupted run would have had.

The loop never waits for the GPU inside an epoch: losses are summed on the device and read
once per epoch.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from gensyn.base import preemption
from gensyn.base.errors import GensynError
from gensyn.base.io import atomic_write
from gensyn.gan.data import UnpairedDataset
from gensyn.gan.model import LOSS_NAMES, CycleGAN
from gensyn.gan.settings import CycleGANSettings

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
#: generator.* options that must match between a checkpoint and the config resuming it.
RESUME_KEYS = (
    "arch",
    "input_nc",
    "output_nc",
    "ngf",
    "ndf",
    "n_layers_d",
    "norm",
    "n_epochs",
    "n_epochs_decay",
    "batch_size",
    "pool_size",
)


class TrainingInterrupted(GensynError):
    """Training stopped on SIGTERM after saving a checkpoint; run the same command to resume."""


@dataclass
class TrainState:
    """Where training stands: ``epoch`` is the epoch in progress (1-based), ``index`` the next
    item of it; ``history`` holds one metrics dict per finished epoch."""

    epoch: int = 1
    index: int = 0
    iterations: int = 0
    loss_sums: list[float] = field(default_factory=lambda: [0.0] * len(LOSS_NAMES))
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:n], got {name!r}")
    return torch.device(name)


def rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy, torch (CPU) and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the GPU count matches)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def options_dict(opts: CycleGANSettings) -> dict[str, Any]:
    """The generator options as a plain dict (works for dataclasses and DictConfigs)."""
    return {k: getattr(opts, k) for k in CycleGANSettings.__dataclass_fields__}


class CycleGANTrainer:
    """Trains a :class:`CycleGAN` on two lists of image files, resuming from ``out_dir``.

    ``on_epoch_end(trainer, metrics)`` is called after each epoch's checkpoint, e.g. to log
    metrics and sample grids.
    """

    def __init__(
        self,
        opts: CycleGANSettings,
        paths_a: Sequence[str | os.PathLike[str]],
        paths_b: Sequence[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str],
        device: str = "auto",
        seed: int = 0,
        num_workers: int = 0,
        on_epoch_end: Callable[[CycleGANTrainer, dict[str, float]], None] | None = None,
    ) -> None:
        self.opts = opts
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        self.seed = seed
        self.num_workers = num_workers
        self.on_epoch_end = on_epoch_end
        self.dataset = UnpairedDataset(
            paths_a,
            paths_b,
            opts.input_nc,
            opts.output_nc,
            opts.load_size,
            opts.crop_size,
            opts.flip,
            seed,
        )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(opts.cudnn_benchmark)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self.model = CycleGAN(opts, self.device, seed)
        if opts.compile and self.device.type == "cuda":
            self.model.compile()
        self.state = TrainState()
        self._stop = False

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    @property
    def total_epochs(self) -> int:
        return self.opts.n_epochs + self.opts.n_epochs_decay

    def save_checkpoint(self) -> Path:
        """Write the full training state atomically to ``out_dir/checkpoint.pt``."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "options": options_dict(self.opts),
            "seed": self.seed,
            "state": self.state.__dict__,
            "model": self.model.training_state(),
            "rng": rng_state(),
        }
        with atomic_write(self.checkpoint_path) as tmp:
            torch.save(payload, tmp)
        return self.checkpoint_path

    def load_checkpoint(self) -> bool:
        """Resume from ``out_dir/checkpoint.pt`` if it exists; returns whether it did."""
        if not self.checkpoint_path.is_file():
            return False
        payload = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        saved = payload["options"]
        current = options_dict(self.opts)
        diff = {k: (saved.get(k), current[k]) for k in RESUME_KEYS if saved.get(k) != current[k]}
        if diff or payload.get("seed") != self.seed:
            raise ValueError(
                f"checkpoint {self.checkpoint_path} was made with other options {diff} "
                f"(seed {payload.get('seed')} vs {self.seed}); delete it or use force=true"
            )
        self.model.load_training_state(payload["model"])
        self.state = TrainState(**payload["state"])
        set_rng_state(payload["rng"])
        log.info(
            "resuming CycleGAN training at epoch %d, item %d", self.state.epoch, self.state.index
        )
        return True

    # ----------------------------------------------------------------- loop
    def _loader(self, epoch: int, start: int) -> DataLoader[Any]:
        cuda = self.device.type == "cuda"
        return DataLoader(
            self.dataset,
            batch_size=self.opts.batch_size,
            sampler=self.dataset.keys(epoch, start),  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=cuda,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: saving a checkpoint after the current iteration")
        self._stop = True

    def fit(self) -> list[dict[str, float]]:
        """Train until ``n_epochs + n_epochs_decay`` epochs are done (resuming if possible).

        Returns the per-epoch history. Raises :class:`TrainingInterrupted` after saving a
        checkpoint when SIGTERM arrives.
        """
        self.load_checkpoint()
        previous = None
        # Outside SLURM nobody handles SIGTERM: save and stop on it. Inside a SLURM job the
        # launcher's handlers stay in place and checkpoint_point() does the saving.
        if threading_main() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            while self.state.epoch <= self.total_epochs:
                self._run_epoch()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.state.history

    def _run_epoch(self) -> None:
        st = self.state
        epoch = st.epoch
        batch = self.opts.batch_size
        sums = torch.tensor(st.loss_sums, device=self.device, dtype=torch.float64)
        start_time = time.perf_counter()
        start_index = st.index

        def save_mid_epoch() -> None:
            st.loss_sums = sums.tolist()
            self.save_checkpoint()

        for real_a, real_b in self._loader(epoch, st.index):
            sums += self.model.train_step(real_a, real_b).double() * real_a.shape[0]
            st.index += real_a.shape[0]
            st.iterations += 1
            # On SLURM the launcher's handlers set the flags read here (USR2 raises Preempted).
            preemption.checkpoint_point(save=save_mid_epoch)
            if self._stop:
                save_mid_epoch()
                raise TrainingInterrupted(
                    f"stopped by SIGTERM in epoch {epoch} at item {st.index}; checkpoint "
                    f"{self.checkpoint_path} (run the same command to resume)"
                )
        loss_sums = sums.tolist()  # the epoch's one wait for the GPU
        seconds = time.perf_counter() - start_time
        n_items = self.dataset.epoch_length
        metrics = {f"loss_{k}": v / n_items for k, v in zip(LOSS_NAMES, loss_sums, strict=True)}
        done_items = st.index - start_index
        metrics.update(
            epoch=float(epoch),
            lr=self.model.lr,
            epoch_time_s=seconds,
            iterations_per_s=(done_items / batch) / seconds if seconds > 0 else 0.0,
        )
        self.model.step_schedulers()
        st.history.append(metrics)
        st.epoch, st.index, st.loss_sums = epoch + 1, 0, [0.0] * len(LOSS_NAMES)
        self.save_checkpoint()
        log.info(
            "epoch %d/%d: %s",
            epoch,
            self.total_epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"),
        )
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, metrics)

    # ----------------------------------------------------------------- outputs
    def save_generator(self, path: str | os.PathLike[str], direction: str = "a2b") -> Path:
        """Save one generator (weights + the options to rebuild it) for translation."""
        net = self.model.g_ab if direction == "a2b" else self.model.g_ba
        payload = {
            "options": options_dict(self.opts),
            "direction": direction,
            "state_dict": net.state_dict(),
        }
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)


def threading_main() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()
