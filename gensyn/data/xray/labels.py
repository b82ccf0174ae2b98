"""Label tables of PadChest, ChestX-ray14, RAD-ChestCT and your own folder -> one common table.

Common columns (:data:`COMMON_COLUMNS`): ``source``, ``image_id``, ``patient_id``, ``view``
(``PA``, ``AP``, ``LATERAL``, ``CT`` or the source's own word), ``frontal`` (bool),
``relpath`` (path of the image below the data set's image root), the five study labels
:data:`STUDY_LABELS` as 0/1, and ``labels``: every original finding of the row, joined by
``|`` in the source's own words (nothing is lost by the mapping).

Mapping from each source's vocabulary to the study labels (a row is positive if any of its
original findings is in the set; anything else counts as negative):

=============  ===============================================  ==========================  ====================
study label    PadChest ``Labels`` entries                      ChestX-ray14                RAD-ChestCT column
=============  ===============================================  ==========================  ====================
Effusion       pleural effusion, loculated pleural effusion,    Effusion                    pleural_effusion
               loculated fissural effusion, hydropneumothorax
Pneumothorax   pneumothorax, hydropneumothorax                  Pneumothorax                pneumothorax
Atelectasis    atelectasis, laminar / lobar / segmental /       Atelectasis                 atelectasis
               round / total atelectasis
Cardiomegaly   cardiomegaly                                     Cardiomegaly                cardiomegaly
Pneumonia      pneumonia, atypical pneumonia                    Pneumonia                   pneumonia
=============  ===============================================  ==========================  ====================

PadChest's subtypes are children of the listed term in PadChest's own label hierarchy;
hydropneumothorax (air and fluid) counts for both Effusion and Pneumothorax.

Your own data (``folder``) name the study labels themselves: one 0/1 column per finding
(:data:`FOLDER_XRAY_COLUMNS`, :data:`FOLDER_CT_COLUMNS`; docs/data.md, "Your own data").
"""

from __future__ import annotations

import ast
import os
from typing import Any

import pandas as pd

from gensyn.data.label_table import (
    STUDY_LABELS,
    folder_findings,
    require_columns,
    zero_one,
)

PADCHEST_MAP: dict[str, frozenset[str]] = {
    "Effusion": frozenset(
        {
            "pleural effusion",
            "loculated pleural effusion",
            "loculated fissural effusion",
            "hydropneumothorax",
        }
    ),
    "Pneumothorax": frozenset({"pneumothorax", "hydropneumothorax"}),
    "Atelectasis": frozenset(
        {
            "atelectasis",
            "laminar atelectasis",
            "lobar atelectasis",
            "segmental atelectasis",
            "round atelectasis",
            "total atelectasis",
        }
    ),
    "Cardiomegaly": frozenset({"cardiomegaly"}),
    "Pneumonia": frozenset({"pneumonia", "atypical pneumonia"}),
}
CHESTXRAY14_MAP: dict[str, frozenset[str]] = {name: frozenset({name}) for name in STUDY_LABELS}
PADCHEST_VIEWS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}
FRONTAL_VIEWS = frozenset({"PA", "AP"})

PADCHEST_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
CHESTXRAY14_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def _study_columns(
    findings: list[list[str]], mapping: dict[str, frozenset[str]]
) -> dict[str, list[int]]:
    return {
        name: [int(any(f in mapping[name] for f in row)) for row in findings]
        for name in STUDY_LABELS
    }


def parse_padchest_labels(cell: Any) -> list[str] | None:
    """Parse one PadChest ``Labels`` cell, a Python list literal like
    ``"['pleural effusion', ' cardiomegaly']"``, into stripped lower-case findings.
    Returns None for an empty or malformed cell (NaN, ``"['']"`` is an empty list)."""
    if not isinstance(cell, str) or not cell.strip():
        return None
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list | tuple):
        return None
    return [str(v).strip().lower() for v in value if str(v).strip()]


