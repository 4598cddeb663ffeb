"""Live-view snapshots: an overhead view of a store entrance, healthy or sabotaged.

A counter is tuned against a reference view of its empty entrance; later, a view that is
covered, dark, blurred, knocked askew or blocked by a display stand counts wrongly without
any error from the device. The agent's live-view check compares snapshots with the reference,
so the simulator draws both: a floor of tiles, the outside pavement, the threshold and door
frame, a door mat and the edges of the shelving, seen from the ceiling; people crossing as
heads and shoulders; and each live-view fault applied the way it looks through a real lens.

Everything is deterministic from the scene seed (one per counter) and the shot seed (from the
time), and needs numpy and Pillow only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 768, 576
PAD = 256  # the scene extends beyond the view so a moved camera still sees a floor
CW, CH = W + 2 * PAD, H + 2 * PAD
FLOORS = ((196, 190, 180), (172, 174, 178), (206, 200, 190), (160, 150, 138))
CLOTHES = (
    (40, 52, 90), (150, 30, 40), (60, 60, 64), (210, 210, 205), (30, 90, 60),
    (180, 140, 60), (110, 70, 120), (20, 20, 24), (90, 120, 160), (200, 110, 80),
)  # fmt: skip
HAIR = ((25, 20, 18), (60, 40, 25), (120, 90, 50), (200, 180, 130), (150, 150, 150), (90, 30, 20))


def _v(x: float, y: float) -> tuple[int, int]:
    """View coordinates to canvas coordinates."""
    return int(PAD + x), int(PAD + y)


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    return (*_v(x0, y0), *_v(x1, y1))


def _floor(rng: np.random.Generator) -> np.ndarray:
    color = np.array(FLOORS[int(rng.integers(len(FLOORS)))], dtype=np.float32)
    tile = 96
    ty, tx = CH // tile + 1, CW // tile + 1
    shade = rng.normal(1.0, 0.03, (ty, tx)).astype(np.float32)
    field = np.kron(shade, np.ones((tile, tile), dtype=np.float32))[:CH, :CW]
    yy, xx = np.mgrid[0:CH, 0:CW]
    grout = ((yy % tile) < 3) | ((xx % tile) < 3)
    field = np.where(grout, 0.72, field)
    mottle = rng.normal(0.0, 1.0, (CH // 16, CW // 16)).astype(np.float32)
    mottle_img = Image.fromarray(((mottle * 20) + 128).clip(0, 255).astype(np.uint8))
    mottle_big = np.asarray(mottle_img.resize((CW, CH), Image.Resampling.BICUBIC), np.float32)
    field = field * (1.0 + (mottle_big - 128.0) / 128.0 * 0.05)
    return field[..., None] * color[None, None, :]


def _ribs(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], base: int, step: int) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=(base, base, base + 2))
    for y in range(y0, y1, step):
        draw.line([(x0, y), (x1, y)], fill=(base + 10, base + 10, base + 12), width=2)


def _fixtures(img: Image.Image, rng: np.random.Generator) -> None:
    """Pavement, threshold, door frame, mat and shelving, drawn in view coordinates."""
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, CW, PAD + 70), fill=(108, 108, 112))  # outside pavement
    for x in range(-PAD, W + PAD, 140):  # paving slab joints
        d.line([_v(x, -PAD), _v(x, 70)], fill=(90, 90, 94), width=3)
    d.line([_v(-PAD, 10), _v(W + PAD, 10)], fill=(90, 90, 94), width=3)
    _ribs(d, _box(-PAD, 70, W + PAD, 86), 196, 4)  # aluminium threshold
    d.rectangle(_box(-PAD, 60, 40, 86), fill=(84, 100, 106))  # glass shopfront
    d.rectangle(_box(728, 60, W + PAD, 86), fill=(84, 100, 106))
    d.rectangle(_box(40, 40, 96, 120), fill=(58, 60, 64))  # door frame posts
    d.rectangle(_box(672, 40, 728, 120), fill=(58, 60, 64))
    d.rectangle(_box(150, 86, 618, 250), fill=(38, 38, 40))  # door mat border
    _ribs(d, _box(158, 94, 610, 242), 52, 6)
    for x0, x1 in ((-PAD, 130), (638, W + PAD)):  # shelving, both sides
        d.rectangle(_box(x0, 400, x1, H + PAD), fill=(234, 234, 230))
        edge = x1 - 10 if x0 < 0 else x0
        d.rectangle(_box(edge, 400, edge + 10, H + PAD), fill=(88, 88, 94))
        d.rectangle(_box(x0, 400, x1, 410), fill=(88, 88, 94))
        for y in range(420, H + PAD, 46):
            x = x0 + 8 if x0 > 0 else max(x0, -40)
            while x < (x1 - 30 if x0 < 0 else x1):
                w = int(rng.integers(18, 40))
                color = tuple(int(c) for c in rng.integers(40, 230, 3))
                d.rectangle(_box(x, y, x + w, y + 34), fill=color)
                x += w + 6


def _vignette() -> np.ndarray:
    yy, xx = np.mgrid[0:CH, 0:CW].astype(np.float32)
    r2 = ((xx - CW / 2) / (W / 2)) ** 2 + ((yy - CH / 2) / (H / 2)) ** 2
    light: np.ndarray = (1.0 - 0.12 * r2).clip(0.55, 1.0)[..., None]
    return light


def _person(rng: np.random.Generator) -> Image.Image:
    """One person from above: shadow, shoulders, arms, head; a random heading."""
    s = 150
    sprite = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    shadow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).ellipse((32, 50, 132, 110), fill=(0, 0, 0, 80))
    sprite.alpha_composite(shadow.filter(ImageFilter.GaussianBlur(6)))
    d = ImageDraw.Draw(sprite)
    cloth = CLOTHES[int(rng.integers(len(CLOTHES)))]
    scale = float(rng.uniform(0.85, 1.1))
    half_w, half_h = 46 * scale, 24 * scale
    c = s / 2
    d.ellipse((c - half_w, c - half_h, c + half_w, c + half_h), fill=(*cloth, 255))
    arm = tuple(max(0, v - 25) for v in cloth)
    d.ellipse((c - half_w - 6, c - 12, c - half_w + 16, c + 12), fill=(*arm, 255))
    d.ellipse((c + half_w - 16, c - 12, c + half_w + 6, c + 12), fill=(*arm, 255))
    hair = HAIR[int(rng.integers(len(HAIR)))]
    hr = 19 * scale
    d.ellipse((c - hr, c - hr - 4, c + hr, c + hr + 2), fill=(*hair, 255))
    d.ellipse(
        (c - hr / 3, c - hr / 2, c + hr / 4, c - hr / 4),
        fill=(*(min(255, v + 40) for v in hair), 255),
    )
    if rng.random() < 0.3:  # a bag
        d.rectangle((c + half_w, c + 4, c + half_w + 22, c + 30), fill=(*CLOTHES[0], 255))
    heading = float(rng.choice([0.0, 180.0]) + rng.normal(0, 20))
    return sprite.rotate(heading, resample=Image.Resampling.BILINEAR, expand=True)


def _cover_mask(rng: np.random.Generator, fraction: float) -> np.ndarray:
    """A soft-edged region covering ``fraction`` of the view, entering from one side."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    theta = float(rng.uniform(0, 2 * math.pi))
    value = xx * math.cos(theta) + yy * math.sin(theta)
    value += 30 * np.sin(yy / 70.0 + float(rng.uniform(0, 6))) + 20 * np.sin(xx / 55.0)
    cut = float(np.quantile(value, fraction))
    hard = Image.fromarray(((value <= cut) * 255).astype(np.uint8))
    return np.asarray(hard.filter(ImageFilter.GaussianBlur(18)), np.float32)[..., None] / 255.0


