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

STUDY_LABELS = ("Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia")
COMMON_COLUMNS = (
    "source",
    "image_id",
    "patient_id",
    "view",
    "frontal",
    "relpath",
    *STUDY_LABELS,
    "labels",
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
RADCHEST_MAP: dict[str, frozenset[str]] = {
    "Effusion": frozenset({"pleural_effusion"}),
    "Pneumothorax": frozenset({"pneumothorax"}),
    "Atelectasis": frozenset({"atelectasis"}),
    "Cardiomegaly": frozenset({"cardiomegaly"}),
    "Pneumonia": frozenset({"pneumonia"}),
}
PADCHEST_VIEWS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}
FRONTAL_VIEWS = frozenset({"PA", "AP"})

PADCHEST_COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
CHESTXRAY14_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def _require(
    table: pd.DataFrame, columns: tuple[str, ...], path: str | os.PathLike[str], what: str
) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: not a {what} label table; missing columns {missing} "
            f"(has {list(table.columns)[:12]})"
        )


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
    _require(raw, PADCHEST_COLUMNS, path, "PadChest")
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
    _require(raw, CHESTXRAY14_COLUMNS, path, "ChestX-ray14")
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


def read_radchest(path: str | os.PathLike[str], id_column: str = "NoteAcc_DEID") -> pd.DataFrame:
    """Parse a RAD-ChestCT abnormality table (one row per CT, one 0/1 column per abnormality).

    Location-specific columns (``left_lung*pneumothorax`` or ``pneumothorax*left_lung``) count
    for a study label if any ``*``-separated part is its RAD-ChestCT term, so the parser does
    not depend on the order. A study label that no column of the table names is NaN
    (unknown) for every row: its DRRs are masked from that finding's loss, not called absent. ``labels`` keeps the original column names of the positive
    columns. ``image_id`` and ``patient_id`` are the volume id (the table has no patient ids);
    ``view`` is ``CT``. ``id_column`` falls back to the first column if absent.
    """
    raw = pd.read_csv(path)
    if id_column not in raw.columns:
        id_column = str(raw.columns[0])
    label_cols = [str(c) for c in raw.columns if c != id_column]
    values = raw[label_cols].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in label_cols if not values[c].dropna().isin([0, 1]).all()]
    if bad:
        raise ValueError(f"{path}: RAD-ChestCT label columns must hold 0/1; {bad[:5]} do not")
    parts = {c: {p.strip().lower() for p in c.split("*")} for c in label_cols}
    positive = values.fillna(0).to_numpy() == 1
    findings = [[c for c, on in zip(label_cols, row, strict=True) if on] for row in positive]
    # a finding none of the table's columns names is unknown (NaN), never "absent"
    covered = {
        name: any(parts[c] & RADCHEST_MAP[name] for c in label_cols) for name in STUDY_LABELS
    }
    study = {
        name: [int(any(parts[c] & RADCHEST_MAP[name] for c in row)) for row in findings]
        if covered[name]
        else [float("nan")] * len(findings)
        for name in STUDY_LABELS
    }
    ids = raw[id_column].astype(str)
    return pd.DataFrame(
        {
            "source": "radchest",
            "image_id": ids,
            "patient_id": ids,
            "view": "CT",
            "frontal": False,
            "relpath": ids + ".npz",
            **study,
            "labels": ["|".join(f) for f in findings],
        }
    )


