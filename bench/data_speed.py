"""Data pipeline speed: birds generation, DataLoader images/s (decode + train transform, or images kept in
memory + train transform, or ``augment_on_device``: plans drawn by the loader, images made on the device),
sampler episodes/s.

    python bench/data_speed.py [--data ROOT] [--episodes 20] [--workers 0 2] [--device auto]

Without ``--data`` a small birds set is generated into a temporary folder (its generation time is reported),
and a second set of photo-like JPEGs at the sizes of CUB's photos is written beside it: the birds' small PNGs
decode far faster than real photos, which is what ``images_in_memory`` saves. ``--data`` points at a real set
(e.g. a prepared CUB) instead.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from train_speed import synchronise

from fsl_core.data import (
    AugmentationPlanner,
    DeviceAugmentation,
    EpisodeSampler,
    EpochEpisodeSampler,
    FewShotFolder,
    PlannedImages,
    episode_loader,
)
from fsl_core.data.birds import generate_birds
from fsl_core.runtime import device_name, resolve_device, seeded_generator

PHOTO_SIDES = (200, 500)
"""Range of the sides of the photo-like JPEGs: CUB's photos are at most 500 pixels on a side, and cropping to
the birds' boxes (``fsl-prepare cub``'s default) leaves a few hundred."""


def write_photo_like_jpegs(root: Path, classes: int, per_class: int, seed: int = 0) -> float:
    """A few-shot folder ``root/train/<class>/<i>.jpg`` of JPEGs (quality 90) whose sides are drawn from
    ``PHOTO_SIDES``: a smooth random colour field with pixel noise, so that the entropy coder has as much to
    decode per pixel as in a photograph. Returns the files' mean bits per pixel."""
    rng = seeded_generator(seed)
    bits = pixels = 0
    for label in range(classes):
        folder = root / "train" / f"class_{label:03d}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            width, height = (int(side) for side in rng.integers(PHOTO_SIDES[0], PHOTO_SIDES[1] + 1, 2))
            coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
            smooth = np.asarray(
                Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16
            )
            noisy = np.clip(smooth + rng.integers(-16, 17, smooth.shape), 0, 255).astype(np.uint8)
            path = folder / f"{index:03d}.jpg"
            Image.fromarray(noisy).save(path, quality=90)
            bits += path.stat().st_size * 8
            pixels += width * height
    return bits / pixels


def loader_speed(data: FewShotFolder, way: int, shot: int, query: int, episodes: int, workers: int) -> float:
    """Images per second delivered by ``episode_loader`` over ``episodes`` episodes, once the episodes loaded
    before the clock starts are taken: the first, and with workers the two each one prefetches (started
    while the first was loading, they would make the loader look faster than it is)."""
    skipped = 1 + 2 * workers
    sampler = EpisodeSampler(data, way, shot, query, episodes=episodes + skipped, seed=0)
    loader = episode_loader(data, sampler, num_workers=workers)
    iterator = iter(loader)
    for _ in range(skipped):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for episode in iterator:
        images += episode.support_images.shape[0] + episode.query_images.shape[0]
    return images / (time.perf_counter() - start)


def device_speed(
    data: FewShotFolder,
    augmenter: DeviceAugmentation,
    way: int,
    shot: int,
    query: int,
    episodes: int,
    workers: int,
) -> float:
    """Images per second under ``augment_on_device``: the loader's workers draw the plans, ``augmenter``
    makes the images on its device (timed as ``loader_speed``, the device synchronised at the end)."""
    device = augmenter.device
    skipped = 1 + 2 * workers
    sampler = EpisodeSampler(data, way, shot, query, episodes=episodes + skipped, seed=0)
    plans = PlannedImages(data.keep_in_memory(), data.targets, augmenter.planner)
    loader = episode_loader(plans, sampler, num_workers=workers)
    iterator = iter(loader)
    for _ in range(skipped):
        augmenter.episode(next(iterator))
    synchronise(device)
    start = time.perf_counter()
    images = 0
    for planned in iterator:
        episode = augmenter.episode(planned)
        images += episode.support_images.shape[0] + episode.query_images.shape[0]
    synchronise(device)
    return images / (time.perf_counter() - start)


