"""Blinded study builder: selection is seeded, outputs carry nothing but content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from gensyn.reader.blinding import (
    BlindingParams,
    air_mask,
    inscribed_box,
    remove_markers,
    strip_borders,
    working_copy,
)
from gensyn.reader.build import (
    BlindingLeakError,
    Source,
    build_study,
    check_blinded,
    png_chunk_types,
)

SECRET = "SOURCE-IS-DRR-centre-view"


def _chest(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random 'X-ray' in [0, 1]: sums of Gaussian blobs, no flat rows."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.2 * yy + 0.1 * xx
    for _ in range(6):
        cy, cx, s = rng.random(3)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * s))
    return (img - img.min()) / (img.max() - img.min())


def make_sources(root: Path, n_per_source: int = 6) -> list[Source]:
    """Three sources that differ in every non-content way a leak could come from."""
    rng = np.random.default_rng(7)
    specs = [
        ("xray16", "real"),  # 16-bit PNG with a text chunk, portrait
        ("drr_rgb", "fake"),  # 8-bit RGB JPEG, landscape
        ("synthex_pad", "fake"),  # 8-bit grey PNG with black padding border
    ]
    for name, _ in specs:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_source):
            if name == "xray16":
                pix = (_chest(rng, 90, 70) * 65535).astype(np.uint16)
                info = PngImagePlugin.PngInfo()
                info.add_text("Comment", SECRET)
                Image.fromarray(pix).save(folder / f"{SECRET}_{i}.png", pnginfo=info)
            elif name == "drr_rgb":
                pix = (_chest(rng, 60, 80) * 255).astype(np.uint8)
                Image.fromarray(np.stack([pix] * 3, axis=-1)).save(
                    folder / f"drr_{i}.jpg", quality=95
                )
            else:
                pix = np.zeros((100, 100), dtype=np.uint8)
                pix[15:85, 10:90] = (_chest(rng, 70, 80) * 200 + 30).astype(np.uint8)
                Image.fromarray(pix).save(folder / f"synthex_{i}.png")
    return [Source(name, truth, root / name, pattern="*.*") for name, truth in specs]


def test_blinded_images_look_alike_and_key_is_separate(tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "src")
    params = BlindingParams(image_size_px=48)
    key = build_study(sources, 4, tmp_path / "study", seed=3, params=params)

    images = sorted((tmp_path / "study" / "images").glob("*"))
    assert len(images) == 12 and len(key) == 12
    assert key["source"].value_counts().to_dict() == {"xray16": 4, "drr_rgb": 4, "synthex_pad": 4}
    assert set(key.loc[key["source"] == "xray16", "truth"]) == {"real"}
    assert check_blinded(tmp_path / "study" / "images", 48) == []
    for path in images:
        data = path.read_bytes()
        assert set(png_chunk_types(data)) == {"IHDR", "IDAT", "IEND"}
        assert SECRET.encode() not in data
        with Image.open(path) as img:
            assert img.size == (48, 48) and img.mode == "L"
            pix = np.asarray(img)
        assert pix.min() == 0 and pix.max() == 255  # one intensity window for every source
    # the only files next to the images are the images; the key lives elsewhere
    assert {p.suffix for p in images} == {".png"}
    assert (tmp_path / "study" / "key" / "answer_key.csv").is_file()
    audit = pd.read_csv(tmp_path / "study" / "key" / "blinding_audit.csv")
    assert len(audit) == 3 and not audit["judged"].any()  # 4 per source: reported, not judged
    features = pd.read_csv(tmp_path / "study" / "key" / "blinding_features.csv")
    assert set(features["feature"]) >= {"mean", "border_mean", "corner_max", "field_fraction"}
    assert features["separation"].between(0.5, 1.0).all()
    assert not any(SECRET in p.name for p in images)


def test_padding_border_is_cut_off(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    content = _chest(rng, 40, 30)
    padded = np.zeros((70, 60))
    padded[10:50, 20:50] = content + 0.5
    assert strip_borders(padded, 0.01).shape == (40, 30)


def test_rotated_collimation_with_bright_frame_is_cropped_but_dark_lungs_are_not() -> None:
    rng = np.random.default_rng(1)
    h, w = 120, 100
    content = 0.3 + 0.7 * _chest(rng, h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    # a field tilted by ~3 degrees, 12-18 px of black shutter, a 2 px bright frame outside it
    field = (np.abs((yy - 60) + 0.05 * (xx - 50)) < 45) & (
        np.abs((xx - 50) - 0.05 * (yy - 60)) < 36
    )
    img = np.where(field, content, 0.0)
    img[:2], img[-2:], img[:, :2], img[:, -2:] = 0.9, 0.9, 0.9, 0.9
    norm, factor = working_copy(img)
    assert factor == 1
    r0, r1, c0, c1 = inscribed_box(air_mask(norm, 0.05))
    cut = img[r0:r1, c0:c1]
    assert cut.shape[0] <= 92 and cut.shape[1] <= 74  # the black band is gone ...
    assert cut.shape[0] >= 76 and cut.shape[1] >= 58  # ... and not much more
    assert (cut <= 0.05).mean() < 0.02
    # a tight DRR: the darkest lungs, crossed by ribs, touching the edges, no shutter: no cut
    drr = 0.2 + 0.6 * _chest(rng, h, w)
    ribs = np.where((yy // 4) % 2 == 0, 0.25, 0.0)
    drr[35:83, :25] = ribs[35:83, :25]  # 40% of each edge column
    drr[35:83, -25:] = ribs[35:83, -25:] + 0.01
    drr_norm, _ = working_copy(drr)
    assert not air_mask(drr_norm, 0.05).any()
    assert inscribed_box(air_mask(drr_norm, 0.05)) == (0, h, 0, w)


def test_corner_marker_is_painted_over_but_bright_anatomy_stays() -> None:
    rng = np.random.default_rng(2)
    img = 0.2 + 0.3 * _chest(rng, 100, 100)
    img[:, 45:55] = 0.95  # spine: bright, long, touches the edges
    img[8:13, 10:14] = 1.0  # an "L" marker: small, isolated, near the corner
    out = remove_markers(img)
    assert out[8:13, 10:14].max() < 0.6
    assert np.array_equal(out[:, 45:55], img[:, 45:55])
    assert np.array_equal(out[30:, :40], img[30:, :40])


def test_selection_is_seeded(tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "src")
    params = BlindingParams(image_size_px=32)
    a = build_study(sources, 3, tmp_path / "a", seed=1, params=params)
    b = build_study(sources, 3, tmp_path / "b", seed=1, params=params)
    c = build_study(sources, 3, tmp_path / "c", seed=2, params=params)
    assert a.equals(b)
    assert sorted(a["original_path"]) != sorted(c["original_path"]) or list(a["image_id"]) != list(
        c["image_id"]
    )
    assert set(a["image_id"]).isdisjoint(c["image_id"])


def test_too_few_images_uses_all_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = make_sources(tmp_path / "src", n_per_source=2)
    key = build_study(
        sources, 3, tmp_path / "study", seed=0, params=BlindingParams(image_size_px=32)
    )
    assert len(key) == 6
    assert "'xray16' has 2 images, fewer than images_per_source=3" in caplog.text


def _framed_sources(root: Path, n: int, collimated: bool) -> list[Source]:
    """Same content for real and fake; real ones padded with dark collimation wedges if asked."""
    rng = np.random.default_rng(5)
    out = []
    for name, truth in (("real", "real"), ("fake", "fake")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            pix = 0.3 + 0.7 * _chest(rng, 64, 64) + 0.02 * rng.standard_normal((64, 64))
            if collimated and truth == "real":
                big = np.full((96, 96), 0.02)
                big[16:80, 16:80] = pix
                yy, xx = np.mgrid[0:96, 0:96]
                big[(yy + xx < 40) | (yy - xx > 56)] = 0.02  # wedges into the field
                pix = big
            Image.fromarray((np.clip(pix, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
        out.append(Source(name, truth, folder, "*.png"))
    return out


def test_audit_stops_a_build_whose_sources_differ_in_framing(tmp_path: Path) -> None:
    params = BlindingParams(image_size_px=48, field_dark_fraction=0.0, framing="centre",
                            match_histograms=False)  # fmt: skip
    leaky = _framed_sources(tmp_path / "leaky", 12, collimated=True)
    with pytest.raises(
        BlindingLeakError,
        match=r"(real vs fake|fake vs real): accuracy 1.00 \(p = 0.0010\), worst feature .*"
        r"limit p <= 0.0250; given away by",
    ):
        build_study(leaky, 12, tmp_path / "a", seed=0, params=params)
    forced = build_study(leaky, 12, tmp_path / "b", seed=0, params=params,
                         force=True)  # fmt: skip
    assert len(forced) == 24 and (tmp_path / "b" / "key" / "blinding_warning.txt").is_file()
    matched = _framed_sources(tmp_path / "matched", 12, collimated=False)
    build_study(matched, 12, tmp_path / "c", seed=0, params=params)  # passes
    audit = pd.read_csv(tmp_path / "c" / "key" / "blinding_audit.csv")
    assert audit["judged"].all() and not audit["fails"].any()


def test_bad_truth_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="truth must be one of"):
        Source("x", "synthetic", tmp_path)
