"""Weights & Biases tracking (offline files in the run folder by default) and a no-op tracker.

A run killed between writing a ``metrics.jsonl`` row and handing it to W&B would leave a gap
in the W&B history. The tracker therefore counts the rows W&B has accepted in
``wandb_delivered.json`` (written after each ``log`` call returns), and on start, before the
stage logs anything, sends W&B the rows of ``metrics.jsonl`` after that count: the resumed
W&B run and ``metrics.jsonl`` then hold the same rows.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from gensyn.core.run_context import METRICS_FILE
from gensyn.tracking.run_labels import run_labels

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)

#: In the run folder: how many ``metrics.jsonl`` rows W&B has accepted (and the last step).
DELIVERED_FILE = "wandb_delivered.json"


class Tracker:
    """Interface of a tracker: metrics, images, summary values, finish."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at ``step``."""

    def log_image(self, key: str, image: np.ndarray | Path, caption: str | None = None) -> None:
        """Log an image array (uint8/uint16, H×W or H×W×3) or an image file."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Log a table (``rows`` of values in the order of ``columns``) under ``key``."""

    def log_summary(self, values: dict[str, Any]) -> None:
        """Set run-level summary values."""

    def log_artifact(
        self, name: str, kind: str, files: list[Path], root: Path, metadata: dict[str, Any]
    ) -> None:
        """Log ``files`` (inside folder ``root``, kept under their paths relative to it) as one
        artifact ``name`` of type ``kind`` with ``metadata``."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run."""


class NullTracker(Tracker):
    """``logger=none``: nothing is sent anywhere (metrics still go to metrics.jsonl)."""


