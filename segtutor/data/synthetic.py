"""The embedded data sets: deterministic from a seed, generated in seconds, no downloads.

Two generators:

- :func:`make_tgs_like` imitates the TGS Salt Identification images: 101 x 101 grey seismic
  sections with layered, folded reflectors and salt bodies (dim, chaotic interior, bright
  boundary reflector), about 39 % empty masks and a spread of coverages, plus a depth per image.
- :func:`make_shapes` draws multi-class RGB scenes: overlapping shapes of very different scales
  on textured backgrounds, thin structures and a few ignore (255) pixels on uncertain borders.

Both are *imitations*: they reproduce the statistics that matter for the techniques in the book
(class imbalance, empty images, edge-touching objects, multi-scale context), not real geology.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from segtutor import checks
from segtutor.data.constants import TGS_SIZE

IGNORE_INDEX = 255

# Real TGS depths run from about 50 to 960 (feet); we use the same range.
_DEPTH_RANGE = (51.0, 959.0)


@dataclass
class TGSLike:
    """The synthetic TGS-like set.

    Attributes:
        images: float32 ``[N, 101, 101]`` in [0, 1] (grey seismic section).
        masks: float32 ``[N, 101, 101]`` in {0, 1} (1 = salt).
        depths: float32 ``[N]``, depth of the section in feet (51 .. 959).
        ids: ``N`` unique 10-hex-character ids, like the competition's.
    """

    images: torch.Tensor
    masks: torch.Tensor
    depths: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def coverage(self) -> torch.Tensor:
        """Salt fraction of each image, float32 ``[N]`` in [0, 1]."""
        return self.masks.flatten(1).mean(dim=1)


@dataclass
class Shapes:
    """The synthetic multi-class shapes set.

    Attributes:
        images: float32 ``[N, 3, S, S]`` in [0, 1].
        masks: int64 ``[N, S, S]``, labels ``0 .. num_classes-1`` and 255 = ignore.
        class_names: ``num_classes`` names, index 0 is ``"background"``.
    """

    images: torch.Tensor
    masks: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _check_n_seed(n: int, seed: int) -> None:
    checks.non_negative_int("n", n)
    checks.integer("seed", seed)


# --------------------------------------------------------------------------------------------
# TGS-like seismic sections
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates ``[size, size]`` (float64), shared read-only."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _ricker(width: float, half: int) -> np.ndarray:
    """Ricker ("Mexican hat") wavelet, the usual stand-in for a seismic source pulse."""
    t = np.arange(-half, half + 1, dtype=np.float64) / width
    return (1.0 - 2.0 * (np.pi * t / 2.0) ** 2) * np.exp(-((np.pi * t / 2.0) ** 2))


def _smooth_curve(
    rng: np.random.Generator,
    x: np.ndarray,
    amplitude: float,
    n_terms: int = 3,
    min_period: float = 40.0,
) -> np.ndarray:
    """A random smooth 1-D function of ``x``: a few low-frequency sines."""
    out = np.zeros_like(x, dtype=np.float64)
    for _ in range(n_terms):
        period = rng.uniform(min_period, 4.0 * min_period)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))
    return amplitude * out / n_terms


def _band_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
) -> np.ndarray:
    """Gaussian noise low-pass filtered (band-limited), rescaled to unit standard deviation."""
    # a Gaussian filter with periodic boundaries is a product in Fourier space: cheaper than
    # ndimage.gaussian_filter for the large sigmas used here, and the same result
    # (on a power-of-two canvas, cropped: 101 is prime and a slow FFT length)
    canvas = tuple(1 << (int(n) - 1).bit_length() for n in shape)
    transfer = _gauss_transfer(canvas, (round(float(sigma[0]), 2), round(float(sigma[1]), 2)))
    noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(canvas)) * transfer, s=canvas)
    noise = noise[: shape[0], : shape[1]]
    return noise / (noise.std() + 1e-8)


@functools.lru_cache(maxsize=64)
def _gauss_transfer(canvas: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    fy = np.fft.fftfreq(canvas[0])[:, None]
    fx = np.fft.rfftfreq(canvas[1])[None, :]
    return np.exp(-2 * np.pi**2 * ((sigma[0] * fy) ** 2 + (sigma[1] * fx) ** 2))


def _layers(rng: np.random.Generator, size: int) -> np.ndarray:
    """Layered, folded reflectors: a 1-D reflectivity series read along folded horizons."""
    yy, _ = _grid(size)
    x = np.arange(size, dtype=np.float64)
    # folding: horizons displaced by a smooth function of x plus a dip; stronger folds with depth
    fold_top = _smooth_curve(rng, x, rng.uniform(1.0, 10.0), min_period=rng.uniform(30, 90))
    fold_bot = _smooth_curve(rng, x, rng.uniform(1.0, 14.0), min_period=rng.uniform(30, 90))
    dip = rng.uniform(-0.25, 0.25) * (x - size / 2)
    frac = yy / (size - 1)
    shift = (1 - frac) * fold_top[None, :] + frac * fold_bot[None, :] + dip[None, :]
    depth_coord = yy + shift
    margin = 60
    length = size + 2 * margin
    spikes = rng.standard_normal(length) * (rng.random(length) < rng.uniform(0.15, 0.45))
    wavelet = _ricker(rng.uniform(1.5, 3.5), 10)
    trace = np.convolve(spikes, wavelet, mode="same")
    trace /= np.abs(trace).max() + 1e-8
    img = np.interp(depth_coord.ravel() + margin, np.arange(length), trace).reshape(size, size)
    # lateral amplitude variation, as real sections are never uniform
    img *= 0.6 + 0.4 * (_band_noise(rng, (size, size), (6.0, 12.0)) * 0.5 + 1.0).clip(0, 2)
    return img


def _salt_body(rng: np.random.Generator, size: int) -> np.ndarray:
    """One salt mask ``[size, size]`` bool, never empty, shape drawn from a few families."""
    yy, xx = _grid(size)
    x = np.arange(size, dtype=np.float64)
    kind = rng.choice(["blob", "bottom", "top", "diapir", "full"], p=[0.36, 0.3, 0.12, 0.17, 0.05])
    if kind == "full":
        # the whole section inside salt, sometimes with a small sediment pocket at a corner
        mask = np.ones((size, size), dtype=bool)
        if rng.random() < 0.5:
            cy, cx = rng.choice([0, size - 1]), rng.choice([0, size - 1])
            mask &= (yy - cy) ** 2 + (xx - cx) ** 2 > rng.uniform(5, 25) ** 2
    elif kind in ("bottom", "top"):
        # a salt top (or base) horizon: everything below (above) a smooth curve
        base = rng.uniform(8, size - 8)
        curve = base + _smooth_curve(rng, x, rng.uniform(3, 25), min_period=rng.uniform(25, 80))
        curve += rng.uniform(-0.4, 0.4) * (x - size / 2)
        mask = yy > curve[None, :] if kind == "bottom" else yy < curve[None, :]
    elif kind == "diapir":
        # a salt stock rising from the bottom edge, widening downwards
        top = rng.uniform(-10, size * 0.7)
        centre = rng.uniform(10, size - 10) + _smooth_curve(rng, yy[:, 0], rng.uniform(2, 10))
        width = rng.uniform(5, 25) + rng.uniform(0.0, 0.5) * np.clip(yy[:, 0] - top, 0, None)
        mask = (np.abs(xx - centre[:, None]) < width[:, None]) & (yy > top)
    else:
        # a smooth blob, star-shaped around its centre, which may lie outside the picture
        cy, cx = rng.uniform(-15, size + 15, size=2)
        radius = np.exp(rng.uniform(np.log(5), np.log(60)))
        theta = np.arctan2(yy - cy, xx - cx)
        r = np.hypot(yy - cy, xx - cx)
        wobble = np.zeros_like(theta)
        for k in range(2, 6):
            wobble += rng.uniform(0, 0.35 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        mask = r < radius * (1.0 + wobble)
    if not mask.any() or mask.sum() < 8:
        return _salt_body(rng, size)
    return mask


def _tgs_image(rng: np.random.Generator, mask: np.ndarray, difficulty: float) -> np.ndarray:
    """Render one grey section ``[size, size]`` in [0, 1] for a given salt mask."""
    size = mask.shape[0]
    img = _layers(rng, size)
    if mask.any():
        # salt: few coherent reflectors inside (dim), chaotic speckle, a bright top/base reflector
        dim = rng.uniform(0.15, 0.55)
        chaos = _band_noise(rng, (size, size), (rng.uniform(0.7, 1.5), rng.uniform(0.7, 1.5)))
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
        interior = dim * img + rng.uniform(0.05, 0.2) * chaos
        img = soft * interior + (1 - soft) * img
        inside = ndimage.distance_transform_edt(mask)
        outside = ndimage.distance_transform_edt(~mask)
        dist = np.where(mask, inside - 0.5, -(outside - 0.5))
        # the boundary reflector is strong in some images and nearly absent in others
        strength = rng.uniform(0.0, 1.1) * (1.0 - 0.6 * difficulty)
        sign = 1.0 if rng.random() < 0.8 else -1.0
        img += sign * strength * np.exp(-(dist**2) / (2 * rng.uniform(0.8, 1.8) ** 2))
    # acquisition noise, band-limited, and a smooth gain drift
    img += difficulty * rng.uniform(0.08, 0.3) * _band_noise(rng, (size, size), (0.8, 1.2))
    img += rng.uniform(0.0, 0.3) * _band_noise(rng, (size, size), (25.0, 25.0))
    lo, hi = np.percentile(img, [0.5, 99.5])
    contrast = rng.uniform(0.5, 1.0)
    img = (img - lo) / (hi - lo + 1e-8)
    img = 0.5 + contrast * (img - 0.5) + rng.uniform(-0.1, 0.1)
    return np.clip(img, 0.0, 1.0)


def make_tgs_like(
    n: int, seed: int = 0, *, empty_fraction: float = 0.39, difficulty: float = 0.5
) -> TGSLike:
    """Synthetic TGS Salt-like data, deterministic from ``seed``.

    Args:
        n: number of images.
        seed: random seed; the same seed always gives the same set.
        empty_fraction: target share of images without salt (the competition's train set:
            about 0.39).
        difficulty: in [0, 1]; more acquisition noise and weaker boundary reflectors when
            larger.

    Returns:
        :class:`TGSLike` with ``images`` float32 ``[n, 101, 101]`` in [0, 1], ``masks`` float32
        ``[n, 101, 101]`` in {0, 1}, ``depths`` float32 ``[n]`` (feet) and ``ids``.
        Deeper sections contain salt more often (as in the competition data).
    """
    _check_n_seed(n, seed)
    if not 0.0 <= float(empty_fraction) <= 1.0:
        raise ValueError(f"empty_fraction must lie in [0, 1], got {empty_fraction!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty!r}")
    rng = np.random.default_rng([int(seed), 101])
    size = TGS_SIZE
    lo, hi = _DEPTH_RANGE
    depths = rng.uniform(lo, hi, size=n)
    # P(salt | depth) rises linearly with depth; its mean over the uniform depths is
    # 1 - empty_fraction, with the slope clipped so that it stays a probability.
    p_mean = 1.0 - float(empty_fraction)
    slope = min(0.6, 2 * p_mean, 2 * (1 - p_mean))
    p_salt = p_mean + slope * ((depths - lo) / (hi - lo) - 0.5)
    has_salt = rng.random(n) < p_salt
    images = np.empty((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.float32)
    # one child generator per image: image i does not depend on how many come after it
    children = (
        rng.spawn(n)
        if hasattr(rng, "spawn")
        else [np.random.default_rng([int(seed), 101, i]) for i in range(n)]
    )
    for i in range(n):
        child = children[i]
        mask = _salt_body(child, size) if has_salt[i] else np.zeros((size, size), dtype=bool)
        masks[i] = mask
        images[i] = _tgs_image(child, mask, float(difficulty))
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        candidate = f"{int(rng.integers(0, 16**10)):010x}"
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return TGSLike(
        torch.from_numpy(images),
        torch.from_numpy(masks),
        torch.from_numpy(np.round(depths).astype(np.float32)),
        ids,
    )


# --------------------------------------------------------------------------------------------
# Multi-class shapes
# --------------------------------------------------------------------------------------------

# Class 1.. get a shape family each (cycling when there are more classes than families).
_SHAPE_FAMILIES = ["disc", "box", "line", "triangle", "ring", "blob", "cross", "dot"]

# Base colours per family (RGB in [0, 1]); objects jitter around them.
_FAMILY_COLOURS = np.array(
    [
        [0.85, 0.25, 0.2],
        [0.2, 0.45, 0.85],
        [0.95, 0.9, 0.25],
        [0.25, 0.75, 0.3],
        [0.75, 0.3, 0.8],
        [0.95, 0.55, 0.15],
        [0.2, 0.8, 0.8],
        [0.9, 0.9, 0.9],
    ]
)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured RGB background ``[size, size, 3]``: stripes, smooth blotches and grain."""
    yy, xx = _grid(size)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3, 12)
    stripes = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    blotch = _band_noise(rng, (size, size), (size / 10, size / 10))
    base = rng.uniform(0.25, 0.65, size=3)
    tint = rng.uniform(-0.15, 0.15, size=3)
    img = base[None, None, :] + 0.08 * stripes[..., None] * rng.uniform(0.3, 1.0)
    img = img + 0.1 * blotch[..., None] * tint[None, None, :] / 0.15
    img += 0.05 * rng.standard_normal((size, size, 3))
    return img