def _obstruction(img: Image.Image, rng: np.random.Generator, fraction: float) -> None:
    """A cardboard display box parked under the camera, hiding ``fraction`` of the view."""
    area = fraction * W * H
    bw = math.sqrt(area * W / H)
    bh = area / bw
    cx = W / 2 + float(rng.uniform(-1, 1)) * max(0.0, (W - bw) / 2)
    cy = H / 2 + float(rng.uniform(-1, 1)) * max(0.0, (H - bh) / 2)
    angle = math.radians(float(rng.uniform(-6, 6)))
    corners = [(-bw / 2, -bh / 2), (bw / 2, -bh / 2), (bw / 2, bh / 2), (-bw / 2, bh / 2)]

    def place(px: float, py: float, dx: float = 0.0, dy: float = 0.0) -> tuple[float, float]:
        ca, sa = math.cos(angle), math.sin(angle)
        return cx + dx + px * ca - py * sa, cy + dy + px * sa + py * ca

    d = ImageDraw.Draw(img)
    d.polygon([place(x, y, 14, 16) for x, y in corners], fill=(70, 66, 60))  # shadow
    d.polygon([place(x, y) for x, y in corners], fill=(178, 138, 92), outline=(120, 90, 60))
    d.line([place(-bw / 2, 0), place(bw / 2, 0)], fill=(140, 105, 70), width=3)  # flap seam
    d.polygon(
        [place(-bw / 2, -14), place(bw / 2, -14), place(bw / 2, 14), place(-bw / 2, 14)],
        fill=(205, 196, 170),
    )  # packing tape
    d.rectangle((cx - bw / 5, cy + bh / 6, cx + bw / 5, cy + bh / 3), fill=(200, 40, 40))


