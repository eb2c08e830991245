"""Drawing one bird picture together with its part map.

Every image draws its pose (wings, head tilt, tail), position, scale, rotation and flip, a cluttered
background whose shapes and colours also occur on birds, an occluding branch now and then, and photometric
nuisance (illumination, colour cast, a light ramp, blur, noise). The part map holds one uint8 part id
(``PART_NAMES``) per pixel, drawn with the same shapes as the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .taxonomy import MARK_COLOURS, PART_IDS, GroupSpec, SpeciesSpec

NATURAL_COLOURS = (
    (70, 110, 50),
    (110, 150, 70),
    (40, 70, 35),
    (120, 90, 60),
    (90, 65, 40),
    (150, 130, 100),
    (160, 190, 215),
    (120, 160, 200),
    (200, 210, 220),
    (95, 95, 90),
    (180, 170, 140),
    (60, 85, 70),
)

# Difficulty: the ranges every image draws its nuisance from.
NUISANCE = dict(
    scale=(0.38, 0.52),  # body length / image side
    rotation=25.0,  # degrees, ±
    head_tilt=25.0,  # degrees, ±
    raised_wing=0.3,  # probability of a raised wing
    clutter=(8, 18),  # background shapes
    bird_coloured_clutter=0.35,  # share of clutter painted in bird or mark colours
    occluder=0.3,  # probability of a branch in front of the bird
    gain=(0.65, 1.25),  # global illumination
    cast=0.09,  # std of the log channel gains
    light_gradient=0.25,  # ± amplitude of a linear illumination ramp
    part_jitter=10.0,  # std of the per-image colour jitter of parts (0..255 scale)
    blur=(0.5, 0.3, 1.0),  # probability, sigma range in output pixels
    noise=(2.0, 9.0),  # std range (0..255 scale)
)


def _affine(tx: float, ty: float, angle: float = 0.0, scale: float = 1.0, flip: bool = False) -> np.ndarray:
    """3×3 matrix: local (x, y) → translate(tx, ty) · rotate(angle rad) · scale · (flip x)."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    f = -1.0 if flip else 1.0
    return np.array([[c * f, -s, tx], [s * f, c, ty], [0.0, 0.0, 1.0]])


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


class _Painter:
    """Draws polygons and lines in a local frame onto an RGB canvas and, with a part id, onto the part map."""

    def __init__(self, rgb: Image.Image, parts: Image.Image | None) -> None:
        self.rgb = ImageDraw.Draw(rgb)
        self.parts = ImageDraw.Draw(parts) if parts is not None else None
        self.frame = np.eye(3)

    def _map(self, points: np.ndarray) -> list[tuple[float, float]]:
        p = points @ self.frame[:2, :2].T + self.frame[:2, 2]
        return [tuple(row) for row in p.tolist()]

    def polygon(self, points: np.ndarray, colour: tuple[int, int, int], part: int | None) -> None:
        xy = self._map(points)
        self.rgb.polygon(xy, fill=colour)
        if part is not None and self.parts is not None:
            self.parts.polygon(xy, fill=part)

    def line(self, points: np.ndarray, width: float, colour: tuple[int, int, int], part: int | None) -> None:
        xy = self._map(points)
        w = max(1, round(width * math.hypot(self.frame[0, 0], self.frame[1, 0])))
        self.rgb.line(xy, fill=colour, width=w, joint="curve")
        if part is not None and self.parts is not None:
            self.parts.line(xy, fill=part, width=w, joint="curve")


