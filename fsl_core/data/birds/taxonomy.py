"""What the birds set is made of: its settings, the part vocabulary, the groups and the species.

A group (family) fixes the silhouette proportions and the plumage, leg and beak colours; the species of a
group differ only in one or two small marks (crown patch, wing bar, eye ring, beak length or colour, breast
spots, tail tip). Every group has species in each of the train, val and test splits.

``GENERATOR`` and ``GENERATOR_VERSION`` stamp every generated set; raise the version whenever a change in
this package changes the written files, so that an older set is told apart (``ensure_birds`` refuses it, and
``fsl-birds --overwrite`` redraws it).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...runtime import seeded_generator
from ..images import FewShotDataError

GENERATOR = "fsl_core.data.synthetic.birds"
"""Identifier stored in every set (not a module path); a new value would make existing sets look foreign."""
GENERATOR_VERSION = "1.0"
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


@dataclass(frozen=True)
class BirdSettings:
    """Everything that determines the generated files (each field's ``help`` is what ``fsl-birds`` shows)."""

    seed: int = field(
        default=0, metadata={"help": "seed of every random draw: the same settings give the same files"}
    )
    image_size: int = field(
        default=84, metadata={"help": "side of the square images in pixels (at least 16)"}
    )
    images_per_class: int = field(default=40, metadata={"help": "images of each species (at least 2)"})
    groups: int = field(
        default=10, metadata={"help": "groups of look-alike species, e.g. warblers (at least 1)"}
    )
    species_per_group: int = field(
        default=10,
        metadata={"help": "species in each group, shared out between train, val and test (at least 3)"},
    )

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
        classes = dict(zip(("val", "test"), split_sizes(self.groups, self.species_per_group)))
        if min(classes.values()) < 2:
            raise FewShotDataError(
                f"groups={self.groups}, species_per_group={self.species_per_group} give {classes['val']} validation "
                f"and {classes['test']} test class(es), and an episode needs at least 2 classes; use groups >= 2 (or "
                "species_per_group >= 10 with one group)"
            )
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


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def make_group(seed: int, index: int, groups: int) -> GroupSpec:
    """The group ``index`` of ``groups``: hues spread around the colour wheel, proportions drawn at random."""
    rng = seeded_generator(seed, 1, index)
    hue = seeded_generator(seed, 0).uniform() + (index + rng.uniform(-0.2, 0.2)) / groups
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
    n_val, n_test = split_sizes(n_groups, per_group)
    split_rng = seeded_generator(settings.seed, 2)
    val_counts = _spread(n_val, n_groups, split_rng)
    # groups with more validation classes get fewer test classes, so train counts stay even
    order = np.argsort(val_counts, kind="stable")
    test_counts = np.zeros(n_groups, dtype=int)
    base, extra = divmod(n_test, n_groups)
    test_counts[:] = base
    test_counts[order[:extra]] += 1
    species: list[SpeciesSpec] = []
    for group in groups:
        rng = seeded_generator(settings.seed, 3, group.index)
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


def split_sizes(groups: int, species_per_group: int) -> tuple[int, int]:
    """(validation classes, test classes) of a set: about 15 % and 25 % of them, at least one per group each,
    and at least one training class per group."""
    total = groups * species_per_group
    n_val = min(max(groups, round(0.15 * total)), groups * (species_per_group - 2))
    return n_val, min(max(groups, round(0.25 * total)), groups * (species_per_group - 1) - n_val)


def _spread(total: int, bins: int, rng: np.random.Generator) -> np.ndarray:
    base, extra = divmod(total, bins)
    counts = np.full(bins, base, dtype=int)
    counts[rng.permutation(bins)[:extra]] += 1
    return counts
