"""Stage ``pipeline``: every stage of the study in order, then one summary report."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.core.confdir import CONF_DIR
from gensyn.core.registry import load_stages, stage
from gensyn.core.runs import execute, with_overrides
from gensyn.report.front import add_front_page, domain_gap_note
from gensyn.report.glossary import summary_meaning
from gensyn.report.page import Page

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


#: What each stage figure shows, by file name (``roc_<test set>.png`` ... by prefix).
FIGURE_CAPTIONS = {
    "coronal.png": "Coronal slices through the first converted CT volumes",
    "phantom_slices.png": "Slices through the simulated CT phantoms",
    "examples.png": "The first prepared real X-rays (what the classifier learns from)",
    "before_after.png": "Held-out DRRs (left) and the trained generator's SyntheX images (right)",
    "histograms.png": "Intensity histograms of held-out real X-rays, DRRs and translated DRRs",
    "drr_vs_synthex.png": "The first DRRs (left) and their SyntheX translations (right)",
    "correct_by_source.png": "Reader study: share of correct answers per image source",
    "readers.png": "Reader study: accuracy of each reader",
}
FIGURE_PREFIXES = {
    "roc_": "ROC curves per finding and arm, test set {}",
    "auc_vs_views_": "AUC against views per CT, test set {}",
}


def figure_caption(stage_name: str, figure: str) -> str:
    """What figure ``figure`` (a path in a run folder) of stage ``stage_name`` shows."""
    name = figure.rsplit("/", 1)[-1]
    if name in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[name]
    for prefix, text in FIGURE_PREFIXES.items():
        if name.startswith(prefix):
            return text.format(name[len(prefix) :].rsplit(".", 1)[0])
    if stage_name == "drr":
        return "The first rendered DRR (centre view of the first CT)"
    return f"{stage_name}: " + name.rsplit(".", 1)[0].replace("_", " ")


def summary_rows(summary: dict[str, object]) -> list[dict[str, object]]:
    """A stage summary's scalar entries as ``key, value, meaning`` rows for the page."""
    return [
        {"key": k, "value": v, "meaning": summary_meaning(k)}
        for k, v in summary.items()
        if isinstance(v, int | float | str)
    ]


def stage_section(page: Page, name: str, folder: Path, summary: dict[str, Any]) -> None:
    """One stage's section: its run folder and reports (linked), summary table, figures."""
    page.heading(name, level=3)
    page.link(folder.name, folder, before=f"Run folder: {folder.parent.name}/")
    for sub in summary.get("reports", []):
        page.link(sub, folder / sub, before="Detailed report: ")
    note = domain_gap_note(summary)
    if note:
        page.text(note)
    scalars = summary_rows(summary)
    if scalars:
        page.table(scalars)
    for fig in summary.get("figures", []):
        page.figure(folder / fig, caption=figure_caption(name, fig))


def write_page(
    out_dir: Path, title: str, context: str, stage_dirs: dict[str, Path], level: float = 0.95
) -> tuple[Path, list[dict[str, object]]]:
    """The pipeline report (``report.html`` / ``.md`` in ``out_dir``): the answer first (from
    the ``report`` stage's ``auc_summary.csv``), then one section per stage of ``stage_dirs``
    (name -> finished run folder). Returns the page and the (stage, duration_s) rows."""
    page = Page(title)
    page.text(context)
    report_dir = stage_dirs.get("report")
    if report_dir is not None and (report_dir / "auc_summary.csv").is_file():
        add_front_page(page, io.read_table(report_dir / "auc_summary.csv"),
                       out_dir / "figures", report_dir / "report.html", level)  # fmt: skip
    page.heading("Stage by stage")
    page.text("Each section is one stage; its run folder holds the full config and outputs.")
    rows: list[dict[str, object]] = []
    for name, folder in stage_dirs.items():
        summary_file = folder / "summary.json"
        summary = io.read_json(summary_file) if summary_file.exists() else {}
        stage_section(page, name, folder, summary)
        rows.append({"stage": name, "duration_s": summary.get("duration_s", "")})
    page.heading("Stages")
    page.table(rows)
    return page.write(out_dir), rows


def _available(cfg: DictConfig, hashed: bool) -> list[str]:
    stages = load_stages()
    names = [s for s in cfg.stage.stages if s != "pipeline"]
    return [s for s in names if s in stages and stages[s].hashed == hashed]


def _arm_overrides(arm: str) -> dict[str, object]:
    """The dotted overrides equal to ``sampling=<arm>`` (read from conf/sampling/<arm>.yaml)."""
    path = CONF_DIR / "sampling" / f"{arm}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise GensynError(f"stage.arms: unknown sampling arm {arm!r}; known arms: {known}")
    values = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(values, dict)
    return {f"sampling.{key!s}": value for key, value in values.items()}


@stage(
    "pipeline",
    summary="run the whole study in order (stage.stages) and write a summary report",
    config_keys=("stage.arms",),
    upstream=lambda cfg: _available(cfg, hashed=True),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """All listed stages have run (as upstreams); collect their summaries into one report."""
    missing = [s for s in cfg.stage.stages if s not in load_stages()]
    if "predict" in load_stages():
        for arm in cfg.stage.arms:  # classify + predict per arm; the report compares them
            log.info("pipeline: sampling arm %s, fold %d", arm, cfg.split_idx)
            execute(with_overrides(cfg, _arm_overrides(arm)), "predict")
    # Collectors (report, carbon_summary) run last; the report gathers the pipeline's arms.
    collect_cfg = (
        with_overrides(cfg, {"report.arms": list(cfg.stage.arms)}) if cfg.stage.arms else cfg
    )
    for name in _available(cfg, hashed=False):
        ctx.upstream_dirs[name] = execute(collect_cfg, name)

    context = (
        f"dataset={cfg.dataset.name}, profile={cfg.profile_name}, seed={cfg.seed}, fold "
        f"split_idx={cfg.split_idx}, arms {', '.join(cfg.stage.arms) or 'none'}."
    )
    if cfg.dataset.name == "demo":
        context += " The demo data are SIMULATED: the numbers test the machinery, not medicine."
    if missing:
        context += " Listed but not implemented yet, so skipped: " + ", ".join(missing) + "."
    report, rows = write_page(
        ctx.out_dir,
        f"GENSYN pipeline report ({cfg.experiment_name})",
        context,
        ctx.upstream_dirs,
        float(OmegaConf.select(cfg, "report.ci_level", default=0.95)),
    )
    ctx.summary["report"] = str(report)
    ctx.summary["stages"] = list(ctx.upstream_dirs)
    print("\nGENSYN pipeline finished. Stages:")
    for row in rows:
        print(f"  {row['stage']:<22} {row['duration_s']} s")
    print(f"Report: {report}")
