"""The two CycleGAN domains: which DRRs (A) and which real X-rays (B) train the translator.

Selection is seeded and by group: the held-out set (for sample grids and the domain-gap
check) takes whole CTs (A) and whole patients (B), so no view of a held-out CT and no
image of a held-out patient is seen in training. From the remaining images at most
``max_per_domain`` per domain are drawn for training, as the original's
``max_dataset_size``. Real X-rays of the classifier's test split never enter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

DOMAIN_COLUMNS = ("domain", "subset", "path", "group")


def resolve_paths(
    table: pd.DataFrame, base: str | os.PathLike[str], column: str = "path"
) -> pd.Series:
    """Absolute paths of ``table[column]``; relative ones are taken relative to ``base``."""
    if column not in table.columns:
        raise ValueError(f"table has no {column!r} column (columns: {list(table.columns)})")
    base = Path(base)
    return table[column].astype(str).map(lambda p: str(p if Path(p).is_absolute() else base / p))


def _split_groups(
    groups: pd.Series, heldout_size: int, max_train: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (held-out, train) with whole groups held out, in a seeded order."""
    unique = np.array(sorted(groups.astype(str).unique()))
    order = rng.permutation(len(unique))
    codes = groups.astype(str).to_numpy()
    heldout: list[int] = []
    held_groups: set[str] = set()
    for g in unique[order]:
        if len(heldout) >= heldout_size:
            break
        members = np.flatnonzero(codes == g)
        heldout.extend(rng.permutation(members)[: heldout_size - len(heldout)].tolist())
        held_groups.add(str(g))
    rest = np.flatnonzero(~np.isin(codes, list(held_groups)))
    train = rng.permutation(rest)[:max_train]
    return np.sort(np.array(heldout, dtype=int)), np.sort(train)


def select_domains(
    drrs: pd.DataFrame,
    xrays: pd.DataFrame,
    max_per_domain: int,
    heldout_size: int,
    seed: int = 0,
) -> pd.DataFrame:
    """One table of the training and held-out images of both domains.

    ``drrs``: one row per DRR with absolute ``path`` and ``ct_id`` (or ``patient_id``);
    ``xrays``: one row per real X-ray with absolute ``path``, ``patient_id`` (else
    ``image_id``) and optionally ``split`` (rows with ``split == 'test'`` are dropped).
    Returns columns ``domain`` (A | B), ``subset`` (train | heldout), ``path``, ``group``
    (CT or patient id) plus the input's other columns; raises ValueError when a domain
    would have no training image.
    """
    if max_per_domain < 1:
        raise ValueError(f"generator.max_dataset_size must be >= 1, got {max_per_domain}")
    if heldout_size < 0:
        raise ValueError(f"generator.heldout_size must be >= 0, got {heldout_size}")
    if "split" in xrays.columns:
        xrays = xrays[xrays["split"].astype(str) != "test"]
    for domain, table in (("A", drrs), ("B", xrays)):
        if len(table) == 0:
            what = "DRRs in the drr manifest" if domain == "A" else "real X-rays (non-test)"
            raise ValueError(f"domain {domain} is empty: no {what}")
    parts = []
    for domain, table, keys in (
        ("A", drrs, ("ct_id", "patient_id", "path")),
        ("B", xrays, ("patient_id", "image_id", "path")),
    ):
        group_col = next(k for k in keys if k in table.columns)
        rng = np.random.default_rng([seed, ord(domain)])
        heldout, train = _split_groups(table[group_col], heldout_size, max_per_domain, rng)
        if len(train) == 0:
            raise ValueError(
                f"domain {domain} has {len(table)} images, all needed for the held-out set "
                f"(generator.heldout_size={heldout_size}); lower heldout_size or add images"
            )
        for subset, rows in (("train", train), ("heldout", heldout)):
            part = table.iloc[rows].copy()
            part.insert(0, "group", part[group_col].astype(str))
            part.insert(0, "subset", subset)
            part.insert(0, "domain", domain)
            parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    front = list(DOMAIN_COLUMNS)
    return out[front + [c for c in out.columns if c not in front]]


def domain_paths(table: pd.DataFrame, domain: str, subset: str) -> list[str]:
    """Paths of one domain (A | B) and subset (train | heldout) of a :func:`select_domains` table."""
    rows = table[(table["domain"] == domain) & (table["subset"] == subset)]
    return rows["path"].astype(str).tolist()


#: File names tried, in order, for the upstream tables (the first that exists is used).
DRR_MANIFESTS = ("manifest.csv",)
XRAY_TABLES = ("xrays.csv",)


def read_upstream_table(
    folder: str | os.PathLike[str], names: tuple[str, ...], what: str
) -> pd.DataFrame:
    """Read the first of ``names`` in ``folder`` with paths made absolute (relative to it)."""
    from gensyn.base.io import read_table

    folder = Path(folder)
    for name in names:
        if (folder / name).is_file():
            table = read_table(folder / name)
            if "status" in table.columns:  # journals list failed images too
                table = table[table["status"].astype(str) == "ok"]
            if "path" not in table.columns and "dst" in table.columns:
                table = table.rename(columns={"dst": "path"})
            table = table.reset_index(drop=True)
            table["path"] = resolve_paths(table, folder)
            return table
    found = sorted(p.name for p in folder.glob("*.csv"))
    raise FileNotFoundError(
        f"no {what} table ({' or '.join(names)}) in {folder}; CSV files there: {found}"
    )