def sweep_tags() -> list[str]:
    """The overrides of this Hydra job (in a multirun: its swept values and the rest of the
    command line, e.g. ``split_idx=2``), from which the W&B name, group and tags are made."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # not inside a Hydra app (tests composing configs)
        return []


def wandb_credentials() -> str | None:
    """Where W&B would find an API key, without contacting the server; None if nowhere.

    The places ``wandb.init`` reads, in its order: ``WANDB_API_KEY`` (or an identity token
    file), the netrc entry ``wandb login`` writes for the W&B host (``$NETRC`` or
    ``~/.netrc``), and ``api_key`` in W&B's settings file (``$WANDB_CONFIG_DIR/settings``,
    default ``~/.config/wandb/settings``). The key itself is never returned or logged.
    """
    import configparser
    import netrc
    from urllib.parse import urlsplit

    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    base_url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    host = urlsplit(base_url).netloc
    netrc_path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        creds = netrc.netrc(str(netrc_path)).authenticators(host) if host else None
    except (OSError, netrc.NetrcParseError):
        creds = None
    if creds and creds[2]:
        return str(netrc_path)
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb"
    settings_path = Path(config_dir).expanduser() / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings_path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    if parser.get("default", "api_key", fallback=""):
        return str(settings_path)
    return None


class WandbTracker(Tracker):
    """A W&B run per stage run, named, grouped and tagged by :mod:`gensyn.tracking.run_labels`
    (experiment, arm, fold, seed, test sets and swept keys), typed (``job_type``) by stage."""

    def __init__(self, run: Any, out_dir: Path | None = None) -> None:
        self.run = run
        self._warned: set[str] = set()
        self._out_dir = out_dir  # None: no delivery bookkeeping (no back-fill on resume)
        self._delivered = 0

    @classmethod
    def start(cls, cfg: DictConfig, ctx: RunContext) -> WandbTracker:
        """Start a W&B run whose files live in ``<run folder>/wandb``."""
        import wandb

        mode = cfg.logger.mode
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        if mode == "online" and wandb_credentials() is None:
            log.warning(
                "logger.mode=online but no W&B credentials were found (WANDB_API_KEY, "
                "`wandb login`'s netrc entry or W&B settings file): logging offline instead"
            )
            mode = "offline"
        labels = run_labels(cfg, ctx.name, ctx.stage_hash, sweep_tags())
        config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[assignment]
        # a stage run by another (pipeline, report) logs its own name, not the caller's
        config["stage"] = {**config.get("stage", {}), "name": ctx.name}
        run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=mode,
            dir=str(ctx.out_dir),
            group=labels.group,
            job_type=labels.job_type,
            name=labels.name,
            id=f"{ctx.name}-{ctx.stage_hash}",  # the run folder: a resumed run continues it
            resume="allow",
            reinit="create_new",  # stages run stages (pipeline, report): one W&B run each
            tags=labels.tags,
            config={**config, **labels.labels},
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        tracker = cls(run, ctx.out_dir)
        tracker.backfill()
        return tracker

    def _safely(self, what: str, func: Any, *args: Any, **kwargs: Any) -> bool:
        # Tracking must never take a stage down: report a failing call once, then go on.
        try:
            func(*args, **kwargs)
        except Exception as exc:
            if what not in self._warned:
                self._warned.add(what)
                log.warning("W&B %s failed (%s); continuing", what, exc)
            return False
        return True

    def backfill(self) -> int:
        """Send W&B the ``metrics.jsonl`` rows an earlier attempt did not deliver; their number."""
        if self._out_dir is None:
            return 0
        state = self._out_dir / DELIVERED_FILE
        self._delivered = int(json.loads(state.read_text())["rows"]) if state.is_file() else 0
        metrics = self._out_dir / METRICS_FILE
        lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
        sent, step = 0, None
        for line in lines[self._delivered :]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a row cut short by a kill: nothing to send
                row = None
            if row is not None:
                step = row.pop("step", None)
                if not self._safely("log", self.run.log, row, step=step):
                    break  # W&B refuses: the next start tries the rest again
                sent += 1
            self._delivered += 1
        if sent:
            self._mark(step)
            log.info("W&B: back-filled %d metrics row(s) from %s", sent, metrics)
        return sent

    def _mark(self, step: int | None) -> None:
        from gensyn.base import io

        assert self._out_dir is not None
        io.write_json(self._out_dir / DELIVERED_FILE, {"rows": self._delivered, "last_step": step})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log one row; called once per ``metrics.jsonl`` row, after the row is written."""
        if self._safely("log", self.run.log, metrics, step=step) and self._out_dir is not None:
            self._delivered += 1
            self._mark(step)

    def log_image(self, key: str, image: np.ndarray | Path, caption: str | None = None) -> None:
        import wandb

        data = str(image) if isinstance(image, Path) else np.asarray(image)
        self._safely("log_image", lambda: self.run.log({key: wandb.Image(data, caption=caption)}))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        self._safely(
            "log_table",
            lambda: self.run.log(
                {key: wandb.Table(columns=list[Any](columns), data=list[Any](rows))}
            ),
        )

    def log_summary(self, values: dict[str, Any]) -> None:
        self._safely("summary", self.run.summary.update, values)

    def log_artifact(
        self, name: str, kind: str, files: list[Path], root: Path, metadata: dict[str, Any]
    ) -> None:
        """Log the files as a W&B artifact, aliased by the config hash when it has one.

        The files are added with W&B's ``immutable`` policy: they are not copied into W&B's
        staging cache but read from the run folder when uploaded (online: at once; offline:
        by ``wandb sync``, which reads the manifest in the offline run's ``.wandb`` file), so
        the run folder must stay where it is until then.
        """
        import wandb

        def send() -> None:
            artifact = wandb.Artifact(name, type=kind, metadata=metadata)
            for path in files:
                artifact.add_file(
                    str(path), name=path.relative_to(root).as_posix(), policy="immutable"
                )
            config_hash = metadata.get("config_hash")
            self.run.log_artifact(
                artifact, aliases=[f"config-{config_hash}"] if config_hash else None
            )

        if self._safely("log_artifact", send):
            log.info("W&B: logged artifact %s (%d file(s))", name, len(files))

    def finish(self, exit_code: int = 0) -> None:
        self._safely("finish", self.run.finish, exit_code=exit_code)
