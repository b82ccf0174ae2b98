"""Make images from different sources look alike, so that only their content differs.

Steps (:func:`frame_pixels`, then :func:`to_display`): grey float -> strip constant edge
rows/columns (padding) -> crop to the exposed field (black shutters, tilted or rounded
collimation) -> paint over burned-in markers -> frame the thorax (square around the lungs
with a fixed margin, so real films and tight DRR crops show the same anatomy at the same
scale) -> resize -> optionally match every image's histogram to the study's pooled one ->
one percentile window to 8 bit. Every function takes and returns arrays; no file I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensyn import io

FRAMINGS = ("thorax", "centre")


@dataclass(frozen=True)
class BlindingParams:
    """How images are made alike (see module docstring)."""

    image_size_px: int = 512
    margin_fraction: float = 0.02  # cut from every side after the border strip
    border_std_fraction: float = 0.01  # a row/column is border if its std < this × image range
    field_dark_fraction: float = (
        0.05  # darker than this share of the range = outside the field (0: off)
    )
    remove_markers: bool = True  # paint over small bright blobs near the edges (side markers)
    window_percentiles: tuple[float, float] = (0.5, 99.5)
    framing: str = "thorax"  # thorax: square around the lungs + margin | centre: centred square
    thorax_margin_fraction: float = 0.08  # margin around the lung box, share of its side
    match_histograms: bool = True  # map every image to the study's pooled histogram

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {self.framing!r}")
        if self.image_size_px < 16:
            raise ValueError(f"image_size_px must be >= 16, got {self.image_size_px}")
        if not 0.0 <= self.margin_fraction < 0.5:
            raise ValueError(f"margin_fraction must be in [0, 0.5), got {self.margin_fraction}")
        lo, hi = self.window_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"window_percentiles must satisfy 0 <= lo < hi <= 100, got {lo}, {hi}")


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


def crop_to_field(image: np.ndarray, dark_fraction: float, edge_tolerance: float = 0.02,
                  band_share: float = 0.5, min_keep: float = 0.6) -> np.ndarray:  # fmt: skip
    """Largest axis-aligned rectangle inside the exposed field (greedy).

    Pixels darker than ``min + dark_fraction × (p99 - min)`` count as outside the field
    (black shutters, rotated or rounded collimation, padding). An edge whose outer lines
    (6% deep) include one at least ``band_share`` outside has a band; of the edges with a
    band, the one with the largest outside share loses a line until each has at most
    ``edge_tolerance`` + the outside share of the image centre; no dimension shrinks below ``min_keep`` of its size.
    """
    h, w = image.shape
    lo, hi = float(image.min()), float(np.percentile(image, 99.0))
    if hi <= lo:
        return image
    outside = image <= lo + dark_fraction * (hi - lo)
    r0, r1, c0, c1 = 0, h, 0, w
    min_h, min_w = int(np.ceil(min_keep * h)), int(np.ceil(min_keep * w))
    # Look a few lines inwards: a thin bright frame (resampling ringing, a drawn edge) must
    # not hide the black band behind it.
    depth_r, depth_c = max(2, round(0.06 * h)), max(2, round(0.06 * w))
    active: set[str] = set()
    # dark pixels inside the image (lungs, noise) are not border: tolerate as many at an edge
    centre = outside[h // 4 : h - h // 4, w // 4 : w - w // 4]
    tolerance = edge_tolerance + (float(centre.mean()) if centre.size else 0.0)
    while True:
        shares = {}
        if r1 - r0 > min_h:  # only the outer lines are looked at: O(depth × side) per step
            shares["top"] = outside[r0 : r0 + depth_r, c0:c1].mean(axis=1).max()
            shares["bottom"] = outside[r1 - depth_r : r1, c0:c1].mean(axis=1).max()
        if c1 - c0 > min_w:
            shares["left"] = outside[r0:r1, c0 : c0 + depth_c].mean(axis=0).max()
            shares["right"] = outside[r0:r1, c1 - depth_c : c1].mean(axis=0).max()
        # An edge with a dark band (mostly-outside lines) becomes active; active edges are
        # cut until clean. Dark anatomy reaching an edge (lungs of a tight DRR) never
        # fills most of a line, so it does not start a cut.
        active |= {k for k, v in shares.items() if v >= band_share}
        candidates = {k: v for k, v in shares.items() if k in active and v > tolerance}
        if not candidates:
            break
        worst = max(candidates, key=lambda k: candidates[k])
        if worst == "top":
            r0 += 1
        elif worst == "bottom":
            r1 -= 1
        elif worst == "left":
            c0 += 1
        else:
            c1 -= 1
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


def square_crop(image: np.ndarray, margin_fraction: float) -> np.ndarray:
    """Cut ``margin_fraction`` of each side, then the centred largest square."""
    h, w = image.shape
    mh, mw = round(h * margin_fraction), round(w * margin_fraction)
    image = image[mh : h - mh, mw : w - mw]
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises the between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centres[int(np.argmax(between[:-1]))])


def lung_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(r0, r1, c0, c1)`` of the lungs, or None if none are found.

    Lungs are the large dark (below Otsu's threshold of the smoothed central region)
    connected regions; a dark region reaching from one edge to the opposite one is outside
    air or a collimator band, not lung. The two largest lung regions make the box.
    """
    from scipy import ndimage

    h, w = image.shape
    smooth = ndimage.gaussian_filter(image, sigma=max(1.0, 0.01 * max(h, w)))
    centre = smooth[h // 5 : h - h // 5, w // 5 : w - w // 5]
    labels, _ = ndimage.label(smooth < otsu_threshold(centre.ravel()))
    regions = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        rs, cs = region
        if (rs.start == 0 and rs.stop == h) or (cs.start == 0 and cs.stop == w):
            continue  # from edge to opposite edge: outside air or a collimator band
        area = int((labels[region] == index).sum())
        if area >= 0.01 * h * w:
            regions.append((area, rs, cs))
    if not regions:
        return None
    lungs = sorted(regions, key=lambda r: r[0], reverse=True)[:2]
    if sum(a for a, _, _ in lungs) < 0.04 * h * w:
        return None
    return (min(r.start for _, r, _ in lungs), max(r.stop for _, r, _ in lungs),
            min(c.start for _, _, c in lungs), max(c.stop for _, _, c in lungs))  # fmt: skip


def thorax_square(image: np.ndarray, margin_fraction: float) -> np.ndarray:
    """Square around the lungs plus ``margin_fraction`` of its side, kept inside the image.

    Falls back to the centred largest square when no lungs are found.
    """
    h, w = image.shape
    box = lung_box(image)
    if box is None:
        return square_crop(image, 0.0)
    r0, r1, c0, c1 = box
    side = round(max(r1 - r0, c1 - c0) * (1 + 2 * margin_fraction))
    side = min(side, h, w)
    top = min(max(round((r0 + r1 - side) / 2), 0), h - side)
    left = min(max(round((c0 + c1 - side) / 2), 0), w - side)
    return image[top : top + side, left : left + side]


def frame_pixels(image: np.ndarray, params: BlindingParams) -> np.ndarray:
    """Any input image -> ``image_size_px``² float image, framed alike (module doc), not windowed."""
    from PIL import Image

    grey = to_grey_float(image)
    grey = strip_borders(grey, params.border_std_fraction)
    if params.field_dark_fraction > 0:
        grey = crop_to_field(grey, params.field_dark_fraction)
    if params.remove_markers:
        grey = remove_markers(grey)
    h, w = grey.shape
    mh, mw = round(h * params.margin_fraction), round(w * params.margin_fraction)
    grey = grey[mh : h - mh, mw : w - mw]  # edge rows left by the field crop
    if params.framing == "thorax":
        grey = thorax_square(grey, params.thorax_margin_fraction)
    else:
        grey = square_crop(grey, 0.0)
    resized = Image.fromarray(grey.astype(np.float32), mode="F").resize(
        (params.image_size_px, params.image_size_px), Image.Resampling.LANCZOS
    )
    return np.asarray(resized, dtype=np.float64)


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
