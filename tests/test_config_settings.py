"""Config nodes become science settings through one helper; fields are declared once."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from gensyn.config.generator import GeneratorConfig
from gensyn.config.settings import to_settings
from gensyn.gan.settings import CycleGANSettings


@dataclasses.dataclass
class _Needs:
    size: int
    tags: list[str] = dataclasses.field(default_factory=list)
    scale: float = 1.0


def test_a_config_node_becomes_settings_with_plain_values() -> None:
    node = OmegaConf.create({"size": 4, "tags": ["a", "b"], "name": "ignored", "other": 1})
    got = to_settings(node, _Needs)
    assert got == _Needs(size=4, tags=["a", "b"], scale=1.0)
    assert type(got.tags) is list  # a plain list, not a ListConfig


def test_interpolations_are_resolved_and_extra_values_win() -> None:
    node = OmegaConf.create({"base": 3, "size": "${base}", "scale": 2.0})
    assert to_settings(node, _Needs, scale=0.5) == _Needs(size=3, scale=0.5)
    assert to_settings({"size": 7}, _Needs) == _Needs(size=7)


def test_mistakes_are_errors() -> None:
    with pytest.raises(KeyError, match="scael"):
        to_settings({"size": 1}, _Needs, scael=2.0)
    with pytest.raises(TypeError):
        to_settings({"scale": 2.0}, _Needs)  # size has no default and no value
    with pytest.raises(TypeError, match="not a dataclass"):
        to_settings({"size": 1}, dict)


def test_generator_schema_is_the_gan_settings_plus_its_name() -> None:
    schema = {f.name for f in dataclasses.fields(GeneratorConfig)}
    settings = {f.name for f in dataclasses.fields(CycleGANSettings)}
    assert schema == settings | {"name"}
    cfg = OmegaConf.merge(OmegaConf.structured(GeneratorConfig), {"ngf": 8, "n_epochs": 3})
    opts = to_settings(cfg, CycleGANSettings)
    assert (opts.ngf, opts.n_epochs, opts.arch) == (8, 3, "resnet_9blocks")


# The projector, carm_pose, reader-study blinding, convert and X-ray schemas are (or extend) the
# science packages' settings: every science field is a schema field of the same default, and the
# schema declares nothing the science class declares again.
SCIENCE_SCHEMAS = [
    (
        "gensyn.config.projector",
        "ProjectorConfig",
        "gensyn.drr.settings",
        "ProjectorSettings",
        set(),
    ),
    ("gensyn.config.carm_pose", "CarmPoseConfig", "gensyn.drr.poses", "PoseSettings", set()),
    (
        "gensyn.config.reader_study",
        "BlindingConfig",
        "gensyn.reader.blinding",
        "BlindingParams",
        None,
    ),
    ("gensyn.config.reader_study", "BlindingConfig", "gensyn.reader.audit", "AuditParams", None),
    (
        "gensyn.config.reader_study",
        "ReaderServerConfig",
        "gensyn.reader.settings",
        "ServerSettings",
        {"data_root"},
    ),
    ("gensyn.config.dataset", "ConvertConfig", "gensyn.data.ct.readers", "NpzOptions", None),
    ("gensyn.config.dataset", "XrayConfig", "gensyn.data.xray.prep", "PrepOptions", None),
    (
        "gensyn.config.dataset",
        "DemoDataConfig",
        "gensyn.data.phantom.demo",
        "DemoSizes",
        {"num_workers"},
    ),
]


@pytest.mark.parametrize(
    ("schema_mod", "schema", "science_mod", "science", "extra"), SCIENCE_SCHEMAS
)
def test_schemas_derive_from_the_science_settings(
    schema_mod: str, schema: str, science_mod: str, science: str, extra: set[str] | None
) -> None:
    import importlib
    import inspect

    schema_cls = getattr(importlib.import_module(schema_mod), schema)
    science_cls = getattr(importlib.import_module(science_mod), science)
    assert issubclass(schema_cls, science_cls)
    own = set(inspect.get_annotations(schema_cls))
    assert not own & {f.name for f in dataclasses.fields(science_cls)}  # nothing declared twice
    if extra is not None:  # the schema adds exactly these keys
        schema_names = {f.name for f in dataclasses.fields(schema_cls)}
        assert schema_names == {f.name for f in dataclasses.fields(science_cls)} | extra


def test_composed_groups_become_the_science_settings(compose) -> None:
    """The real configs map onto the science classes with every value (enums as members)."""
    from gensyn.data.ct.readers import NpzOptions
    from gensyn.data.xray.prep import PrepOptions, XrayWindow
    from gensyn.drr.poses import PoseMode, PoseSettings, pose_set
    from gensyn.drr.settings import ProjectorName, ProjectorSettings
    from gensyn.reader.audit import AuditParams
    from gensyn.reader.blinding import BlindingParams, Framing

    cfg = compose(
        "projector=pa_chest", "projector.name=deepdrr", "carm_pose=grid",
        "reader_study.blinding.framing=centre", "reader_study.blinding.audit_permutations=500",
        "ct_dataset=radchest", "dataset=padchest", "dataset.xray.window=bits",
    )  # fmt: skip
    p = to_settings(cfg.projector, ProjectorSettings)
    assert (p.name, p.geometry, p.kvp, p.filtration_mm_al) == (
        ProjectorName.deepdrr,
        "pa_chest",
        120.0,
        3.0,
    )
    assert p.carm_geometry().source_to_detector_mm == 1800.0
    assert len(pose_set(to_settings(cfg.carm_pose, PoseSettings))) == 25
    assert PoseSettings().mode is PoseMode.center
    b = to_settings(cfg.reader_study.blinding, BlindingParams)
    assert b.framing == Framing.centre and b.window_percentiles == (0.5, 99.5)
    assert to_settings(cfg.reader_study.blinding, AuditParams).audit_permutations == 500
    assert to_settings(cfg.dataset.xray, PrepOptions).window == XrayWindow.bits
    npz = to_settings(cfg.ct_dataset.convert, NpzOptions)
    assert npz.npz_key == cfg.ct_dataset.convert.npz_key and npz.npz_axis_codes == "IPL"


def test_settings_built_in_python_are_checked_against_their_bounds() -> None:
    """check_instance: the bounds declared on the fields, named by the config key."""
    from gensyn.base.bounds import check_instance
    from gensyn.drr.settings import ProjectorSettings
    from gensyn.reader.blinding import BlindingParams

    with pytest.raises(
        ValueError, match=r"^projector.kvp=500.0; allowed: 20 <= projector.kvp <= 300"
    ):
        ProjectorSettings(kvp=500.0)
    with pytest.raises(ValueError, match=r"projector.deepdrr_threads=64; allowed: 1 .. 32"):
        ProjectorSettings(deepdrr_threads=64)
    with pytest.raises(
        ValueError, match=r"bone_min_hu=-900.0; allowed: more than projector.air_max_hu"
    ):
        ProjectorSettings(bone_min_hu=-900.0)
    with pytest.raises(ValueError, match=r"window_percentiles=\[90.0, 10.0\]"):
        ProjectorSettings(window_percentiles=[90.0, 10.0])
    with pytest.raises(ValueError, match=r"window_high_percentile=0.2; allowed: more than"):
        BlindingParams(window_low_percentile=0.5, window_high_percentile=0.2)
    with pytest.raises(ValueError, match=r"projector.bit_depth=12; allowed: 8 or 16"):
        ProjectorSettings(bit_depth=12)
    check_instance(ProjectorSettings(photon_count=0.0, mono_energy_kev=None))  # 0 and None pass
