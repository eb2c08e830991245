"""The embedded data set: procedurally drawn fine-grained "birds" with part-level ground truth.

Groups (families) fix the silhouette proportions, the plumage colours, the leg and beak colours; species
within a group differ only in one or two small local marks (crown patch, wing bar, eye ring, beak length or
colour, breast spots, tail tip). Every image varies in pose (wings, head tilt, tail), position, scale,
rotation, flip, illumination and colour cast, and has a cluttered background whose shapes and colours also
occur on birds, occluding branches, blur and noise. Each image comes with a part map (one uint8 part id per
pixel), so the pixels that tell a species from its siblings are known.

Output (the few-shot folder layout, see ``fsl_core.data.folder``)::

    OUT/{train,val,test}/<class>/<NNN>.png        images
    OUT/parts/{train,val,test}/<class>/<NNN>.png  part maps (uint8 ids, names in metadata.json)
    OUT/metadata.json  OUT/card.json  OUT/README.md  OUT/.complete (written last)

Command line: ``python -m fsl_core.data.synthetic OUT_DIR [--seed N] [--image-size N] ...``
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..runtime import atomic_write_bytes, atomic_write_json
from .images import FewShotDataError
from .sampler import EpisodeSampler

GENERATOR = "fsl_core.data.synthetic.birds"
GENERATOR_VERSION = "1.0"
COMPLETE_MARKER = ".complete"
SPLITS = ("train", "val", "test")

PART_NAMES: tuple[str, ...] = (
    "background",
    "body",
    "head",
    "wing",
    "tail",
    "beak",
    "legs",
    "eye",
    "crown",
    "wing_bar",
    "eye_ring",
    "breast_spots",
    "tail_tip",
    "occluder",
)
PART_IDS: dict[str, int] = {name: i for i, name in enumerate(PART_NAMES)}
BIRD_PART_IDS: tuple[int, ...] = tuple(range(1, PART_IDS["occluder"]))
"""Part ids of bird pixels (everything but background and occluders)."""

MARK_PARTS: dict[str, str] = {
    "crown": "crown",
    "wingbar": "wing_bar",
    "eyering": "eye_ring",
    "beak": "beak",
    "spots": "breast_spots",
    "tailtip": "tail_tip",
}
"""Species mark → the part that shows it."""

MARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "yellow": (250, 220, 30),
    "white": (248, 248, 248),
    "black": (18, 18, 22),
    "blue": (30, 90, 235),
}
GROUP_NAMES = (
    "finch",
    "warbler",
    "tanager",
    "thrush",
    "sparrow",
    "jay",
    "wren",
    "oriole",
    "bunting",
    "flycatcher",
    "vireo",
    "grosbeak",
    "kinglet",
    "swallow",
    "shrike",
    "starling",
    "pipit",
    "lark",
    "robin",
    "cardinal",
)
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


# ----------------------------------------------------------------------------------------------------------
# Taxonomy
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BirdSettings:
    """Everything that determines the generated files."""

    seed: int = 0
    image_size: int = 84
    images_per_class: int = 40
    groups: int = 10
    species_per_group: int = 10

    def validate(self) -> BirdSettings:
        for name, minimum in (
            ("image_size", 16),
            ("images_per_class", 2),
            ("groups", 1),
            ("species_per_group", 3),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                hint = (
                    " (every group needs a species in each of train, val and test)"
                    if name.startswith("sp")
                    else ""
                )
                raise FewShotDataError(f"{name}={value!r}: expected an integer >= {minimum}{hint}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FewShotDataError(f"seed={self.seed!r}: expected a non-negative integer")
        return self


@dataclass(frozen=True)
class GroupSpec:
    """The shared look of one group (colours RGB 0..255, lengths in body lengths)."""

    index: int
    name: str
    body: tuple[int, int, int]
    belly: tuple[int, int, int]
    wing: tuple[int, int, int]
    head: tuple[int, int, int]
    tail: tuple[int, int, int]
    legs: tuple[int, int, int]
    beak: tuple[int, int, int]
    aspect: float  # body height / length
    head_radius: float
    tail_length: float
    tail_spread: float  # tail tip half-width
    tail_fork: float  # depth of the tail notch
    beak_length: float
    leg_length: float


@dataclass(frozen=True)
class SpeciesSpec:
    """One class: its group, the marks that set it apart, and where it goes."""

    group: int
    species: int
    name: str
    split: str
    marks: tuple[tuple[str, str], ...]  # (mark, value) pairs, e.g. ("crown", "red"), ("beak", "long")

    @property
    def mark_dict(self) -> dict[str, str]:
        return dict(self.marks)


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def make_group(seed: int, index: int, groups: int) -> GroupSpec:
    """The group ``index`` of ``groups``: hues spread around the colour wheel, proportions drawn at random."""
    rng = _rng(seed, 1, index)
    hue = _rng(seed, 0).uniform() + (index + rng.uniform(-0.2, 0.2)) / groups
    sat = rng.uniform(0.45, 0.85)
    val = rng.uniform(0.45, 0.8)
    body = _hsv(hue, sat, val)
    belly = _hsv(
        hue + rng.uniform(-0.06, 0.06), sat * rng.uniform(0.2, 0.5), min(1.0, val + rng.uniform(0.15, 0.35))
    )
    wing = _hsv(hue + rng.uniform(-0.04, 0.04), min(1.0, sat * 1.1), val * rng.uniform(0.45, 0.7))
    head_style = rng.integers(3)
    head = body if head_style == 0 else (wing if head_style == 1 else _hsv(hue + 0.5, sat * 0.5, val * 0.6))
    tail = wing if rng.random() < 0.6 else body
    legs = ((60, 55, 50), (200, 150, 110), (230, 160, 40), (120, 120, 125))[rng.integers(4)]
    beak = ((40, 38, 35), (235, 150, 40), (190, 180, 160))[rng.integers(3)]
    return GroupSpec(
        index=index,
        name=GROUP_NAMES[index] if index < len(GROUP_NAMES) else f"group{index:02d}",
        body=body,
        belly=belly,
        wing=wing,
        head=head,
        tail=tail,
        legs=legs,
        beak=beak,
        aspect=float(rng.uniform(0.5, 0.72)),
        head_radius=float(rng.uniform(0.24, 0.3)),
        tail_length=float(rng.uniform(0.3, 0.55)),
        tail_spread=float(rng.uniform(0.06, 0.2)),
        tail_fork=float(rng.choice([0.0, 0.0, rng.uniform(0.08, 0.16)])),
        beak_length=float(rng.uniform(0.13, 0.19)),
        leg_length=float(rng.uniform(0.15, 0.28)),
    )


def _mark_options(group: GroupSpec) -> list[tuple[str, str]]:
    """Every single mark that contrasts with the plumage it sits on."""
    under = {
        "crown": group.head,
        "wingbar": group.wing,
        "eyering": group.head,
        "spots": group.belly,
        "tailtip": group.tail,
    }
    options = []
    for mark, background in under.items():
        for colour, rgb in MARK_COLOURS.items():
            if _distance(rgb, background) > 110:
                options.append((mark, colour))
    options.append(("beak", "long"))
    for colour in ("red", "yellow", "black", "white"):
        if (
            _distance(MARK_COLOURS[colour], group.beak) > 110
            and _distance(MARK_COLOURS[colour], group.head) > 90
        ):
            options.append(("beak", colour))
    return options


def _mark_label(marks: Sequence[tuple[str, str]]) -> str:
    return "+".join(f"{mark}-{value}" for mark, value in marks)


def make_taxonomy(settings: BirdSettings) -> tuple[list[GroupSpec], list[SpeciesSpec]]:
    """Groups and species with their split: about 60/15/25 % of the classes, every group in every split."""
    settings.validate()
    n_groups, per_group = settings.groups, settings.species_per_group
    groups = [make_group(settings.seed, g, n_groups) for g in range(n_groups)]
    total = n_groups * per_group
    n_val = min(max(n_groups, round(0.15 * total)), n_groups * (per_group - 2))
    n_test = min(max(n_groups, round(0.25 * total)), n_groups * (per_group - 1) - n_val)
    split_rng = _rng(settings.seed, 2)
    val_counts = _spread(n_val, n_groups, split_rng)
    # groups with more validation classes get fewer test classes, so train counts stay even
    order = np.argsort(val_counts, kind="stable")
    test_counts = np.zeros(n_groups, dtype=int)
    base, extra = divmod(n_test, n_groups)
    test_counts[:] = base
    test_counts[order[:extra]] += 1
    species: list[SpeciesSpec] = []
    for group in groups:
        rng = _rng(settings.seed, 3, group.index)
        options = _mark_options(group)
        distinct = len(options) + sum(a[0] != b[0] for i, a in enumerate(options) for b in options[i + 1 :])
        if per_group > distinct:
            raise FewShotDataError(
                f"species_per_group={per_group} is too many: group {group.name!r} allows {distinct} distinct "
                f"combinations of one or two marks"
            )
        chosen: list[tuple[tuple[str, str], ...]] = []
        seen: set[frozenset] = set()
        singles = [options[i] for i in rng.permutation(len(options))]
        while len(chosen) < per_group:
            k = len(chosen)
            if k % 2 == 0 and k // 2 < len(singles):
                marks = (singles[k // 2],)
            else:
                a, b = rng.choice(len(options), size=2, replace=False)
                if options[a][0] == options[b][0]:
                    continue
                marks = tuple(sorted((options[a], options[b])))
            if frozenset(marks) in seen:
                continue
            seen.add(frozenset(marks))
            chosen.append(marks)
        n_v, n_t = int(val_counts[group.index]), int(test_counts[group.index])
        roles = ["val"] * n_v + ["test"] * n_t + ["train"] * (per_group - n_v - n_t)
        roles = [roles[i] for i in rng.permutation(per_group)]
        for s, (marks, split) in enumerate(zip(chosen, roles)):
            name = f"g{group.index:02d}_{group.name}_s{s:02d}_{_mark_label(marks)}"
            species.append(SpeciesSpec(group=group.index, species=s, name=name, split=split, marks=marks))
    return groups, species


def _spread(total: int, bins: int, rng: np.random.Generator) -> np.ndarray:
    base, extra = divmod(total, bins)
    counts = np.full(bins, base, dtype=int)
    counts[rng.permutation(bins)[:extra]] += 1
    return counts


# ----------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------
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

    The picture is a pure function of (seed, group, species, index); the background has its own random stream,
    which ``background_seed`` replaces (the bird, occluders, illumination, blur and noise stay the same).
    ``groups``: every group of the set (the species' own look, and plumage colours for the background clutter).

    Returns:
        rgb (image_size, image_size, 3) uint8 and parts (image_size, image_size) uint8 part ids (``PART_NAMES``).
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


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _file_name(index: int, count: int) -> str:
    return f"{index:0{max(3, len(str(count - 1)))}d}.png"


def _render_class(job: tuple[BirdSettings, SpeciesSpec, tuple[GroupSpec, ...], str]) -> str:
    """Render and write every image and part map of one class (runs in a worker process)."""
    settings, species, groups, out = job
    image_dir = Path(out) / species.split / species.name
    part_dir = Path(out) / "parts" / species.split / species.name
    image_dir.mkdir(parents=True, exist_ok=True)
    part_dir.mkdir(parents=True, exist_ok=True)
    for i in range(settings.images_per_class):
        rgb, part_map = render_image(species, groups, settings.seed, i, settings.image_size)
        name = _file_name(i, settings.images_per_class)
        (image_dir / name).write_bytes(_png_bytes(rgb))
        (part_dir / name).write_bytes(_png_bytes(part_map))
    return species.name


# ----------------------------------------------------------------------------------------------------------
# The data set card: nearest neighbour on raw pixels
# ----------------------------------------------------------------------------------------------------------
def nn_pixel_accuracy(
    root: str | Path,
    split: str = "test",
    way: int = 5,
    shot: int = 1,
    query: int = 16,
    episodes: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean accuracy and 95% CI of nearest-neighbour (Euclidean, raw pixels) few-shot classification.

    Support prototypes are the mean pixel vectors of each class's ``shot`` images.
    """
    folder = Path(root) / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    vectors, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.png")):
            with Image.open(file) as image:
                vectors.append(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1) / 255.0)
            labels.append(label)
    data = torch.from_numpy(np.stack(vectors))
    gram = (data @ data.T).double().numpy()  # one product; every episode then only indexes it
    query = min(query, int(min(np.bincount(labels))) - shot)
    sampler = EpisodeSampler(labels, way, shot, query, episodes, seed=seed)
    truth = np.repeat(np.arange(way), query)
    accuracies = np.empty(episodes)
    for e, indices in enumerate(sampler):
        support = np.asarray(indices[: way * shot]).reshape(way, shot)
        queries = np.asarray(indices[way * shot :])
        # ||q - m_c||^2 = G[q,q] - 2 mean_k G[q,s_ck] + mean_kl G[s_ck,s_cl]
        cross = gram[queries[:, None, None], support[None]].mean(-1)
        within = gram[support[:, :, None], support[:, None, :]].mean((1, 2))
        d = gram[queries, queries][:, None] - 2 * cross + within[None]
        accuracies[e] = float((d.argmin(1) == truth).mean())
    return {
        "accuracy": float(accuracies.mean()),
        "ci95": float(1.96 * accuracies.std() / math.sqrt(episodes)),
        "method": "nearest class mean, Euclidean distance on raw RGB pixels in [0, 1]",
        "split": split,
        "way": way,
        "shot": shot,
        "query": query,
        "episodes": episodes,
        "chance": 1.0 / way,
    }


