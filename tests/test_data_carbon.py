"""carbon_summary parsing: real carbontracker logs, killed jobs and the parser's quirks."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gensyn.tracking.carbon_logs import collect, parse_log_pair, parse_time_s, summarise

HEAD = (
    "2026-11-25 17:05:06 - carbontracker version 2.4.7\n"
    "2026-11-25 17:05:06 - Only predicted and actual consumptions are multiplied by a PUE "
    "coefficient of 1.58 (Daniel Bizo, 2023, Uptime Institute Global Data Center Survey).\n"
    "2026-11-25 17:05:08 - The following components were found: CPU with device(s) AMD EPYC.\n"
)


def _std(epochs: list[tuple[str, str]], intensity: float | None = 445.0) -> str:
    text = HEAD
    for n, (duration, power) in enumerate(epochs, 1):
        text += (
            f"2026-11-25 17:05:11 - Epoch {n}:\n2026-11-25 17:05:11 - Duration: {duration}\n"
            f"2026-11-25 17:05:11 - Average power usage (W) for cpu: {power}\n"
        )
    if intensity is not None:
        text += f"2026-11-25 17:05:11 - Average carbon intensity during training was {intensity:.2f} gCO2eq/kWh. \n"
    return text


def _output(energy: str, co2: str, time: str = "0:00:03", kind: str = "Actual consumption") -> str:
    return (
        HEAD + f"2026-11-25 17:05:11 - CarbonTracker: \n{kind}:\n\tTime:\t{time}\n"
        f"\tEnergy:\t{energy} kWh\n\tCO2eq:\t{co2} g\n\tThis is equivalent to:\n"
        "\t0.000329215 km travelled by car\n2026-11-25 17:05:11 - CarbonTracker: Finished monitoring.\n"
    )


def _write_run(root: Path, stage: str, run: str, logs: dict[str, str], config: str = "") -> Path:
    d = root / stage / run / "carbon_logs"
    d.mkdir(parents=True)
    for name, text in logs.items():
        (d / name).write_text(text)
    if config:
        (root / stage / run / "config.yaml").write_text(config)
    return d


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0:00:03", 3.0),
        ("0:00:03.51", 3.51),
        ("27:03:04", 27 * 3600 + 184),
        ("1 day, 2:03:04", 86400 + 7384),
        ("garbage", math.nan),
    ],
)
def test_time_strings(text: str, seconds: float) -> None:
    got = parse_time_s(text)
    assert (math.isnan(got) and math.isnan(seconds)) or got == pytest.approx(seconds)


def test_real_logs_agree_with_the_peer_parser(tmp_path: Path) -> None:
    """Logs written by carbontracker itself (via the project's wrapper); its parser as peer."""
    import time

    from carbontracker import parser

    from gensyn.tracking.carbon import CarbonMonitor

    log_dir = tmp_path / "runs" / "classify" / "abc" / "carbon_logs"
    mon = CarbonMonitor(log_dir)
    mon.start()
    time.sleep(2.5)
    energy = mon.stop()
    if not energy:
        pytest.skip("carbontracker found no power source on this machine")
    (log_dir.parent / "config.yaml").write_text(
        "experiment_name: demo\nsampling: {source: drr, views_per_ct: 5}\nsplit_idx: 2\n"
    )
    table = collect(tmp_path / "runs")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["stage"], row["run"], row["status"], row["arm"], row["split_idx"]) == (
        "classify",
        "abc",
        "actual",
        "drr_5",
        2,
    )
    peer = parser.parse_all_logs(str(log_dir))[0]["actual"]
    assert row["energy_kwh"] == pytest.approx(peer["energy (kWh)"])
    assert row["co2eq_g"] == pytest.approx(peer["co2eq (g)"])
    assert row["energy_kwh"] == pytest.approx(energy["energy_kwh"])
    # the same run killed before its summary: energy rebuilt from the per-epoch lines
    std = next(log_dir.glob("*_carbontracker.log"))
    rebuilt = parse_log_pair(None, std)
    assert rebuilt["status"] == "partial"
    assert rebuilt["energy_kwh"] == pytest.approx(row["energy_kwh"], rel=0.02)
    assert rebuilt["co2eq_g"] == pytest.approx(row["co2eq_g"], rel=0.02)