def read_radchest_tables(
    label_paths: list[str | os.PathLike[str]],
    metadata_path: str | os.PathLike[str] | None = None,
    id_column: str = "NoteAcc_DEID",
    patient_column: str = "MRN_DEID",
) -> pd.DataFrame:
    """Several RAD-ChestCT label tables (train / valid / test) as one common table.

    With ``metadata_path`` (``CT_Scan_Metadata_Complete_35747.csv``), ``patient_id`` is the
    de-identified MRN of each scan, so that splits can keep a patient's scans together;
    scans it does not list keep their volume id. A volume listed twice is an error.
    """
    if not label_paths:
        raise ValueError("no RAD-ChestCT label table given")
    tables = [read_radchest(p, id_column) for p in label_paths]
    table = pd.concat(tables, ignore_index=True)
    for k in STUDY_LABELS:  # 0/1 where every table names the finding; NaN marks unknown rows
        if not table[k].isna().any():
            table[k] = table[k].astype(int)
    dup = table["image_id"][table["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"volumes listed in more than one label table: {list(dup[:5])}")
    if metadata_path is not None:
        meta = pd.read_csv(
            metadata_path, usecols=lambda c: c in (id_column, patient_column), dtype=str
        )
        if {id_column, patient_column} - set(meta.columns):
            raise ValueError(f"{metadata_path}: needs columns {id_column} and {patient_column}")
        mrn = dict(zip(meta[id_column], meta[patient_column], strict=True))
        table["patient_id"] = [mrn.get(i, i) for i in table["image_id"]]
    return table


#: Your own X-ray table: these columns, plus every study label as 0/1 (``image_id`` optional).
FOLDER_XRAY_COLUMNS = ("path", "patient_id", "view")
#: Your own CT table: ``ct_id`` (the volume id), optional ``patient_id``, any study labels.
FOLDER_CT_COLUMNS = ("ct_id",)


def _folder_findings(raw: pd.DataFrame, path: str | os.PathLike[str]) -> dict[str, str]:
    """Study label -> its column in a user's table (case-insensitive); a column that nearly
    spells a finding (``Efusion``) is an error, not an unknown finding."""
    import difflib

    by_lower = {str(c).strip().lower(): str(c) for c in raw.columns}
    columns = {k: by_lower[k.lower()] for k in STUDY_LABELS if k.lower() in by_lower}
    known = {c.lower() for c in (*columns.values(), *COMMON_COLUMNS, "path", "ct_id")}
    for col in raw.columns:
        if str(col).lower() in known:
            continue
        lower = [k.lower() for k in STUDY_LABELS]
        close = difflib.get_close_matches(str(col).lower(), lower, n=1, cutoff=0.85)
        if close:
            name = next(k for k in STUDY_LABELS if k.lower() == close[0])
            raise ValueError(f"{path}: column {col!r} is not a finding; did you mean {name!r}?")
    return columns


def _zero_one(
    raw: pd.DataFrame, column: str, path: str | os.PathLike[str], allow_empty: bool
) -> pd.Series:
    values = pd.to_numeric(raw[column].str.strip(), errors="coerce")  # "" -> NaN
    bad = ~values.isin([0, 1]) & (raw[column].str.strip().ne("") | (not allow_empty))
    if bad.any():
        row = int(bad.to_numpy().argmax())
        what = "0 or 1" + (" (empty = unknown)" if allow_empty else "")
        raise ValueError(
            f"{path}: column {column!r} must hold {what}; row {row + 2} has "
            f"{raw[column].iloc[row]!r}"
        )
    return values


def read_folder_xrays(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Your own X-ray table -> the common table.

    Columns: ``path`` (the image file below the data set's image root: PNG, JPEG or DICOM),
    ``patient_id``, ``view`` (PA, AP, LATERAL ...) and every study label as 0/1 (an X-ray
    table is also a test set: an unknown label could not be scored). ``image_id`` is
    optional (default: ``path`` with ``/`` as ``__``); other columns are ignored.
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    _require(raw, FOLDER_XRAY_COLUMNS, path, "folder X-ray")
    columns = _folder_findings(raw, path)
    missing = [k for k in STUDY_LABELS if k not in columns]
    if missing:
        raise ValueError(f"{path}: X-ray tables need a 0/1 column per finding; missing {missing}")
    study = {k: _zero_one(raw, columns[k], path, False).astype(int) for k in STUDY_LABELS}
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


def read_folder_ct_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Your own CT label table -> the common table (``image_id`` = the volume id).

    Columns: ``ct_id`` (the CT's file name without ``.nii``/``.nii.gz``/``.nrrd``, or its
    DICOM folder's name), optional ``patient_id`` (empty = taken from the CT), and any of
    the study labels as 0/1. A finding without a column, or an empty cell, is unknown (NaN):
    masked from that finding's loss, never counted as absent.
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    _require(raw, FOLDER_CT_COLUMNS, path, "folder CT")
    columns = _folder_findings(raw, path)
    study = {
        k: _zero_one(raw, columns[k], path, True) if k in columns else [float("nan")] * len(raw)
        for k in STUDY_LABELS
    }
    ids = raw["ct_id"].str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"{path}: ct_id listed more than once: {list(dup[:5])}")
    patients = raw["patient_id"].str.strip() if "patient_id" in raw.columns else ""
    table = pd.DataFrame(
        {
            "source": "folder",
            "image_id": ids,
            "patient_id": patients,
            "view": "CT",
            "frontal": False,
            "relpath": ids,
            **study,
        }
    )
    table["patient_id"] = table["patient_id"].mask(table["patient_id"].eq(""))
    table["labels"] = [
        "|".join(k for k in STUDY_LABELS if row[k] == 1) for _, row in table.iterrows()
    ]
    return table


def read_ct_label_tables(
    source: str,
    label_paths: list[str | os.PathLike[str]],
    metadata_path: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """CT label tables of ``source`` (``radchest`` or ``folder``) as one common table."""
    if source == "radchest":
        return read_radchest_tables(label_paths, metadata_path)
    if source == "folder":
        table = pd.concat([read_folder_ct_labels(p) for p in label_paths], ignore_index=True)
        dup = table["image_id"][table["image_id"].duplicated()]
        if len(dup):
            raise ValueError(f"CTs listed in more than one label table: {list(dup[:5])}")
        return table
    raise ValueError(f"unknown CT label source {source!r}; allowed: radchest, folder")


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
        return read_radchest(path), empty
    if source == "folder":
        return read_folder_xrays(path), empty
    raise ValueError(
        f"unknown label source {source!r}; allowed: padchest, chestxray14, radchest, folder"
    )
