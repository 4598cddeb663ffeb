"""Is the counter's live view blocked? One snapshot judged against the tuned reference view.

A people counter counts only what its camera sees. A bag over the lens, a promotional stand
under the sensor, a camera knocked sideways, a fogged or sprayed lens or a dead illuminator all
turn into "no visitors" in the numbers, and the store believes its traffic fell. This module
compares a snapshot with the reference image taken when the counter was tuned and says
``clear`` or ``blocked``, the kind of blockage and the fraction of the view affected.

How (all numpy and Pillow, a few milliseconds per 768x576 JPEG):

- Work at a quarter of the resolution (JPEG decoded straight to it through Pillow's ``draft``):
  sensor noise and JPEG artefacts shrink, the structure that matters for counting stays.
- Find the camera's motion: phase correlation of the snapshot against the reference rotated by
  a fan of angles gives the shift and the turn. A large motion that explains the snapshot is
  ``moved``; a small one (a shake, a jitter) is undone before the comparison, to a fraction
  of a pixel for the structure, which fine texture needs.
- Compare 8x8 tiles: normalised cross-correlation for the tiles with structure (it ignores
  brightness and contrast, so lighting changes are benign), the brightness against the
  overall gain for the flat ones. The fraction of changed tiles is what is hidden; a changed
  region counts as an obstruction only when it is large and contiguous, because passers-by
  are separate smaller blobs. Flat tiles are judged against the light their neighbourhood
  shows, so light changing over part of the view is benign, and on their colour (hue, with
  the white balance taken out), so a panel of the floor's grey level is still seen. A flat
  region is a cover on the lens only when its outline is soft (out of focus); an object in
  the scene has a sharp one.
- Measure what is left of the reference's light and detail: the brightness and contrast that
  survive (dark, overexposed, washed out) and the finest detail (Laplacian energy) that
  survives with the coarse layout still in place (blurred).

The thresholds come from the definition of a blocked view, not from fitting a data set:
40 % of the view hidden, most (over half) of the detail gone, a move of 10 % of the frame or a
turn of 10 degrees (less the estimator's tolerance), lighting within +-40 % benign. See
docs/liveview.md for the method and its measured rates.

Also here: ``frozen`` (the same frame over and over, whatever JPEG quality each copy was
encoded at: the DCT coefficients of two encodings of one frame agree within the quantisation
steps, which a live view's sensor noise and passers-by break) and ``LearnedReference`` (the
normal view learned from the first good snapshots when no reference image is configured). No
I/O: bytes or arrays in, results out; the only state is a ``LearnedReference`` its owner keeps.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

WORK_WIDTH = 192  # working width: a quarter of a 768x576 snapshot
TILE = 8  # tile side at working resolution (32 px of a 768-wide snapshot)

KINDS = ("covered", "dark", "overexposed", "blurred", "moved", "obstructed", "frozen")

# The definition of blocked, from the issue; everything below derives from these.
HIDDEN_BLOCKED = 0.40  # 40 % or more of the view hidden
DETAIL_LEFT_BLOCKED = 0.40  # lighting -40 % leaves 60 % of the contrast; "most gone" is below 40 %
SHARPNESS_LEFT_BLOCKED = 0.50  # blurred: less than half the fine detail left
LIGHT_BENIGN = 0.40  # lighting changes of up to +-40 % are benign
# Exposure blocked: beyond the benign band by a further factor of 1.5 (0.6 -> 0.4, 1.4 -> 2.1).
DARKER_BLOCKED = (1 - LIGHT_BENIGN) / 1.5
BRIGHTER_BLOCKED = (1 + LIGHT_BENIGN) * 1.5
MOVE_BLOCKED = 0.10 - 0.02  # 10 % of the frame, less a measurement tolerance of 2 points
TURN_BLOCKED = 10.0 - 2.0  # 10 degrees, less a tolerance of 2 (the search steps by 1.5)

# Noise floors, in grey levels (0..255) at working resolution.
FLAT_STD = 4.0  # a tile with less spread than this has no usable structure
FINE_MIN = 36.0  # mean squared Laplacian of real detail, well above sensor noise
LAYOUT_KEPT = 0.85  # blur keeps the coarse layout: tile means still correlate this well
NCC_SAME = 0.5  # a tile whose structure correlates at least this well is unchanged
EDGE_SHARP = 0.6  # outline sharpness between a soft ramp (< 0.45) and a sharp step (> 0.65)
EDGE_SOFT = 0.45  # plainly a soft ramp
# Colour, for the flat tiles, as chromaticity ((Cb - 128) / Y, (Cr - 128) / Y), which a
# lighting change leaves alone: a tile is coloured from 0.12 (a grey floor is under 0.06,
# a saturated panel 0.3-0.5), and it turned another colour when its hue turned by more than
# 60 degrees (red to yellow, blue to green) or when grey turned plainly coloured (0.24).
COLOURED = 0.12
GREY = 0.06
HUE_CHANGED = 60.0
LIT_LUMA = 24.0  # below this mean grey level a tile's colour is mostly noise
FROZEN_MAD = 0.15  # mean absolute difference (grey levels) of two copies of the same frame
# Two JPEG encodings of one frame: a coefficient may differ beyond the quantisation bound by
# the decoder's rounding (FROZEN_SLACK, in DCT units), and a few in 100,000 by accident.
# The DC coefficient is 8 times the block's mean, and a flat block's pixels all round the same
# way when decoded: up to 4 units on each side, so 8 more there.
FROZEN_SLACK = 3.0
FROZEN_BEYOND = 3e-5
_FROZEN_SLACKS = np.full((8, 8), FROZEN_SLACK, dtype=np.float32)
_FROZEN_SLACKS[0, 0] += 8.0

# A snapshot is 0.4 MP and a tuning photograph a few MP: an image claiming more than this is not
# a view but a decompression bomb, refused from its header before a pixel is decoded (Pillow's
# own guard, Image.MAX_IMAGE_PIXELS, stays in force as well and is never lowered or disabled).
MAX_PIXELS = 40_000_000

# Turns searched, in degrees: beyond 45 the view is simply "another scene".
_ANGLE_STEP = 1.5
TURN_ALIGN = 0.25  # degrees: a smaller turn moves no working pixel by more than about half a pixel
_ANGLES = np.arange(-45.0, 45.0 + _ANGLE_STEP / 2, _ANGLE_STEP, dtype=np.float32)


class ImageError(ValueError):
    """The image cannot be read (not an image, truncated, unsupported)."""


@dataclass(frozen=True)
class ViewResult:
    """The verdict on one snapshot. ``metrics`` are the numbers behind it (JSON-ready floats).

    ``fingerprint`` is the snapshot at working resolution (uint8), kept for frozen detection.
    """

    verdict: Literal["clear", "blocked"]
    kind: str | None
    blocked_fraction: float
    metrics: dict[str, float]
    reasons: tuple[str, ...]
    fingerprint: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def blocked(self) -> bool:
        return self.verdict == "blocked"

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "kind": self.kind,
            "blocked_fraction": round(self.blocked_fraction, 3),
            "metrics": {k: round(v, 4) for k, v in self.metrics.items()},
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Reference:
    """A reference view prepared once and reused for every snapshot of the counter."""

    image: np.ndarray  # working resolution, float32 grey levels
    spectra: np.ndarray  # phase-only spectra of the half-resolution reference at each angle
    window: np.ndarray
    tiles: _Tiles
    chroma: np.ndarray | None = None  # per tile, its colour (``_chromaticity``); None if grey

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) at working resolution."""
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True)
class _Tiles:
    mean: np.ndarray
    std: np.ndarray
    centred: np.ndarray  # (th, tw, TILE*TILE) pixels minus the tile mean
    fine: np.ndarray  # mean squared Laplacian per tile: the finest detail
    bright: np.ndarray  # share of the tile's pixels at or near white (clipped)