def test_quirky_and_incomplete_logs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # 1) complete, CO2eq nan (no intensity), scientific notation energy
    _write_run(
        runs,
        "classify",
        "h1",
        {
            "a_carbontracker_output.log": _output("1.5e-03", "nan"),
            "a_carbontracker.log": _std([("0:00:03.00", "60.0")], None),
        },
        "experiment_name: thesis\nsampling: {source: synthex, views_per_ct: 10}\nsplit_idx: 0\n",
    )
    # 2) killed: no output log, numpy-array power over two devices, a None epoch, an unfinished epoch
    _write_run(
        runs,
        "classify",
        "h2",
        {
            "b_carbontracker.log": _std([("0:01:00.00", "[100.0 50.0]"), ("0:00:30.00", "None")])
            + "2026 - Epoch 3:\n"
        },
        "experiment_name: thesis\nsampling: {source: synthex, views_per_ct: 10}\nsplit_idx: 1\n",
    )
    # 3) only a prediction; 4) empty files and an error log only (no row)
    _write_run(
        runs,
        "gan_train",
        "h3",
        {
            "c_carbontracker_output.log": _output(
                "0.25", "111.25", "1 day, 0:00:00", "Predicted consumption for 200 epoch(s)"
            )
        },
    )
    _write_run(
        runs,
        "drr",
        "h4",
        {
            "d_carbontracker_output.log": "",
            "d_carbontracker.log": "",
            "d_carbontracker_err.log": "Traceback ...",
        },
    )
    # 5) a garbage nan power and a scientific-notation power value
    _write_run(
        runs,
        "drr",
        "h5",
        {"e_carbontracker.log": _std([("0:00:10.00", "nan"), ("0:00:10.00", "1.2e+02")])},
    )
    table = collect(runs).set_index("run")
    assert dict(table["status"]) == {
        "h1": "actual",
        "h2": "partial",
        "h3": "predicted",
        "h5": "partial",
    }
    assert table.loc["h1", "energy_kwh"] == pytest.approx(1.5e-3) and math.isnan(
        table.loc["h1", "co2eq_g"]
    )
    # h2: (150 W * 60 s) * PUE 1.58 = 14220 J; the None epoch adds time but no energy
    assert table.loc["h2", "energy_kwh"] == pytest.approx(150 * 60 * 1.58 / 3.6e6)
    assert table.loc["h2", "duration_s"] == pytest.approx(90.0)
    assert table.loc["h2", "co2eq_g"] == pytest.approx(150 * 60 * 1.58 / 3.6e6 * 445.0)
    assert table.loc["h3", "duration_s"] == pytest.approx(86400.0)
    assert table.loc["h5", "energy_kwh"] == pytest.approx(120 * 10 * 1.58 / 3.6e6)
    assert table.loc["h1", "arm"] == "synthex_10" and table.loc["h3", "arm"] == ""
    summary = summarise(table.reset_index())
    total = summary[summary["level"] == "total"].iloc[0]
    assert total["runs"] == 4
    assert total["energy_kwh"] == pytest.approx(
        1.5e-3 + 150 * 60 * 1.58 / 3.6e6 + 0.25 + 120 * 10 * 1.58 / 3.6e6
    )
    arm = summary[(summary["level"] == "arm")].set_index("arm")
    assert arm.loc["synthex_10", "runs"] == 2
    stage = summary[summary["level"] == "stage"].set_index("stage")
    assert stage.loc["classify", "runs_unmeasured"] == 0 and stage.loc["drr", "runs"] == 1


def test_carbontracker_parser_fails_where_we_do_not(tmp_path: Path) -> None:
    """The quirk that motivates our own parser: a killed job leaves unmatched logs."""
    from carbontracker import exceptions, parser

    d = _write_run(
        tmp_path,
        "s",
        "r",
        {
            "x_carbontracker.log": _std([("0:00:05.00", "[1.0 2.0]")]),
            "y_carbontracker.log": _std([("0:00:05.00", "3.0")]),
            "y_carbontracker_output.log": _output("1e-6", "nan"),
        },
    )
    with pytest.raises((exceptions.MismatchedLogFilesError, ValueError, KeyError)):
        parser.parse_all_logs(str(d))
    assert len(collect(tmp_path)) == 2
    shutil.rmtree(d)
    assert collect(tmp_path).empty


