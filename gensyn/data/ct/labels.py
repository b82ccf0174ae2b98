"""CT label tables -> the common table (:mod:`gensyn.data.label_table`): RAD-ChestCT's
abnormality tables (with its metadata table's patient ids) and your own folder's CSV.

RAD-ChestCT columns per study label (:data:`RADCHEST_MAP`): Effusion ``pleural_effusion``,
Pneumothorax ``pneumothorax``, Atelectasis ``atelectasis``, Cardiomegaly ``cardiomegaly``,
Pneumonia ``pneumonia``; location-specific columns (``left_lung*pneumothorax``) count too.
A finding a table cannot label is NaN (unknown), never "absent".
"""

from __future__ import annotations

import os

import pandas as pd

from gensyn.data.label_table import STUDY_LABELS, folder_findings, require_columns, zero_one

RADCHEST_MAP: dict[str, frozenset[str]] = {
    "Effusion": frozenset({"pleural_effusion"}),
    "Pneumothorax": frozenset({"pneumothorax"}),
    "Atelectasis": frozenset({"atelectasis"}),
    "Cardiomegaly": frozenset({"cardiomegaly"}),
    "Pneumonia": frozenset({"pneumonia"}),
}


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


#: Your own CT table: ``ct_id`` (the volume id), optional ``patient_id``, any study labels.
FOLDER_CT_COLUMNS = ("ct_id",)


def read_folder_ct_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Your own CT label table -> the common table (``image_id`` = the volume id).

    Columns: ``ct_id`` (the CT's file name without ``.nii``/``.nii.gz``/``.nrrd``, or its
    DICOM folder's name), optional ``patient_id`` (empty = taken from the CT), and any of
    the study labels as 0/1. A finding without a column, or an empty cell, is unknown (NaN):
    masked from that finding's loss, never counted as absent.
    """
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    require_columns(raw, FOLDER_CT_COLUMNS, path, "folder CT")
    columns = folder_findings(raw, path)
    study = {
        k: zero_one(raw, columns[k], path, True) if k in columns else [float("nan")] * len(raw)
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


def attach_ct_labels(
    volumes: pd.DataFrame, labels: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``volumes`` with each CT's patient id and study labels, ``labels`` of the converted
    CTs only, their missing patient ids filled in).

    ``volumes`` is the converter's table (``volume_id``, ``patient_id``: the CT's own, DICOM
    PatientID or the volume id); ``labels`` the common CT label table (``image_id`` = volume
    id). The label table's patient id wins where it has one; the CT's own fills the gaps in
    both tables, so the classifier's patient-level splits see one id per CT.
    """
    if len(volumes):
        study = labels[["image_id", "patient_id", *STUDY_LABELS]].rename(
            columns={"image_id": "volume_id", "patient_id": "listed_patient_id"}
        )
        volumes = volumes.merge(study, on="volume_id", how="left")
        volumes["patient_id"] = volumes.pop("listed_patient_id").fillna(volumes["patient_id"])
        if labels["patient_id"].isna().any():
            own = dict(zip(volumes["volume_id"], volumes["patient_id"], strict=True))
            labels = labels.assign(
                patient_id=labels["patient_id"].fillna(labels["image_id"].map(own))
            )
    converted = set(volumes["volume_id"]) if len(volumes) else set()
    return volumes, labels[labels["image_id"].isin(converted)]