# ----------------------------------------------------------------------------------------------------------
# Writing a complete set
# ----------------------------------------------------------------------------------------------------------
def _metadata(settings: BirdSettings, groups: list[GroupSpec], species: list[SpeciesSpec]) -> dict[str, Any]:
    classes = {}
    for sp in species:
        group = groups[sp.group]
        marks = sp.mark_dict
        attributes = {
            "crown": marks.get("crown"),
            "wing_bar": marks.get("wingbar"),
            "eye_ring": marks.get("eyering"),
            "beak_length": "long" if marks.get("beak") == "long" else "regular",
            "beak_colour": marks["beak"] if marks.get("beak") in MARK_COLOURS else "group",
            "breast_spots": marks.get("spots"),
            "tail_tip": marks.get("tailtip"),
        }
        parts = sorted({PART_IDS[MARK_PARTS[m]] for m in marks})
        classes[sp.name] = {
            "split": sp.split,
            "group": sp.group,
            "group_name": group.name,
            "species": sp.species,
            "marks": [f"{m}-{v}" for m, v in sp.marks],
            "attributes": attributes,
            "discriminative_parts": parts,
            "discriminative_part_names": [PART_NAMES[p] for p in parts],
        }
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "settings": asdict(settings),
        "parts": {str(i): name for i, name in enumerate(PART_NAMES)},
        "bird_parts": list(BIRD_PART_IDS),
        "groups": [asdict(g) for g in groups],
        "classes": classes,
    }


