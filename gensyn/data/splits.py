"""Patient-level, multilabel-stratified k-fold splits of a real X-ray training table.

The original study split PadChest by *image*, so images of one patient landed in both the
training and the validation data. Here every patient is assigned to exactly one fold, and
folds are stratified on the patient-level labels (a patient is positive for a finding if
any of their images is) with iterative stratification (Sechidis et al. 2011, package
``iterative-stratification``), so each fold has about the same prevalence of every finding.

A split table has one row per image: ``image_id, patient_id, fold``. Fold ``k`` is the
validation data of cross-validation round ``split_idx = k``; the other folds are training.

Before folding, ``stage=prepare_xrays`` marks each image ``split = train | test``: from a
data set's official lists (:func:`official_split`, NIH's ``train_val_list.txt`` /
``test_list.txt``) or, for a data set without its own test split, by holding out a fraction
of the patients, stratified the same way (:func:`patient_holdout`). Folds are drawn from
the ``train`` images only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from gensyn.base import io

SPLIT_COLUMNS = ("image_id", "patient_id", "fold")
HOLDOUT_COLUMNS = ("image_id", "patient_id", "split")


class ExternalTestRows(StrEnum):
    """Which rows of a data set ``predict`` uses when it is another data set's external test
    set (``dataset.xray.external_test``): ``all`` (whatever their split) or ``test_split``
    (the rows of split test)."""

    all = "all"
    test_split = "test_split"


class SplitSource(StrEnum):
    """Where an X-ray data set's test split comes from (``dataset.xray.split_source``):
    ``official`` lists, a seeded ``holdout`` of patients, or ``auto`` (official where both
    lists are there, else holdout)."""

    auto = "auto"
    official = "official"
    holdout = "holdout"


def _check_table(
    table: pd.DataFrame, label_cols: Sequence[str], patient_col: str, image_col: str
) -> None:
    missing = [c for c in (image_col, patient_col, *label_cols) if c not in table.columns]
    if missing:
        raise ValueError(f"split table is missing columns {missing}; it has {list(table.columns)}")
    if table[image_col].duplicated().any():
        dup = table.loc[table[image_col].duplicated(), image_col].iloc[0]
        raise ValueError(f"image ids must be unique; {dup!r} appears more than once")


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

    _check_table(table, label_cols, patient_col, image_col)
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
        split = _read_saved(path, SPLIT_COLUMNS, table)
        if split["fold"].nunique() != n_folds:
            raise ValueError(
                f"{path} has {split['fold'].nunique()} folds, config asks for {n_folds}"
            )
    else:
        split = patient_folds(table, label_cols, n_folds=n_folds, seed=seed)
        io.write_table(path, split)
    check_no_patient_leakage(split)
    return split


def _read_saved(path: Path, columns: Sequence[str], table: pd.DataFrame) -> pd.DataFrame:
    """A saved split table, checked to have ``columns`` and exactly the images of ``table``."""
    split = io.read_table(path)
    if list(split.columns) != list(columns):
        raise ValueError(f"{path}: expected columns {list(columns)}, got {list(split.columns)}")
    if set(split["image_id"].astype(str)) != set(table["image_id"].astype(str)):
        raise ValueError(
            f"{path} was made for other images than the current table; "
            "delete it to make a new split"
        )
    return split


def train_val_ids(split: pd.DataFrame, split_idx: int) -> tuple[set[str], set[str]]:
    """Image ids for training (all other folds) and validation (fold ``split_idx``)."""
    n_folds = int(split["fold"].max()) + 1
    if not 0 <= split_idx < n_folds:
        raise ValueError(f"split_idx must be in 0..{n_folds - 1}, got {split_idx}")
    is_val = split["fold"].to_numpy() == split_idx
    ids = split["image_id"].astype(str).to_numpy()
    return set(ids[~is_val]), set(ids[is_val])


def patient_holdout(
    table: pd.DataFrame,
    label_cols: Sequence[str],
    test_fraction: float,
    seed: int = 0,
    patient_col: str = "patient_id",
    image_col: str = "image_id",
) -> pd.DataFrame:
    """Hold out about ``test_fraction`` of the patients, with all their images, as the test set.

    Patients are stratified on their patient-level labels (as :func:`patient_folds`) with
    ``MultilabelStratifiedShuffleSplit``, so train and test have about the same prevalence
    of every finding. Returns ``image_id, patient_id, split`` (``train`` | ``test``) in the
    input's row order; ``test_fraction = 0`` makes every image ``train``. The same table,
    fraction and ``seed`` always give the same split.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    _check_table(table, label_cols, patient_col, image_col)
    patients = table.groupby(patient_col, sort=True)[list(label_cols)].max()
    is_test = np.zeros(len(patients), dtype=bool)
    if test_fraction > 0:
        if len(patients) < 2:
            raise ValueError(f"{len(patients)} patient(s) cannot be split into train and test")
        splitter = MultilabelStratifiedShuffleSplit(
            n_splits=1, test_size=test_fraction, random_state=seed
        )
        labels = patients.to_numpy(dtype=int)
        _, test_idx = next(splitter.split(np.zeros((len(patients), 1)), labels))
        is_test[test_idx] = True
    split_of_patient = pd.Series(np.where(is_test, "test", "train"), index=patients.index)
    return pd.DataFrame(
        {
            "image_id": table[image_col].to_numpy(),
            "patient_id": table[patient_col].to_numpy(),
            "split": table[patient_col].map(split_of_patient).to_numpy(),
        }
    )


def official_split(
    image_ids: Sequence[str], train_ids: Iterable[str], test_ids: Iterable[str]
) -> pd.Series:
    """``train`` / ``test`` per image from a data set's official lists (image ids as listed,
    e.g. ChestX-ray14's ``00000001_000.png``); ``""`` for an image in neither list.

    An image in both lists is ``test`` (never trained on); its patient then has images in both
    splits if it has others in the train list, which :func:`leaking_patients` finds.
    """
    train, test = {str(i) for i in train_ids}, {str(i) for i in test_ids}
    return pd.Series(
        ["test" if i in test else "train" if i in train else "" for i in map(str, image_ids)],
        dtype=str,
    )


def leaking_patients(split: pd.DataFrame) -> list[str]:
    """The patients (sorted) with images in both ``split == train`` and ``split == test``."""
    kept = split[split["split"].isin(["train", "test"])]
    splits_per_patient = kept.groupby(kept["patient_id"].astype(str))["split"].nunique()
    return sorted(splits_per_patient[splits_per_patient > 1].index)


def check_train_test_disjoint(split: pd.DataFrame) -> None:
    """Raise ValueError if any patient has images in both ``split == train`` and ``test``."""
    leaking = leaking_patients(split)
    if leaking:
        raise ValueError(
            f"{len(leaking)} patient(s) in both the train and the test split: {leaking[:5]}"
        )


def load_or_make_holdout(
    path: str | os.PathLike[str],
    table: pd.DataFrame,
    label_cols: Sequence[str],
    test_fraction: float,
    seed: int = 0,
) -> pd.DataFrame:
    """Read the hold-out table at ``path`` if it exists, else make it
    (:func:`patient_holdout`) and save it atomically. A saved table must cover exactly the
    images of ``table``; a ValueError says so otherwise."""
    path = Path(path)
    if path.is_file():
        split = _read_saved(path, HOLDOUT_COLUMNS, table)
    else:
        split = patient_holdout(table, label_cols, test_fraction, seed=seed)
        io.write_table(path, split)
    check_train_test_disjoint(split)
    return split