def working_size(width: int, height: int) -> tuple[int, int]:
    return WORK_WIDTH, max(TILE * 2, round(WORK_WIDTH * height / width))


def load_image(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to grey levels at working resolution (or ``size``, as (w, h)).

    Raises ``ImageError`` with a readable message when the bytes are not a usable image.
    """
    return _decode(data, size, colour=False)[0]


def _decode(
    data: bytes, size: tuple[int, int] | None, colour: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels at working resolution and, with ``colour`` and a colour image, its two
    chroma planes (Cb, Cr, as JPEG codes them; shape (h, w, 2)), else None."""
    if not data:
        raise ImageError("empty file, not an image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                w, h = im.size
                raise ImageError(f"image too large to decode safely: {w}x{h} pixels")
            target = size or working_size(*im.size)
            coloured = (
                colour
                and im.mode not in ("1", "L", "LA", "P", "I", "F")
                and (not im.mode.startswith("I;"))
            )
            # JPEG: decode at 1/2..1/8 scale in the DCT domain (the luma alone unless colour)
            im.draft("YCbCr" if coloured else "L", target)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float greys
                arr = np.asarray(im.convert("F"), dtype=np.float32)
                return _as_working(arr * (255.0 / max(float(arr.max()), 255.0)), target), None
            if not coloured:
                grey = im.convert("L")
                if grey.size != target:
                    grey = grey.resize(target, Image.Resampling.BOX)
                return np.asarray(grey, dtype=np.float32), None
            ycc = im if im.mode == "YCbCr" else im.convert("YCbCr")
            if ycc.size != target:
                ycc = ycc.resize(target, Image.Resampling.BOX)
            planes = np.asarray(ycc)  # uint8: the chroma is only averaged over tiles, later
            return planes[..., 0].astype(np.float32), planes[..., 1:]
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image format that can be read (JPEG, PNG ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"damaged or unsupported image: {exc}") from None


def _as_working(image: bytes | np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    if isinstance(image, bytes | bytearray | memoryview):
        return load_image(bytes(image), size)
    return _working_array(image, size)


def _with_colour(
    image: bytes | np.ndarray, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels at working resolution and, for a colour image, its chroma planes."""
    if isinstance(image, bytes | bytearray | memoryview):
        return _decode(bytes(image), size, colour=True)
    arr = np.asarray(image, dtype=np.float32)
    grey = _working_array(arr, size)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return grey, None
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]  # ITU-R 601, as JPEG and Pillow code it
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    size = (grey.shape[1], grey.shape[0])
    planes = np.stack([_working_array(cb, size), _working_array(cr, size)], axis=2)
    return grey, np.clip(planes + 0.5, 0, 255).astype(np.uint8)


def _working_array(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3:  # RGB(A) array: ITU-R 601 luma, as Pillow's "L"
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    target = size or working_size(arr.shape[1], arr.shape[0])
    if (arr.shape[1], arr.shape[0]) != target:
        resized = Image.fromarray(arr.astype(np.float32), "F").resize(target, Image.Resampling.BOX)
        arr = np.asarray(resized, dtype=np.float32)
    return arr


def _half(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    return img[:h:2, :w:2] + img[1:h:2, :w:2] + img[:h:2, 1:w:2] + img[1:h:2, 1:w:2]


def _phase_spectrum(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    f = np.fft.rfft2((img - img.mean()) * window)
    return f / (np.abs(f) + 1e-3)


def _rotate(img: np.ndarray, angle: float, fill: float) -> np.ndarray:
    im = Image.fromarray(img, "F").rotate(
        float(angle), resample=Image.Resampling.BILINEAR, fillcolor=fill
    )
    return np.asarray(im, dtype=np.float32)


def _tiles(img: np.ndarray) -> np.ndarray:
    """The image's whole tiles, one row of TILE*TILE pixels each: (rows, columns, pixels)."""
    th, tw = img.shape[0] // TILE, img.shape[1] // TILE
    crop = img[: th * TILE, : tw * TILE]
    return crop.reshape(th, TILE, tw, TILE).swapaxes(1, 2).reshape(th, tw, TILE * TILE)


def _structure(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles' mean, pixels minus the mean, and spread."""
    mean = t.mean(axis=2)
    centred = t - mean[..., None]
    return mean, centred, np.sqrt((centred * centred).mean(axis=2))


def _tile_stats(img: np.ndarray) -> _Tiles:
    th, tw = img.shape[0] // TILE, img.shape[1] // TILE
    crop = img[: th * TILE, : tw * TILE]
    t = _tiles(img)
    mean, centred, std = _structure(t)
    lap = np.zeros_like(crop)
    lap[1:-1, 1:-1] = (
        4 * crop[1:-1, 1:-1] - crop[:-2, 1:-1] - crop[2:, 1:-1] - crop[1:-1, :-2] - crop[1:-1, 2:]
    )
    fine = (lap * lap).reshape(th, TILE, tw, TILE).mean(axis=(1, 3))
    bright = (t >= 240).mean(axis=2)
    return _Tiles(mean, std, centred, fine, bright)


def _ncc(a: _Tiles, b: _Tiles) -> np.ndarray:
    return _ncc_of(a.centred, a.std, b)


def _ncc_of(centred: np.ndarray, std: np.ndarray, b: _Tiles) -> np.ndarray:
    return (centred * b.centred).mean(axis=2) / np.maximum(std * b.std, 1e-6)


def _chromaticity(chroma: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """Each tile's colour apart from its brightness: its mean Cb and Cr off grey
    (``_chroma_tiles``) over its mean grey level ``luma``. A lighting change scales all
    three alike and leaves this unchanged; shape (rows, columns, 2)."""
    return chroma / np.maximum(luma, LIT_LUMA)[..., None]


def prepare_reference(ref: bytes | np.ndarray) -> Reference:
    """Precompute what every comparison needs: tiles and the rotated reference spectra."""
    image, cbcr = _with_colour(ref)
    half = _half(image)
    window = np.outer(np.hanning(half.shape[0]), np.hanning(half.shape[1])).astype(np.float32)
    fill = float(half.mean())
    spectra = np.stack(
        [np.conj(_phase_spectrum(_rotate(half, float(a), fill), window)) for a in _ANGLES]
    ).astype(np.complex64)
    tiles = _tile_stats(image)
    chroma = None if cbcr is None else _chromaticity(_chroma_tiles(cbcr, None), tiles.mean)
    return Reference(image, spectra, window, tiles, chroma)


@dataclass(frozen=True)
class _Motion:
    angle: float
    dx: float  # working-resolution pixels
    dy: float
    peak: float

    def move_fraction(self, size: tuple[int, int]) -> float:
        return math.hypot(self.dx / size[0], self.dy / size[1])


def _subpixel(c: np.ndarray, i: int, n: int) -> float:
    """Parabolic refinement of a peak at index i of a circular 1-D profile."""
    left, mid, right = c[(i - 1) % n], c[i], c[(i + 1) % n]
    den = left - 2 * mid + right
    return 0.0 if den >= 0 else float(0.5 * (left - right) / den)


def _motion(reference: Reference, snap: np.ndarray) -> _Motion:
    half = _half(snap)
    spec = _phase_spectrum(half, reference.window)
    surfaces = np.fft.irfft2(reference.spectra * spec, s=half.shape)
    flat = surfaces.reshape(len(_ANGLES), -1)
    best = flat.argmax(axis=1)
    peaks = flat[np.arange(len(_ANGLES)), best]
    k = int(peaks.argmax())
    h, w = half.shape
    iy, ix = divmod(int(best[k]), w)
    surf = surfaces[k]
    dy = iy + _subpixel(surf[:, ix], iy, h)
    dx = ix + _subpixel(surf[iy, :], ix, w)
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    angle = float(_ANGLES[k])
    if 0 < k < len(_ANGLES) - 1:
        angle += _ANGLE_STEP * _subpixel(peaks, k, len(peaks))
    return _Motion(angle=angle, dx=2 * dx, dy=2 * dy, peak=float(peaks[k]))


def _affine(m: _Motion, w: int, h: int) -> tuple[float, ...]:
    cx, cy = w / 2, h / 2
    a = math.radians(m.angle)
    cos, sin = math.cos(a), math.sin(a)
    return (
        cos,
        sin,
        cx + m.dx - (cos * cx + sin * cy),
        -sin,
        cos,
        cy + m.dy - (-sin * cx + cos * cy),
    )


def _align(snap: np.ndarray, m: _Motion) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Undo a motion: the snapshot resampled onto the reference's frame, its valid mask, and
    the part of a pure shift left to undo (under half a pixel each way, for ``_subshift``).

    A pure shift moves whole pixels, so that no interpolation softens the snapshot (which the
    blur test would take for defocus); a turn is resampled bicubically.
    """
    h, w = snap.shape
    if abs(m.angle) < TURN_ALIGN:
        dx, dy = round(m.dx), round(m.dy)
        out = np.zeros_like(snap)
        valid = np.zeros(snap.shape, dtype=bool)
        ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
        xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
        out[yd, xd] = snap[ys, xs]
        valid[yd, xd] = True
        return out, valid, (m.dx - dx, m.dy - dy)
    coeffs = _affine(m, w, h)
    affine = Image.Transform.AFFINE
    moved = Image.fromarray(snap, "F").transform((w, h), affine, coeffs, Image.Resampling.BICUBIC)
    ones = Image.fromarray(np.ones_like(snap), "F")
    inside = ones.transform((w, h), affine, coeffs, Image.Resampling.NEAREST)
    return np.asarray(moved, dtype=np.float32), np.asarray(inside) > 0.5, (0.0, 0.0)


def _subshift(img: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """``img`` moved by a fraction of a pixel (``out[y, x] = img[y + fy, x + fx]``), by
    separable cubic convolution (Catmull-Rom), edges repeated."""
    out = img
    for axis, f in ((1, fx), (0, fy)):
        if abs(f) < 0.05:
            continue
        base = math.floor(f)
        t = f - base
        taps = (
            (-(t**3) + 2 * t**2 - t) / 2,
            (3 * t**3 - 5 * t**2 + 2) / 2,
            (-3 * t**3 + 4 * t**2 + t) / 2,
            (t**3 - t**2) / 2,
        )
        n = out.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (3, 3)
        p = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        for k, wk in enumerate(taps):
            start = 3 + base - 1 + k
            acc += np.float32(wk) * (p[:, start : start + n] if axis else p[start : start + n])
        out = acc
    return out


def _largest_component(mask: np.ndarray) -> int:
    """Size of the largest 4-connected group of True cells (the grid is a few hundred cells).

    Every cell takes the smallest index among itself and its neighbours, and then the label
    of the cell that index names (pointer jumping), until nothing changes: a few vectorised
    rounds instead of a walk cell by cell.
    """
    h, w = mask.shape
    n = h * w
    labels = np.where(mask, np.arange(n).reshape(h, w), n)
    while True:
        p = np.pad(labels, 1, constant_values=n)
        low = np.minimum(
            np.minimum(p[:-2, 1:-1], p[2:, 1:-1]), np.minimum(p[1:-1, :-2], p[1:-1, 2:])
        )
        new = np.where(mask, np.minimum(labels, low), n)
        new = np.append(new.ravel(), n)[new]  # jump to the label of the named cell
        if np.array_equal(new, labels):
            break
        labels = new
    return int(np.bincount(labels[mask]).max()) if mask.any() else 0


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """How many of each cell's 8 neighbours are True."""
    p = np.pad(mask.astype(np.int8), 1)
    h, w = mask.shape
    count = np.zeros((h, w), dtype=np.int8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                count += p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return count


@dataclass(frozen=True)
class _Comparison:
    """Tile by tile, the snapshot (as aligned) against the reference."""

    snap: _Tiles
    valid: np.ndarray  # tile wholly inside the aligned snapshot
    textured: np.ndarray  # valid and the reference has structure there
    ncc: np.ndarray
    same: float  # share of the textured tiles whose structure is unchanged


def _compare(
    reference: Reference,
    snap: np.ndarray,
    valid_px: np.ndarray | None,
    residual: tuple[float, float] = (0.0, 0.0),
) -> _Comparison:
    """The tiles of ``snap`` (aligned to whole pixels) against the reference's. The structure
    is compared after the ``residual`` fraction of a pixel is undone as well: fine texture
    (grass, gravel, a printed page) decorrelates under a shift of half a pixel, which a
    camera's jitter leaves behind. Everything else (brightness, contrast, fine detail) is
    measured on the snapshot as it is, which no interpolation softened."""
    st = _tile_stats(snap)
    rt = reference.tiles
    valid = np.ones(rt.mean.shape, dtype=bool)
    if valid_px is not None:
        valid &= np.asarray(_tiles(valid_px).all(axis=2), dtype=bool)
    if valid_px is not None and (abs(residual[0]) >= 0.05 or abs(residual[1]) >= 0.05):
        near = valid_px.copy()  # the cubic's taps reach 2 pixels: none may fall outside
        near[:, :-2] &= valid_px[:, 2:]
        near[:, 2:] &= valid_px[:, :-2]
        near[:-2] &= valid_px[2:]
        near[2:] &= valid_px[:-2]
        valid &= np.asarray(_tiles(near).all(axis=2), dtype=bool)
        _, centred, std = _structure(_tiles(_subshift(snap, *residual)))
        ncc = _ncc_of(centred, std, rt)
    else:
        ncc = _ncc(st, rt)
    textured = valid & (rt.std >= FLAT_STD)
    n = int(textured.sum())
    same = float((textured & (ncc >= NCC_SAME)).sum() / n) if n else 0.0
    return _Comparison(st, valid, textured, ncc, same)


def _coarse_ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Correlation and regression slope of two tile-mean maps: the layout, and its contrast."""
    x, y = a[valid], b[valid]
    x, y = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float((x * x).sum()), float((y * y).sum()), float((x * y).sum())
    if sxx <= 0 or syy <= 0:
        return 0.0, 0.0
    return sxy / math.sqrt(sxx * syy), sxy / syy


def _gain(
    ratio: np.ndarray, measured: np.ndarray, anchors: np.ndarray, lit: np.ndarray
) -> tuple[float, bool]:
    """The overall lighting change, and whether structure that survived vouches for it.

    Anchors are tiles whose structure plainly survived (a few by chance in any image, hence
    the minimum count). ``ratio`` is each tile's brightness ratio over its pixels that were
    not clipped at white, ``measured`` where there were enough of them (``_unclipped_ratio``):
    strong overexposure clips the bright pixels and leaves the dark ones to show the gain,
    so the anchors measured so are preferred when there are enough of them. Without anchors
    (a flat scene), the median ratio is used only when the tiles agree on it, as one
    lighting change makes them do; a cover does not.
    """
    enough = max(3, 0.05 * lit.sum())
    if anchors.sum() >= enough:
        sure = anchors & measured
        return float(np.median(ratio[sure if sure.sum() >= enough else anchors])), True
    if lit.sum() >= 3:
        logs = np.log(np.maximum(ratio[lit], 1e-3))
        q1, q3 = np.percentile(logs, [25, 75])
        if q3 - q1 < math.log(1.3):
            return float(math.exp(float(np.median(logs)))), False
    return 1.0, False


UNCLIPPED = 200  # a working pixel below this holds no full-size pixel clipped at white, mostly


def _unclipped_ratio(st: _Tiles, rt: _Tiles) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's brightness ratio, snapshot over reference, over the pixels the snapshot
    did not clip (below ``UNCLIPPED``), and where at least 8 of its 64 were such; elsewhere
    the plain ratio of the means (a lower bound when the tile clipped)."""
    s = st.centred + st.mean[..., None]
    r = rt.centred + rt.mean[..., None]
    keep = s < UNCLIPPED
    measured = keep.sum(axis=2) >= 8
    num, den = (s * keep).sum(axis=2), (r * keep).sum(axis=2)
    plain = st.mean / np.maximum(rt.mean, 1.0)
    return np.where(measured, num / np.maximum(den, 1.0), plain), measured


@functools.cache
def _smoother(n: int) -> np.ndarray:
    """A binomial blur (1 4 6 4 1, twice: sigma about 1.4 cells; edges repeated, not
    zeroed) along one axis of length n, as an n x n matrix: the grid is small and fixed."""
    m: np.ndarray = np.eye(n, dtype=np.float32)
    for _ in range(2):
        p = np.pad(m, ((2, 2), (0, 0)), mode="edge")
        m = (p[:n] + 4 * p[1 : n + 1] + 6 * p[2 : n + 2] + 4 * p[3 : n + 3] + p[4 : n + 4]) / 16
    return m.astype(np.float32)


def _local_gain(ratio: np.ndarray, anchors: np.ndarray, gain: float) -> np.ndarray:
    """The lighting change around each tile: the brightness ratio of nearby anchors (tiles
    whose structure survived), weighted by closeness over a couple of tiles; the overall
    ``gain`` where no anchor is near (inside a large object, or a flat scene)."""
    sy, sx = _smoother(anchors.shape[0]), _smoother(anchors.shape[1])
    a = anchors.astype(np.float32)
    w = sy @ a @ sx.T
    logs = sy @ np.where(anchors, np.log(np.maximum(ratio, 1e-3)), 0.0).astype(np.float32) @ sx.T
    near = w / (w + 0.05)  # how much the neighbourhood has to say: none without anchors
    local = np.where(w > 0, logs / np.maximum(w, 1e-6), 0.0)
    return np.exp(near * local + (1 - near) * math.log(max(gain, 1e-3)))


def _edge_sharpness(
    snap: np.ndarray, ref: np.ndarray, changed: np.ndarray, valid: np.ndarray
) -> float | None:
    """How sharp the outline of the changed region is: over the tiles on its border where a
    new step dominates (its height is well above the tile's own range in the reference, so
    the scene's texture does not speak for it), the median of the steepest gradient (98th
    percentile) over the step's height.

    A step that is sharp in the full-size snapshot is at most a pixel or two wide here, so the
    ratio is about 0.7-1; a lens cover is out of focus, a ramp several pixels wide (a Gaussian
    edge of sigma s pixels over a tile's 8 gives about 0.4/s). None when no border tile holds
    such a step: nothing to judge by.
    """
    border = changed & (_neighbours(~changed & valid) > 0)
    ys, xs = np.nonzero(border)
    if not len(ys):
        return None
    grad = np.zeros_like(snap)
    grad[:-1, :-1] = np.maximum(
        np.abs(np.diff(snap, axis=0))[:, :-1], np.abs(np.diff(snap, axis=1))[:-1]
    )

    def cells(img: np.ndarray) -> np.ndarray:  # the border tiles' pixels, one row per tile
        th, tw = img.shape[0] // TILE, img.shape[1] // TILE
        t = img[: th * TILE, : tw * TILE].reshape(th, TILE, tw, TILE).swapaxes(1, 2)
        return t[ys, xs].reshape(len(ys), TILE * TILE)

    # 5th and 95th percentiles of a tile's 64 pixels, by rank (sorting rows is cheap)
    lo_rank, hi_rank = round(0.05 * (TILE * TILE - 1)), round(0.95 * (TILE * TILE - 1))
    own, before = np.sort(cells(snap), axis=1), np.sort(cells(ref), axis=1)
    step = own[:, hi_rank] - own[:, lo_rank]
    new = step >= 12 + 1.5 * (before[:, hi_rank] - before[:, lo_rank])  # 12: 3 noise floors
    if not new.any():
        return None
    # the last row and column of each tile have no forward difference inside it: left out
    g = cells(grad)[new].reshape(-1, TILE, TILE)[:, : TILE - 1, : TILE - 1]
    g = np.sort(g.reshape(len(g), -1), axis=1)
    steep = g[:, round(0.98 * (g.shape[1] - 1))]
    return float(np.median(steep / step[new]))


def _chroma_tiles(cbcr: np.ndarray, m: _Motion | None) -> np.ndarray:
    """Each tile's mean Cb and Cr off grey, (rows, columns, 2), with the motion ``m`` undone
    as ``_align`` undoes it. Colour is only averaged over tiles, so this works at half the
    working resolution and takes the nearest pixel: a fraction of the cost of the luma's."""
    h, w = cbcr.shape[0] // 2 * 2, cbcr.shape[1] // 2 * 2
    c = cbcr[:h, :w].astype(np.float32)
    rows = c[0::2] + c[1::2]
    half: np.ndarray = (rows[:, 0::2] + rows[:, 1::2]) * 0.25
    if m is not None:
        hh, hw = half.shape[:2]
        three = np.dstack([half, half[..., :1]]) + 0.5
        moved = Image.fromarray(three.astype(np.uint8), "RGB").transform(
            (hw, hh),
            Image.Transform.AFFINE,
            _affine(_Motion(m.angle, m.dx / 2, m.dy / 2, m.peak), hw, hh),
            Image.Resampling.NEAREST,
            fillcolor=(128, 128, 128),
        )
        half = np.asarray(moved, dtype=np.float32)[..., :2]
    t = TILE // 2
    th, tw = h // TILE, w // TILE
    cells = half[: th * t, : tw * t].reshape(th, t, tw * t, 2).sum(axis=1)
    return cells.reshape(th, tw, t, 2).sum(axis=2) / (t * t) - 128.0


def _colour_changed(
    reference: Reference,
    cbcr: np.ndarray | None,
    aligned_by: _Motion | None,
    st: _Tiles,
    anchors: np.ndarray,
    valid: np.ndarray,
) -> np.ndarray:
    """Tiles that turned another colour (a panel of the floor's grey level, but olive), beyond
    the white balance that the anchors (tiles whose structure survived) show: a hue turned by
    more than ``HUE_CHANGED``, or grey turned plainly coloured or back. Not saturation alone:
    a tone curve (contrast, gamma) or fog changes how saturated a colour looks, not its hue."""
    if reference.chroma is None or cbcr is None:
        return np.zeros(valid.shape, dtype=bool)
    ref_c = reference.chroma
    lit = valid & (reference.tiles.mean >= LIT_LUMA) & (st.mean >= LIT_LUMA)
    snap_c = _chromaticity(_chroma_tiles(cbcr, aligned_by), st.mean)
    sure = anchors & lit
    if sure.sum() >= 3:
        snap_c = snap_c - np.median((snap_c - ref_c)[sure], axis=0)
    sat_r, sat_s = np.hypot(*ref_c.transpose(2, 0, 1)), np.hypot(*snap_c.transpose(2, 0, 1))
    cos = (ref_c * snap_c).sum(axis=2) / np.maximum(sat_r * sat_s, 1e-6)
    hued = (sat_r >= COLOURED) & (sat_s >= COLOURED) & (cos < math.cos(math.radians(HUE_CHANGED)))
    grey_flip = ((sat_r < GREY) & (sat_s >= 2 * COLOURED)) | (
        (sat_s < GREY) & (sat_r >= 2 * COLOURED)
    )
    return lit & (hued | grey_flip)


def analyze(snapshot: bytes | np.ndarray, reference: Reference) -> ViewResult:
    """Judge one snapshot (encoded bytes or an image array) against a prepared reference."""
    if reference.chroma is not None:
        snap, cbcr = _with_colour(snapshot, reference.size)
    else:
        snap, cbcr = _as_working(snapshot, reference.size), None
    fingerprint = np.clip(snap + 0.5, 0, 255).astype(np.uint8)
    rt = reference.tiles

    # 1. Camera motion: undo a shake, call a large motion that explains the view "moved".
    motion = _motion(reference, snap)
    move = motion.move_fraction(reference.size)
    cmp = _compare(reference, snap, None)
    same_still = cmp.same
    explained = False
    aligned_by: _Motion | None = None
    if move >= 0.2 / WORK_WIDTH or abs(motion.angle) >= TURN_ALIGN:
        aligned = _compare(reference, *_align(snap, motion))
        explained = aligned.same >= same_still + 0.2 and aligned.same >= 0.4
        if aligned.same > same_still:
            cmp, aligned_by = aligned, motion
    metrics: dict[str, float] = {
        "mean_luma": float(snap.mean()),
        "reference_mean_luma": float(reference.image.mean()),
        "shift_fraction": move,
        "rotation_deg": motion.angle,
        "motion_peak": motion.peak,
        "motion_explained": float(explained),
        "matching_unaligned": same_still,
        "matching": cmp.same,
    }

    def result(kind: str | None, fraction: float, reason: str) -> ViewResult:
        verdict: Literal["clear", "blocked"] = "blocked" if kind else "clear"
        frac = float(min(max(fraction, 0.0), 1.0))
        return ViewResult(verdict, kind, frac, metrics, (reason,), fingerprint)

    if explained and (move >= MOVE_BLOCKED or abs(motion.angle) >= TURN_BLOCKED):
        return result(
            "moved",
            1.0 - same_still,
            f"camera moved by {move:.0%} of the frame and turned {motion.angle:+.0f} degrees",
        )

    st, valid, textured, ncc = cmp.snap, cmp.valid, cmp.textured, cmp.ncc
    n_valid = max(int(valid.sum()), 1)
    lit = valid & (rt.mean >= 16)  # bright enough in the reference to go dark
    ratio = st.mean / np.maximum(rt.mean, 1.0)
    # Sensor noise or heavy JPEG adds its own fine energy and lowers every correlation by a
    # known factor: estimate it from the quietest tiles and expect correspondingly less.
    q = np.percentile(st.fine[valid], 20) - np.percentile(rt.fine[valid], 20) if valid.any() else 0
    noise = math.sqrt(max(float(q), 0.0) / 20.0)  # a Laplacian multiplies noise variance by 20
    attenuation = rt.std / np.maximum(np.sqrt(rt.std**2 + noise**2), 1e-6)
    kept = textured & (ncc >= NCC_SAME * attenuation) & (st.std >= FLAT_STD / 2)
    anchors = kept & lit & (ncc >= 0.7 * attenuation)
    gain, anchored = _gain(*_unclipped_ratio(st, rt), anchors, lit)
    metrics["noise"] = noise
    layout, contrast = _coarse_ncc(st.mean, rt.mean, valid)
    tile_contrast = float(np.median(st.std[textured] / rt.std[textured])) if textured.any() else 1.0
    metrics.update(
        gain=gain, layout_corr=layout, layout_contrast=contrast, tile_contrast=tile_contrast
    )

    # 2. The whole view went dark (lights off, illuminator dead, a black cover), or its
    # contrast collapsed with the layout still there (glare, a washed-out exposure).
    normal = valid & (ratio >= 0.5) & (ratio <= 2.0) & (kept | ~textured)
    normal_frac = float(normal.sum() / n_valid)
    dark = lit & ((ratio < DARKER_BLOCKED) | (st.mean < 8))
    dark_frac = float(dark.sum() / max(int(lit.sum()), 1))
    metrics.update(normal_fraction=normal_frac, dark_fraction=dark_frac)
    if dark_frac >= 0.75 and normal_frac < 0.1:
        return result("dark", dark_frac, f"view dark: {dark_frac:.0%} of it lost its light")
    if anchored and gain >= BRIGHTER_BLOCKED:  # the exposure ran away (its structure survived)
        return result("overexposed", 1.0, f"view overexposed: {gain:.1f} times brighter")
    if layout >= LAYOUT_KEPT and max(contrast, tile_contrast) < DETAIL_LEFT_BLOCKED:
        brighter = snap.mean() > reference.image.mean()
        return result(
            "overexposed" if brighter else "dark",
            1.0,
            f"view {'washed out' if brighter else 'dim'}: {contrast:.0%} of its contrast left",
        )

    # 3. Blur: the layout is intact but the fine detail is gone (contrast-normalised, so a
    # haze that only lowers contrast is not blur).
    light_lost = valid & (st.bright >= 0.5) & (rt.bright < 0.5)
    sharp_ok = textured & ~light_lost & (st.mean > 8) & (rt.fine >= FINE_MIN)
    if sharp_ok.sum() >= 4 and contrast > 0.05:
        sharp_t = np.sqrt(st.fine[sharp_ok] / rt.fine[sharp_ok]) / contrast
        sharp = float(np.median(sharp_t))
        soft_frac = float((sharp_t < SHARPNESS_LEFT_BLOCKED).mean())
    else:
        sharp, soft_frac = 1.0, 0.0
    metrics.update(sharpness_left=sharp, soft_fraction=soft_frac)
    if sharp < SHARPNESS_LEFT_BLOCKED and layout >= LAYOUT_KEPT:
        return result("blurred", soft_frac, f"view blurred: {sharp:.0%} of the fine detail left")

    # 4. Hidden tiles: structure gone where there was some, brightness or texture changed where
    # the reference is flat, detail clipped to white or faded into a haze.
    # Light can change over part of the view only (a bank of lights, sun through a window):
    # flat tiles are judged against the gain their neighbourhood's surviving structure shows.
    g = np.clip(
        _local_gain(ratio, anchors, gain),
        1 - LIGHT_BENIGN,  # beyond the band, change is change
        1 + LIGHT_BENIGN,
    )
    expected = g * rt.mean
    lost_tex = textured & ~kept
    hazy = textured & (ratio > 1.0) & (st.std < DETAIL_LEFT_BLOCKED * rt.std) & (ncc >= NCC_SAME)
    flat = valid & ~textured
    signal = np.sqrt(np.maximum(st.std**2 - noise**2, 0.0))
    lost_flat = flat & (
        (signal > np.maximum(1.5 * FLAT_STD, 3 * g * rt.std))  # texture appeared
        | ((rt.std >= FLAT_STD / 2) & (st.std < DETAIL_LEFT_BLOCKED * g * rt.std))  # grain gone
        | (np.abs(st.mean - expected) > np.maximum(10.0, 0.2 * expected))
        | _colour_changed(reference, cbcr, aligned_by, st, anchors, valid)
    )
    washed = (light_lost & (lost_tex | lost_flat)) | hazy
    changed = lost_tex | lost_flat | hazy
    # A flat object on a flat floor of the same tone leaves holes in the changed region;
    # such tiles prove nothing either way, so they take the side of their neighbours.
    unsure = flat & ~lost_flat & (signal < FLAT_STD)
    for _ in range(2):
        around = _neighbours(changed)
        changed = changed | (unsure & (around >= 5))
    n_changed = int(changed.sum())
    hidden = n_changed / n_valid
    washed_share = float(washed.sum() / n_changed) if n_changed else 0.0
    flat_share = float((st.std[changed] < FLAT_STD).sum() / n_changed) if n_changed else 0.0
    metrics.update(
        hidden_fraction=hidden,
        washed_share=washed_share,
        flat_share=flat_share,
    )
    # What cannot be seen to change may still be covered: a flat cover of the same tone as a
    # night sky or a plain wall. When most of the detail is gone, the layout with it, into a
    # featureless picture, something is on the lens, however little structure the reference
    # had to lose.
    featureless = float((st.std[valid] < FLAT_STD).mean())
    detail_gone = max(contrast, tile_contrast) < DETAIL_LEFT_BLOCKED and featureless >= 0.85
    metrics["featureless"] = featureless
    if hidden < HIDDEN_BLOCKED:
        if detail_gone:
            lost = 1.0 - cmp.same
            return result("covered", lost, f"view covered: {lost:.0%} of its structure gone")
        return result(None, hidden, f"view matches the reference ({hidden:.0%} differs)")
    if washed_share >= 0.5 or (anchored and gain > 1 + LIGHT_BENIGN):
        return result("overexposed", hidden, f"view washed out: {hidden:.0%} of it lost to light")
    # Passers-by are separate, smaller blobs: a hidden view needs one large contiguous region.
    largest = _largest_component(changed) / n_valid
    metrics["largest_region"] = largest
    if largest < HIDDEN_BLOCKED * 0.75:
        return result(None, hidden, f"{hidden:.0%} differs, in scattered small regions")
    # On the lens means out of focus: featureless, and its outline a soft ramp. An object in
    # the scene is in focus: even a plain one has a sharp outline.
    edge = None
    if flat_share >= 0.7 and hidden < 0.9:  # at 90 % hardly any outline is left in view
        edge = _edge_sharpness(snap, reference.image, changed, valid)
        metrics["edge_sharpness"] = -1.0 if edge is None else edge
    if (
        (flat_share >= 0.85 and (hidden >= 0.6 or detail_gone))
        and (edge is None or edge < EDGE_SHARP)
    ) or (
        0.5 <= hidden < 0.85 and edge is not None and edge < EDGE_SOFT  # plainly out of focus
    ):
        return result("covered", hidden, f"{hidden:.0%} of the view covered by a flat surface")
    if hidden >= 0.85:  # textured but unrelated to the reference
        return result("moved", hidden, f"the camera sees another scene ({hidden:.0%} differs)")
    return result("obstructed", hidden, f"{hidden:.0%} of the view hidden by an object")


def _dct_matrix() -> np.ndarray:
    k, n = np.arange(8)[:, None], np.arange(8)[None, :]
    m = np.sqrt(2 / 8) * np.cos(np.pi * (2 * n + 1) * k / 16)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


_DCT8 = _dct_matrix()  # JPEG's 8x8 DCT is orthonormal: this is its matrix


@dataclass(frozen=True)
class _Frame:
    """A snapshot as its encoder left it: the luma's 8x8 DCT coefficients (as decoded) and the
    quantisation steps they were rounded to, or (not a JPEG) the luma pixels themselves."""

    pixels: np.ndarray
    coefs: np.ndarray | None = None  # (blocks_y, blocks_x, 8, 8)
    steps: np.ndarray | None = None  # (8, 8)
    clipped: np.ndarray | None = None  # blocks with a pixel at black or white: not comparable


def _frame(data: bytes) -> _Frame:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ImageError(f"image too large to decode safely: {im.size[0]}x{im.size[1]}")
            tables = getattr(im, "quantization", None) if im.format == "JPEG" else None
            im.draft("L", im.size)  # JPEG: the luma plane exactly as coded, no colour maths
            pixels = np.asarray(im.convert("L"), dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"damaged or unsupported image: {exc}") from None
    if not tables or 0 not in tables:
        return _Frame(pixels)
    h, w = pixels.shape[0] // 8 * 8, pixels.shape[1] // 8 * 8
    blocks = pixels[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2)
    coefs = _DCT8 @ (blocks - 128.0) @ _DCT8.T
    steps = np.asarray(tables[0], dtype=np.float32).reshape(8, 8)
    clipped = np.asarray(((blocks <= 1) | (blocks >= 254)).any(axis=(2, 3)), dtype=bool)
    return _Frame(pixels, coefs, steps, clipped)


def _same_frame(a: _Frame, b: _Frame) -> bool:
    """Whether two snapshots can be encodings of one and the same frame.

    JPEG rounds each DCT coefficient to a multiple of its quantisation step, so two encodings
    of one frame (at any qualities) differ in a coefficient by at most half of each step;
    where the steps are equal, not at all. A live scene's sensor noise and passers-by break
    that bound somewhere among the ~27,000 luma coefficients of a snapshot. The slack covers
    the decoder's rounding; a handful of coefficients may exceed it by accident.
    """
    if a.pixels.shape != b.pixels.shape:
        return False
    if a.coefs is None or b.coefs is None or a.steps is None or b.steps is None:
        return float(np.abs(a.pixels - b.pixels).mean()) <= FROZEN_MAD
    assert a.clipped is not None and b.clipped is not None
    usable = ~(a.clipped | b.clipped)
    if usable.sum() < 0.2 * usable.size:
        return float(np.abs(a.pixels - b.pixels).mean()) <= FROZEN_MAD
    step_a, step_b = a.steps, b.steps
    bound = np.where(step_a == step_b, step_a / 2, (step_a + step_b) / 2) + _FROZEN_SLACKS
    beyond = np.abs(a.coefs[usable] - b.coefs[usable]) > bound
    return float(beyond.mean()) <= FROZEN_BEYOND


def frozen(snapshots: Sequence[bytes | np.ndarray], expected_traffic: bool) -> bool:
    """True when every consecutive pair of snapshots is the same frame while people should pass.

    Give the snapshots as the counter sent them (bytes): a frozen camera that re-encodes its
    stuck frame at another JPEG quality each time is then caught (``_same_frame``). Arrays
    (``ViewResult.fingerprint``) are compared for plain near-identity, which catches only the
    very same picture sent again.
    """
    if not expected_traffic or len(snapshots) < 2:
        return False
    if all(isinstance(s, np.ndarray) for s in snapshots):
        for a, b in itertools.pairwise(snapshots):
            assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            if a.shape != b.shape:
                return False
            if float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) > FROZEN_MAD:
                return False
        return True
    frames: list[_Frame] = []
    for snap in snapshots:
        if isinstance(snap, np.ndarray):
            frames.append(_Frame(_as_working(snap)))
        else:
            frames.append(_frame(bytes(snap)))
        if len(frames) >= 2 and not _same_frame(frames[-2], frames[-1]):
            return False  # decoding stops at the first live pair: a live view costs one pair
    return True


def usable_as_reference(image: bytes | np.ndarray) -> str | None:
    """Why a snapshot cannot stand for the normal view, or None when it can."""
    img = _as_working(image)
    if img.mean() < 24:
        return "too dark"
    if (img >= 240).mean() > 0.5:
        return "washed out"
    if (_tile_stats(img).std >= FLAT_STD).mean() < 0.1:
        return "no structure to compare (covered or out of focus)"
    return None


def median_view(snapshots: Sequence[bytes | np.ndarray]) -> np.ndarray:
    """The pixel-wise median of snapshots at working resolution (all at the first one's size):
    the normal view they agree on, passers-by removed. What ``LearnedReference`` learns, so the
    agent can save the view its check learned from the same snapshots."""
    images: list[np.ndarray] = []
    for snap in snapshots:
        images.append(
            _as_working(snap, (images[0].shape[1], images[0].shape[0]) if images else None)
        )
    if not images:
        raise ValueError("no snapshots to take the median of")
    return np.median(np.stack(images), axis=0)


class LearnedReference:
    """The normal view learned from the first good snapshots, for a counter with no reference.

    Usable snapshots (``usable_as_reference``) are grouped by agreement: each joins the oldest
    group whose first snapshot it is clear against, or starts a new group. The first group to
    reach ``needed`` snapshots becomes the reference, once and for all, as their pixel-wise
    median (which removes passers-by). A snapshot judged blocked against a group is never
    folded into it, so one odd snapshot cannot become the normal view. ``learned_from`` names
    the snapshots it was learned from, by the tags they were offered with.
    """

    MAX_GROUPS = 4

    def __init__(self, needed: int = 3) -> None:
        if needed < 1:
            raise ValueError("needed must be at least 1")
        self.needed = needed
        self.reference: Reference | None = None
        self.learned_from: tuple[object, ...] = ()
        self._groups: list[tuple[Reference, list[np.ndarray], list[object]]] = []

    @property
    def progress(self) -> tuple[int, int]:
        """(snapshots in the largest agreeing group so far, needed)."""
        if self.reference is not None:
            return self.needed, self.needed
        return max((len(m) for _, m, _ in self._groups), default=0), self.needed

    def may_fold(self, image: np.ndarray, group: Reference) -> bool:
        """Whether a snapshot may join the group that starts with ``group``."""
        return usable_as_reference(image) is None and analyze(image, group).verdict == "clear"

    def offer(self, snapshot: bytes | np.ndarray, tag: object = None) -> ViewResult | None:
        """Judge a snapshot once learned; until then fold it in where it may, and return None."""
        if self.reference is not None:
            return analyze(snapshot, self.reference)
        size = self._groups[0][0].size if self._groups else None
        image = _as_working(snapshot, size)
        if usable_as_reference(image) is not None:
            return None
        for first, members, tags in self._groups:
            if self.may_fold(image, first):
                members.append(image)
                tags.append(tag)
                break
        else:
            members, tags = [image], [tag]
            self._groups.append((prepare_reference(image), members, tags))
            if len(self._groups) > self.MAX_GROUPS:  # forget the smallest older group
                sizes = [len(m) for _, m, _ in self._groups[:-1]]
                del self._groups[sizes.index(min(sizes))]
        if len(members) >= self.needed:
            self.reference = prepare_reference(np.median(np.stack(members), axis=0))
            self.learned_from = tuple(tags)
            self._groups = []
        return None