def sampler_speed(labels: list[int], way: int, shot: int, query: int, episodes: int) -> tuple[float, float]:
    """Episodes per second of EpisodeSampler and of EpochEpisodeSampler (indices only)."""
    start = time.perf_counter()
    for _ in EpisodeSampler(labels, way, shot, query, episodes=episodes, seed=0):
        pass
    random_rate = episodes / (time.perf_counter() - start)
    sampler = EpochEpisodeSampler(labels, way, shot, query, seed=0)
    start, count, epoch = time.perf_counter(), 0, 0
    while count < episodes:
        sampler.set_epoch(epoch)
        count += sum(1 for _ in sampler)
        epoch += 1
    return random_rate, count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="few-shot folder root (default: generate birds)"
    )
    parser.add_argument("--images-per-class", type=int, default=20, help="for the generated set")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per DataLoader measurement")
    parser.add_argument("--sampler-episodes", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--device",
        default="auto",
        help="where augment_on_device's rows make the images ('auto': CUDA if any)",
    )
    parser.add_argument(
        "--photos-per-class",
        type=int,
        default=20,
        help="images in each of the --way classes of photo-like JPEGs",
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"CPU: {device_name('cpu')} ({os.cpu_count()} logical cores); {gpu}; torch {torch.__version__}")
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as temp:
        root = args.data
        if root is None:
            start = time.perf_counter()
            root = generate_birds(
                Path(temp) / "birds",
                image_size=args.image_size,
                images_per_class=args.images_per_class,
                progress=False,
            )
            seconds = time.perf_counter() - start
            n = 100 * args.images_per_class
            rows.append(
                (
                    f"generate birds (100 classes x {args.images_per_class}, {args.image_size} px, "
                    f"{min(os.cpu_count() or 1, 8)} processes)",
                    f"{seconds:.1f} s  ({n / seconds:.0f} images/s)",
                )
            )
        sets = [(f"{args.image_size} px PNG birds" if args.data is None else str(root), root)]
        if args.data is None:
            photos = Path(temp) / "photos"
            bits = write_photo_like_jpegs(photos, args.way, args.photos_per_class)
            sides = "-".join(map(str, PHOTO_SIDES))
            sets.append((f"photo-like JPEGs, {sides} px sides, {bits:.1f} bits/pixel", photos))
        folders = [
            FewShotFolder(folder, "train", transform="train", image_size=args.image_size)
            for _, folder in sets
        ]
        for (name, _), data in zip(sets, folders):
            for how in ("decoded", "from memory"):
                if how == "from memory":
                    rows.append((f"{name}: kept in memory", data.keep_in_memory().describe()))
                for workers in args.workers:
                    rate = loader_speed(data, args.way, args.shot, args.query, args.episodes, workers)
                    workers_text = f"{workers} worker{'s' if workers != 1 else ''}"
                    rows.append((f"{name}: {how} + train transform, {workers_text}", f"{rate:.0f} images/s"))
            augmenter = DeviceAugmentation(data.keep_in_memory(), AugmentationPlanner(data.transform), device)
            for workers in args.workers:
                rate = device_speed(data, augmenter, args.way, args.shot, args.query, args.episodes, workers)
                workers_text = f"plans from {workers} worker{'s' if workers != 1 else ''}"
                rows.append(
                    (f"{name}: augment_on_device ({device.type}), {workers_text}", f"{rate:.0f} images/s")
                )
        data = folders[0]
        random_rate, epoch_rate = sampler_speed(
            data.targets, args.way, args.shot, args.query, args.sampler_episodes
        )
        rows.append(
            (
                f"EpisodeSampler alone ({args.way}-way {args.shot}-shot {args.query}-query)",
                f"{random_rate:.0f} episodes/s",
            )
        )
        rows.append(("EpochEpisodeSampler alone (same episode shape)", f"{epoch_rate:.0f} episodes/s"))
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}} | result")
    print(f"{'-' * width}-|-{'-' * 28}")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")


if __name__ == "__main__":
    main()
