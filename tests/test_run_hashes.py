"""Run hashes are pinned: a refactor (moving modules, declaring settings elsewhere) must not
rename anyone's run folders.

The hashes below are ``runs.stage_hash`` of the composed config. They changed once in issue
38, on purpose: ``dataset.xray.num_workers`` (a worker count) was hashed into
``prepare_xrays`` by mistake and no longer is, so ``prepare_xrays`` and every stage after it
got new hashes (convert, download, drr and export kept theirs); the module moves and the
settings declared once changed none. A hash depends on the config values a stage
declares and on its upstream hashes, never on where a module lives. Change a value here only
together with a deliberate change of what a stage's result depends on, and say so in the
docs (users' finished runs are then recomputed).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gensyn.core.registry import load_stages
from gensyn.core.runs import stage_hash

DEMO = {  # python launch.py stage=NAME (the default config: the demo)
    "classify": "82a4fa57852e",
    "convert": "b2f303064165",
    "download": "26bec28ca1fc",
    "drr": "5f6b90d072b9",
    "export": "f48999c04e06",
    "gan_train": "39c186db821a",
    "gan_translate": "b2cef775f641",
    "pipeline": "1a23e1dffb33",
    "predict": "4bbdd49284f2",
    "prepare_xrays": "8e50bd7175ff",
    "reader_study_build": "34f9df8b607d",
    "reader_study_serve": "cb1e6c22b2f5",
    "synthex_prep": "e559a4de5f24",
}
# the stages whose inputs sampling=drr_5 seed=3 changes; the others keep their DEMO hash
DRR_5_SEED_3 = {
    "classify": "a3328838fc00",
    "pipeline": "dd887f9ca854",
    "predict": "156b591e4a16",
    "reader_study_build": "0c1e347d4e7a",
    "reader_study_serve": "24f7b790e14a",
}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [((), DEMO), (("sampling=drr_5", "seed=3"), {**DEMO, **DRR_5_SEED_3})],
    ids=["demo", "drr_5_seed_3"],
)
def test_every_stage_keeps_its_run_hash(
    compose: Callable[..., object], overrides: tuple[str, ...], expected: dict[str, str]
) -> None:
    cfg = compose(*overrides)
    hashed = sorted(  # GENSYN's stages, not those other test modules register
        name
        for name, spec in load_stages().items()
        if spec.hashed and spec.func.__module__.startswith("gensyn.stages.")
    )
    assert hashed == sorted(expected), "a stage was added or removed: pin its hash here"
    got = {name: stage_hash(cfg, name) for name in hashed}  # type: ignore[arg-type]
    changed = {n: f"{expected[n]} -> {h}" for n, h in got.items() if h != expected[n]}
    assert not changed, f"run hashes changed (users' run folders would be renamed): {changed}"
