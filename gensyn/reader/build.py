"""Build a blinded reader study: pick images per source, make them look alike, write a key.

A reader must judge an image by its content only. Everything else that could tell the
source apart is removed or made identical:

* file names -> random ids (``<10 hex>.png``);
* metadata -> none: the PNG holds only IHDR, IDAT and IEND chunks (no text, time, gamma);
* size, bit depth, colour -> every image ``image_size_px`` square, 8-bit grey;
* borders -> constant rows/columns at the edges (padding) are cut off, then everything
  outside the rectangle inside the exposed field (air around the body, black shutter
  wedges of a tilted collimator), then a fixed margin;
* framing -> the square around the lungs (same anatomy, same scale as a tight DRR crop),
  then one effective resolution (``detail_px``);
* burned-in markers -> small isolated bright blobs near the edges are painted over;
* intensities -> every image matched to the study's pooled histogram, one percentile
  window mapped to 0..255, one encoder.

Then an audit (:mod:`gensyn.reader.audit`) tests whether simple features still tell a real
source from a fake one (permutation tests); if so the build stops (unless forced). The answer key (image id ->
source, truth, original file) is written to a separate folder that the serving code never
reads from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gensyn.base import io
from gensyn.reader.audit import AuditParams, audit_sources, failure_message, feature_table
from gensyn.reader.blinding import (
    BlindingParams,
    frame_pixels,
    match_histogram,
    pooled_quantiles,
    to_display,
)

if TYPE_CHECKING:
    import pandas as pd


class Truth(StrEnum):
    """What a source's images are: all ``real`` X-rays or all synthetic (``fake``)."""

    real = "real"
    fake = "fake"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: PNG chunk types a blinded image may contain; anything else could carry metadata.
ALLOWED_PNG_CHUNKS = frozenset({"IHDR", "IDAT", "IEND"})
KEY_COLUMNS = ("image_id", "source", "truth", "original_path", "sha256")
log = logging.getLogger(__name__)


class BlindingLeakError(ValueError):
    """Simple image features tell a real source from a fake one: the study is not blind."""


@dataclass(frozen=True)
class Source:
    """One image source of the study: a folder of images that are all ``truth``."""

    name: str
    truth: Truth  # real | fake
    folder: Path
    pattern: str = "**/*.png"

    def __post_init__(self) -> None:
        if self.truth not in tuple(Truth):
            raise ValueError(
                f"source {self.name!r}: truth must be one of {[str(t) for t in Truth]}, "
                f"got {self.truth!r}"
            )
        object.__setattr__(self, "truth", Truth(self.truth))