def _shape_mask(rng: np.random.Generator, family: str, size: int, scale: float) -> np.ndarray:
    """A boolean mask for one object; ``scale`` is its rough radius in pixels."""
    yy, xx = _grid(size)
    cy, cx = rng.uniform(-0.1 * size, 1.1 * size, size=2)
    if family == "disc":
        ry, rx = scale * rng.uniform(0.7, 1.3, size=2)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if family == "box":
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        hu, hv = scale * rng.uniform(0.5, 1.3, size=2)
        return (np.abs(u) < hu) & (np.abs(v) < hv)
    if family == "line":
        # thin structure: 1-2 px wide, long, slightly curved
        a = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        bend = rng.uniform(-0.01, 0.01) * u**2
        return (np.abs(v - bend) < rng.uniform(0.6, 1.3)) & (np.abs(u) < 3 * scale + size / 4)
    if family == "triangle":
        a0 = rng.uniform(0, 2 * np.pi)
        pts = [
            (
                cy + scale * np.sin(a0 + k * 2 * np.pi / 3),
                cx + scale * np.cos(a0 + k * 2 * np.pi / 3),
            )
            for k in range(3)
        ]
        inside = np.ones((size, size), dtype=bool)
        for k in range(3):
            (y0, x0), (y1, x1) = pts[k], pts[(k + 1) % 3]
            inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
        return inside
    if family == "ring":
        r = np.hypot(yy - cy, xx - cx)
        return (r < scale) & (r > scale * rng.uniform(0.45, 0.75))
    if family == "blob":
        theta = np.arctan2(yy - cy, xx - cx)
        wob = sum(rng.uniform(0, 0.3) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5))
        return np.hypot(yy - cy, xx - cx) < scale * (1 + wob)
    if family == "cross":
        w = max(1.0, scale * 0.25)
        return ((np.abs(yy - cy) < w) & (np.abs(xx - cx) < scale)) | (
            (np.abs(xx - cx) < w) & (np.abs(yy - cy) < scale)
        )
    # "dot": tiny objects
    return np.hypot(yy - cy, xx - cx) < max(1.2, scale * 0.3)