def test_arm_only_where_the_result_depends_on_it(tmp_path: Path) -> None:
    cfg = "experiment_name: thesis\nsampling: {source: none, views_per_ct: 1}\nsplit_idx: 3\n"
    logs = {"a_carbontracker_output.log": _output("0.001", "1.0")}
    _write_run(tmp_path, "drr", "d1", logs, cfg)
    _write_run(tmp_path, "classify", "c1", logs, cfg)
    _write_run(tmp_path, "report", "r1", logs, cfg)
    (tmp_path / "report" / "r1" / "identity.json").write_text(
        '{"stage": "report", "config": {}, "upstream": {"classify": "c1"}}'
    )
    table = collect(tmp_path).set_index("stage")
    assert table.loc["drr", "arm"] == "" and pd.isna(table.loc["drr", "split_idx"])
    assert table.loc["classify", "arm"] == "baseline" and table.loc["classify", "split_idx"] == 3
    assert table.loc["report", "arm"] == "baseline"
    # in the CSV a fold is written as the whole number it is, and left empty where there is none
    from gensyn.base import io

    io.write_table(tmp_path / "carbon_runs.csv", table.reset_index())
    rows = {
        r["stage"]: r
        for r in csv.DictReader((tmp_path / "carbon_runs.csv").read_text().splitlines())
    }
    assert (rows["classify"]["split_idx"], rows["drr"]["split_idx"]) == ("3", "")


def test_each_run_keeps_its_own_figures_and_the_total_is_their_sum(tmp_path: Path) -> None:
    """A later monitor's block appended into an earlier run's log does not become its figure."""
    runs = tmp_path / "runs"
    a, b = _output("0.000100000", "0.044500000"), _output("0.000300000", "0.133500000")
    std = _std([("0:00:03", "60.0")])
    _write_run(
        runs,
        "predict",
        "h1",
        {"run-1_x_carbontracker_output.log": a + b, "run-1_x_carbontracker.log": std},
    )
    _write_run(
        runs,
        "predict",
        "h2",
        {"run-2_x_carbontracker_output.log": b, "run-2_x_carbontracker.log": std},
    )
    table = collect(runs).set_index("run")
    assert table.loc["h1", "energy_kwh"] == pytest.approx(1e-4)
    assert table.loc["h2", "energy_kwh"] == pytest.approx(3e-4)
    total = summarise(table.reset_index()).set_index("level").loc["total"]
    assert total["energy_kwh"] == pytest.approx(table["energy_kwh"].sum())
    assert total["co2eq_g"] == pytest.approx(table["co2eq_g"].sum())
    assert (table["power"] == "estimated").all() and (table["power_w"] == 60.0).all()


def test_summary_page_states_precision_and_assumptions(tmp_path: Path) -> None:
    from gensyn.tracking.carbon_logs import assumptions, sig_figs

    runs = tmp_path / "runs"
    std = _std([("0:00:03", "60.0")]).replace(
        "Average carbon",
        "Carbon intensities (gCO2eq/kWh) fetched every 900 s at detected "
        "location: Unknown: [445.0]\n2026-11-25 17:05:11 - Average carbon",
        1,
    )
    _write_run(
        runs,
        "drr",
        "h1",
        {
            "r_carbontracker_output.log": _output("0.000029838", "0.013277784"),
            "r_carbontracker.log": std,
        },
    )
    table = collect(runs)
    text = assumptions(table)
    assert "estimated from the CPU's TDP" in text and "60 W" in text
    assert "world-average" in text and "445 gCO2eq/kWh" in text
    shown = sig_figs(summarise(table))
    assert set(shown["energy_kwh"]) == {"2.98e-05"} and set(shown["co2eq_g"]) == {"0.0133"}


def test_monitor_reads_only_its_own_log_files(tmp_path: Path) -> None:
    from gensyn.tracking.carbon import read_energy

    d = _write_run(
        tmp_path, "drr", "h1", {"run-old_carbontracker_output.log": _output("0.1", "44.5")}
    )
    (d / "run-new_carbontracker_output.log").write_text(_output("0.2", "89"))
    assert read_energy(d, "run-new") == {"energy_kwh": 0.2, "co2eq_g": 89.0}


def test_cpu_info_is_looked_up_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """carbontracker's CPU lookup (a subprocess per call in py-cpuinfo) runs once per process."""
    import cpuinfo

    from gensyn.tracking.carbon import cache_cpu_info

    calls: list[int] = []

    def lookup() -> dict[str, str]:
        calls.append(1)
        return {"brand_raw": "Test CPU"}

    monkeypatch.setattr(cpuinfo, "get_cpu_info", lookup)
    cache_cpu_info()
    cache_cpu_info()  # idempotent: not wrapped twice
    assert cpuinfo.get_cpu_info()["brand_raw"] == "Test CPU"
    assert cpuinfo.get_cpu_info()["brand_raw"] == "Test CPU"
    assert calls == [1]
