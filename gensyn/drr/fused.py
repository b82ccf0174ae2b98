"""Optional fused Triton kernel for CUDA (placeholder until written)."""

from __future__ import annotations


def available() -> bool:
    """True when Triton can be imported and CUDA is present."""
    return False


def render(volume, affine, rays, table):  # pragma: no cover - GPU only
    raise RuntimeError("the fused Triton projector is not available on this machine")
