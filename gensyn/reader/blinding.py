"""Make images from different sources look alike, so that only their content differs.

Steps (:func:`frame_pixels`, then :func:`to_display`): grey float -> strip constant edge
rows/columns (padding) -> on a small working copy, find the exposed field (the rectangle
inside the air and black shutter wedges around the body, tilt allowed) and the lungs in it
(dark basins enclosed by chest wall, mediastinum and diaphragm) -> crop the square around
the lungs (the field's centred square when the lungs run off the image, as in a tight DRR:
such an image already is the thorax) -> paint over burned-in markers -> one effective
resolution (box-average to ``detail_px``) -> resize -> optionally match every image's
histogram to the study's pooled one -> one percentile window to 8 bit. Every function takes
and returns arrays; no file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from gensyn.base import io
from gensyn.base.bounds import bounded, check_instance


class Framing(StrEnum):
    """``thorax``: the square around the lungs plus a margin; ``centre``: the centred square."""

    thorax = "thorax"
    centre = "centre"


@dataclass
class BlindingParams:
    """How images are made alike (see module docstring): the ``reader_study.blinding`` group's
    keys, besides the audit's (:class:`gensyn.reader.audit.AuditParams`)."""

    image_size_px: int = bounded(512, ge=16)  # side of the shown PNGs (the original study: 512)
    margin_fraction: float = bounded(
        0.02, ge=0, lt=0.5
    )  # cut from every side after the border strip
    # a row/column is border if its std < this × the image's range
    border_std_fraction: float = bounded(0.01, ge=0)
    # darker than this share of the range = outside the exposed field (0: off)
    field_dark_fraction: float = bounded(0.05, ge=0, lt=1)
    remove_markers: bool = True  # paint over small bright blobs near the edges (side markers)
    window_low_percentile: float = bounded(0.5, ge=0, le=100)  # mapped to black
    window_high_percentile: float = bounded(
        99.5, ge=0, le=100, above="window_low_percentile"
    )  # mapped to white
    framing: Framing = Framing.thorax  # thorax | centre
    # margin around the lung box, share of its side (negative: inside it)
    thorax_margin_fraction: float = bounded(0.0, ge=-0.25, le=1)
    match_histograms: bool = True  # map every image to the study's pooled histogram
    detail_px: int = bounded(0, ge=0)  # box-average every framed square to this size first (0: off)

    def __post_init__(self) -> None:
        if self.framing not in tuple(Framing):
            raise ValueError(
                f"reader_study.blinding.framing={self.framing!r}; allowed: "
                f"{[str(f) for f in Framing]}"
            )
        check_instance(self, "reader_study.blinding.")

    @property
    def window_percentiles(self) -> tuple[float, float]:
        """(low, high) percentiles of the display window."""
        return (self.window_low_percentile, self.window_high_percentile)


