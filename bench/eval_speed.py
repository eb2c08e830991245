"""Evaluation speed: plain (every episode through the model) vs cached (embed once, replay heads).

    python bench/eval_speed.py [--data ROOT] [--episodes 2000] [--model hmdrn] [--backbone conv4] [--device auto]

Runs the same ``--episodes`` 5-way 1-shot 16-query episodes of the test split both ways, checks that the
per-episode accuracies agree, and prints the times, the speed-up, episodes per second and the projected time
of the standard 10,000-episode test. Without ``--data`` a small embedded birds set (84×84) is generated in a
temporary folder. The model is freshly initialised: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fsl_core.data import FewShotFolder, ensure_birds
from fsl_core.engine import evaluate
from fsl_core.models import build_model
from fsl_core.runtime import device_name, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="data set root (default: generated birds)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument(
        "--plain-episodes",
        type=int,
        default=200,
        help="time the plain path on the first N of the episodes only and scale its time (0: all)",
    )
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--query", type=int, default=16)
    parser.add_argument("--model", default="hmdrn")
    parser.add_argument("--backbone", default="conv4")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="fsl_eval_speed_") as scratch:
        root = args.data
        if root is None:
            started = time.perf_counter()
            root = ensure_birds(
                Path(scratch) / "birds",
                image_size=args.image_size,
                images_per_class=40,
                groups=4,
                species_per_group=10,
                progress=False,
            )
            print(
                f"generated birds ({args.image_size}px, 40 classes x 40 images) in "
                f"{time.perf_counter() - started:.1f} s"
            )
        dataset = FewShotFolder(root, args.split, transform="eval", image_size=args.image_size)
        torch.manual_seed(0)
        model = build_model(args.model, args.backbone, image_size=args.image_size)
        common = dict(
            way=5,
            shot=args.shot,
            query=args.query,
            episodes=args.episodes,
            seed=0,
            device=device,
            progress=False,
            num_workers=args.num_workers,
        )
        cached = evaluate(model, dataset, cached=True, **common)
        plain_episodes = min(args.plain_episodes or args.episodes, args.episodes)
        plain = evaluate(model, dataset, cached=False, **{**common, "episodes": plain_episodes})

    name = device_name(device)
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{args.model} {args.backbone}, {args.split} split of {root}: {len(dataset)} images, "
        f"{len(dataset.classes)} classes; {args.episodes} 5-way {args.shot}-shot {args.query}-query episodes"
    )
    plain_seconds = plain.seconds * args.episodes / plain_episodes
    print(f"{'path':<8} {'seconds':>9} {'episodes/s':>11} {'10,000 episodes':>16} {'accuracy':>15}")
    for label, seconds, result in (("plain", plain_seconds, plain), ("cached", cached.seconds, cached)):
        rate = args.episodes / seconds
        print(f"{label:<8} {seconds:>9.2f} {rate:>11.2f} {10000 / rate:>14.1f} s {str(result):>15}")
    if plain_episodes < args.episodes:
        print(f"(plain path timed on the first {plain_episodes} episodes and scaled to {args.episodes})")
    same = np.array_equal(plain.accuracies, cached.accuracies[:plain_episodes])
    print(
        f"speed-up (plain / cached): {plain_seconds / cached.seconds:.1f}x; "
        f"per-episode accuracies equal: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
