"""CT converters: world coordinates of known voxels, geometry of every format, bad inputs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from data_fakes import write_dicom_series

from gensyn.data.ct.convert import (
    ConversionError,
    NpzOptions,
    VolumeSource,
    convert_many,
    discover_sources,
    read_dicom_series,
    read_npz_volume,
    read_nrrd_volume,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(a_deg: float, b_deg: float, c_deg: float) -> np.ndarray:
    a, b, c = np.deg2rad([a_deg, b_deg, c_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _volume_with_markers(
    shape: tuple[int, int, int], markers: list[tuple[int, int, int]]
) -> np.ndarray:
    hu = np.full(shape, -1000, np.int16)
    hu[1:-1, 1:-1, 1:-1] = 40
    for n, (k, r, c) in enumerate(markers):
        hu[k, r, c] = 2000 + n
    return hu


def _world_of_marker(nifti: Path, value: int) -> np.ndarray:
    img = nib.load(nifti)
    idx = np.argwhere(np.asarray(img.dataobj) == value)
    assert len(idx) == 1
    return (img.affine @ np.append(idx[0], 1.0))[:3]


MARKERS = [(0, 0, 0), (5, 6, 8), (2, 1, 7), (4, 5, 0)]  # (slice, row, column)


@pytest.mark.parametrize("tilt", [False, True])
def test_oblique_dicom_world_coordinates(tmp_path: Path, tilt: bool) -> None:
    rot = _rotation(17.0, -23.0, 31.0)
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    pixel_spacing = (0.7, 0.8)  # between rows, between columns
    step = normal * 2.5 + (col_dir * 0.4 if tilt else 0)  # tilt: positions drift along rows
    first = np.array([-120.3, 45.6, 300.2])
    hu = _volume_with_markers((6, 7, 9), MARKERS)
    write_dicom_series(
        tmp_path / "raw" / "S1",
        hu,
        row_dir=row_dir,
        col_dir=col_dir,
        first_position=first,
        pixel_spacing=pixel_spacing,
        slice_step=step,
    )
    rows, failures = convert_many(
        discover_sources(tmp_path / "raw", "dicom"), tmp_path / "out", progress=False
    )
    assert failures == [] and len(rows) == 1
    out = tmp_path / "out" / "S1.nii.gz"
    assert nib.load(out).get_data_dtype() == np.int16
    for n, (k, r, c) in enumerate(MARKERS):
        lps = first + k * step + c * pixel_spacing[1] * row_dir + r * pixel_spacing[0] * col_dir
        np.testing.assert_allclose(_world_of_marker(out, 2000 + n), LPS_TO_RAS @ lps, atol=1e-3)
    row = rows[0]
    assert row["shape"] == "9x7x6"
    assert (row["spacing_x_mm"], row["spacing_y_mm"]) == pytest.approx((0.8, 0.7))
    assert row["spacing_z_mm"] == pytest.approx(np.linalg.norm(step), abs=1e-6)
    assert (row["hu_min"], row["hu_max"]) == (-1000, 2003)


def test_dicom_agrees_with_dicom2nifti(tmp_path: Path) -> None:
    """Peer check: dicom2nifti (which reorients) puts each marker at the same world point."""
    import dicom2nifti

    rot = _rotation(0.0, 0.0, 12.0)
    hu = _volume_with_markers((6, 7, 9), MARKERS)
    write_dicom_series(
        tmp_path / "S",
        hu,
        row_dir=rot[:, 0],
        col_dir=rot[:, 1],
        first_position=(10.0, -20.0, 30.0),
        pixel_spacing=(0.9, 0.6),
    )
    convert_many([VolumeSource("S", "dicom", str(tmp_path / "S"))], tmp_path, progress=False)
    peer = tmp_path / "peer.nii.gz"
    dicom2nifti.dicom_series_to_nifti(str(tmp_path / "S"), str(peer), reorient_nifti=True)
    for n in range(len(MARKERS)):
        np.testing.assert_allclose(
            _world_of_marker(tmp_path / "S.nii.gz", 2000 + n),
            _world_of_marker(peer, 2000 + n),
            atol=1e-3,
        )


def test_hu_rescale_applied(tmp_path: Path) -> None:
    hu = _volume_with_markers((3, 4, 5), [(1, 1, 1)])
    write_dicom_series(tmp_path, hu, slope=2.0, intercept=-2048.0)
    vol, _ = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol, hu.transpose(2, 1, 0))


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "missing slices"),
        ("mixed", "mixed series"),
        ("unreadable", "unreadable DICOM"),
        ("single", "at least 2"),
        ("uneven", "uneven slice spacing"),
    ],
)
def test_bad_dicom_series_are_failures_others_convert(
    tmp_path: Path, case: str, reason: str
) -> None:
    hu = _volume_with_markers((6, 4, 5), [])
    bad = tmp_path / "raw" / "bad"
    if case == "missing":
        write_dicom_series(bad, hu, skip_slices=(3,))
    elif case == "mixed":
        write_dicom_series(bad, hu[:3], series_uid="1.2.3.1")
        write_dicom_series(bad / "x", hu[:3], series_uid="1.2.3.2", shuffle_seed=1)
        for p in (bad / "x").iterdir():
            p.rename(bad / ("b_" + p.name))
    elif case == "unreadable":
        write_dicom_series(bad, hu)
        (bad / "broken.dcm").write_bytes(b"not a dicom file at all")
    elif case == "single":
        write_dicom_series(bad, hu[:1])
    elif case == "uneven":
        paths = write_dicom_series(bad, hu[:3], slice_step=(0, 0, 2.0))
        write_dicom_series(bad / "y", hu[:1], first_position=(0, 0, 4.8), shuffle_seed=3)
        for p in (bad / "y").iterdir():
            p.rename(bad / ("c_" + p.name))
        assert paths
    write_dicom_series(tmp_path / "raw" / "good", hu)
    sources = discover_sources(tmp_path / "raw", "dicom")
    assert {s.volume_id for s in sources} == {"bad", "good"}
    rows, failures = convert_many(sources, tmp_path / "out", progress=False)
    assert [r["volume_id"] for r in rows] == ["good"]
    assert len(failures) == 1 and failures[0]["volume_id"] == "bad"
    assert reason in failures[0]["reason"]
    assert "bad" in failures[0]["file"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good.nii.gz"
    ]  # nothing half-written
    with pytest.raises(ConversionError, match=reason):
        read_dicom_series(bad)


def test_nrrd_space_directions(tmp_path: Path) -> None:
    rot = _rotation(10.0, 20.0, -35.0)
    spacing = np.array([0.6, 0.9, 2.0])
    dirs = (rot * spacing).T  # one row per axis, LPS
    origin = np.array([5.0, -7.0, 100.0])
    data = np.zeros((9, 7, 6), np.int16) - 1000
    data[8, 2, 5] = 1500
    path = tmp_path / "ct.nrrd"
    nrrd.write(
        str(path),
        data,
        {"space": "left-posterior-superior", "space directions": dirs, "space origin": origin},
    )
    vol, affine = read_nrrd_volume(path)
    lps = origin + dirs.T @ np.array([8, 2, 5])
    idx = np.argwhere(vol == 1500)[0]
    np.testing.assert_allclose((affine @ np.append(idx, 1))[:3], LPS_TO_RAS @ lps, atol=1e-3)
    # same volume declared in RAS: no sign flip
    nrrd.write(str(path), data, {"space": "RAS", "space directions": dirs, "space origin": origin})
    _, affine_ras = read_nrrd_volume(path)
    np.testing.assert_allclose((affine_ras @ np.append(idx, 1))[:3], lps, atol=1e-3)


@pytest.mark.parametrize(
    "header, data, reason",
    [
        ({}, np.zeros((3, 3, 3), np.int16), "spacing unknown"),
        ({"spacings": [1.0, 1.0, 2.0]}, np.zeros((3, 3, 3), np.uint8), "wrong dtype uint8"),
        ({"spacings": [1.0, 1.0]}, np.zeros((3, 3), np.int16), "2-D"),
        ({"spacings": [1.0, 1.0, 1.0]}, np.full((2, 2, 2), 1e6, np.float32), "does not fit int16"),
        ({"spacings": [1.0, 1.0, 1.0]}, np.full((2, 2, 2), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_nrrd(tmp_path: Path, header: dict, data: np.ndarray, reason: str) -> None:
    path = tmp_path / "bad.nrrd"
    nrrd.write(str(path), data, header)
    with pytest.raises(ConversionError, match=reason):
        read_nrrd_volume(path)


def test_nrrd_spacings_only_and_float_rounding(tmp_path: Path) -> None:
    path = tmp_path / "s.nrrd"
    nrrd.write(str(path), np.full((2, 3, 4), -999.6, np.float32), {"spacings": [0.5, 0.7, 3.0]})
    vol, affine = read_nrrd_volume(path)
    assert vol.dtype == np.int16 and (vol == -1000).all()
    np.testing.assert_allclose(np.diag(affine), [0.5, 0.7, 3.0, 1.0])


def test_npz_spacing_from_config_and_file(tmp_path: Path) -> None:
    ct = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 500
    np.savez_compressed(tmp_path / "trn001.npz", ct=ct)
    vol, affine = read_npz_volume(
        tmp_path / "trn001.npz", NpzOptions(npz_spacing_mm=(0.8, 0.8, 0.8))
    )
    np.testing.assert_array_equal(vol, ct)
    # axis 0 head->feet (-z), axis 1 front->back (-y), axis 2 right->left (-x)
    np.testing.assert_allclose(affine[:3, :3], [[0, 0, -0.8], [0, -0.8, 0], [-0.8, 0, 0]])
    centre = affine @ np.array([1.5, 2.0, 2.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0, atol=1e-9)
    np.savez(
        tmp_path / "trn002.npz", ct=ct.astype(np.float32), spacing_mm=np.array([2.0, 0.7, 0.7])
    )
    _, affine2 = read_npz_volume(
        tmp_path / "trn002.npz", NpzOptions(npz_spacing_mm=(0.8, 0.8, 0.8))
    )
    np.testing.assert_allclose(np.abs(affine2[:3, :3]).sum(axis=0), [2.0, 0.7, 0.7])


def test_npz_without_spacing_never_gets_identity(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", ct=np.zeros((2, 2, 2), np.int16))
    np.savez(tmp_path / "b.npz", volume=np.zeros((2, 2, 2), np.int16))
    np.savez(tmp_path / "c.npz", ct=np.zeros((2, 2, 2), bool))
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConversionError, match="spacing unknown"):
        read_npz_volume(tmp_path / "a.npz", NpzOptions())
    rows, failures = convert_many(
        discover_sources(tmp_path, "npz"),
        tmp_path / "out",
        npz=NpzOptions(npz_spacing_mm=(1.0, 1.0, 1.0)),
        workers=2,
        progress=False,
    )
    assert [r["volume_id"] for r in rows] == ["a"]
    reasons = {f["volume_id"]: f["reason"] for f in failures}
    assert "no array 'ct'" in reasons["b"]
    assert "wrong dtype bool" in reasons["c"]
    assert "unreadable NPZ" in reasons["d"]


def test_rerun_skips_converted_volumes(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", ct=np.zeros((2, 2, 2), np.int16))
    opts = NpzOptions(npz_spacing_mm=(1.0, 2.0, 3.0))
    rows1, _ = convert_many(
        discover_sources(tmp_path, "npz"), tmp_path / "out", npz=opts, progress=False
    )
    mtime = (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns
    rows2, _ = convert_many(
        discover_sources(tmp_path, "npz"), tmp_path / "out", npz=opts, progress=False
    )
    assert rows1 == rows2
    assert (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns == mtime


def test_coronal_preview_is_independent_of_storage_order(tmp_path: Path) -> None:
    from gensyn.base.io import write_nifti
    from gensyn.data.ct.convert import coronal_preview

    vol = np.full((20, 10, 30), -1000, np.int16)  # RAS order: x (to the Right), y, z (up)
    vol[15:19, :, 24:29] = 1000  # the patient's right, near the top
    ras = np.diag([2.0, 3.0, 1.0, 1.0])
    write_nifti(tmp_path / "ras.nii.gz", vol, ras)
    # the same voxels stored as (z flipped, x flipped, y): another file, same world
    flipped = vol[::-1, :, ::-1].transpose(2, 0, 1)
    aff = np.zeros((4, 4))
    aff[3, 3] = 1
    aff[2, 0] = -1.0  # axis 0 runs down (z)
    aff[0, 1] = -2.0  # axis 1 runs to the patient's left (x)
    aff[1, 2] = 3.0  # axis 2 runs anterior (y)
    aff[:3, 3] = [38.0, 0.0, 29.0]
    write_nifti(tmp_path / "other.nii.gz", flipped, aff)
    a = coronal_preview(tmp_path / "ras.nii.gz", height_px=60)
    b = coronal_preview(tmp_path / "other.nii.gz", height_px=60)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (60, 80)  # 40 mm wide, 30 mm high
    bright = np.argwhere(a > 200)
    assert bright[:, 0].max() < 15 and bright[:, 1].max() < 20  # top left: superior, patient right


def test_reconversion_gives_identical_bytes(tmp_path: Path) -> None:
    """The gzip header holds no temporary file name and no time stamp (issue 36)."""
    import gzip
    import time

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", ct=rng.integers(-1000, 1000, (6, 5, 4)).astype(np.int16))
    opts = NpzOptions(npz_spacing_mm=(1.0, 2.0, 3.0))
    sources = discover_sources(tmp_path, "npz")
    convert_many(sources, tmp_path / "one", npz=opts, progress=False)
    time.sleep(1.1)  # a time stamp in the header would differ
    convert_many(sources, tmp_path / "two", npz=opts, progress=False)
    first = (tmp_path / "one" / "a.nii.gz").read_bytes()
    assert first == (tmp_path / "two" / "a.nii.gz").read_bytes()
    assert first[3] & 0x08 == 0  # FNAME flag: no file name stored
    assert int.from_bytes(first[4:8], "little") == 0  # MTIME
    img = nib.Nifti1Image.from_bytes(gzip.decompress(first))
    assert np.array_equal(np.asarray(img.dataobj), np.load(tmp_path / "a.npz")["ct"])