def make_shapes(
    n: int, num_classes: int = 5, size: int = 64, seed: int = 0, *, ignore_border: float = 0.3
) -> Shapes:
    """Synthetic multi-class scenes, deterministic from ``seed``.

    Each image holds a few to a dozen objects of classes ``1 .. num_classes-1`` drawn in random
    order (later ones occlude earlier ones) on a textured background (class 0). Object sizes run
    from a few pixels to larger than the image; class ``"line"`` is 1-2 pixels wide. For a share
    ``ignore_border`` of objects, the one-pixel border is labelled 255 (ignore), as in Pascal
    VOC's uncertain outlines.

    Returns:
        :class:`Shapes` with ``images`` float32 ``[n, 3, size, size]`` in [0, 1], ``masks`` int64
        ``[n, size, size]`` and ``class_names``.
    """
    _check_n_seed(n, seed)
    checks.integer("num_classes", num_classes, 2, 255)  # labels fit uint8, 255 = ignore
    checks.positive_int("size", size, minimum=8)
    checks.probability("ignore_border", ignore_border)
    families = [_SHAPE_FAMILIES[(c - 1) % len(_SHAPE_FAMILIES)] for c in range(1, num_classes)]
    names = ["background"] + [
        f if (c - 1) < len(_SHAPE_FAMILIES) else f"{f}{(c - 1) // len(_SHAPE_FAMILIES) + 1}"
        for c, f in enumerate(families, start=1)
    ]
    colours = np.array(
        [_FAMILY_COLOURS[(c - 1) % len(_FAMILY_COLOURS)] for c in range(1, num_classes)]
    )
    # classes beyond the families' count get shifted colours so that they stay separable
    for c in range(len(_SHAPE_FAMILIES), num_classes - 1):
        colours[c] = np.clip(colours[c] * 0.6 + 0.4 * np.random.default_rng(c).random(3), 0, 1)
    rng = np.random.default_rng([int(seed), 64])
    children = (
        rng.spawn(n)
        if hasattr(rng, "spawn")
        else [np.random.default_rng([int(seed), 64, i]) for i in range(n)]
    )
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        r = children[i]
        img = _texture(r, size)
        lab = np.zeros((size, size), dtype=np.int64)
        ignore = np.zeros((size, size), dtype=bool)
        n_obj = int(r.integers(2, 10))
        for _ in range(n_obj):
            cls = int(r.integers(1, num_classes))
            family = families[cls - 1]
            # log-uniform scale: from a couple of pixels to bigger than the picture
            scale = float(np.exp(r.uniform(np.log(2.0), np.log(size * 0.6))))
            obj = _shape_mask(r, family, size, scale)
            if not obj.any():
                continue
            colour = np.clip(colours[cls - 1] + r.uniform(-0.12, 0.12, 3), 0, 1)
            shade = 1.0 + 0.15 * _band_noise(r, (size, size), (2.0, 2.0))
            img[obj] = colour[None, :] * shade[obj][:, None]
            lab[obj] = cls
            ignore[obj] = False
            if family not in ("line", "dot") and r.random() < ignore_border:
                border = obj & ~ndimage.binary_erosion(obj)
                ignore |= border
        lab[ignore] = IGNORE_INDEX
        img += 0.03 * r.standard_normal(img.shape)
        images[i] = np.clip(img, 0, 1).transpose(2, 0, 1)
        masks[i] = lab
    return Shapes(torch.from_numpy(images), torch.from_numpy(masks), names)
