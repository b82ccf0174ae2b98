"""Collect carbontracker logs of every run folder into one table.

carbontracker writes, per monitored process, ``<prefix>_carbontracker.log`` (per-epoch
durations and average power) and ``<prefix>_carbontracker_output.log`` (the consumption
summary). Its own parser (``carbontracker.parser``) fails on logs real jobs leave behind,
so this module reads the files itself and tolerates:

* a job killed before the summary (no ``Actual consumption`` block): energy is rebuilt
  from the per-epoch ``Duration`` and ``Average power usage`` lines times the logged PUE
  coefficient, CO2eq from the logged carbon intensity (status ``partial``);
* power values written as ``None``, ``nan``, numpy arrays (``[12.1 3.4]``, possibly across
  lines) or in scientific notation, which carbontracker's regular expressions miss;
* ``CO2eq: nan g`` (no carbon intensity available) and missing equivalents;
* unequal numbers of standard and output logs, empty files, and durations over 24 h;
* only a ``Predicted consumption`` block (status ``predicted``);
* an output log holding more than one ``Actual consumption`` block (a later monitor of the
  same process writing into an earlier run's file): a file's own block is its first one;
* folder names: carbontracker matches its file-name pattern ``.*carbontracker.log`` against
  the whole path, so any folder named like ``..carbontracker_log..`` turns every file into a
  "standard log"; here only file-name suffixes count.

Each row also says what its figures assume: ``power`` (``measured`` by RAPL / NVML, or
``estimated`` from a CPU's TDP when no meter is readable), ``power_w`` (average watts),
``location`` and ``intensity_g_per_kwh`` (the carbon intensity used; ``Unknown`` location =
carbontracker's world average).

Units: ``duration_s`` seconds, ``energy_kwh`` kilowatt-hours, ``co2eq_g`` grams CO2eq.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from gensyn.study import arm_name

OUTPUT_SUFFIX = "_carbontracker_output.log"
STD_SUFFIX = "_carbontracker.log"
COLUMNS = (
    "stage",
    "run",
    "experiment",
    "arm",
    "split_idx",
    "log",
    "status",
    "duration_s",
    "energy_kwh",
    "co2eq_g",
    "power",
    "power_w",
    "location",
    "intensity_g_per_kwh",
)

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_BLOCK = re.compile(
    r"(Actual|Predicted) consumption[^\n:]*:\s*\n\s*Time:\s*([^\n]*)\n\s*Energy:\s*("
    + _NUM
    + r")\s*kWh\s*\n\s*CO2eq:\s*("
    + _NUM
    + r")\s*g",
    re.IGNORECASE,
)
_DURATION = re.compile(r"Duration:\s*([^\n]+)")
_POWER = re.compile(r"Average power usage \(W\) for ([^:]+):\s*(\[[^\]]*\]|\S+)", re.DOTALL)
_PUE = re.compile(r"PUE coefficient of (" + _NUM + r")", re.IGNORECASE)
_COMPONENTS = re.compile(r"The following components were found: ([^\n]*?)\.?\s*\n")
_LOCATION = re.compile(r"at detected location: ([^:\n]+):")
#: RAPL domain names: a CPU listed with these is metered; any other name (the CPU's brand) is
#: carbontracker's generic handler, which assumes half the CPU's TDP.
_RAPL_DEVICES = ("package", "core", "uncore", "dram", "psys")
_INTENSITY = re.compile(r"(" + _NUM + r")\s*gCO2(?:eq)?/kWh", re.IGNORECASE)


def parse_time_s(text: str) -> float:
    """``'H:MM:SS(.ff)'`` or ``'N day(s), H:MM:SS'`` -> seconds (NaN if unparseable)."""
    days = 0.0
    m = re.search(r"(\d+)\s+days?,\s*", text)
    if m:
        days = float(m.group(1))
        text = text[m.end() :]
    m = re.search(r"(-?)(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", text)
    if not m:
        return math.nan
    value = days * 86400 + float(m.group(2)) * 3600 + float(m.group(3)) * 60 + float(m.group(4))
    return -value if m.group(1) else value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _power_w(text: str) -> float:
    """Total average power of one component line (array values summed; None/nan -> NaN)."""
    values = [_float(v) for v in re.findall(_NUM, text.strip("[]"), re.IGNORECASE)]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) if values else math.nan


def parse_std_log(text: str) -> dict[str, float]:
    """Rebuild duration and energy from the per-epoch lines of a standard log."""
    epochs = re.split(r"Epoch \d+:", text)[1:]
    duration = energy_j = 0.0
    measured = False
    for chunk in epochs:
        dm = _DURATION.search(chunk)
        if not dm:
            continue  # epoch started, never finished
        seconds = parse_time_s(dm.group(1))
        if math.isnan(seconds):
            continue
        duration += seconds
        powers = [_power_w(p) for _, p in _POWER.findall(chunk)]
        powers = [p for p in powers if not math.isnan(p)]
        if powers:
            energy_j += sum(powers) * seconds
            measured = True
    intensity = [_float(v) for v in _INTENSITY.findall(text)]
    intensity = [v for v in intensity if not math.isnan(v)]
    # carbontracker multiplies its reported energy by the data-centre PUE it logs at start.
    pue = _PUE.search(text)
    factor = _float(pue.group(1)) if pue else 1.0
    energy_kwh = (
        energy_j / 3.6e6 * (factor if not math.isnan(factor) else 1.0) if measured else math.nan
    )
    co2 = energy_kwh * intensity[-1] if intensity and measured else math.nan
    return {
        "duration_s": duration if epochs else math.nan,
        "energy_kwh": energy_kwh,
        "co2eq_g": co2,
    }


def parse_assumptions(std_text: str) -> dict[str, Any]:
    """What a run's figures rest on: power ``measured``/``estimated``, watts, location, gCO2eq/kWh."""
    components = _COMPONENTS.search(std_text)
    found = components.group(1) if components else ""
    cpu = re.search(r"CPU with device\(s\) (.*?)(?:, GPU with|$)", found)
    cpu_devices = [d.strip().lower() for d in cpu.group(1).split(",")] if cpu else []
    rapl = any(d.split("-")[0] in _RAPL_DEVICES for d in cpu_devices)
    metered = "GPU" in found or rapl
    powers = [_power_w(p) for _, p in _POWER.findall(std_text)]
    powers = [p for p in powers if not math.isnan(p)]
    location = _LOCATION.search(std_text)
    intensity = [v for v in map(_float, _INTENSITY.findall(std_text)) if not math.isnan(v)]
    return {
        "power": ("measured" if metered else "estimated") if found else "",
        "power_w": sum(powers) / len(powers) if powers else math.nan,
        "location": location.group(1).strip() if location else "",
        "intensity_g_per_kwh": intensity[-1] if intensity else math.nan,
    }


