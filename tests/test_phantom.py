"""Procedural chest CT phantom: anatomy, HU ranges, orientation, findings, determinism."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from gensyn.data.phantom.findings import lobe_map
from gensyn.data.phantom.volume import (
    FINDINGS,
    Phantom,
    Tissue,
    cardiothoracic_ratio,
    generate_phantom,
    heart_volume_ml,
    sample_labels,
    save_phantom_nifti,
)

SEED = 11
NONE = dict.fromkeys(FINDINGS, False)
CUBE = np.ones((3, 3, 3), dtype=bool)  # the 3-tap scanner blur reaches all 26 neighbours


@pytest.fixture(scope="module")
def base() -> Phantom:
    return generate_phantom(SEED, NONE)


@pytest.fixture(scope="module")
def with_finding() -> dict[str, Phantom]:
    return {f: generate_phantom(SEED, {**NONE, f: True}) for f in FINDINGS}


def world(ph: Phantom, mask: np.ndarray) -> np.ndarray:
    """World coordinates (mm, RAS) of the voxels of a mask, (n, 3)."""
    ijk = np.stack(np.nonzero(mask), axis=1).astype(float)
    return nib.affines.apply_affine(ph.affine, ijk)


def test_same_seed_same_volume_and_different_seeds_differ(base: Phantom) -> None:
    again = generate_phantom(SEED, NONE)
    np.testing.assert_array_equal(again.hu, base.hu)
    np.testing.assert_array_equal(again.tissue, base.tissue)
    other = generate_phantom(SEED + 1, NONE)
    assert np.mean(other.hu != base.hu) > 0.3
    assert base.hu.dtype == np.int16 and base.hu.shape == (128, 128, 128)


def test_affine_spacing_orientation_and_known_voxel(base: Phantom) -> None:
    assert nib.aff2axcodes(base.affine) == ("R", "A", "S")
    np.testing.assert_allclose(base.spacing_mm, (2.8, 2.8, 2.6))
    # The volume is centred on the world origin: voxel (0,0,0) sits at -(n-1)/2 * spacing.
    np.testing.assert_allclose(
        nib.affines.apply_affine(base.affine, [0, 0, 0]), [-63.5 * 2.8, -63.5 * 2.8, -63.5 * 2.6]
    )
    np.testing.assert_allclose(nib.affines.apply_affine(base.affine, [10, 20, 30])[2], -33.5 * 2.6)
    # Anatomy agrees with the labels of the axes: heart to the patient's left (-x), liver to
    # the right (+x), spine posterior (-y) of the heart, lungs above the liver (+z).
    heart = world(base, base.tissue == Tissue.HEART).mean(axis=0)
    liver = world(base, base.tissue == Tissue.LIVER).mean(axis=0)
    spine = world(base, base.tissue == Tissue.BONE_CANCELLOUS)
    spine = spine[np.abs(spine[:, 0]) < 15].mean(axis=0)
    lung = world(base, base.tissue == Tissue.LUNG).mean(axis=0)
    assert heart[0] < -5 and liver[0] > 20
    assert spine[1] < heart[1] - 40
    assert lung[2] > liver[2] + 60


def test_tissue_hu_ranges(base: Phantom) -> None:
    hu = base.hu.astype(np.float64)

    def mean(*tissues: Tissue, erode: bool = True) -> float:
        m = base.mask(*tissues)
        if erode:
            m = ndimage.binary_erosion(m)
        assert m.sum() > 50, tissues
        return float(hu[m].mean())

    assert -900 <= mean(Tissue.LUNG, erode=False) <= -700
    assert mean(Tissue.BONE_CORTICAL, Tissue.BONE_CANCELLOUS, erode=False) > 300
    for soft in (Tissue.MUSCLE, Tissue.HEART, Tissue.LIVER, Tissue.BLOOD, Tissue.SPLEEN):
        assert -100 <= mean(soft) <= 100, soft
    assert -150 <= mean(Tissue.FAT) <= -60
    assert mean(Tissue.AIR) < -980
    assert mean(Tissue.GAS) < -900
    # Every anatomical part the issue asks for is present.
    for part in (
        Tissue.LUNG,
        Tissue.HEART,
        Tissue.MEDIASTINUM,
        Tissue.AIRWAY,
        Tissue.CARTILAGE,
        Tissue.DISC,
        Tissue.LIVER,
        Tissue.STOMACH,
        Tissue.BONE_PLATE,
    ):
        assert (base.tissue == part).sum() > 100, part


def test_lungs_have_vessels_tapering_from_the_hila(base: Phantom) -> None:
    """Lung voxels denser than -700 HU (vessels at 2.8 mm partial volume) are commoner medially."""
    lung = ndimage.binary_erosion(base.tissue == Tissue.LUNG, iterations=2)  # no wall contact
    pts = world(base, lung)
    dense = base.hu[lung] > -700
    assert 0.02 < dense.mean() < 0.3
    medial = np.abs(pts[:, 0] + 4) < 60
    assert dense[medial].mean() > 1.3 * dense[~medial].mean()


def _changed(a: Phantom, b: Phantom) -> np.ndarray:
    return a.hu != b.hu


@pytest.mark.parametrize("finding", FINDINGS)
def test_finding_changes_only_its_region(
    finding: str, base: Phantom, with_finding: dict[str, Phantom]
) -> None:
    ph = with_finding[finding]
    region = ph.finding_masks[finding]
    changed = _changed(ph, base)
    assert changed.sum() > 2000, "the finding must be visible"
    # The scanner blur spreads a change by at most one voxel beyond the region.
    grown = ndimage.binary_dilation(region, structure=CUBE)
    assert not (changed & ~grown).any()
    # Only lung (and, for cardiomegaly, mediastinum) may become something else.
    allowed = {int(Tissue.LUNG), int(Tissue.MEDIASTINUM), int(Tissue.HEART)}
    moved = ph.tissue != base.tissue
    assert set(np.unique(base.tissue[moved]).tolist()) <= allowed


def test_effusion_is_dependent_basal_fluid(base: Phantom, with_finding: dict[str, Phantom]) -> None:
    ph = with_finding["Effusion"]
    fluid = ph.tissue == Tissue.EFFUSION
    assert fluid.sum() > 1000
    assert 0 <= ph.hu[ndimage.binary_erosion(fluid, structure=CUBE)].mean() <= 40
    f, lung = world(ph, fluid), world(base, base.tissue == Tissue.LUNG)
    assert f[:, 1].mean() < lung[:, 1].mean() - 20  # posterior (supine: dependent)
    assert f[:, 2].mean() < lung[:, 2].mean() - 20  # basal
    side = ph.info["findings"]["Effusion"]["side"]  # type: ignore[index]
    if side in ("R", "L"):
        assert np.all(np.sign(f[:, 0] + 4) == (1 if side == "R" else -1))


def test_pneumothorax_is_vessel_free_air_at_apex_and_wall(
    base: Phantom, with_finding: dict[str, Phantom]
) -> None:
    ph = with_finding["Pneumothorax"]
    air = ph.tissue == Tissue.PNEUMOTHORAX
    assert air.sum() > 2000
    assert ph.hu[ndimage.binary_erosion(air, structure=CUBE)].max() < -900  # no vessels in the air
    side = ph.info["findings"]["Pneumothorax"]["side"]  # type: ignore[index]
    sign = 1 if side == "R" else -1
    a = world(ph, air)
    same_side = world(base, base.tissue == Tissue.LUNG)
    same_side = same_side[np.sign(same_side[:, 0] + 4) == sign]
    assert np.all(np.sign(a[:, 0] + 4) == sign)
    assert np.abs(a[:, 0]).mean() > np.abs(same_side[:, 0]).mean()  # lateral
    assert a[:, 2].max() >= same_side[:, 2].max() - 3  # includes the apex


def test_atelectasis_collapses_one_lobe_with_volume_loss(
    base: Phantom, with_finding: dict[str, Phantom]
) -> None:
    ph = with_finding["Atelectasis"]
    dense = ph.tissue == Tissue.ATELECTASIS
    assert dense.sum() > 500
    assert ph.hu[ndimage.binary_erosion(dense, structure=CUBE)].mean() > -100
    lobe = ph.info["findings"]["Atelectasis"]["lobe"]  # type: ignore[index]
    lobe_masks = lobe_map_of(ph)
    assert np.all(lobe_masks[lobe][dense])
    lung_before = (base.tissue == Tissue.LUNG).sum()
    lung_after = (ph.tissue == Tissue.LUNG).sum()
    assert lung_before - lung_after == dense.sum()  # aerated lung lost that volume


def lobe_map_of(ph: Phantom) -> dict[str, np.ndarray]:
    """Full-volume lobe masks of a phantom, rebuilt from its recorded anatomy parameters."""
    from gensyn.data.phantom.anatomy import AnatomyParams
    from gensyn.data.phantom.shapes import Grid

    params = AnatomyParams(**ph.info["anatomy"])  # type: ignore[arg-type]
    grid = Grid(ph.hu.shape, ph.spacing_mm)  # type: ignore[arg-type]
    return {k: np.broadcast_to(v, ph.hu.shape) for k, v in lobe_map(grid, params).items()}


def test_cardiomegaly_raises_ctr_above_half(
    base: Phantom, with_finding: dict[str, Phantom]
) -> None:
    ph = with_finding["Cardiomegaly"]
    assert cardiothoracic_ratio(base.tissue) < 0.5 < cardiothoracic_ratio(ph.tissue)
    assert heart_volume_ml(ph) > 1.3 * heart_volume_ml(base)
    # CTR against a measurement made another way: extents of the heart and lungs in mm.
    heart_x = world(ph, ph.tissue == Tissue.HEART)[:, 0]
    lung_pts = world(ph, ph.tissue == Tissue.LUNG)
    widest = max(
        np.ptp(lung_pts[np.isclose(lung_pts[:, 2], z), 0]) for z in np.unique(lung_pts[:, 2])
    )
    assert abs((np.ptp(heart_x) + 2.8) / (widest + 2.8) - cardiothoracic_ratio(ph.tissue)) < 0.02


def test_ctr_of_normal_hearts_below_half() -> None:
    for seed in range(3):
        assert cardiothoracic_ratio(generate_phantom(100 + seed, NONE).tissue) < 0.5


def test_pneumonia_is_patchy_consolidation_in_one_lobe(
    base: Phantom, with_finding: dict[str, Phantom]
) -> None:
    ph = with_finding["Pneumonia"]
    cons = ph.tissue == Tissue.CONSOLIDATION
    assert cons.sum() > 300
    values = ph.hu[cons].astype(float)
    assert -700 <= values.mean() <= 40
    assert values.std() > 60  # patchy: ground glass to solid
    lobe = ph.info["findings"]["Pneumonia"]["lobe"]  # type: ignore[index]
    assert np.all(lobe_map_of(ph)[lobe][cons])


def test_sample_labels_deterministic_and_prevalence() -> None:
    assert sample_labels(5) == sample_labels(5)
    assert not any(sample_labels(5, 0.0).values())
    assert all(sample_labels(5, 1.0).values())
    draws = np.array([[sample_labels(s, 0.3)[f] for f in FINDINGS] for s in range(1000)])
    # Binomial(1000, 0.3): mean 300, sd 14.5; allow 4 sd per finding.
    assert np.all(np.abs(draws.sum(axis=0) - 300) < 58)
    with pytest.raises(ValueError, match="Effusion"):
        sample_labels(1, {"Efusion": 0.3})
    with pytest.raises(ValueError, match="unknown finding"):
        generate_phantom(1, {"Pneumonie": True})


def test_labels_none_samples_them(base: Phantom) -> None:
    ph = generate_phantom(
        7, None, prevalence=1.0, shape_vox=(48, 48, 48), spacing_mm=(7.5, 7.5, 7.0)
    )
    assert all(ph.labels.values())
    assert set(ph.finding_masks) == set(FINDINGS)


def test_nifti_round_trip(base: Phantom, tmp_path: Path) -> None:
    path = save_phantom_nifti(base, tmp_path / "ct.nii.gz")
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), base.hu)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, base.affine)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.header["sform_code"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20, 28))
def test_every_finding_is_inserted_and_confined_for_many_patients(seed: int) -> None:
    """All five findings together, on several patients: each present, nothing outside."""
    plain = generate_phantom(seed, NONE)
    sick = generate_phantom(seed, dict.fromkeys(FINDINGS, True))
    regions = np.zeros(plain.hu.shape, dtype=bool)
    for finding in FINDINGS:
        assert sick.finding_masks[finding].sum() > 200, finding
        regions |= sick.finding_masks[finding]
    for tissue in (Tissue.EFFUSION, Tissue.PNEUMOTHORAX, Tissue.ATELECTASIS, Tissue.CONSOLIDATION):
        assert (sick.tissue == tissue).sum() > 100, tissue
    assert cardiothoracic_ratio(sick.tissue) > 0.5 > cardiothoracic_ratio(plain.tissue)
    grown = ndimage.binary_dilation(regions, structure=CUBE)
    assert not (_changed(sick, plain) & ~grown).any()