def _card(settings: BirdSettings, species: list[SpeciesSpec], nn: dict[str, float]) -> dict[str, Any]:
    per_split = {}
    for split in SPLITS:
        n = sum(sp.split == split for sp in species)
        groups_present = len({sp.group for sp in species if sp.split == split})
        per_split[split] = {"classes": n, "images": n * settings.images_per_class, "groups": groups_present}
    return {
        "name": "birds (procedural fine-grained few-shot set)",
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": settings.seed,
        "settings": asdict(settings),
        "groups": settings.groups,
        "classes": len(species),
        "images": len(species) * settings.images_per_class,
        "image_size": settings.image_size,
        "splits": per_split,
        "parts": list(PART_NAMES),
        "nn_pixel_5w1s": nn,
    }


def format_card(card: dict[str, Any]) -> str:
    """A few lines of text describing a card."""
    nn = card["nn_pixel_5w1s"]
    splits = ", ".join(
        f"{s} {v['classes']} classes / {v['images']} images" for s, v in card["splits"].items()
    )
    return (
        f"{card['name']} — generator {card['generator']} v{card['version']}, seed {card['seed']}\n"
        f"{card['classes']} classes in {card['groups']} groups, {card['images']} images of "
        f"{card['image_size']}x{card['image_size']} pixels: {splits}\n"
        f"nearest neighbour on raw pixels, {nn['way']}-way {nn['shot']}-shot, {nn['episodes']} test episodes "
        f"({nn['query']} queries per class): {100 * nn['accuracy']:.2f} ± {100 * nn['ci95']:.2f} % "
        f"(chance {100 * nn['chance']:.0f} %)"
    )


