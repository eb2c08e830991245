"""Data pipeline speed: birds generation, DataLoader images/s (decode + train transform), sampler episodes/s.

    python bench/data_speed.py [--data ROOT] [--episodes 20] [--workers 0 2]

Without ``--data`` a small birds set is generated into a temporary folder (its generation time is reported).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from fsl_core.data import EpisodeSampler, EpochEpisodeSampler, FewShotFolder, episode_loader
from fsl_core.data.birds import generate_birds
from fsl_core.runtime import device_name


def loader_speed(data: FewShotFolder, way: int, shot: int, query: int, episodes: int, workers: int) -> float:
    """Images per second delivered by ``episode_loader`` (after the first episode, so worker start-up is excluded)."""
    sampler = EpisodeSampler(data, way, shot, query, episodes=episodes + 1, seed=0)
    loader = episode_loader(data, sampler, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    images = 0
    for episode in iterator:
        images += episode.support_images.shape[0] + episode.query_images.shape[0]
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
    args = parser.parse_args()

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"CPU: {device_name('cpu')} ({os.cpu_count()} logical cores); {device}; torch {torch.__version__}")
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
        data = FewShotFolder(root, "train", transform="train", image_size=args.image_size)
        for workers in args.workers:
            rate = loader_speed(data, args.way, args.shot, args.query, args.episodes, workers)
            rows.append(
                (f"DataLoader, decode + train transform, num_workers={workers}", f"{rate:.0f} images/s")
            )
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