class Scene:
    """One counter's view: the empty entrance (cached) and snapshots taken of it."""

    def __init__(self, scene_seed: int) -> None:
        self.seed = scene_seed
        rng = np.random.default_rng([scene_seed, 1])
        canvas = Image.fromarray(_floor(rng).clip(0, 255).astype(np.uint8))
        _fixtures(canvas, rng)
        lit = np.asarray(canvas, np.float32) * _vignette()
        self.canvas = Image.fromarray(lit.clip(0, 255).astype(np.uint8))

    def reference(self) -> Image.Image:
        """The view as at tuning time: empty, well lit, in place."""
        return self.snapshot(shot_seed=0, people=0, effects=(), jitter=False)

    def snapshot(
        self,
        shot_seed: int,
        people: int,
        effects: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        jitter: bool = True,
    ) -> Image.Image:
        """A live view with ``people`` in it and the live-view faults in ``effects`` applied."""
        rng = np.random.default_rng([self.seed, 2, shot_seed])
        fx = dict(effects)
        img = self.canvas.copy()
        for _ in range(people):
            sprite = _person(rng)
            x = float(rng.uniform(150, 620)) if rng.random() < 0.8 else float(rng.uniform(0, W))
            y = float(rng.uniform(40, H - 20))
            img.paste(sprite, _v(x - sprite.width / 2, y - sprite.height / 2), sprite)
        if "moved" in fx:
            img = _moved(img, fx["moved"])
        else:
            img = img.crop(_box(0, 0, W, H))
        if "obstructed" in fx:
            _obstruction(img, rng, float(fx["obstructed"].get("fraction", 0.5)))
        arr = np.asarray(img, np.float32)
        if "covered" in fx:
            mask = _cover_mask(rng, float(fx["covered"].get("fraction", 0.85)))
            grad = np.linspace(26, 48, W, dtype=np.float32)[None, :, None]
            cover = grad * np.array([1.0, 0.92, 0.86], np.float32)
            arr = arr * (1 - mask) + cover * mask
        if "blurred" in fx:
            blurred = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
            radius = float(fx["blurred"].get("radius", 8.0))
            arr = np.asarray(blurred.filter(ImageFilter.GaussianBlur(radius)), np.float32)
        noise = 2.0
        if "dark" in fx:
            arr = arr * float(fx["dark"].get("level", 0.06))
            noise = 4.0  # the sensor's gain is up: more grain, little picture
        if jitter:
            arr = arr * float(rng.normal(1.0, 0.015))
        arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * noise
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _moved(img: Image.Image, params: Mapping[str, Any]) -> Image.Image:
    """The camera knocked: the view slides by ``shift`` of its width and turns by ``angle``."""
    dx = float(params.get("shift", 0.15)) * W
    dy = float(params.get("shift", 0.15)) * H * 0.5
    cx, cy = PAD + W / 2 + dx, PAD + H / 2 + dy
    turned = img.rotate(
        float(params.get("angle", 12.0)),
        resample=Image.Resampling.BILINEAR,
        center=(cx, cy),
        fillcolor=(120, 120, 120),
    )
    return turned.crop((int(cx - W / 2), int(cy - H / 2), int(cx + W / 2), int(cy + H / 2)))


def to_jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()
