"""Label parsers on small tables in the real file formats, checked against hand counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gensyn.data.ct.labels import attach_ct_labels, read_radchest
from gensyn.data.label_table import COMMON_COLUMNS, STUDY_LABELS
from gensyn.data.xray.labels import (
    parse_padchest_labels,
    read_chestxray14,
    read_label_table,
    read_padchest,
)

# Header of PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv (first column is the index).
PADCHEST_HEADER = (
    ",ImageID,ImageDir,StudyDate_DICOM,StudyID,PatientID,PatientBirth,PatientSex_DICOM,"
    "ViewPosition_DICOM,Projection,MethodProjection,Pediatric,Modality_DICOM,Manufacturer_DICOM,"
    "PhotometricInterpretation_DICOM,PixelRepresentation_DICOM,PixelAspectRatio_DICOM,"
    "SpatialResolution_DICOM,BitsStored_DICOM,WindowCenter_DICOM,WindowWidth_DICOM,Rows_DICOM,"
    "Columns_DICOM,XRayTubeCurrent_DICOM,Exposure_DICOM,ExposureInuAs_DICOM,ExposureTime,"
    "RelativeXRayExposure_DICOM,ReportID,Report,MethodLabel,Labels,Localizations,"
    "LabelsLocalizationsBySentence,labelCUIS,LocalizationsCUIS"
)


def _pc_row(n: int, image: str, patient: str, projection: str, labels: str) -> str:
    cells = [
        str(n),
        image,
        "0",
        "20140915",
        f"st{n}",
        patient,
        "1950",
        "M",
        "POSTEROANTERIOR",
        projection,
        "Manual review of DICOM fields",
        "No",
        "CR",
        "PhilipsMedicalSystems",
        "MONOCHROME2",
        "0",
        "1\\1",
        "0.139\\0.139",
        "12",
        "2048",
        "4096",
        "2836",
        "2836",
        "",
        "",
        "",
        "",
        "",
        f"r{n}",
        '"informe sin hallazgos ."',
        "Physician",
        labels,
        "\"['loc right']\"",
        "\"[['normal']]\"",
        "\"['C1']\"",
        '"[]"',
    ]
    return ",".join(cells)


PADCHEST_ROWS = [
    ("a.png", "p1", "PA", "\"['pleural effusion', 'cardiomegaly']\""),
    ("b.png", "p1", "L", "\"['pleural effusion', 'cardiomegaly']\""),
    ("c.png", "p2", "AP_horizontal", "\"['hydropneumothorax', ' pneumothorax']\""),
    ("d.png", "p3", "AP", "\"['atelectasis', 'laminar atelectasis', 'pleural effusion']\""),
    ("e.png", "p4", "PA", "\"['normal']\""),
    ("f.png", "p5", "PA", "\"['']\""),
    ("g.png", "p6", "PA", ""),  # missing Labels cell: skipped
    ("h.png", "p7", "COSTAL", "\"['pneumonia', 'atypical pneumonia', 'pleural thickening']\""),
    ("i.png", "p8", "PA", "\"['segmental atelectasis', 'loculated fissural effusion']\""),
]


def test_padchest_against_hand_counts(tmp_path: Path) -> None:
    path = tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    lines = [PADCHEST_HEADER] + [_pc_row(n, *r) for n, r in enumerate(PADCHEST_ROWS)]
    path.write_text("\n".join(lines) + "\n")
    table, skipped = read_padchest(path)
    assert list(table.columns[: len(COMMON_COLUMNS)]) == list(COMMON_COLUMNS)
    assert list(skipped["image_id"]) == ["g.png"]
    assert len(table) == 8
    t = table.set_index("image_id")
    # hand counts: Effusion a b c d i; Pneumothorax c; Atelectasis d i; Cardiomegaly a b; Pneumonia h
    assert t["Effusion"].sum() == 5 and list(t.index[t["Effusion"] == 1]) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
        "i.png",
    ]
    assert list(t.index[t["Pneumothorax"] == 1]) == ["c.png"]
    assert list(t.index[t["Atelectasis"] == 1]) == ["d.png", "i.png"]
    assert list(t.index[t["Cardiomegaly"] == 1]) == ["a.png", "b.png"]
    assert list(t.index[t["Pneumonia"] == 1]) == ["h.png"]
    assert t.loc["e.png", list(STUDY_LABELS)].sum() == 0 and t.loc["f.png", "labels"] == ""
    assert t.loc["c.png", "labels"] == "hydropneumothorax|pneumothorax"
    assert t.loc["h.png", "labels"] == "pneumonia|atypical pneumonia|pleural thickening"
    assert list(t["view"]) == ["PA", "LATERAL", "AP", "AP", "PA", "PA", "COSTAL", "PA"]
    assert t["frontal"].sum() == 6  # all but the lateral and the costal view
    assert t.loc["a.png", "relpath"] == "0/a.png" and t.loc["a.png", "patient_id"] == "p1"
    assert t.loc["a.png", "label_method"] == "Physician"
    assert t.loc["a.png", "photometric"] == "MONOCHROME2"


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("['pleural effusion', ' cardiomegaly']", ["pleural effusion", "cardiomegaly"]),
        ("['']", []),
        ("[]", []),
        ("['Normal']", ["normal"]),
        ("not a list", None),
        ("'text'", None),
        (float("nan"), None),
    ],
)
def test_padchest_cell_parser(cell: object, expected: list[str] | None) -> None:
    assert parse_padchest_labels(cell) == expected


CXR14 = """Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.168,0.168,
00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143,
00000004_000.png,Mass|Nodule,0,4,82,M,AP,2500,2048,0.168,0.168,
00000005_006.png,Infiltration,6,5,70,F,PA,2048,2500,0.168,0.168,
00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,56,M,AP,3056,2544,0.139,0.139,
00000013_026.png,Cardiomegaly|Emphysema|Pneumothorax,26,13,57,M,AP,2500,2048,0.168,0.168,
00000030_001.png,Atelectasis|Effusion|Pneumonia,1,30,79,M,PA,2992,2991,0.143,0.143,
00000032_012.png,Effusion|Infiltration,12,32,55,F,AP,2500,2048,0.168,0.168,
"""


def test_chestxray14_against_hand_counts(tmp_path: Path) -> None:
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text(CXR14)
    t = read_chestxray14(path)
    assert len(t) == 10
    # hand counts over the 10 rows above
    assert t[list(STUDY_LABELS)].sum().to_dict() == {
        "Effusion": 2,
        "Pneumothorax": 2,
        "Atelectasis": 1,
        "Cardiomegaly": 3,
        "Pneumonia": 1,
    }
    assert (
        t.loc[2, "labels"] == ""
        and t.loc[6, "labels"] == "Emphysema|Infiltration|Pleural_Thickening|Pneumothorax"
    )
    assert list(t["patient_id"][:3]) == ["1", "1", "2"]
    assert (t["view"] == "PA").sum() == 6 and t["frontal"].all()


def test_radchest_labels_with_locations(tmp_path: Path) -> None:
    path = tmp_path / "imgtrain_Abnormality_Labels.csv"
    pd.DataFrame(
        {
            "NoteAcc_DEID": ["trn00001", "trn00002", "trn00003"],
            "nodule": [1, 0, 0],
            "pleural_effusion": [0, 1, 0],
            "left_lung*pneumothorax": [0, 0, 1],
            "pneumothorax*right_lung": [0, 1, 1],
            "cardiomegaly": [1, 0, 0],
        }
    ).to_csv(path, index=False)
    t = read_radchest(path)
    assert list(t["image_id"]) == ["trn00001", "trn00002", "trn00003"]
    assert list(t["Pneumothorax"]) == [0, 1, 1] and list(t["Effusion"]) == [0, 1, 0]
    assert list(t["Cardiomegaly"]) == [1, 0, 0]
    # no column names atelectasis or pneumonia: unknown for every CT, not "absent"
    assert t["Atelectasis"].isna().all() and t["Pneumonia"].isna().all()
    assert list(t["labels"]) == [
        "nodule|cardiomegaly",
        "pleural_effusion|pneumothorax*right_lung",
        "left_lung*pneumothorax|pneumothorax*right_lung",
    ]
    assert (t["view"] == "CT").all()


def test_wrong_tables_name_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("ImageID,Labels\na.png,['normal']\n")
    with pytest.raises(
        ValueError, match=r"missing columns \['ImageDir', 'PatientID', 'Projection'\]"
    ):
        read_padchest(path)
    with pytest.raises(ValueError, match="not a ChestX-ray14 label table"):
        read_chestxray14(path)
    with pytest.raises(ValueError, match="allowed: padchest, chestxray14, radchest"):
        read_label_table("mimic", path)
    path.write_text("NoteAcc_DEID,nodule\ntrn1,2\n")
    with pytest.raises(ValueError, match="0/1"):
        read_radchest(path)


def test_radchest_tables_combined_with_patient_ids(tmp_path: Path) -> None:
    from gensyn.data.ct.labels import read_radchest_tables

    pd.DataFrame({"NoteAcc_DEID": ["trn1", "trn2"], "atelectasis": [1, 0]}).to_csv(
        tmp_path / "a.csv", index=False
    )
    pd.DataFrame({"NoteAcc_DEID": ["val1"], "pneumonia": [1]}).to_csv(
        tmp_path / "b.csv", index=False
    )
    pd.DataFrame({"NoteAcc_DEID": ["trn1", "val1"], "MRN_DEID": ["m1", "m1"]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    t = read_radchest_tables([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "meta.csv")
    assert list(t["patient_id"]) == ["m1", "trn2", "m1"]
    # each table labels only the finding it has a column for; the other is unknown (NaN)
    assert list(t["Atelectasis"][:2]) == [1, 0] and pd.isna(t["Atelectasis"][2])
    assert t["Pneumonia"][:2].isna().all() and t["Pneumonia"][2] == 1
    assert t["Effusion"].isna().all()
    with pytest.raises(ValueError, match="more than one label table"):
        read_radchest_tables([tmp_path / "a.csv", tmp_path / "a.csv"])


def test_nih_split_list(tmp_path: Path) -> None:
    from gensyn.data.xray.labels import read_image_list

    path = tmp_path / "test_list.txt"
    path.write_text("00000003_000.png\n00000013_005.png\r\n\n  00000030_001.png \n")
    assert read_image_list(path) == ["00000003_000.png", "00000013_005.png", "00000030_001.png"]


def test_attach_ct_labels_joins_by_volume_and_fills_patient_ids_both_ways() -> None:
    """The label table's patient id wins; the CT's own fills the gaps in both tables; labels
    of CTs that were not converted are dropped (worked out by hand)."""
    volumes = pd.DataFrame(
        {"volume_id": ["ct1", "ct2", "ct3"], "patient_id": ["dicomA", "dicomB", "ct3"]}
    )
    labels = pd.DataFrame(
        {
            "image_id": ["ct1", "ct2", "gone"],
            "patient_id": ["p1", None, "p9"],
            **{k: [1, 0, 1] for k in STUDY_LABELS},
            "labels": ["all", "", "all"],
        }
    )
    vols, labs = attach_ct_labels(volumes, labels)
    assert list(vols["patient_id"]) == ["p1", "dicomB", "ct3"]
    assert list(vols["Effusion"].fillna(-1)) == [1, 0, -1]  # ct3 has no label row
    assert list(labs["image_id"]) == ["ct1", "ct2"]
    assert list(labs["patient_id"]) == ["p1", "dicomB"]
    assert labels["patient_id"].isna().sum() == 1  # the caller's table is not changed
    # nothing converted: no volume rows, no label rows
    none, none_labels = attach_ct_labels(pd.DataFrame(), labels)
    assert none.empty and none_labels.empty