def parse_log_pair(output_log: Path | None, std_log: Path | None) -> dict[str, Any]:
    """Parse one carbontracker run (either file may be missing or empty)."""
    out_text = output_log.read_text(encoding="utf-8", errors="replace") if output_log else ""
    std_text = std_log.read_text(encoding="utf-8", errors="replace") if std_log else ""
    assumptions = parse_assumptions(std_text)
    # The first block of a kind is the file's own; later ones were appended by other monitors.
    blocks: dict[str, tuple[str, str, str]] = {}
    for kind, t, e, c in _BLOCK.findall(out_text):
        blocks.setdefault(kind.lower(), (t, e, c))
    for kind in ("actual", "predicted"):
        if kind in blocks:
            t, e, c = blocks[kind]
            return {
                "status": kind,
                "duration_s": parse_time_s(t),
                "energy_kwh": _float(e),
                "co2eq_g": _float(c),
                **assumptions,
            }
    partial = parse_std_log(std_text)
    status = "partial" if not math.isnan(partial["energy_kwh"]) else "empty"
    return {"status": status, **partial, **assumptions}


def find_log_pairs(log_dir: Path, run_id: str = "") -> list[tuple[str, Path | None, Path | None]]:
    """(prefix, output log, standard log) for each carbontracker run in ``log_dir``
    (``run_id``: only the files of that monitor, named ``<run_id>_...``)."""
    pairs: dict[str, list[Path | None]] = {}
    for p in sorted(log_dir.glob(f"{run_id}_*.log" if run_id else "*.log")):
        if p.stat().st_size == 0:
            continue
        if p.name.endswith(OUTPUT_SUFFIX):
            pairs.setdefault(p.name[: -len(OUTPUT_SUFFIX)], [None, None])[0] = p
        elif p.name.endswith(STD_SUFFIX):
            pairs.setdefault(p.name[: -len(STD_SUFFIX)], [None, None])[1] = p
    return [(k, v[0], v[1]) for k, v in sorted(pairs.items())]


ARM_STAGES = frozenset({"classify", "predict"})  # stages whose results depend on the arm


