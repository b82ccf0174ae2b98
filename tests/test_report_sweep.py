"""Any sweep is a comparison: conditions found from run hashes, their table and figure, and the
C-arm angle study end to end on the tiny profile (real demo upstreams, real classifiers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gensyn.base import io
from gensyn.report import plots, render
from gensyn.report.sweep import (
    Condition,
    comparison_table,
    conditions,
    format_value,
    pretty_table,
    short_names,
    varied_keys,
)

ALPHA = "carm_pose.alpha_range_deg"
CLASSES = ["Effusion", "Cardiomegaly"]


def test_conditions_keep_a_key_only_for_the_arms_whose_runs_it_changes() -> None:
    sweep = {ALPHA: [[-5, 5], [-10, 10], [-20, 20]], "projector.kvp": [90, 120]}

    def identity(arm: str, combo: dict) -> str:  # the baseline renders no DRRs
        return arm if arm == "baseline" else f"{arm}{combo[ALPHA]}{combo['projector.kvp']}"

    conds = conditions(["baseline", "drr_5"], sweep, identity)
    assert [c.arm for c in conds].count("baseline") == 1
    assert next(iter(conds)) == Condition("baseline")
    drr = [c for c in conds if c.arm == "drr_5"]
    assert len(drr) == 6 and all(len(c.values) == 2 for c in drr)
    assert varied_keys(list(conds)) == [ALPHA, "projector.kvp"]
    # each condition's combination gives it: the drr conditions map back to their values
    for cond, combo in conds.items():
        assert all(tuple(np.ravel(combo[k])) == tuple(np.ravel(v)) for k, v in cond.values)
    # a key that changes no run is in no condition
    only_alpha = conditions(["drr_5"], sweep, lambda arm, c: str(c[ALPHA]))
    assert varied_keys(list(only_alpha)) == [ALPHA] and len(only_alpha) == 3


def test_labels_and_values_print_compactly() -> None:
    assert format_value([-10.0, 10.0]) == "[-10,10]" and format_value(0.5) == "0.5"
    assert short_names([ALPHA, "seed", "carm_pose.seed"]) == {
        ALPHA: "alpha_range_deg",
        "seed": "seed",
        "carm_pose.seed": "carm_pose.seed",
    }
    cond = Condition("drr_5", ((ALPHA, [-5.0, 5.0]),))
    assert cond.label(short_names([ALPHA])) == "drr_5 alpha_range_deg=[-5,5]"
    assert cond.value(ALPHA) == (-5.0, 5.0) and cond.value("seed") is None


def _preds(labels: dict[str, float], n: int = 80) -> pd.DataFrame:
    """Predictions of one fold per condition label; signal strength sets the AUC."""
    rng = np.random.default_rng(3)
    patients = rng.integers(0, 40, n)
    y = (rng.random((n, 2)) < 0.4).astype(int)
    rows = []
    for label, strength in labels.items():
        p = 1 / (1 + np.exp(-(strength * y + rng.normal(size=y.shape))))
        source = "none" if label == "baseline" else "drr"
        rows += [
            {
                "arm": label,
                "source": source,
                "views_per_ct": 5,
                "fold": 0,
                "test_set": "demo",
                "image_id": f"i{i}",
                "patient_id": f"p{patients[i]}",
                **{f"y_{c}": y[i, k] for k, c in enumerate(CLASSES)},
                **{f"p_{c}": p[i, k] for k, c in enumerate(CLASSES)},
            }
            for i in range(n)
        ]
    return pd.DataFrame(rows)


def test_comparison_table_reads_the_report_summary_and_marks_the_baseline(tmp_path: Path) -> None:
    conds = [Condition("baseline")] + [
        Condition("drr_5", ((ALPHA, [-a, a]),)) for a in (5.0, 10.0, 20.0)
    ]
    names = short_names([ALPHA])
    strength = dict(zip([c.label(names) for c in conds], [0.5, 1.0, 2.0, 4.0], strict=True))
    _, summary = render.write_report(tmp_path, _preds(strength), CLASSES, n_boot=100)
    table = comparison_table(summary, conds, conds[0])
    assert list(table["condition"]) == list(strength)
    assert table["is_baseline"].tolist() == [True, False, False, False]
    assert table[ALPHA].isna().tolist() == [True, False, False, False]
    macro = summary[summary["class"] == "macro"].set_index("arm")
    for row in table.itertuples():
        assert row.auc_mean == pytest.approx(macro.loc[row.condition, "auc_mean"])
        if not row.is_baseline:  # Δ, its CI and p straight from the summary
            assert row.delta == pytest.approx(macro.loc[row.condition, "delta"])
            assert row.delta_ci_low == pytest.approx(macro.loc[row.condition, "delta_ci_low"])
            assert row.p == pytest.approx(macro.loc[row.condition, "p_value"])
    assert np.all(np.diff(table["auc_mean"].to_numpy()) > 0)  # stronger signal, higher AUC
    pretty = pretty_table(table, [ALPHA])
    assert pretty["alpha_range_deg"].tolist() == ["any", "[-5,5]", "[-10,10]", "[-20,20]"]
    assert pretty.iloc[0]["Δ vs baseline [95% CI]"] == "—"
    png = plots.plot_auc_vs_factors(table, [ALPHA], tmp_path / "sweep.png", title="t")
    from PIL import Image

    assert Image.open(png).size[0] > 400


@pytest.mark.slow
def test_carm_angle_study_on_the_tiny_profile(launch, gensyn_root: Path) -> None:
    """The README's C-arm angle study: a classify multirun over angle ranges, then the report."""
    common = ["profile=tiny", "logger=none", "carm_pose=random", "carm_pose.num_random=2"]
    launch("-m", "stage=classify", "sampling=none,drr_2", f"{ALPHA}=[-5,5],[-20,20]",
           "split_idx=0", *common, timeout=1800)  # fmt: skip
    proc = launch("stage=report", *common, "report.n_bootstrap=100", "report.arms=[none,drr_2]",
                  f"report.sweep=['{ALPHA}=[-5,5],[-20,20]']")  # fmt: skip
    assert "Classification report" in proc.stdout
    (folder,) = (gensyn_root / "workdir" / "runs" / "report").iterdir()
    table = io.read_table(folder / "sweep_summary.csv")
    assert list(table["condition"]) == [
        "baseline", "drr_2 alpha_range_deg=[-5,5]", "drr_2 alpha_range_deg=[-20,20]",
    ]  # fmt: skip
    assert table["is_baseline"].tolist() == [True, False, False]
    assert table["n_models"].tolist() == [1, 1, 1]
    assert table["delta"].iloc[1:].notna().all()
    # the two DRR conditions really come from DRRs rendered within their angle ranges
    drr_runs = sorted((gensyn_root / "workdir" / "runs" / "drr").iterdir())
    widest = sorted(io.read_table(d / "manifest.csv")["alpha_deg"].abs().max() for d in drr_runs)
    assert len(widest) == 2 and widest[0] <= 5.0 < widest[1] <= 20.0
    text = (folder / "report.md").read_text()
    assert text.index("What the sweep varied") < text.index("Test set: demo")
    assert "Not scheduled" in text and "folds 1, 2, 3, 4" in text
    assert (folder / "figures" / "auc_vs_sweep_demo.png").is_file()


