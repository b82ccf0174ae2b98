"""Patient-level, multilabel-stratified k-fold splits of a real X-ray training table.

The original study split PadChest by *image*, so images of one patient landed in both the
training and the validation data. Here every patient is assigned to exactly one fold, and
folds are stratified on the patient-level labels (a patient is positive for a finding if
any of their images is) with iterative stratification (Sechidis et al. 2011, package
``iterative-stratification``), so each fold has about the same prevalence of every finding.

A split table has one row per image: ``image_id, patient_id, fold``. Fold ``k`` is the
validation data of cross-validation round ``split_idx = k``; the other folds are training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gensyn import io

SPLIT_COLUMNS = ("image_id", "patient_id", "fold")


def patient_folds(
    table: pd.DataFrame,
    label_cols: Sequence[str],
    n_folds: int = 5,
    seed: int = 0,
    patient_col: str = "patient_id",
    image_col: str = "image_id",
) -> pd.DataFrame:
    """Assign every image to a fold so that no patient is in two folds.

    ``table`` has one row per image with ``image_col``, ``patient_col`` and 0/1 columns
    ``label_cols``. Returns a table ``image_id, patient_id, fold`` in the input's row order.
    The same table, ``n_folds`` and ``seed`` always give the same folds.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    missing = [c for c in (image_col, patient_col, *label_cols) if c not in table.columns]
    if missing:
        raise ValueError(f"split table is missing columns {missing}; it has {list(table.columns)}")
    if table[image_col].duplicated().any():
        dup = table.loc[table[image_col].duplicated(), image_col].iloc[0]
        raise ValueError(f"image ids must be unique; {dup!r} appears more than once")
    patients = table.groupby(patient_col, sort=True)[list(label_cols)].max()
    if len(patients) < n_folds:
        raise ValueError(f"{len(patients)} patients cannot fill {n_folds} folds; lower n_folds")
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of_patient = np.empty(len(patients), dtype=int)
    labels = patients.to_numpy(dtype=int)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros((len(patients), 1)), labels)):
        fold_of_patient[val_idx] = k
    fold_map = pd.Series(fold_of_patient, index=patients.index)
    return pd.DataFrame(
        {
            "image_id": table[image_col].to_numpy(),
            "patient_id": table[patient_col].to_numpy(),
            "fold": table[patient_col].map(fold_map).to_numpy(dtype=int),
        }
    )


def check_no_patient_leakage(split: pd.DataFrame) -> None:
    """Raise ValueError if any patient has images in more than one fold."""
    folds_per_patient = split.groupby("patient_id")["fold"].nunique()
    leaking = folds_per_patient[folds_per_patient > 1]
    if len(leaking):
        raise ValueError(f"patients in several folds: {list(leaking.index[:5])}")


def load_or_make_folds(
    path: str | os.PathLike[str],
    table: pd.DataFrame,
    label_cols: Sequence[str],
    n_folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Read the split table at ``path`` if it exists, else make it and save it atomically.

    A saved table must cover exactly the images of ``table`` with ``n_folds`` folds; if not,
    a ValueError says so (delete the file, or point to another one) instead of silently
    training on a different split.
    """
    path = Path(path)
    if path.is_file():
        split = io.read_table(path)
        if list(split.columns) != list(SPLIT_COLUMNS):
            raise ValueError(
                f"{path}: expected columns {list(SPLIT_COLUMNS)}, got {list(split.columns)}"
            )
        if set(split["image_id"].astype(str)) != set(table["image_id"].astype(str)):
            raise ValueError(
                f"{path} was made for other images than the current training table; "
                "delete it to make a new split"
            )
        if split["fold"].nunique() != n_folds:
            raise ValueError(
                f"{path} has {split['fold'].nunique()} folds, config asks for {n_folds}"
            )
    else:
        split = patient_folds(table, label_cols, n_folds=n_folds, seed=seed)
        io.write_table(path, split)
    check_no_patient_leakage(split)
    return split


def train_val_ids(split: pd.DataFrame, split_idx: int) -> tuple[set[str], set[str]]:
    """Image ids for training (all other folds) and validation (fold ``split_idx``)."""
    n_folds = int(split["fold"].max()) + 1
    if not 0 <= split_idx < n_folds:
        raise ValueError(f"split_idx must be in 0..{n_folds - 1}, got {split_idx}")
    is_val = split["fold"].to_numpy() == split_idx
    ids = split["image_id"].astype(str).to_numpy()
    return set(ids[~is_val]), set(ids[is_val])
