"""Schema of the ``projector`` group: the DRR renderer and its physics."""

from dataclasses import dataclass


@dataclass
class ProjectorConfig:
    """``name``: torch (GENSYN's own)."""

    name: str = "torch"
    image_size_px: int = 512
