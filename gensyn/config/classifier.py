"""Schema of the ``classifier`` group: the chest X-ray classifier."""

from dataclasses import dataclass


@dataclass
class ClassifierConfig:
    """``name``: densenet121 (the study's model) or small_cnn (fast CPU demo)."""

    name: str = "densenet121"
