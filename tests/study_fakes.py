"""Fakes of the real study's CT source in its real formats (RAD-ChestCT on Zenodo).

:func:`radchest_record` builds the files of a RAD-ChestCT-like Zenodo record: CT volumes as
compressed NumPy arrays (key ``ct``, int16 HU, axes head→feet, front→back, right→left, as the
published preprocessing stores them), some bare and some inside a ZIP part, the three
abnormality tables ``img{train,valid,test}_Abnormality_and_Location_Labels.csv``
(``NoteAcc_DEID`` plus one 0/1 column per ``abnormality*location``) and the scan metadata
table ``CT_Scan_Metadata_Complete_35747.csv`` (``NoteAcc_DEID``, ``MRN_DEID``). The volumes
are the demo's procedural chest phantoms, so DRRs of them look like chests.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd

#: The five findings and a RAD-ChestCT column that names each (abnormality*location).
RADCHEST_COLUMNS = {
    "Effusion": "pleural_effusion*left_lung",
    "Pneumothorax": "pneumothorax*right_lung",
    "Atelectasis": "atelectasis*left_lower_lobe",
    "Cardiomegaly": "cardiomegaly*heart",
    "Pneumonia": "pneumonia*right_lower_lobe",
}
OTHER_COLUMNS = ("nodule*left_upper_lobe", "emphysema*lung")  # findings outside the five


def _npz_bytes(hu_ipl: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, ct=hu_ipl.astype(np.int16))
    return buf.getvalue()


def _to_ipl(hu_ras: np.ndarray) -> np.ndarray:
    """A phantom volume in RAD-ChestCT's axis order.

    The phantom is indexed (i, j, k) along +x (patient's right), +y (anterior), +z
    (superior); RAD-ChestCT stores (slice head→feet, row front→back, column right→left),
    i.e. axis codes ``IPL`` = (-z, -y, -x).
    """
    return np.ascontiguousarray(np.transpose(hu_ras[::-1, ::-1, ::-1], (2, 1, 0)))


def radchest_record(
    n_cts: int = 6,
    shape_vox: tuple[int, int, int] = (48, 48, 48),
    spacing_mm: tuple[float, float, float] = (7.5, 7.5, 7.0),
    seed: int = 0,
) -> tuple[dict[str, bytes], pd.DataFrame]:
    """Zenodo file key -> bytes of a RAD-ChestCT-like record, and the truth table.

    CT ``trn0000k`` belongs to patient ``MRN{k // 2}`` (two scans per patient). The first two
    volumes are bare ``.npz`` files; the rest sit in ``trn_part2.zip``. Returns the files and
    a table ``ct_id, patient_id`` + the five findings (0/1) as written.
    """
    from gensyn.data.phantom.volume import FINDINGS, generate_phantom

    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    zipped = io.BytesIO()
    rows = []
    with zipfile.ZipFile(zipped, "w") as zf:
        for k in range(n_cts):
            ct_id = f"trn{k + 1:05d}"
            labels = {f: bool(rng.random() < 0.4) for f in FINDINGS}
            phantom = generate_phantom(1000 + k, labels, shape_vox, spacing_mm)
            data = _npz_bytes(_to_ipl(phantom.hu))
            if k < 2:
                files[f"{ct_id}.npz"] = data
            else:
                zf.writestr(f"{ct_id}.npz", data)
            rows.append(
                {
                    "ct_id": ct_id,
                    "patient_id": f"MRN{k // 2}",
                    **{f: int(labels[f]) for f in FINDINGS},
                }
            )
    files["trn_part2.zip"] = zipped.getvalue()
    truth = pd.DataFrame(rows)
    parts = [truth.iloc[idx] for idx in np.array_split(np.arange(len(truth)), 3)]
    for name, part in zip(("imgtrain", "imgvalid", "imgtest"), parts, strict=True):
        table = pd.DataFrame({"NoteAcc_DEID": part["ct_id"]})
        for finding, column in RADCHEST_COLUMNS.items():
            table[column] = part[finding].to_numpy()
        for column in OTHER_COLUMNS:
            table[column] = rng.integers(0, 2, len(part))
        files[f"{name}_Abnormality_and_Location_Labels.csv"] = table.to_csv(index=False).encode()
    meta = pd.DataFrame({"NoteAcc_DEID": truth["ct_id"], "MRN_DEID": truth["patient_id"]})
    meta["Age"] = 60
    files["CT_Scan_Metadata_Complete_35747.csv"] = meta.to_csv(index=False).encode()
    return files, truth