def _jitter(colour: Sequence[int], rng: np.random.Generator, std: float) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, dtype=np.float64) + rng.normal(0.0, std, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _clutter_colour(rng: np.random.Generator, groups: Sequence[GroupSpec]) -> tuple[int, int, int]:
    if rng.random() < NUISANCE["bird_coloured_clutter"]:
        if rng.random() < 0.5:
            group = groups[rng.integers(len(groups))]
            pick = (group.body, group.belly, group.wing, group.head)[rng.integers(4)]
        else:
            pick = list(MARK_COLOURS.values())[rng.integers(len(MARK_COLOURS))]
    else:
        pick = NATURAL_COLOURS[rng.integers(len(NATURAL_COLOURS))]
    return _jitter(pick, rng, 18.0)


def _gradient(side: int, rng: np.random.Generator) -> Image.Image:
    """A smooth two-colour sky/foliage gradient along a random direction: (side, side) RGB image."""
    a = np.array(NATURAL_COLOURS[rng.integers(len(NATURAL_COLOURS))], dtype=np.float32) + rng.normal(0, 20, 3)
    b = np.array(NATURAL_COLOURS[rng.integers(len(NATURAL_COLOURS))], dtype=np.float32) + rng.normal(0, 20, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = np.linspace(-0.5, 0.5, 32, dtype=np.float32)
    ramp = np.clip(0.5 + t[None, :] * math.cos(angle) + t[:, None] * math.sin(angle), 0.0, 1.0)[:, :, None]
    small = Image.fromarray(np.clip(a * (1 - ramp) + b * ramp, 0, 255).astype(np.uint8), "RGB")
    return small.resize((side, side), Image.Resampling.BILINEAR)


def _draw_background(
    painter: _Painter, side: int, rng: np.random.Generator, groups: Sequence[GroupSpec]
) -> None:
    """Clutter: leaves, berries, blobs, twigs and bird-like patches in natural, plumage and mark colours."""
    lo, hi = NUISANCE["clutter"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        kind = rng.integers(6)
        colour = _clutter_colour(rng, groups)
        cx, cy = rng.uniform(-0.05, 1.05, 2) * side
        size = side * rng.uniform(0.03, 0.22)
        if kind == 0:  # leaf / blob
            painter.polygon(
                _ellipse(cx, cy, size, size * rng.uniform(0.25, 0.7), rng.uniform(0, math.pi)), colour, None
            )
        elif kind == 1:  # berries / spots
            for _ in range(int(rng.integers(2, 7))):
                r = size * rng.uniform(0.08, 0.2)
                ox, oy = rng.normal(0, size * 0.4, 2)
                painter.polygon(_ellipse(cx + ox, cy + oy, r, r, 0.0, 12), colour, None)
        elif kind == 2:  # twig
            end = np.array([cx, cy]) + rng.normal(0, side * 0.3, 2)
            painter.line(np.array([[cx, cy], end]), side * rng.uniform(0.008, 0.025), colour, None)
        elif kind == 3:  # polygon
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = size * rng.uniform(0.4, 1.0, n)
            painter.polygon(
                np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1), colour, None
            )
        elif kind == 4:  # cap-like half disc
            t = np.linspace(math.pi, 2 * math.pi, 14)
            r = size * 0.35
            pts = np.stack([r * np.cos(t), r * np.sin(t) * 0.7], 1)
            a = rng.uniform(0, 2 * math.pi)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            painter.polygon(pts @ rot.T + [cx, cy], colour, None)
        else:  # bar
            painter.polygon(_ellipse(cx, cy, size * 0.6, size * 0.08, rng.uniform(0, math.pi)), colour, None)


def _draw_bird(
    painter: _Painter, group: GroupSpec, marks: dict[str, str], side: int, rng: np.random.Generator
) -> None:
    """One bird at a random pose. Local units: body lengths, x forward (head side), y down."""
    jit = NUISANCE["part_jitter"]
    colours = {
        key: _jitter(getattr(group, key), rng, jit)
        for key in ("body", "belly", "wing", "head", "tail", "legs")
    }
    mark_colour = {m: _jitter(MARK_COLOURS[v], rng, jit) for m, v in marks.items() if v in MARK_COLOURS}
    beak_colour = mark_colour.get("beak", _jitter(group.beak, rng, jit))
    beak_length = group.beak_length * (2.0 if marks.get("beak") == "long" else 1.0)

    scale = side * rng.uniform(*NUISANCE["scale"])
    angle = math.radians(rng.uniform(-NUISANCE["rotation"], NUISANCE["rotation"]))
    flip = bool(rng.random() < 0.5)
    centre = side * (0.5 + rng.uniform(-0.14, 0.14, 2))
    body_frame = _affine(centre[0], centre[1], angle, scale, flip)
    ry = 0.5 * group.aspect
    raised = rng.random() < NUISANCE["raised_wing"]
    head_tilt = math.radians(rng.uniform(-NUISANCE["head_tilt"], NUISANCE["head_tilt"]))
    tail_angle = math.radians(rng.uniform(-20, 20))
    hr = group.head_radius

    painter.frame = body_frame
    # legs (behind the body)
    leg_top = 0.75 * ry
    for x0 in (-0.06, 0.08):
        lean = rng.uniform(-0.1, 0.1)
        foot = np.array([x0 + lean, leg_top + group.leg_length])
        painter.line(np.array([[x0, leg_top - 0.1], foot]), 0.035, colours["legs"], PART_IDS["legs"])
        painter.line(np.array([foot, foot + [0.09, 0.0]]), 0.03, colours["legs"], PART_IDS["legs"])
    # tail: quad (with an optional notch) from the rump backwards; its outer 35 % is the tail tip
    painter.frame = body_frame @ _affine(-0.38, 0.05 * ry, tail_angle)

    def tail_poly(u0: float, u1: float) -> np.ndarray:
        def half(u: float) -> float:
            return 0.55 * ry * (1 - u) * 0.6 + group.tail_spread * u

        length = group.tail_length + 0.1
        pts = [[-u0 * length, -half(u0)], [-u1 * length, -half(u1)]]
        if group.tail_fork > 0 and u1 >= 1.0:
            pts.append([-(u1 * length - group.tail_fork), 0.0])
        pts += [[-u1 * length, half(u1)], [-u0 * length, half(u0)]]
        return np.array(pts)

    painter.polygon(tail_poly(0.0, 1.0), colours["tail"], PART_IDS["tail"])
    if "tailtip" in marks:
        painter.polygon(tail_poly(0.62, 1.0), mark_colour["tailtip"], PART_IDS["tail_tip"])
    # body and belly
    painter.frame = body_frame
    painter.polygon(_ellipse(0.0, 0.0, 0.5, ry), colours["body"], PART_IDS["body"])
    painter.polygon(_ellipse(0.08, 0.32 * ry, 0.34, 0.58 * ry), colours["belly"], PART_IDS["body"])
    if "spots" in marks:
        spot = 0.055
        for sx, sy in ((0.12, 0.15), (0.26, 0.2), (0.05, 0.42), (0.19, 0.45), (0.32, 0.5), (-0.04, 0.22)):
            ox, oy = rng.normal(0, 0.015, 2)
            painter.polygon(
                _ellipse(sx + ox, (sy + oy) * ry * 2, spot, spot, 0, 12),
                mark_colour["spots"],
                PART_IDS["breast_spots"],
            )
    # wing, hinged at the shoulder: folded back along the body, or raised up and back
    wing_h = 0.17
    if raised:
        painter.frame = body_frame @ _affine(0.1, -0.3 * ry, -math.radians(rng.uniform(100, 150)))
        wing_len = 0.46
        bar_at = wing_len * 1.1
    else:
        painter.frame = body_frame @ _affine(0.12, -0.25 * ry, math.radians(rng.uniform(-8, 14)))
        wing_len = -0.42
        bar_at = wing_len * 0.9
    painter.polygon(_ellipse(wing_len, 0.0, abs(wing_len), wing_h), colours["wing"], PART_IDS["wing"])
    if "wingbar" in marks:
        painter.polygon(
            _ellipse(bar_at, 0.0, 0.055, wing_h * 0.93, 0.0, 16), mark_colour["wingbar"], PART_IDS["wing_bar"]
        )
    # head with its own tilt: beak, eye, eye ring, crown
    painter.frame = body_frame @ _affine(0.42, -0.62 * ry, head_tilt)
    beak_w = 0.065
    beak = np.array([[hr * 0.8, -beak_w], [hr * 0.8 + beak_length, 0.01], [hr * 0.8, beak_w]])
    painter.polygon(beak, beak_colour, PART_IDS["beak"])
    painter.polygon(_ellipse(0.0, 0.0, hr, hr), colours["head"], PART_IDS["head"])
    if "crown" in marks:
        t = np.linspace(math.radians(-165), math.radians(-15), 16)
        cap = np.stack([hr * np.cos(t), hr * np.sin(t)], 1)
        cap = np.vstack([cap, [[hr * 0.55, -hr * 0.2], [-hr * 0.75, -hr * 0.2]]])
        painter.polygon(cap, mark_colour["crown"], PART_IDS["crown"])
    ex, ey = hr * 0.38, -hr * 0.12
    if "eyering" in marks:
        painter.polygon(
            _ellipse(ex, ey, hr * 0.45, hr * 0.45, 0, 18), mark_colour["eyering"], PART_IDS["eye_ring"]
        )
    painter.polygon(_ellipse(ex, ey, hr * 0.2, hr * 0.2, 0, 12), (12, 12, 12), PART_IDS["eye"])
    painter.frame = np.eye(3)


def _draw_occluder(painter: _Painter, side: int, rng: np.random.Generator) -> None:
    """A branch (with a few leaves) crossing the picture in front of the bird."""
    a = rng.uniform(0, math.pi)
    through = side * (0.5 + rng.uniform(-0.2, 0.2, 2))
    d = np.array([math.cos(a), math.sin(a)]) * side
    colour = _jitter(((95, 70, 45), (110, 100, 90), (70, 55, 40))[rng.integers(3)], rng, 12)
    painter.line(
        np.array([through - d, through + d]), side * rng.uniform(0.02, 0.045), colour, PART_IDS["occluder"]
    )
    leaf = _jitter(NATURAL_COLOURS[rng.integers(3)], rng, 15)
    for _ in range(int(rng.integers(0, 4))):
        t = rng.uniform(-0.5, 0.5)
        p = through + d * t
        painter.polygon(
            _ellipse(p[0], p[1], side * 0.07, side * 0.025, a + rng.uniform(-1, 1)),
            leaf,
            PART_IDS["occluder"],
        )


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float array with reflected borders."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


def _photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Illumination gain, colour cast, a light ramp, blur and noise: (H, W, 3) uint8 → (H, W, 3) uint8."""
    h, w, _ = rgb.shape
    x = rgb.astype(np.float64)
    gain = rng.uniform(*NUISANCE["gain"])
    cast = np.exp(rng.normal(0.0, NUISANCE["cast"], 3))
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((xx / (w - 1) - 0.5) * math.cos(a) + (yy / (h - 1) - 0.5) * math.sin(a)) * 2.0
    light = 1.0 + NUISANCE["light_gradient"] * rng.uniform(-1, 1) * ramp
    x = x * (gain * cast)[None, None, :] * light[:, :, None]
    p_blur, s_lo, s_hi = NUISANCE["blur"]
    if rng.random() < p_blur:
        x = _gaussian_blur(x, rng.uniform(s_lo, s_hi) * w / 84.0)
    x = x + rng.normal(0.0, rng.uniform(*NUISANCE["noise"]), x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def render_image(
    species: SpeciesSpec,
    groups: Sequence[GroupSpec],
    seed: int,
    index: int,
    image_size: int = 84,
    supersample: int = 3,
    background_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw image ``index`` of a species.

    The picture is a pure function of (seed, group, species, index); the background has its own random
    stream, which ``background_seed`` replaces (the bird, occluders, illumination, blur and noise stay the
    same). ``groups``: every group of the set (the species' own look, and plumage colours for the background
    clutter).

    Returns:
        rgb (image_size, image_size, 3) uint8 and parts (image_size, image_size) uint8 part ids
        (``PART_NAMES``).
    """
    pose_seq, background_seq, photo_seq = np.random.SeedSequence(
        [seed, 4, species.group, species.species, index]
    ).spawn(3)
    if background_seed is not None:
        background_seq = np.random.SeedSequence([background_seed, 5, species.group, species.species, index])
    side = image_size * supersample
    background_rng = np.random.Generator(np.random.PCG64(background_seq))
    canvas = _gradient(side, background_rng)
    parts = Image.new("L", (side, side), 0)
    painter = _Painter(canvas, parts)
    pose_rng = np.random.Generator(np.random.PCG64(pose_seq))
    _draw_background(painter, side, background_rng, groups)
    _draw_bird(painter, groups[species.group], species.mark_dict, side, pose_rng)
    if pose_rng.random() < NUISANCE["occluder"]:
        _draw_occluder(painter, side, pose_rng)
    small = canvas.reduce(supersample) if supersample > 1 else canvas
    part_map = parts.resize((image_size, image_size), Image.Resampling.NEAREST) if supersample > 1 else parts
    rgb = _photometric(np.asarray(small), np.random.Generator(np.random.PCG64(photo_seq)))
    return rgb, np.asarray(part_map, dtype=np.uint8)
