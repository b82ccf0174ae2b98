"""Run hashes are pinned: a refactor (moving modules, declaring settings elsewhere) must not
rename anyone's run folders.

The hashes below were computed on the code before issue 38's moves (commit 814a7ee) with
``runs.stage_hash`` of the composed config. A hash depends on the config values a stage
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
    "classify": "3803d62ae2d2",
    "convert": "b2f303064165",
    "download": "26bec28ca1fc",
    "drr": "5f6b90d072b9",
    "export": "f48999c04e06",
    "gan_train": "29473e1bb209",
    "gan_translate": "01930e4d7b66",
    "pipeline": "aab9937dd707",
    "predict": "a629cf5fc63a",
    "prepare_xrays": "06d8c357f6c7",
    "reader_study_build": "b2709735a0f9",
    "reader_study_serve": "8c4a1ec24e8d",
    "synthex_prep": "a487ad948951",
}
# the stages whose inputs sampling=drr_5 seed=3 changes; the others keep their DEMO hash
DRR_5_SEED_3 = {
    "classify": "d0c6f40ad9b8",
    "pipeline": "6fffffb5a86e",
    "predict": "678260d494de",
    "reader_study_build": "6c5875d5eeb1",
    "reader_study_serve": "ba4e7c0de4fd",
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
    hashed = sorted(name for name, spec in load_stages().items() if spec.hashed)
    assert hashed == sorted(expected), "a stage was added or removed: pin its hash here"
    got = {name: stage_hash(cfg, name) for name in hashed}  # type: ignore[arg-type]
    changed = {n: f"{expected[n]} -> {h}" for n, h in got.items() if h != expected[n]}
    assert not changed, f"run hashes changed (users' run folders would be renamed): {changed}"
