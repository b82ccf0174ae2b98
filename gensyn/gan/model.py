"""The CycleGAN model: two generators, two discriminators, two optimisers, one training step.

Notation as in the CycleGAN paper: domain A = DRRs, domain B = real X-rays;
``g_ab`` maps A→B (the SyntheX translator), ``g_ba`` maps B→A, ``d_b`` judges B images
(real vs ``g_ab(a)``), ``d_a`` judges A images. One step updates both generators on

    L_G = L_gan(d_b(g_ab(a))) + L_gan(d_a(g_ba(b)))
          + λ_A |g_ba(g_ab(a)) - a|₁ + λ_B |g_ab(g_ba(b)) - b|₁
          + λ_id (λ_B |g_ab(b) - b|₁ + λ_A |g_ba(a) - a|₁)

then both discriminators on real images and pooled fakes. This equals the reference
recipe's update; for speed, calls that the recipe makes one after another go through a
network together when that cannot change the result (instance norm normalises each image
on its own): g_ab sees [a, b] in one batch (translation and identity), the discriminators
see [real, fake] in one batch. With batch norm the calls stay separate.

On CUDA the step runs as two captured CUDA graphs (``generator.cuda_graphs``): one for the
generators' forward, backward and Adam update, one for the discriminators'. At batch 1 the
eager step is a chain of a few thousand small kernel launches, and the CPU that issues
them, not the GPU, sets the pace; a graph replays the whole chain with one launch. The
image pools stay outside the graphs (their coin flips are host decisions), so the update
is the same as the eager one. The first ``GRAPH_WARMUP_STEPS`` steps run eagerly on a side
stream (cuDNN autotuning, Adam's lazily created state), then the graphs are captured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from gensyn.gan import losses
from gensyn.gan.networks import build_discriminator, build_generator
from gensyn.gan.pool import ImagePool
from gensyn.gan.settings import CycleGANSettings

log = logging.getLogger(__name__)

#: Loss terms, with the reference implementation's names in brackets: adversarial losses of
#: g_ab [G_A] and g_ba [G_B], cycle losses A→B→A [cycle_A] and B→A→B [cycle_B], identity
#: losses |g_ab(b) - b| [idt_A] and |g_ba(a) - a| [idt_B], discriminator losses of d_b
#: (judges domain B) [D_A] and d_a [D_B].
LOSS_NAMES = ("gan_ab", "gan_ba", "cycle_aba", "cycle_bab", "idt_ab", "idt_ba", "d_b", "d_a")
PRECISIONS = ("bf16", "fp32")
#: Eager steps before the CUDA graphs are captured.
GRAPH_WARMUP_STEPS = 3


def lr_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """Learning-rate multiplier during ``epoch`` (1-based): 1 for the first ``n_epochs``,
    then linearly down, 1 - k / (n_epochs_decay + 1) in the k-th decay epoch."""
    return 1.0 - max(0, epoch - n_epochs) / float(n_epochs_decay + 1)


def validate_options(opts: CycleGANSettings) -> None:
    """Raise ValueError naming the ``generator.*`` key for inconsistent options."""
    if opts.lambda_identity > 0 and opts.input_nc != opts.output_nc:
        raise ValueError(
            f"generator.lambda_identity={opts.lambda_identity} needs input_nc == output_nc "
            f"(got {opts.input_nc} and {opts.output_nc}); set lambda_identity=0 or equal channels"
        )
    if opts.precision not in PRECISIONS:
        raise ValueError(
            f"generator.precision={opts.precision!r}; allowed: {', '.join(PRECISIONS)}"
        )
    if opts.batch_size < 1:
        raise ValueError(f"generator.batch_size must be >= 1, got {opts.batch_size}")
    if opts.n_epochs < 0 or opts.n_epochs_decay < 0 or opts.n_epochs + opts.n_epochs_decay < 1:
        raise ValueError(
            "generator.n_epochs and n_epochs_decay must be >= 0 with at least one epoch in total"
        )


class CycleGAN(nn.Module):
    """Networks, optimisers, LR schedulers and image pools of one CycleGAN training run."""

    def __init__(self, opts: CycleGANSettings, device: torch.device, seed: int = 0) -> None:
        super().__init__()
        validate_options(opts)
        self.opts = opts
        self.device = device
        torch.manual_seed(seed)  # reproducible initial weights
        g_kwargs = dict(
            arch=opts.arch,
            norm=opts.norm,
            use_dropout=opts.use_dropout,
            init_type=opts.init_type,
            init_gain=opts.init_gain,
        )
        d_kwargs = dict(
            n_layers=opts.n_layers_d,
            norm=opts.norm,
            init_type=opts.init_type,
            init_gain=opts.init_gain,
        )
        self.g_ab = build_generator(opts.input_nc, opts.output_nc, opts.ngf, **g_kwargs)  # type: ignore[arg-type]
        self.g_ba = build_generator(opts.output_nc, opts.input_nc, opts.ngf, **g_kwargs)  # type: ignore[arg-type]
        self.d_a = build_discriminator(opts.input_nc, opts.ndf, **d_kwargs)  # type: ignore[arg-type]
        self.d_b = build_discriminator(opts.output_nc, opts.ndf, **d_kwargs)  # type: ignore[arg-type]
        cuda = device.type == "cuda"
        self.memory_format = (
            torch.channels_last if (cuda and opts.channels_last) else torch.contiguous_format
        )
        self.to(device=device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.amp = cuda and opts.precision == "bf16"
        # Batched calls are exact only when normalisation is per image.
        self.batch_calls = opts.norm != "batch"
        fused = cuda and opts.fused_adam
        # CUDA graphs need Adam's step count and learning rate on the device (the graph
        # reads them at replay, so the LR schedule still applies).
        self.use_graphs = cuda and bool(opts.cuda_graphs)
        betas = (opts.beta1, opts.beta2)
        g_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        d_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.opt_g, self.opt_d = (
            torch.optim.Adam(
                params,
                lr=self._lr_value(opts.lr),
                betas=betas,
                fused=fused or None,
                capturable=self.use_graphs,
            )
            for params in (g_params, d_params)
        )
        factor = lambda last_epoch: lr_factor(last_epoch + 1, opts.n_epochs, opts.n_epochs_decay)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
        self.pool_a = ImagePool(opts.pool_size, seed=seed * 2 + 1)
        self.pool_b = ImagePool(opts.pool_size, seed=seed * 2 + 2)
        # Callables used in the step; torch.compile replaces them, state dicts stay on the originals.
        self._g_ab: nn.Module = self.g_ab
        self._g_ba: nn.Module = self.g_ba
        self._d_a: nn.Module = self.d_a
        self._d_b: nn.Module = self.d_b
        self._graphs: _StepGraphs | None = None
        self.graphs_failed = ""  # why CUDA graph capture failed ("" = it did not)
        self._eager_steps = 0

    def compile(self, mode: str | None = None) -> None:  # type: ignore[override]
        """Compile the four networks with torch.compile (used for the step and translation).

        Static shapes: the step calls each network with two batch sizes (N and 2N), which
        gives two specialised graphs rather than one slower dynamic-shape graph.
        """
        for name in ("g_ab", "g_ba", "d_a", "d_b"):
            compiled = torch.compile(getattr(self, name), mode=mode, dynamic=False)
            setattr(self, f"_{name}", compiled)

    def _lr_value(self, lr: float) -> float | torch.Tensor:
        """A learning rate as the optimisers hold it: a device tensor with CUDA graphs."""
        return torch.tensor(float(lr), device=self.device) if self.use_graphs else float(lr)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast on CUDA when configured, else nothing.

        With CUDA graphs the cast-weight cache is off (required for capture).
        """
        with torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.amp,
            cache_enabled=not self.use_graphs,
        ):
            yield

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch (N, C, H, W) to the device in the networks' memory format (no sync)."""
        return images.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format
        )

    def _set_d_grad(self, flag: bool) -> None:
        for p in (*self.d_a.parameters(), *self.d_b.parameters()):
            p.requires_grad_(flag)

    def _generate(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.opts
        identity = o.lambda_identity > 0
        n = real_a.shape[0]
        if self.batch_calls and identity:
            fake_b, idt_a = self._g_ab(torch.cat([real_a, real_b])).split([n, real_b.shape[0]])
            fake_a, idt_b = self._g_ba(torch.cat([real_b, real_a])).split([real_b.shape[0], n])
        else:
            fake_b, fake_a = self._g_ab(real_a), self._g_ba(real_b)
            idt_a = self._g_ab(real_b) if identity else None
            idt_b = self._g_ba(real_a) if identity else None
        out = {
            "fake_b": fake_b,
            "fake_a": fake_a,
            "rec_a": self._g_ba(fake_b),
            "rec_b": self._g_ab(fake_a),
        }
        if identity:
            out["idt_a"], out["idt_b"] = idt_a, idt_b  # type: ignore[assignment]
        return out

    def _generator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        o = self.opts
        with self.autocast():
            x = self._generate(real_a, real_b)
            terms = {
                "gan_ab": losses.gan_loss(self._d_b(x["fake_b"]), True, o.gan_mode),
                "gan_ba": losses.gan_loss(self._d_a(x["fake_a"]), True, o.gan_mode),
            }
        terms["cycle_aba"] = losses.l1_loss(x["rec_a"], real_a) * o.lambda_a
        terms["cycle_bab"] = losses.l1_loss(x["rec_b"], real_b) * o.lambda_b
        if o.lambda_identity > 0:
            terms["idt_ab"] = losses.l1_loss(x["idt_a"], real_b) * o.lambda_b * o.lambda_identity
            terms["idt_ba"] = losses.l1_loss(x["idt_b"], real_a) * o.lambda_a * o.lambda_identity
        else:
            terms["idt_ab"] = terms["idt_ba"] = torch.zeros((), device=self.device)
        return terms, x

    def _discriminator_losses(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            return {
                "d_b": self._d_loss(self._d_b, real_b, fake_b),
                "d_a": self._d_loss(self._d_a, real_a, fake_a),
            }

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """One update of generators and discriminators on a batch of A and B images.

        Returns the losses (order :data:`LOSS_NAMES`) as one detached float32 tensor on the
        device; reading it is the caller's choice (it synchronises with the GPU).
        """
        real_a, real_b = self.prepare(real_a), self.prepare(real_b)
        if not self.use_graphs:
            return self._eager_step(real_a, real_b)
        graphs = self._graphs
        if graphs is not None and graphs.fits(real_a, real_b):
            return graphs.step(real_a, real_b)
        if graphs is None and self._eager_steps >= GRAPH_WARMUP_STEPS and not self.graphs_failed:
            try:
                self._graphs = _StepGraphs(self, real_a, real_b)
                return self._graphs.step(real_a, real_b)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                self._graph_capture_failed(exc)
        # Warm-up (or a batch of another size, e.g. an epoch's short last batch): eager,
        # on a side stream as CUDA graph capture requires of the work before it.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            losses_ = self._eager_step(real_a, real_b)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._eager_steps += 1
        return losses_

    def _graph_capture_failed(self, exc: BaseException) -> None:
        """Fall back to eager steps (still compiled, if compiling) after a failed capture.

        Some configurations cannot be captured (e.g. cuDNN kernels that synchronise inside
        capture on small images); training goes on without graphs, and the reason is logged
        and kept in :attr:`graphs_failed` for the run summary.
        """
        self._graphs = None
        self.graphs_failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log.warning(
            "CUDA graph capture of the CycleGAN step failed (%s); training continues without "
            "CUDA graphs (generator.cuda_graphs=false avoids the attempt)",
            self.graphs_failed,
        )
        # leave no half-captured state behind: end any capture, drop its gradients
        with contextlib.suppress(RuntimeError):
            torch.cuda.synchronize(self.device)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)

    def _eager_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        # generators, with the discriminators frozen
        self.opt_g.zero_grad(set_to_none=True)
        self._set_d_grad(False)
        g_terms, x = self._generator_losses(real_a, real_b)
        sum(g_terms.values()).backward()  # type: ignore[union-attr]
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        # discriminators, on pooled fakes
        self._set_d_grad(True)
        fmt = self.memory_format
        fake_b = self.pool_b.query(x["fake_b"].detach()).contiguous(memory_format=fmt)
        fake_a = self.pool_a.query(x["fake_a"].detach()).contiguous(memory_format=fmt)
        self.opt_d.zero_grad(set_to_none=True)
        d_terms = self._discriminator_losses(real_a, real_b, fake_a, fake_b)
        (d_terms["d_b"] + d_terms["d_a"]).backward()
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        terms = {**g_terms, **d_terms}
        return torch.stack([terms[k].float() for k in LOSS_NAMES]).detach()

    @torch.no_grad()
    def evaluate_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """All losses on a batch without updating anything (fakes straight, not pooled)."""
        real_a, real_b = self.prepare(real_a), self.prepare(real_b)
        g_terms, x = self._generator_losses(real_a, real_b)
        d_terms = self._discriminator_losses(real_a, real_b, x["fake_a"], x["fake_b"])
        return {k: float(v) for k, v in {**g_terms, **d_terms}.items()}

    def _d_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.batch_calls:
            scores = net(torch.cat([real, fake.to(real.dtype)]))
            real_scores, fake_scores = scores.split([real.shape[0], fake.shape[0]])
        else:
            real_scores, fake_scores = net(real), net(fake)
        return losses.discriminator_loss(real_scores, fake_scores, self.opts.gan_mode)

    def step_schedulers(self) -> None:
        """Advance both LR schedulers by one epoch (call at the end of each epoch)."""
        self.sched_g.step()
        self.sched_d.step()

    @property
    def lr(self) -> float:
        """The generators' current learning rate."""
        return float(self.opt_g.param_groups[0]["lr"])

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """Translate a batch (N, C, H, W) in [-1, 1] with g_ab ('a2b') or g_ba ('b2a'), in eval mode.

        Returns float32 images on the device.
        """
        net = self._g_ab if direction == "a2b" else self._g_ba
        was_training = net.training
        net.eval()
        try:
            with self.autocast():
                out = net(self.prepare(images))
        finally:
            net.train(was_training)
        return out.float()

    def training_state(self) -> dict[str, Any]:
        """State dicts of networks, optimisers, schedulers and pools (for checkpoints)."""
        return {
            "g_ab": self.g_ab.state_dict(),
            "g_ba": self.g_ba.state_dict(),
            "d_a": self.d_a.state_dict(),
            "d_b": self.d_b.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` saved.

        A checkpoint written with or without CUDA graphs (or on another device) restores
        into either: the optimisers keep this run's kernel flags and learning-rate type.
        """
        for name in ("g_ab", "g_ba", "d_a", "d_b"):
            getattr(self, name).load_state_dict(state[name])
        for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            _load_optimizer(opt, state[key], self._lr_value)
        for sched, key in ((self.sched_g, "sched_g"), (self.sched_d, "sched_d")):
            sched.load_state_dict(state[key])
            sched.base_lrs = [float(v) for v in sched.base_lrs]
        self.pool_a.load_state_dict(state["pool_a"], self.device)
        self.pool_b.load_state_dict(state["pool_b"], self.device)
        self._graphs = None  # the optimisers' state tensors are new: capture again


_OPTIMIZER_FLAGS = ("capturable", "fused", "foreach", "differentiable")


def _load_optimizer(
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    lr_value: Callable[[float], float | torch.Tensor],
) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own kernel flags and LR type."""
    flags = [{k: g[k] for k in _OPTIMIZER_FLAGS if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, flags, strict=True):
        group.update(own)
        group["lr"] = lr_value(float(group["lr"]))
        if "initial_lr" in group:
            group["initial_lr"] = float(group["initial_lr"])
        on_device = bool(group.get("capturable") or group.get("fused"))
        for p in group["params"]:
            st = opt.state.get(p)
            if st and "step" in st:
                step = torch.as_tensor(st["step"], dtype=torch.float32)
                st["step"] = step.to(p.device) if on_device else step.cpu()


class _StepGraphs:
    """The training step of a :class:`CycleGAN` as two CUDA graphs (generators, discriminators).

    Inputs are copied into static buffers, the graphs replayed; the image pools run between
    the two replays, outside the graphs. Captured for one pair of batch shapes.
    """

    def __init__(self, model: CycleGAN, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        self.model = model
        self.real_a = real_a.clone()
        self.real_b = real_b.clone()
        model.opt_g.zero_grad(set_to_none=True)
        model.opt_d.zero_grad(set_to_none=True)
        torch.cuda.synchronize(model.device)
        self.g_graph = torch.cuda.CUDAGraph()
        model._set_d_grad(False)
        # thread_local: the DataLoader's pin-memory thread keeps pinning host buffers while
        # this thread captures; the default (global) mode turns its calls into capture errors
        with torch.cuda.graph(self.g_graph, capture_error_mode="thread_local"):
            g_terms, x = model._generator_losses(self.real_a, self.real_b)
            sum(g_terms.values()).backward()  # type: ignore[union-attr]
            model.opt_g.step()
        model._set_d_grad(True)
        self.g_terms = g_terms
        self.fake_a_out, self.fake_b_out = x["fake_a"].detach(), x["fake_b"].detach()
        fmt = model.memory_format
        self.fake_a = torch.empty_like(self.fake_a_out).contiguous(memory_format=fmt)
        self.fake_b = torch.empty_like(self.fake_b_out).contiguous(memory_format=fmt)
        self.d_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.d_graph, capture_error_mode="thread_local"):
            d_terms = model._discriminator_losses(
                self.real_a, self.real_b, self.fake_a, self.fake_b
            )
            (d_terms["d_b"] + d_terms["d_a"]).backward()
            model.opt_d.step()
        self.d_terms = d_terms

    def fits(self, real_a: torch.Tensor, real_b: torch.Tensor) -> bool:
        """Whether a batch has the shapes the graphs were captured for."""
        return real_a.shape == self.real_a.shape and real_b.shape == self.real_b.shape

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """One training step by replay; returns the losses as :meth:`CycleGAN.train_step`."""
        m = self.model
        self.real_a.copy_(real_a)
        self.real_b.copy_(real_b)
        self.g_graph.replay()
        self.fake_b.copy_(m.pool_b.query(self.fake_b_out))
        self.fake_a.copy_(m.pool_a.query(self.fake_a_out))
        self.d_graph.replay()
        terms = {**self.g_terms, **self.d_terms}
        return torch.stack([terms[k].float() for k in LOSS_NAMES]).detach()