def test_report_sweep_takes_the_multirun_overrides_and_names_mistakes(compose) -> None:
    from gensyn.base.errors import GensynError
    from gensyn.stages.report import parse_sweep, report_settings, sweep_conditions

    assert parse_sweep([f"{ALPHA}=[-5,5],[-20,20]", "projector.kvp=range(80,121,20)"]) == {
        ALPHA: [[-5, 5], [-20, 20]], "projector.kvp": [80, 100, 120],
    }  # fmt: skip
    cfg = compose("carm_pose=random", "report.arms=[none,drr_2]",
                  f"report.sweep=['{ALPHA}=[-5,5],[-20,20]']")  # fmt: skip
    conds = sweep_conditions(cfg, report_settings(cfg))
    names = short_names([ALPHA])
    assert [c.label(names) for c in conds] == [
        "baseline", "drr_2 alpha_range_deg=[-5,5]", "drr_2 alpha_range_deg=[-20,20]",
    ]  # fmt: skip
    with pytest.raises(GensynError, match="split_idx"):
        parse_sweep(["split_idx=0,1"])
    with pytest.raises(GensynError, match="cannot read"):
        parse_sweep(["carm_pose.alpha_deg=[1,"])
    unhashed = compose("report.arms=[none,drr_2]", "report.sweep=['run_upstream=true,false']")
    with pytest.raises(GensynError, match=r"run_upstream.*no run"):
        sweep_conditions(unhashed, report_settings(unhashed))
    wrong_type = compose("report.arms=[none,drr_2]", f"report.sweep=['{ALPHA}=5,10']")
    with pytest.raises(GensynError, match=r"report\.sweep: cannot set"):
        sweep_conditions(wrong_type, report_settings(wrong_type))


def test_missing_runs_are_not_finished_or_not_scheduled(compose) -> None:
    """A classify folder without DONE is 'not finished'; no folder at all is 'not scheduled'."""
    from gensyn.core.runs import DONE, run_dir, with_overrides
    from gensyn.stages.report import gather, report_settings, sweep_conditions

    cfg = compose("report.arms=[none]", "classifier.n_folds=3")
    predict = run_dir(cfg, "predict")  # this config's own run (fold 0): finished
    own = _preds({"baseline": 1.0}, n=6).assign(arm="baseline")
    io.write_table(predict / "predictions.csv", own)
    io.write_json(predict / DONE, {})
    run_dir(with_overrides(cfg, {"split_idx": 1}), "classify").mkdir(parents=True)  # started
    frames, trained, not_finished, not_scheduled = gather(
        cfg, sweep_conditions(cfg, report_settings(cfg)), {}, [0]
    )
    assert len(frames) == 1 and len(frames[0]) == 6
    assert trained == [{"arm": "baseline"}]  # its classify run has no summary.json here
    assert not_finished == [("baseline", 1)] and not_scheduled == [("baseline", 2)]
    note = render.missing_note(not_scheduled, 3, "Not scheduled: ")
    assert note == "Not scheduled: baseline (fold 2)."
