"""Every stage's run hash (and the composed config) for a set of override variants, as JSON.

Run before and after a refactoring that must keep run folders, and compare the two files:
``PYTHONPATH=$PWD python scripts/stage_hashes.py before.json``.
"""

import json
import os
import sys

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from gensyn.config import register_configs
from gensyn.core.registry import load_stages
from gensyn.core.runs import stage_hash

register_configs()
stages = sorted(load_stages())
VARIANTS = [
    [],
    ["profile=tiny"],
    ["experiment=thesis"],
    ["projector=deepdrr"],
    ["projector=pa_chest", "carm_pose=grid"],
    ["carm_pose=random", "projector.photon_count=1000"],
    ["ct_dataset=radchest", "dataset=padchest"],
    ["ct_dataset=lidc_idri", "dataset=chestxray14"],
    ["ct_dataset=imageng"],
    ["dataset=folder", "ct_dataset=folder"],
    ["projector=mobile_carm_wide", "projector.mode=mono", "projector.method=joseph"],
    ["reader_study.blinding.framing=centre", "reader_study.uncertain_as=exclude"],
]
out = {}
root = "/nonexistent/gensyn-root"  # hashes are relative to paths.*: any root gives the same
for v in VARIANTS:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.abspath("conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.root_dir={root}", "logger=none", *v])
    key = " ".join(v) or "<default>"
    hs = {}
    for s in stages:
        try:
            hs[s] = stage_hash(cfg, s)
        except Exception as e:
            hs[s] = f"ERR {type(e).__name__}: {e}"
    out[key] = {
        "hashes": hs,
        "config": OmegaConf.to_container(cfg, resolve=False, enum_to_str=True),
    }
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
print(len(stages), "stages", len(VARIANTS), "variants")
