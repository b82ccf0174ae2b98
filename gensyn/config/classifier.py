"""Schema of the ``classifier`` group: the chest X-ray classifier and how it is trained.

The fields are :class:`gensyn.classify.settings.ClassifierSettings` (declared once, there,
with their defaults, bounds, allowed values and whether they are hashed). Stages turn
``cfg.classifier`` into the plain settings with :func:`gensyn.config.settings.to_settings`.
"""

from dataclasses import dataclass

from gensyn.classify.settings import (
    ClassifierName,
    ClassifierSettings,
    ClassWeighting,
    DecodeMode,
    FeatureCache,
    LrSchedule,
    Precision,
    Schedule,
)

__all__ = [
    "ClassWeighting",
    "ClassifierConfig",
    "ClassifierName",
    "DecodeMode",
    "FeatureCache",
    "LrSchedule",
    "Precision",
    "Schedule",
]


@dataclass
class ClassifierConfig(ClassifierSettings):
    """The ``classifier`` group: exactly the classifier's settings."""