def _run_info(run: Path) -> dict[str, Any]:
    """Experiment, arm and fold of a run folder from its resolved ``config.yaml``.

    ``arm`` (``baseline``, ``drr_5``, ``synthex_10`` ...: the report's names) and ``split_idx`` are filled only
    for runs whose result depends on them: a stage in :data:`ARM_STAGES` or whose
    ``identity.json`` hashes a ``sampling`` / ``split_idx`` key or a classify upstream.
    """
    info: dict[str, Any] = {"experiment": "", "arm": "", "split_idx": math.nan}
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        return info
    try:
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        ident_path = run / "identity.json"
        ident = json.loads(ident_path.read_text(encoding="utf-8")) if ident_path.is_file() else {}
    except Exception:  # a torn or foreign file must not stop the summary
        return info
    info["experiment"] = cfg.get("experiment_name", "")
    keys = set((ident.get("config") or {}).keys())
    depends = (
        run.parent.name in ARM_STAGES
        or "classify" in (ident.get("upstream") or {})
        or any(k == "sampling" or k.startswith("sampling.") or k == "split_idx" for k in keys)
    )
    if depends:
        sampling = cfg.get("sampling") or {}
        source = sampling.get("source", "") or "none"
        views = sampling.get("views_per_ct")
        try:
            info["arm"] = "baseline" if source == "none" else arm_name(str(source), int(views or 0))
        except (TypeError, ValueError):  # an arm no stage would run: shown as written
            info["arm"] = f"{source}_{views}"
        info["split_idx"] = cfg.get("split_idx", math.nan)
    return info


def collect(
    runs_dir: str | os.PathLike[str],
    log_dir_name: str = "carbon_logs",
    exclude: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """One row per carbontracker run found in ``<runs_dir>/<stage>/<hash>/<log_dir_name>/``
    (``exclude``: a run folder to leave out, e.g. the collector's own, still running)."""
    rows = []
    root = Path(runs_dir)
    skip = Path(exclude).resolve() if exclude is not None else None
    for log_dir in sorted(root.glob(f"*/*/{log_dir_name}")):
        run = log_dir.parent
        if skip is not None and run.resolve() == skip:
            continue
        info = _run_info(run)
        for prefix, out_log, std_log in find_log_pairs(log_dir):
            rows.append(
                {
                    "stage": run.parent.name,
                    "run": run.name,
                    **info,
                    "log": prefix,
                    **parse_log_pair(out_log, std_log),
                }
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    # a fold is a whole number (CSV: ``2``, not ``2.0``); runs without one stay empty
    table["split_idx"] = pd.to_numeric(table["split_idx"]).astype("Int64")
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Totals per stage, per (stage, arm) and overall: runs, duration_s, energy_kwh, co2eq_g.

    NaN values (unmeasured) are left out of sums; ``runs_unmeasured`` counts them.
    """

    def agg(level: str, stage: str, arm: str, group: pd.DataFrame) -> dict[str, Any]:
        return {
            "level": level,
            "stage": stage,
            "arm": arm,
            "runs": len(group),
            "runs_unmeasured": int(group["energy_kwh"].isna().sum()),
            "duration_s": group["duration_s"].sum(min_count=1),
            "energy_kwh": group["energy_kwh"].sum(min_count=1),
            "co2eq_g": group["co2eq_g"].sum(min_count=1),
        }

    rows = [agg("stage", str(stage), "", g) for stage, g in table.groupby("stage")]
    arms = table[table["arm"].fillna("") != ""]
    rows += [agg("arm", str(st), str(arm), g) for (st, arm), g in arms.groupby(["stage", "arm"])]
    rows.append(agg("total", "", "", table))
    return pd.DataFrame(rows)


def sig_figs(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``table`` with float columns as text of ``digits`` significant digits (NaN -> '')."""
    out = table.astype(object)
    for col in table.columns:
        if table[col].dtype.kind == "f":
            out[col] = [f"{v:.{digits}g}" if v == v else "" for v in table[col]]
    return out


def assumptions(runs: pd.DataFrame) -> str:
    """One sentence on what the figures rest on: measured or estimated power, location, intensity."""
    if runs.empty:
        return "no monitored runs."
    parts = []
    for power, group in runs.groupby(runs["power"].fillna("").replace("", "unknown")):
        watts = group["power_w"].dropna()
        level = f", {watts.mean():.2g} W on average" if len(watts) else ""
        how = {
            "measured": "power measured (RAPL / NVML)",
            "estimated": "power estimated from the CPU's TDP at 50 % load (no meter readable)",
        }.get(str(power), "power source not logged")
        parts.append(f"{len(group)} run(s): {how}{level}")
    for location, group in runs.groupby(runs["location"].fillna("").replace("", "not logged")):
        g = group["intensity_g_per_kwh"].dropna()
        intensity = f"{g.mean():.3g} gCO2eq/kWh" if len(g) else "intensity not logged"
        where = (
            "location unknown: world-average carbon intensity"
            if location == "Unknown"
            else f"location {location}"
        )
        parts.append(f"{len(group)} run(s): {where}, {intensity}")
    return "; ".join(parts) + "; energy includes carbontracker's data-centre PUE factor."
