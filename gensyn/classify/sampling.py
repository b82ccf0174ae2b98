"""Which synthetic images (DRR or SyntheX) join the real training folds: the sampling arms.

An arm is ``(source, views_per_ct)``: ``none`` is the baseline (real images only); ``drr`` and
``synthex`` add, for every CT, its centre view plus ``views_per_ct - 1`` angled views chosen
at random (seeded per CT, so every fold of an arm uses the same images and the 5-view set
contains the 2-view set). Synthetic images are only ever added to *training* data, never to
validation or test data.

CT labels are mapped to the five findings by :data:`CT_LABEL_ALIASES`: a CT table column
counts for a finding if its lower-cased name is one of the finding's aliases (the demo and
converted tables use the finding names themselves; RAD-ChestCT uses e.g. ``pleural_effusion``).
A finding the table has no column for, and an empty cell, is *unknown* (NaN), never 0: a CT
set that cannot label a finding says nothing about it (LIDC-IDRI has no label table at all).
Training masks unknown entries out of the loss (:mod:`gensyn.classify.train`).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# the arms' names and checks are study facts, shared with the report and tracking
from gensyn.study import SOURCES, arm_name, check_arm, parse_arm

__all__ = ["SOURCES", "arm_name", "check_arm", "parse_arm"]

log = logging.getLogger(__name__)

#: finding -> column names in CT label tables that mean this finding (lower case).
CT_LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "Effusion": ("effusion", "pleural_effusion"),
    "Pneumothorax": ("pneumothorax",),
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Pneumonia": ("pneumonia",),
}


def ct_findings(volumes: pd.DataFrame, findings: Sequence[str]) -> pd.DataFrame:
    """A table ``ct_id`` + one float column per finding (1, 0 or NaN = unknown) from a CT table.

    A finding is read from the one column that matches it (see :data:`CT_LABEL_ALIASES`).
    A finding without a column is unknown (NaN) for every CT of the table, with one warning
    naming the missing findings and the columns found; an empty cell stays unknown. Two
    columns for one finding are an error (which one would be meant is not known).
    """
    by_lower = {c.lower(): c for c in volumes.columns}
    out = pd.DataFrame({"ct_id": volumes["ct_id"].astype(str)})
    missing = []
    for finding in findings:
        aliases = (finding.lower(), *CT_LABEL_ALIASES.get(finding, ()))
        found = sorted({by_lower[a] for a in aliases if a in by_lower})
        if len(found) > 1:
            raise ValueError(
                f"CT label table has {len(found)} columns for {finding!r}: {found}; keep one"
            )
        if not found:
            missing.append(finding)
            out[finding] = np.nan
            continue
        values = pd.to_numeric(volumes[found[0]], errors="raise").astype(float)
        out[finding] = values.clip(0, 1).to_numpy()  # NaN stays NaN
    if missing:
        log.warning(
            "CT label table has no column for %s (columns: %s): unknown for all %d CTs, "
            "masked out of the training loss",
            ", ".join(missing),
            ", ".join(map(str, volumes.columns)),
            len(volumes),
        )
    return out


def select_views(manifest: pd.DataFrame, views_per_ct: int, seed: int) -> pd.DataFrame:
    """Per CT: its centre view plus ``views_per_ct - 1`` angled views drawn with a per-CT seed.

    ``manifest`` has ``ct_id``, ``is_center`` and one row per image. The angled views of a CT
    (in manifest order) are put in a random order fixed by (seed, ct_id) and the first n - 1
    taken, so larger n extend smaller n. Rows come out CT by CT (sorted by ``ct_id``), the
    centre view first, then the chosen angled views in manifest order; rows without a
    ``ct_id`` are left out. Raises ValueError if a CT has no centre view or too few angled
    views. Index arithmetic over the whole table, one small draw per CT: 3,630 CTs × 10 views
    in well under a second.
    """
    codes, cts = pd.factorize(manifest["ct_id"], sort=True)
    center = manifest["is_center"].astype(bool).to_numpy()
    n_ct = len(cts)
    n_center = np.bincount(codes[center & (codes >= 0)], minlength=n_ct)
    angled_rows = np.flatnonzero(~center & (codes >= 0))
    n_angled = np.bincount(codes[angled_rows], minlength=n_ct)
    take = views_per_ct - 1
    # the first CT (in sorted order) with a problem, the centre checked first
    bad = np.flatnonzero((n_center != 1) | (n_angled < take))
    if len(bad):
        c = int(bad[0])
        if n_center[c] != 1:
            raise ValueError(
                f"CT {cts[c]!r} has {n_center[c]} centre views in the manifest, needs 1"
            )
        raise ValueError(
            f"CT {cts[c]!r} has {n_angled[c]} angled views; views_per_ct={views_per_ct} needs "
            f"{take}: render more poses (carm_pose) or lower sampling.views_per_ct"
        )
    if n_ct == 0:
        return manifest.iloc[:0]
    # angled rows grouped by CT, manifest order kept within a CT
    angled_rows = angled_rows[np.argsort(codes[angled_rows], kind="stable")]
    first_angled = np.concatenate([[0], np.cumsum(n_angled)[:-1]])
    center_rows = np.flatnonzero(center & (codes >= 0))
    center_rows = center_rows[np.argsort(codes[center_rows], kind="stable")]
    rows = []
    for c, ct_id in enumerate(cts):
        # a stable per-CT stream (Python's hash() of a string changes between processes)
        ct_seed = zlib.crc32(str(ct_id).encode())
        order = np.random.default_rng([seed, ct_seed]).permutation(int(n_angled[c]))
        rows.append(center_rows[c : c + 1])
        rows.append(angled_rows[first_angled[c] + np.sort(order[:take])])
    return manifest.iloc[np.concatenate(rows)].reset_index(drop=True)


def synthetic_training_rows(
    manifest: pd.DataFrame,
    volumes: pd.DataFrame,
    findings: Sequence[str],
    views_per_ct: int,
    seed: int,
) -> pd.DataFrame:
    """Rows ``image_id, patient_id, path, <findings>, source`` of the synthetic images of an arm.

    ``manifest``: the DRR or SyntheX manifest (``path, ct_id, patient_id, is_center`` ...);
    ``volumes``: the CT label table (``ct_id`` and label columns, possibly none). Labels are
    1, 0 or NaN (unknown, see :func:`ct_findings`); a CT missing from the table is an error.
    """
    chosen = select_views(manifest, views_per_ct, seed)
    # the CT label table is authoritative: labels a manifest carries (drr, gan_translate) yield
    chosen = chosen.drop(columns=[f for f in findings if f in chosen.columns])
    labels = ct_findings(volumes, findings)
    merged = chosen.assign(ct_id=chosen["ct_id"].astype(str)).merge(
        labels, on="ct_id", how="left", validate="many_to_one", indicator=True
    )
    absent = merged["_merge"] == "left_only"
    if absent.any():
        missing = merged.loc[absent, "ct_id"].unique()[:5]
        raise ValueError(f"CTs missing from the CT label table: {list(missing)}")
    patient = merged["patient_id"] if "patient_id" in merged else merged["ct_id"]
    return pd.DataFrame(
        {
            "image_id": [f"syn_{p}" for p in merged["path"].astype(str)],
            "patient_id": "ct_" + patient.astype(str),
            "path": merged["path"].astype(str),
            **{f: merged[f].astype(float) for f in findings},
        }
    )


#: a path pathlib would rewrite when joining (".", "..", "//", a trailing "/", empty) or an
#: absolute one: such rows go through pathlib, the rest are joined as strings
_NOT_PLAIN = r"(?:^|/)\.{1,2}(?:/|$)|//|/$|^$|^/"


def resolve_paths(table: pd.DataFrame, root: str | os.PathLike[str]) -> pd.DataFrame:
    """A copy of ``table`` whose ``path`` column is absolute (relative paths are below ``root``).

    Each relative path becomes ``str(Path(root) / path)``; plain relative paths (the manifests'
    ``images/ct00001/v00.png``) are joined as strings, the same text at a tenth of the cost
    for a study's 80,000 rows.
    """
    base = Path(root)
    paths = table["path"].astype(str)
    if os.sep != "/" or paths.empty:  # every row through pathlib
        odd = np.ones(len(paths), dtype=bool)
    else:
        odd = paths.str.contains(_NOT_PLAIN, regex=True).to_numpy(dtype=bool)
    prefix = "" if str(base) == "." else str(base).rstrip("/") + "/"
    out = (prefix + paths).to_numpy(dtype=object)
    out[odd] = [p if os.path.isabs(p) else str(base / p) for p in paths[odd]]
    return table.assign(path=out)


def training_tables(
    xrays: pd.DataFrame,
    folds: pd.DataFrame,
    split_idx: int,
    synthetic: pd.DataFrame | None,
    findings: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) tables of one cross-validation round of one arm.

    ``xrays``: real images with split == train; ``folds``: their split table; ``synthetic``:
    rows from :func:`synthetic_training_rows` (or None). Synthetic rows join *train* only.
    """
    from gensyn.data.splits import train_val_ids

    train_ids, val_ids = train_val_ids(folds, split_idx)
    ids = xrays["image_id"].astype(str)
    cols = ["image_id", "patient_id", "path", *findings]
    train = xrays.loc[ids.isin(train_ids), cols].assign(source="real")
    val = xrays.loc[ids.isin(val_ids), cols].assign(source="real")
    if synthetic is not None and len(synthetic):
        train = pd.concat([train, synthetic[cols].assign(source="synthetic")], ignore_index=True)
    return train.reset_index(drop=True), val.reset_index(drop=True)