def _readme(card: dict[str, Any]) -> str:
    return (
        "# Embedded fine-grained birds\n\n"
        "Generated by `python -m fsl_core.data.synthetic`; regenerate rather than edit.\n\n"
        + format_card(card).replace("\n", "\n\n")
        + "\n\nLayout: `{train,val,test}/<class>/<image>.png`; part maps (uint8 part ids) under `parts/` with the "
        "same relative paths; part names, groups and each class's attributes and discriminative parts in "
        "`metadata.json`.\n"
    )


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def _is_generator_output(path: Path) -> bool:
    """A folder written by this generator (complete, or at least carrying its metadata)."""
    if _read_marker(path) is not None:
        return True
    try:
        return json.loads((path / "metadata.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def is_complete(out_dir: str | Path, settings: BirdSettings | None = None) -> bool:
    """True when ``out_dir`` holds a complete set (optionally: made with ``settings`` by this version)."""
    marker = _read_marker(Path(out_dir))
    if marker is None:
        return False
    if settings is None:
        return True
    return marker.get("version") == GENERATOR_VERSION and marker.get("settings") == asdict(settings)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary siblings left by killed runs (their process is gone)."""
    for candidate in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        try:
            pid = int(candidate.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
        except OSError:
            pass


def generate_birds(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 84,
    images_per_class: int = 40,
    groups: int = 10,
    species_per_group: int = 10,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate the birds set into ``out_dir`` (replacing an earlier output of this generator).

    Everything is written into a temporary sibling folder that is renamed into place at the end, with the
    completion marker written last, so an interrupted run never leaves a complete-looking set.

    Args:
        out_dir: target folder; must be absent, empty, or an earlier output of this generator.
        seed, image_size, images_per_class, groups, species_per_group: the settings (same settings → the same
            bytes in every file).
        progress: show a progress bar.
        workers: processes drawing classes in parallel (default: the CPU count, at most 8).

    Returns:
        ``out_dir`` as a Path.
    """
    settings = BirdSettings(seed, image_size, images_per_class, groups, species_per_group).validate()
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FewShotDataError(f"output path {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not _is_generator_output(out_dir):
            raise FewShotDataError(
                f"refusing to write into {out_dir}: the folder is not empty and is not an output of the birds "
                f"generator (no {COMPLETE_MARKER} or metadata.json of {GENERATOR}); choose an empty or new folder"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    temp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        group_specs, species = make_taxonomy(settings)
        jobs = [(settings, sp, tuple(group_specs), str(temp)) for sp in species]
        n_workers = min(workers if workers is not None else min(os.cpu_count() or 1, 8), len(jobs))
        bar = tqdm(total=len(jobs), desc="drawing bird species", unit="class", disable=not progress)
        if n_workers <= 1:
            for job in jobs:
                _render_class(job)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for _ in pool.map(_render_class, jobs, chunksize=max(1, len(jobs) // (8 * n_workers))):
                    bar.update()
        bar.close()
        atomic_write_json(_metadata(settings, group_specs, species), temp / "metadata.json")
        test_classes = sum(sp.split == "test" for sp in species)
        nn = nn_pixel_accuracy(temp, "test", way=min(5, test_classes), episodes=1000, seed=settings.seed)
        card = _card(settings, species, nn)
        atomic_write_json(card, temp / "card.json")
        atomic_write_bytes(_readme(card).encode(), temp / "README.md")
        marker = {"generator": GENERATOR, "version": GENERATOR_VERSION, "settings": asdict(settings)}
        atomic_write_json(marker, temp / COMPLETE_MARKER)
        _move_into_place(temp, out_dir, settings)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return out_dir


def _move_into_place(temp: Path, out_dir: Path, settings: BirdSettings) -> None:
    """Rename the finished temporary folder to ``out_dir``, moving an earlier output aside first."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        else:
            out_dir.rmdir()
    try:
        os.replace(temp, out_dir)
    except OSError:
        if is_complete(out_dir, settings):  # another process finished the same set first
            return
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def ensure_birds(
    out_dir: str | Path, progress: bool = True, workers: int | None = None, **settings: Any
) -> Path:
    """Reuse the complete set in ``out_dir`` when it was made with the same settings, else generate it.

    ``settings``: seed, image_size, images_per_class, groups, species_per_group (defaults as
    ``generate_birds``).
    """
    wanted = BirdSettings(**settings).validate()
    if is_complete(out_dir, wanted):
        return Path(out_dir).absolute()
    return generate_birds(out_dir, **asdict(wanted), progress=progress, workers=workers)


# ----------------------------------------------------------------------------------------------------------
# Reading the ground truth
# ----------------------------------------------------------------------------------------------------------
def load_metadata(root: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of a generated set (part names, groups, per-class split/attributes/parts)."""
    path = Path(root) / "metadata.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FewShotDataError(f"{path} does not exist; {root} is not a generated birds set") from error


def load_card(root: str | Path) -> dict[str, Any]:
    """The ``card.json`` of a generated set."""
    path = Path(root) / "card.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise FewShotDataError(f"{path} does not exist; {root} is not a generated birds set") from error


def part_map(root: str | Path, split: str, class_name: str, file_name: str) -> np.ndarray:
    """Part ids (H, W) uint8 of one image (names in ``PART_NAMES`` / metadata "parts")."""
    path = Path(root) / "parts" / split / class_name / Path(file_name).name
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.uint8).copy()
    except FileNotFoundError as error:
        raise FewShotDataError(f"part map {path} does not exist") from error


def discriminative_mask(
    root: str | Path, split: str, class_name: str, file_name: str, metadata: dict[str, Any] | None = None
) -> np.ndarray:
    """(H, W) bool: the visible pixels of the parts that tell this species from its group siblings."""
    meta = metadata if metadata is not None else load_metadata(root)
    if class_name not in meta["classes"]:
        raise FewShotDataError(f"class {class_name!r} is not in {Path(root) / 'metadata.json'}")
    ids = meta["classes"][class_name]["discriminative_parts"]
    return np.isin(part_map(root, split, class_name, file_name), ids)


def bird_mask(root: str | Path, split: str, class_name: str, file_name: str) -> np.ndarray:
    """(H, W) bool: the visible bird pixels of one image (not background, not occluders)."""
    return np.isin(part_map(root, split, class_name, file_name), BIRD_PART_IDS)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsl_core.data.synthetic",
        description="Generate the embedded fine-grained birds set in the few-shot folder layout.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (new, empty, or an earlier output)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--species-per-group", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: CPU count, max 8)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = generate_birds(
            args.out_dir,
            seed=args.seed,
            image_size=args.image_size,
            images_per_class=args.images_per_class,
            groups=args.groups,
            species_per_group=args.species_per_group,
            workers=args.workers,
        )
    except FewShotDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_card(load_card(out)))
    print(f"written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
