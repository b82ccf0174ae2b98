"""SyntheX stages on the tiny profile: synthex_prep → gan_train → gan_translate.

The stage functions run on hand-made upstream folders (a DRR manifest with relative paths,
an X-ray table with a test split), so these tests do not depend on the drr and
prepare_xrays stages; the end-to-end test through ``execute`` runs the real upstreams.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gensyn.base import io
from gensyn.core.run_context import RunContext


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny networks run faster without thread hand-offs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_drr_run(folder: Path, n_ct: int = 5, views: int = 3, size: int = 64) -> pd.DataFrame:
    """A drr-like run folder: smooth 'DRRs' and manifest.csv with paths relative to it."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size] / size
    rows = []
    for c in range(n_ct):
        for v in range(views):
            img = np.exp(-((yy - 0.5) ** 2 + (xx - rng.uniform(0.3, 0.7)) ** 2) / 0.08)
            rel = Path("images") / f"ct{c:02d}" / f"view{v}.png"
            io.write_image(folder / rel, io.to_uint(img, 8, 0.0, 1.0))
            rows.append(
                {
                    "path": str(rel),
                    "ct_id": f"ct{c:02d}",
                    "patient_id": f"p{c:02d}",
                    "is_center": v == 0,
                    "alpha_deg": 5.0 * v,
                    "beta_deg": 0.0,
                }
            )
    table = pd.DataFrame(rows)
    io.write_table(folder / "manifest.csv", table)
    return table


def make_xray_run(folder: Path, n: int = 20, size: int = 64) -> pd.DataFrame:
    """A prepare_xrays-like folder: noisy bright 'radiographs', xrays.csv with a test split."""
    rng = np.random.default_rng(2)
    rows = []
    for i in range(n):
        img = 0.4 + 0.4 * rng.random() + rng.normal(0, 0.08, (size, size))
        path = folder / "images" / f"x{i:03d}.png"
        io.write_image(path, io.to_uint(img, 8, 0.0, 1.0))
        rows.append(
            {
                "image_id": f"x{i:03d}",
                "patient_id": f"q{i // 2:03d}",
                "path": str(path),
                "split": "test" if i >= n - 4 else "train",
            }
        )
    table = pd.DataFrame(rows)
    io.write_table(folder / "xrays.csv", table)
    return table


def _ctx(cfg: object, name: str, out: Path, upstream: dict[str, Path]) -> RunContext:
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(name, out, "test", cfg, upstream)  # type: ignore[arg-type]


def test_stages_on_hand_made_upstreams(tmp_path: Path, compose: Callable[..., object]) -> None:
    from gensyn.stages import gan_train, gan_translate, synthex_prep

    cfg = compose("profile=tiny", "device=cpu", "num_workers=0", "generator.heldout_size=6")
    drr_dir, xray_dir = tmp_path / "drr", tmp_path / "xrays"
    drrs = make_drr_run(drr_dir)
    xrays = make_xray_run(xray_dir)

    prep = _ctx(cfg, "synthex_prep", tmp_path / "prep", {"drr": drr_dir, "prepare_xrays": xray_dir})
    synthex_prep.run(cfg, prep)  # type: ignore[arg-type]
    table = io.read_table(prep.out_dir / "domains.csv")
    held = table[(table.domain == "A") & (table.subset == "heldout")]
    train = table[(table.domain == "A") & (table.subset == "train")]
    assert len(held) == 6 and not set(held.group) & set(train.group)  # whole CTs held out
    assert len(train) <= 16
    b = table[table.domain == "B"]
    assert not set(b.path) & set(xrays.loc[xrays.split == "test", "path"])  # no test images
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table.path)

    tr = _ctx(cfg, "gan_train", tmp_path / "train", {"synthex_prep": prep.out_dir})
    gan_train.run(cfg, tr)  # type: ignore[arg-type]
    for rel in (
        "generator_a2b.pt",
        "history.csv",
        "checks.json",
        "figures/histograms.png",
        "figures/before_after.png",
        "samples/epoch_0002.png",
    ):
        assert (tr.out_dir / rel).is_file(), rel
    assert tr.summary["epochs"] == 2
    assert 0.0 <= tr.summary["domain_gap_acc_drr"] <= 1.0
    history = io.read_table(tr.out_dir / "history.csv")
    assert history["lr"].tolist() == pytest.approx([2e-4, 1e-4])

    tl = _ctx(
        cfg, "gan_translate", tmp_path / "translate", {"gan_train": tr.out_dir, "drr": drr_dir}
    )
    gan_translate.run(cfg, tl)  # type: ignore[arg-type]
    manifest = io.read_table(tl.out_dir / "manifest.csv")
    assert len(manifest) == len(drrs)
    assert manifest["ct_id"].tolist() == drrs["ct_id"].tolist()
    assert manifest["alpha_deg"].tolist() == drrs["alpha_deg"].tolist()
    # the DRRs' own layout (images/<ct>/<view>.png), not images/images/<ct>/...
    assert manifest["path"].tolist() == drrs["path"].tolist()
    for rel, src in zip(manifest["path"], manifest["source_drr"], strict=True):
        out = tl.out_dir / rel
        assert io.read_image(out).shape == io.read_image(src).shape == (64, 64)
        assert io.read_image(out).dtype == np.uint8
    assert tl.summary["translated_now"] == len(drrs)
    # resumable: a second run finds every image and translates none
    again = _ctx(
        cfg, "gan_translate", tmp_path / "translate", {"gan_train": tr.out_dir, "drr": drr_dir}
    )
    gan_translate.run(cfg, again)  # type: ignore[arg-type]
    assert again.summary["translated_now"] == 0


