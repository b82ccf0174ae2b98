"""The real study's configuration: two data sources, study sizes, start-up refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gensyn.app.startup import check_config
from gensyn.base.errors import GensynError


def _job(launch: Callable[..., Any], *overrides: str) -> dict[str, Any]:
    """``python launch.py --cfg job OVERRIDES`` parsed."""
    proc = launch("--cfg", "job", *overrides)
    return yaml.safe_load(proc.stdout)


def test_thesis_experiment_has_study_sizes_and_both_sources(launch: Callable[..., Any]) -> None:
    job = _job(launch, "experiment=thesis", "stage=drr")
    assert job["dataset"]["name"] == "padchest"
    assert job["ct_dataset"]["name"] == "radchest"
    assert job["ct_dataset"]["convert"]["ct_format"] == "npz"
    assert job["dataset"]["xray"]["label_source"] == "padchest"
    assert job["projector"]["image_size_px"] == 512
    assert job["carm_pose"]["mode"] == "random" and job["carm_pose"]["num_random"] == 9
    c = job["classifier"]
    assert (c["name"], c["image_size_px"], c["weights"]) == ("densenet121", 512, "imagenet")
    assert (c["epochs"], c["batch_size"], c["trainable_tail_layers"]) == (30, 128, 9)
    g = job["generator"]
    assert (g["arch"], g["load_size"], g["crop_size"], g["ngf"]) == ("resnet_9blocks", 552, 512, 64)
    assert (g["n_epochs"], g["n_epochs_decay"], g["max_dataset_size"]) == (100, 100, 1024)
    assert job["report"]["test_datasets"] == ["chestxray14"]
    assert job["experiment_name"] == "thesis"


def test_thesis_grid_builds_on_thesis_with_equal_real_exposure(launch: Callable[..., Any]) -> None:
    job = _job(launch, "experiment=thesis_grid")
    assert job["experiment_name"] == "thesis_grid"
    assert job["classifier"]["schedule"] == "real_epochs"
    assert job["classifier"]["synthetic_share"] == 0.5
    assert job["classifier"]["name"] == "densenet121"
    assert (job["dataset"]["name"], job["ct_dataset"]["name"]) == ("padchest", "radchest")


def test_demo_keeps_demo_sources_and_small_sizes(launch: Callable[..., Any]) -> None:
    job = _job(launch)
    assert (job["dataset"]["name"], job["ct_dataset"]["name"]) == ("demo", "demo")
    assert job["classifier"]["name"] == "small_cnn"
    assert job["projector"]["image_size_px"] == 256


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("stage=drr", "ct_dataset=radchest"), "experiment=thesis"),
        (("stage=classify", "dataset=padchest"), "experiment=thesis"),
        (
            ("stage=classify", "experiment=thesis", "classifier.weights=null"),
            "classifier.trainable_tail_layers=-1",
        ),
        (
            ("stage=classify", "experiment=thesis", "classifier.weights=/nonexistent/w.h5"),
            "no such file",
        ),
        (("stage=classify", "split_idx=7"), "split_idx=7; allowed: 0 .. 4"),
        (("stage=drr", "device=gpu"), "device='gpu' is not a device; allowed: auto, cpu, cuda"),
    ],
)
def test_start_up_refusals(
    launch: Callable[..., Any], gensyn_root: Path, overrides: tuple[str, ...], expected: str
) -> None:
    """Each refused before any stage runs: exit 1, one line naming the key, no traceback."""
    proc = launch(*overrides, "logger=none", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stdout + proc.stderr
    assert expected in err
    assert "Traceback" not in err
    assert not (gensyn_root / "workdir" / "runs").exists()  # no stage started


def test_device_cuda_without_gpu_is_refused(launch: Callable[..., Any]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = launch("stage=drr", "device=cuda", "logger=none", check=False)
    assert proc.returncode == 1
    assert "device=cuda but PyTorch sees no CUDA GPU" in proc.stderr + proc.stdout
    assert "scripts/setup.sh --gpu" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("dataset=radchest",), "radchest is a CT data set: use ct_dataset=radchest"),
        (("ct_dataset=padchest",), "padchest is a X-ray data set: use dataset=padchest"),
    ],
)
def test_swapped_source_groups_are_named(
    launch: Callable[..., Any], args: tuple[str, ...], expected: str
) -> None:
    proc = launch("stage=convert", *args, check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr


def test_check_config_accepts_the_study_and_the_demo(compose: Callable[..., Any]) -> None:
    check_config(compose("experiment=thesis"))  # type: ignore[arg-type]
    check_config(compose("experiment=thesis_grid", "profile=tiny"))  # type: ignore[arg-type]
    check_config(compose())  # type: ignore[arg-type]
    check_config(compose("experiment=thesis", "dataset=demo", "ct_dataset=demo"))  # type: ignore[arg-type]
    with pytest.raises(GensynError, match="ct_dataset=lidc_idri with experiment=demo"):
        check_config(compose("ct_dataset=lidc_idri"))  # type: ignore[arg-type]


def test_run_folders_hash_the_right_source(compose: Callable[..., Any]) -> None:
    """convert follows ct_dataset only; prepare_xrays follows dataset only."""
    from gensyn.core.runs import stage_hash

    base = compose("experiment=thesis")
    other_ct = compose("experiment=thesis", "ct_dataset=lidc_idri")
    other_xr = compose("experiment=thesis", "dataset=chestxray14")
    assert stage_hash(base, "convert") != stage_hash(other_ct, "convert")  # type: ignore[arg-type]
    assert stage_hash(base, "convert") == stage_hash(other_xr, "convert")  # type: ignore[arg-type]
    assert stage_hash(base, "prepare_xrays") == stage_hash(other_ct, "prepare_xrays")  # type: ignore[arg-type]
    assert stage_hash(base, "prepare_xrays") != stage_hash(other_xr, "prepare_xrays")  # type: ignore[arg-type]
    assert stage_hash(base, "drr") != stage_hash(other_ct, "drr")  # type: ignore[arg-type]


def test_drr_hashes_the_seed_only_when_it_draws_noise(compose: Callable[..., Any]) -> None:
    from gensyn.core.runs import stage_hash

    def h(*extra: str) -> str:
        cfg = compose("experiment=thesis", "profile=tiny", *extra)
        return stage_hash(cfg, "drr")  # type: ignore[arg-type]

    noisy = "projector.photon_count=1e5"
    assert h("split_seed=0") == h("split_seed=1")
    assert h("split_seed=0", noisy) != h("split_seed=1", noisy)
    # the noise is the data's (split_seed), unless the synthetic images follow the training seed
    assert h("seed=0", noisy) == h("seed=1", noisy)
    per_seed = "synthex_per_seed=true"
    assert h("seed=0", noisy, per_seed) != h("seed=1", noisy, per_seed)
    # real CTs are converted once for every seed; the demo's phantoms are drawn from split_seed
    for key in ("seed", "split_seed"):
        assert stage_hash(compose("experiment=thesis", f"{key}=0"), "convert") == stage_hash(  # type: ignore[arg-type]
            compose("experiment=thesis", f"{key}=1"),
            "convert",  # type: ignore[arg-type]
        )
    assert stage_hash(compose("seed=0"), "convert") == stage_hash(compose("seed=1"), "convert")  # type: ignore[arg-type]
    assert stage_hash(compose("split_seed=0"), "convert") != stage_hash(
        compose("split_seed=1"), "convert"
    )  # type: ignore[arg-type]


def test_training_seeds_share_the_data_and_the_synthetic_images(
    compose: Callable[..., Any],
) -> None:
    """seed=0,1,2 (repeated cross-validation) share the hold-out, folds and, unless
    synthex_per_seed, the CycleGAN; only the classifiers differ. split_seed changes them all."""
    from gensyn.core.runs import stage_hash

    def h(stage: str, *extra: str) -> str:
        cfg = compose("experiment=thesis", "profile=tiny", "sampling=synthex_5", *extra)
        return stage_hash(cfg, stage)  # type: ignore[arg-type]

    for stage in ("prepare_xrays", "convert", "drr", "synthex_prep", "gan_train", "gan_translate"):
        assert h(stage, "seed=0") == h(stage, "seed=1"), stage
        assert h(stage, "split_seed=0") != h(stage, "split_seed=1") or stage in ("convert", "drr")
    assert h("classify", "seed=0") != h("classify", "seed=1")
    assert h("classify", "split_seed=0") != h("classify", "split_seed=1")
    per_seed = "synthex_per_seed=true"
    for stage in ("synthex_prep", "gan_train", "gan_translate", "classify"):
        assert h(stage, "seed=0", per_seed) != h(stage, "seed=1", per_seed), stage
    assert h("prepare_xrays", "seed=0", per_seed) == h("prepare_xrays", "seed=1", per_seed)