def to_grey_float(image: np.ndarray) -> np.ndarray:
    """H×W (grey) or H×W×C (RGB[A]) pixels of any integer/float type -> H×W float64."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        rgb = arr[..., :3].astype(np.float64)
        if rgb.shape[2] == 1:
            return rgb[..., 0]
        return rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grey or 3-D colour image, got shape {arr.shape}")
    return arr.astype(np.float64)


def strip_borders(image: np.ndarray, std_fraction: float) -> np.ndarray:
    """Cut constant rows/columns (padding, collimator shadow) from the four edges.

    A row or column counts as border while its standard deviation is below
    ``std_fraction`` × (1st-99th percentile range of the image). Never cuts below half size.
    """
    lo, hi = np.percentile(image, [1.0, 99.0])
    tol = std_fraction * max(float(hi - lo), 1e-12)
    row_std = image.std(axis=1)
    col_std = image.std(axis=0)

    def span(std: np.ndarray) -> tuple[int, int]:
        busy = np.flatnonzero(std >= tol)
        if busy.size == 0:
            return 0, std.size
        start, stop = int(busy[0]), int(busy[-1]) + 1
        if stop - start < std.size // 2:  # nearly blank image: keep it whole rather than a sliver
            return 0, std.size
        return start, stop

    r0, r1 = span(row_std)
    c0, c1 = span(col_std)
    return image[r0:r1, c0:c1]


def remove_markers(image: np.ndarray, edge_band: float = 0.25, max_area_fraction: float = 0.01,
                   bright_percentile: float = 99.0, min_contrast: float = 0.3) -> np.ndarray:  # fmt: skip
    """Paint over burned-in markers: small, isolated bright blobs near the image edges.

    A blob is a connected set of pixels above the ``bright_percentile`` value, of at most
    ``max_area_fraction`` of the image, centred within ``edge_band`` of an edge, and
    brighter than its surrounding ring by ``min_contrast`` × the image range (so bright
    anatomy, which continues into bright surroundings, is left alone). Blob pixels are
    replaced by the median of the ring around them.
    """
    from scipy import ndimage

    h, w = image.shape
    hi = float(np.percentile(image, bright_percentile))
    span = float(np.ptp(image)) or 1.0
    labels, _ = ndimage.label(image >= hi)
    out = image.copy()
    pad = 6  # room for the dilated blob and its ring
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        rs, cs = region
        cy, cx = (rs.start + rs.stop - 1) / 2, (cs.start + cs.stop - 1) / 2
        if min(cy, h - 1 - cy) >= edge_band * h and min(cx, w - 1 - cx) >= edge_band * w:
            continue  # not near an edge
        window = (
            slice(max(rs.start - pad, 0), rs.stop + pad),
            slice(max(cs.start - pad, 0), cs.stop + pad),
        )
        blob = labels[window] == index
        if blob.sum() > max_area_fraction * h * w:
            continue
        grown = ndimage.binary_dilation(blob, iterations=2)
        ring = ndimage.binary_dilation(grown, iterations=3) & ~grown
        if not ring.any():
            continue
        local = image[window]
        ring_value = float(np.median(local[ring]))
        if float(local[blob].mean()) - ring_value >= min_contrast * span:
            out[window][grown] = ring_value
    return out


Box = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open, in pixels

#: Masks and boxes are found on a copy of at most this many pixels a side: fast on any film,
#: and the thresholds below mean the same at every input size.
WORK_PX = 256


def working_copy(image: np.ndarray, max_px: int = WORK_PX) -> tuple[np.ndarray, int]:
    """``image`` block-averaged by an integer factor to at most ``max_px`` a side, smoothed
    (σ = 1 px) and scaled to 0..1 by its 0.5-99.5 percentiles; returns (copy, factor)."""
    from scipy import ndimage

    h, w = image.shape
    factor = max(1, int(np.ceil(max(h, w) / max_px)))
    if factor > 1:
        hh, ww = h // factor * factor, w // factor * factor
        image = (
            image[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))
        )
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), 1.0)
    lo, hi = np.percentile(smooth, [0.5, 99.5])
    return np.clip((smooth - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0), factor


def air_mask(norm: np.ndarray, dark_fraction: float, min_area: float = 0.03,
             min_total: float = 0.03) -> np.ndarray:  # fmt: skip
    """Air outside the body and black shutter wedges of a 0..1 image (bool, same shape).

    Air is the darkest grey level of a film (below ``dark_fraction``): connected dark regions
    of at least ``min_area`` of the image each (dark gaps between ribs are smaller) that touch the image edge or stretch over half its
    height and width (a band around the body, open where the body meets the collimator).
    Less than ``min_total`` of such air in all: none (a tight DRR's darkest lung corners are
    anatomy, not air).
    """
    from scipy import ndimage

    h, w = norm.shape
    labels, _ = ndimage.label(norm < dark_fraction)
    out = np.zeros(norm.shape, dtype=bool)
    for index, (rs, cs) in enumerate(ndimage.find_objects(labels), start=1):
        component = labels == index
        if component[rs, cs].sum() < min_area * h * w:
            continue
        at_edge = rs.start == 0 or cs.start == 0 or rs.stop == h or cs.stop == w
        around = (rs.stop - rs.start) > h / 2 and (cs.stop - cs.start) > w / 2
        if at_edge or around:
            out |= component
    return out if out.mean() >= min_total else np.zeros_like(out)


def inscribed_box(outside: np.ndarray, tolerance: float = 0.01) -> Box:
    """An axis-aligned rectangle inside the field: the region around the image centre that
    is not ``outside`` (bool mask), shrunk edge line by edge line (the line with the most
    outside pixels first) until no edge line is more than ``tolerance`` outside. A tilted
    field loses its dark corner wedges this way."""
    from scipy import ndimage

    h, w = outside.shape
    if not outside.any():
        return 0, h, 0, w
    labels, _ = ndimage.label(~outside)
    centre = labels[h // 4 : h - h // 4, w // 4 : w - w // 4]
    counts = np.bincount(centre.ravel(), minlength=labels.max() + 1)
    counts[0] = 0
    if counts.max() == 0:
        return 0, h, 0, w
    rows, cols = np.nonzero(labels == int(np.argmax(counts)))
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    while r1 - r0 > 2 and c1 - c0 > 2:
        shares = {
            "top": outside[r0, c0:c1].mean(), "bottom": outside[r1 - 1, c0:c1].mean(),
            "left": outside[r0:r1, c0].mean(), "right": outside[r0:r1, c1 - 1].mean(),
        }  # fmt: skip
        worst = max(shares, key=lambda k: shares[k])
        if shares[worst] <= tolerance:
            break
        if worst == "top":
            r0 += 1
        elif worst == "bottom":
            r1 -= 1
        elif worst == "left":
            c0 += 1
        else:
            c1 -= 1
    return r0, r1, c0, c1


def spill_levels(norm: np.ndarray, seeds: np.ndarray, n_levels: int = 64) -> np.ndarray:
    """Grey level at which water poured on each pixel would run off to a ``seeds`` pixel.

    The lowest level L (of ``n_levels`` steps over 0..1) such that the pixel connects to a
    seed through pixels no brighter than L: grey-level hole filling by threshold
    decomposition. ``spill - norm`` is the depth of the enclosed dark basin a pixel is in.
    """
    from scipy import ndimage

    spill = np.ones(norm.shape)
    done = np.zeros(norm.shape, dtype=bool)
    for level in np.linspace(0.0, 1.0, n_levels + 1):
        labels, _ = ndimage.label((norm <= level) | seeds)
        reached = np.unique(labels[seeds])
        hit = np.isin(labels, reached[reached > 0]) & ~done
        spill[hit] = level
        done |= hit
    return spill


def lung_box(norm: np.ndarray, dark_fraction: float = 0.05, min_depth: float = 0.05,
             min_area: float = 0.015, min_box: float = 0.2) -> Box | None:  # fmt: skip
    """Bounding box of both lungs of a 0..1 image, or None if they are not enclosed.

    Lungs are dark basins enclosed by brighter tissue (chest wall, mediastinum, diaphragm):
    regions at least ``min_depth`` below the level at which they would spill to the image
    edge or to air (pixels below ``dark_fraction``), of at least ``min_area`` of the image,
    the largest on each side of the image. With a basin on one side only, the box is that
    lung and its mirror image about the spine (the brightest column); a box under ``min_box``
    of the image is no pair of lungs (None). Lungs cut by the image
    edge (a tight DRR or SyntheX crop) spill there: None, the image already is the thorax.
    """
    from scipy import ndimage

    h, w = norm.shape
    seeds = norm < dark_fraction
    seeds[[0, -1], :] = True
    seeds[:, [0, -1]] = True
    labels, n = ndimage.label(spill_levels(norm, seeds) - norm >= min_depth)
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones(norm.shape), labels, index)
    centres = ndimage.center_of_mass(np.ones(norm.shape), labels, index)
    lungs = []
    for left in (True, False):
        side = [
            i for i in range(n) if areas[i] >= min_area * h * w and (centres[i][1] < w / 2) == left
        ]
        if side:
            lungs.append(max(side, key=lambda i: areas[i]) + 1)
    if not lungs:
        return None
    rows, cols = np.nonzero(np.isin(labels, lungs))
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    if len(lungs) == 1:
        spine = int(np.argmax(norm[r0:r1].mean(axis=0)))
        c0, c1 = max(min(c0, 2 * spine - c1), 0), min(max(c1, 2 * spine - c0), w)
    if (r1 - r0) * (c1 - c0) < min_box * h * w:
        return None  # a pocket between bright structures, not a pair of lungs
    return r0, r1, c0, c1


def square_in(box: Box, centre: tuple[float, float], side: float) -> Box:
    """The square of ``side`` centred at ``centre`` (row, col), shrunk and moved to fit ``box``."""
    r0, r1, c0, c1 = box
    side_px = int(min(round(side), r1 - r0, c1 - c0))
    top = min(max(round(centre[0] - side_px / 2), r0), r1 - side_px)
    left = min(max(round(centre[1] - side_px / 2), c0), c1 - side_px)
    return top, top + side_px, left, left + side_px


def thorax_box(image: np.ndarray, params: BlindingParams) -> Box:
    """The square shown to readers, in ``image`` pixels (module doc).

    Found on a :func:`working_copy`: the exposed field (:func:`inscribed_box` free of
    :func:`air_mask`), then, with ``framing="thorax"``, the square around the
    :func:`lung_box` plus ``thorax_margin_fraction`` of its side on each side, kept inside
    the field; without lungs in the field, or with ``framing="centre"``, the field's
    centred largest square.
    """
    norm, factor = working_copy(image)
    dark = params.field_dark_fraction
    field = (
        inscribed_box(air_mask(norm, dark)) if dark > 0 else (0, norm.shape[0], 0, norm.shape[1])
    )
    f0, f1, g0, g1 = field
    lungs = lung_box(norm[f0:f1, g0:g1], dark or 0.05) if params.framing == "thorax" else None
    if lungs is None:
        side = float(min(f1 - f0, g1 - g0))
        square = square_in(field, ((f0 + f1) / 2, (g0 + g1) / 2), side)
    else:
        r0, r1, c0, c1 = lungs
        side = max(r1 - r0, c1 - c0) * (1 + 2 * params.thorax_margin_fraction)
        square = square_in(field, (f0 + (r0 + r1) / 2, g0 + (c0 + c1) / 2), side)
    h, w = image.shape
    top, bottom, left, right = (v * factor for v in square)
    side_px = min(bottom - top, right - left, h - top, w - left)
    return top, top + side_px, left, left + side_px


def frame_pixels(image: np.ndarray, params: BlindingParams) -> np.ndarray:
    """Any input image -> ``image_size_px``² float image, framed alike (module doc), not windowed."""
    from PIL import Image

    grey = strip_borders(to_grey_float(image), params.border_std_fraction)
    r0, r1, c0, c1 = thorax_box(grey, params)
    grey = grey[r0:r1, c0:c1]
    if params.remove_markers:
        grey = remove_markers(grey)
    side = grey.shape[0]
    cut = round(side * params.margin_fraction)
    grey = grey[cut : side - cut, cut : side - cut]
    pix = Image.fromarray(grey.astype(np.float32), mode="F")
    if params.detail_px:  # one effective resolution for every source, whatever its crop size
        pix = pix.resize((params.detail_px, params.detail_px), Image.Resampling.BOX)
    size = (params.image_size_px, params.image_size_px)
    return np.asarray(pix.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def pooled_quantiles(images: list[np.ndarray], n_levels: int = 1024) -> np.ndarray:
    """The study's reference histogram: the mean of every image's quantile function."""
    levels = np.linspace(0.0, 1.0, n_levels)
    return np.mean([np.quantile(img, levels) for img in images], axis=0)


def match_histogram(image: np.ndarray, reference_quantiles: np.ndarray) -> np.ndarray:
    """``image`` with its grey levels replaced so that its histogram is the reference one.

    Each pixel's rank (ties share their mean rank) is mapped through the reference
    quantile function; the order of grey levels is kept, so the anatomy is unchanged.
    """
    from scipy.stats import rankdata

    ranks = (rankdata(image.ravel()) - 0.5) / image.size
    levels = np.linspace(0.0, 1.0, reference_quantiles.size)
    return np.interp(ranks, levels, reference_quantiles).reshape(image.shape)


def to_display(framed: np.ndarray, params: BlindingParams) -> np.ndarray:
    """One percentile window (``window_percentiles``) to 0..255 uint8."""
    lo, hi = np.percentile(framed, list(params.window_percentiles))
    return io.to_uint(framed, bit_depth=8, vmin=float(lo), vmax=float(hi))


def blind_pixels(image: np.ndarray, params: BlindingParams) -> np.ndarray:
    """Any input image -> ``image_size_px``² uint8 grey image made alike (no histogram match)."""
    return to_display(frame_pixels(image, params), params)