def test_missing_inputs_give_clear_errors(tmp_path: Path, compose: Callable[..., object]) -> None:
    from gensyn.stages import gan_translate, synthex_prep

    cfg = compose("profile=tiny", "device=cpu", "generator.heldout_size=6")
    drr_dir, xray_dir = tmp_path / "drr", tmp_path / "xrays"
    make_drr_run(drr_dir, n_ct=2, views=1)
    xray_dir.mkdir()
    prep = _ctx(cfg, "synthex_prep", tmp_path / "prep", {"drr": drr_dir, "prepare_xrays": xray_dir})
    with pytest.raises(FileNotFoundError, match="no X-ray table"):
        synthex_prep.run(cfg, prep)  # type: ignore[arg-type]
    io.write_table(
        xray_dir / "xrays.csv", pd.DataFrame({"image_id": [], "patient_id": [], "path": []})
    )
    with pytest.raises(ValueError, match="domain B is empty"):
        synthex_prep.run(cfg, prep)  # type: ignore[arg-type]
    make_xray_run(xray_dir, n=10)
    with pytest.raises(ValueError, match="heldout_size"):  # 2 DRRs, 6 held out
        synthex_prep.run(cfg, prep)  # type: ignore[arg-type]
    tl = _ctx(
        cfg, "gan_translate", tmp_path / "tl", {"gan_train": tmp_path / "nope", "drr": drr_dir}
    )
    with pytest.raises(FileNotFoundError, match=r"generator_a2b\.pt does not exist"):
        gan_translate.run(cfg, tl)  # type: ignore[arg-type]


def _demo_ready() -> bool:
    if importlib.util.find_spec("gensyn.data.phantom.demo") is None:
        return False
    import gensyn.data.phantom.demo as demo

    return all(hasattr(demo, f) for f in ("convert", "prepare_xrays"))


@pytest.mark.slow
@pytest.mark.skipif(
    not _demo_ready(), reason="demo data (gensyn.data.phantom.demo) not complete yet"
)
def test_end_to_end_tiny(launch: Callable[..., object], gensyn_root: Path) -> None:
    """python launch.py stage=gan_translate profile=tiny: demo data → DRRs → GAN → SyntheX."""
    launch("stage=gan_translate", "profile=tiny", "logger=none", "device=cpu")
    manifests = list(gensyn_root.rglob("gan_translate/*/manifest.csv"))
    assert len(manifests) == 1
    manifest = io.read_table(manifests[0])
    drr_manifest = io.read_table(next(gensyn_root.rglob("drr/*/manifest.csv")))
    assert len(manifest) == len(drr_manifest) > 0
    assert all((manifests[0].parent / p).is_file() for p in manifest["path"])
    assert set(manifest["ct_id"]) == set(drr_manifest["ct_id"])
    train = next(gensyn_root.rglob("gan_train/*/summary.json"))
    assert "domain_gap_acc_translated" in io.read_json(train)