def list_images(source: Source) -> list[Path]:
    """All image files of ``source`` (sorted, so the seeded choice is reproducible)."""
    if not source.folder.is_dir():
        raise FileNotFoundError(f"source {source.name!r}: folder {source.folder} does not exist")
    files = sorted(
        p for p in source.folder.glob(source.pattern) if p.suffix.lower() in IMAGE_SUFFIXES
    )
    return [p for p in files if not p.name.endswith(io.PARTIAL_SUFFIX + p.suffix)]


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG file, in order (raises ValueError if not a PNG)."""
    if data[:8] != io.PNG_SIGNATURE:
        raise ValueError("not a PNG file (bad signature)")
    types, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8].decode("latin-1"))
        pos += 12 + length
    return types


def random_ids(n: int, rng: np.random.Generator, hex_digits: int = 10) -> list[str]:
    """``n`` distinct random hex ids (drawn from ``rng``, so seeded)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        value = "".join(f"{b:02x}" for b in rng.integers(0, 256, size=(hex_digits + 1) // 2))
        value = value[:hex_digits]
        if value not in seen:
            seen.add(value)
            ids.append(value)
    return ids


def build_study(
    sources: Sequence[Source],
    images_per_source: int,
    out_dir: str | os.PathLike[str],
    seed: int,
    params: BlindingParams | None = None,
    audit: AuditParams | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Pick ``images_per_source`` images per source (seeded), blind them, audit, write.

    A source with fewer images gives all it has (logged). Writes ``out_dir/images/<id>.png``
    (what readers see) and, never served, ``out_dir/key/answer_key.csv`` (columns
    :data:`KEY_COLUMNS`), ``key/blinding_audit.csv`` (per pair of sources) and
    ``key/blinding_features.csv``. Returns the key, rows in random order. Raises
    :class:`BlindingLeakError` naming the giveaway features when the audit's permutation
    tests tell a judged real/fake pair apart (:mod:`gensyn.reader.audit`; ``force``:
    a warning in ``key/blinding_warning.txt`` instead); ValueError for an empty source or
    duplicate names.
    """
    import pandas as pd

    params = params or BlindingParams()
    audit = audit or AuditParams()
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"reader study source names must be unique, got {names}")
    if images_per_source < 1:
        raise ValueError(f"images_per_source must be >= 1, got {images_per_source}")
    rng = np.random.default_rng(seed)
    picked: list[tuple[Source, Path]] = []
    for source in sources:
        files = list_images(source)
        if not files:
            raise ValueError(
                f"source {source.name!r} has no images matching {source.pattern!r} in {source.folder}"
            )
        if len(files) < images_per_source:
            log.warning("reader study: source %r has %d images, fewer than images_per_source=%d; "
                        "using all of them", source.name, len(files), images_per_source)  # fmt: skip
        chosen = rng.choice(len(files), size=min(images_per_source, len(files)), replace=False)
        picked += [(source, files[i]) for i in sorted(chosen)]

    order = rng.permutation(len(picked))  # key rows (and ids) carry no source order
    ids = random_ids(len(picked), rng)
    framed = [frame_pixels(io.read_image(picked[k][1]), params) for k in order]
    if params.match_histograms:
        reference = pooled_quantiles(framed)
        framed = [match_histogram(f, reference) for f in framed]
    out = Path(out_dir)
    rows, shown = [], []
    for image_id, k, pix in zip(ids, order, framed, strict=True):
        source, path = picked[k]
        target = out / "images" / f"{image_id}.png"
        shown.append(to_display(pix, params))
        io.write_image(target, shown[-1])
        rows.append(
            {
                "image_id": image_id,
                "source": source.name,
                "truth": source.truth,
                "original_path": str(path),
                "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
            }
        )
    key = pd.DataFrame(rows, columns=list(KEY_COLUMNS))
    problems = check_blinded(out / "images", params.image_size_px)
    if problems:
        raise ValueError("blinded images differ in more than content:\n" + "\n".join(problems))
    io.write_table(out / "key" / "answer_key.csv", key)
    pairs, per_feature = audit_sources(
        feature_table(shown, list(key["source"])), {s.name: s.truth for s in sources}, audit, seed
    )
    io.write_table(out / "key" / "blinding_audit.csv", pairs)
    io.write_table(out / "key" / "blinding_features.csv", per_feature)
    failures = failure_message(pairs) if len(pairs) else ""
    if failures and not force:
        raise BlindingLeakError(
            "blinding audit failed: simple image features tell real from fake sources\n"
            + failures
            + f"\n(see {out / 'key'}; fix the sources or framing, or build anyway with "
            "reader_study.force_blinding=true)"
        )
    if failures:
        warning = "blinding audit failed but the build was forced:\n" + failures + "\n"
        (out / "key" / "blinding_warning.txt").write_text(warning, encoding="utf-8")
        log.warning("reader study: %s", warning.rstrip())
    return key


def check_blinded(images_dir: str | os.PathLike[str], image_size_px: int) -> list[str]:
    """Problems that could let a reader tell sources apart by format (empty list = none).

    Checks every PNG in ``images_dir``: size, mode (8-bit grey), chunk types, file name form.
    """
    from PIL import Image

    problems = []
    for path in sorted(Path(images_dir).glob("*.png")):
        data = path.read_bytes()
        extra = set(png_chunk_types(data)) - ALLOWED_PNG_CHUNKS
        if extra:
            problems.append(f"{path.name}: extra PNG chunks {sorted(extra)}")
        with Image.open(path) as img:
            if img.size != (image_size_px, image_size_px) or img.mode != "L":
                problems.append(
                    f"{path.name}: size {img.size} mode {img.mode}, want {image_size_px}² L"
                )
        stem = path.stem
        if len(stem) != 10 or any(c not in "0123456789abcdef" for c in stem):
            problems.append(f"{path.name}: name is not a random 10-hex id")
    return problems
