"""Schema of the ``generator`` group: the DRR→X-ray translator (SyntheX CycleGAN).

The fields are :class:`gensyn.gan.settings.CycleGANSettings` (declared once, there); the
schema adds the group's ``name``. Stages turn ``cfg.generator`` into the plain settings with
:func:`gensyn.config.settings.to_settings`.
"""

from dataclasses import dataclass

from gensyn.gan.settings import CycleGANSettings


@dataclass
class GeneratorConfig(CycleGANSettings):
    """``name``: cyclegan."""

    name: str = "cyclegan"