def read_padchest(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or any table with its
    columns) into the common table. Returns (table, skipped rows with ``image_id`` and ``reason``).
    """
    raw = pd.read_csv(
        path,
        usecols=lambda c: (
            c in {*PADCHEST_COLUMNS, "MethodLabel", "PhotometricInterpretation_DICOM"}
        ),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )
    require_columns(raw, PADCHEST_COLUMNS, path, "PadChest")
    parsed = [parse_padchest_labels(c) for c in raw["Labels"]]
    ok = [p is not None for p in parsed]
    skipped = pd.DataFrame(
        {"image_id": raw.loc[[not o for o in ok], "ImageID"], "reason": "unparseable Labels cell"}
    )
    raw = raw.loc[ok].reset_index(drop=True)
    findings = [p for p in parsed if p is not None]
    views = raw["Projection"].fillna("").map(lambda v: PADCHEST_VIEWS.get(v, v or "UNKNOWN"))
    table = pd.DataFrame(
        {
            "source": "padchest",
            "image_id": raw["ImageID"],
            "patient_id": raw["PatientID"],
            "view": views,
            "frontal": views.isin(FRONTAL_VIEWS),
            "relpath": [
                f"{d}/{i}" if isinstance(d, str) and d else i
                for d, i in zip(raw["ImageDir"], raw["ImageID"], strict=True)
            ],
            **_study_columns(findings, PADCHEST_MAP),
            "labels": ["|".join(f) for f in findings],
        }
    )
    if "MethodLabel" in raw.columns:
        table["label_method"] = raw["MethodLabel"].values
    if "PhotometricInterpretation_DICOM" in raw.columns:  # MONOCHROME1 images are inverted
        table["photometric"] = raw["PhotometricInterpretation_DICOM"].fillna("").values
    return table, skipped.reset_index(drop=True)


def read_chestxray14(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Parse ChestX-ray14's ``Data_Entry_2017.csv`` (``Finding Labels`` joined by ``|``,
    ``No Finding`` for none) into the common table."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    require_columns(raw, CHESTXRAY14_COLUMNS, path, "ChestX-ray14")
    findings = [
        [f.strip() for f in cell.split("|") if f.strip() and f.strip() != "No Finding"]
        for cell in raw["Finding Labels"]
    ]
    views = raw["View Position"].str.strip().str.upper()
    return pd.DataFrame(
        {
            "source": "chestxray14",
            "image_id": raw["Image Index"],
            "patient_id": raw["Patient ID"],
            "view": views,
            "frontal": views.isin(FRONTAL_VIEWS),
            "relpath": raw["Image Index"],
            **_study_columns(findings, CHESTXRAY14_MAP),
            "labels": ["|".join(f) for f in findings],
        }
    )


def read_image_list(path: str | os.PathLike[str]) -> list[str]:
    """An official split list such as ChestX-ray14's ``train_val_list.txt`` / ``test_list.txt``:
    one image file name per line (``00000001_000.png``); blank lines are ignored."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


#: Your own X-ray table: these columns, plus every study label as 0/1 (``image_id`` optional).
FOLDER_XRAY_COLUMNS = ("path", "patient_id", "view")


def read_folder_xrays(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Your own X-ray table -> the common table.

    Columns: ``path`` (the image file below the data set's image root: PNG, JPEG or DICOM),
    ``patient_id``, ``view`` (PA, AP, LATERAL ...) and every study label as 0/1 (an X-ray
    table is also a test set: an unknown label could not be scored). ``image_id`` is
    optional (default: ``path`` with ``/`` as ``__``); other columns are ignored.
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, FOLDER_XRAY_COLUMNS, path, "folder X-ray")
    columns = folder_findings(raw, path)
    missing = [k for k in STUDY_LABELS if k not in columns]
    if missing:
        raise ValueError(f"{path}: X-ray tables need a 0/1 column per finding; missing {missing}")
    study = {k: zero_one(raw, columns[k], path, False).astype(int) for k in STUDY_LABELS}
    relpath = raw["path"].str.strip()
    ids = (
        raw["image_id"].str.strip() if "image_id" in raw.columns else relpath.str.replace("/", "__")
    )
    views = raw["view"].str.strip().str.upper().replace({"L": "LATERAL", "LL": "LATERAL"})
    return pd.DataFrame(
        {
            "source": "folder",
            "image_id": ids,
            "patient_id": raw["patient_id"].str.strip(),
            "view": views,
            "frontal": views.isin(FRONTAL_VIEWS),
            "relpath": relpath,
            **study,
            "labels": [
                "|".join(k for k in STUDY_LABELS if study[k].iloc[n] == 1) for n in range(len(raw))
            ],
        }
    )


def read_label_table(
    source: str, path: str | os.PathLike[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dispatch on ``source`` (``padchest``, ``chestxray14``, ``radchest``, ``folder``) ->
    (table, skipped)."""
    if source == "padchest":
        return read_padchest(path)
    empty = pd.DataFrame({"image_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    if source == "chestxray14":
        return read_chestxray14(path), empty
    if source == "radchest":
        from gensyn.data.ct.labels import read_radchest

        return read_radchest(path), empty
    if source == "folder":
        return read_folder_xrays(path), empty
    raise ValueError(
        f"unknown label source {source!r}; allowed: padchest, chestxray14, radchest, folder"
    )
