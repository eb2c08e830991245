"""Speed of the backbones pooling before each block's last activation, against the papers' order.

    python bench/backbone_speed.py                        # Conv-4 and ResNet-12, 5-way and the authors' ways
    python bench/backbone_speed.py --backbones conv4 --ways 5 --repeats 10

``Conv4`` and ``ResNet12`` apply each block's max-pool before its last activation, which gives the same bits as
the papers' activation-then-pool (``fsl_core.models.backbones``; ``in_papers_order`` builds the latter). One
row per backbone and episode size (way·(shot + query) images, channels-last, as training runs them): a training
step (forward, a loss on both feature maps, backward) and an inference forward pass, in the papers' order and
pooled first, timed in turns, the fastest call of each kept; the last columns are the papers' order's time over
ours.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from train_speed import AUTHORS_WAY, interleaved_fastest, synchronise

from fsl_core.models.backbones import BACKBONES, in_papers_order
from fsl_core.runtime import device_name, resolve_device


def backbone_runners(
    backbone: torch.nn.Module, images: torch.Tensor, device: torch.device
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one training step, one inference forward pass) of ``backbone`` on ``images``."""

    def train_step() -> None:
        backbone.train()
        mid, high = backbone(images)
        (mid.square().mean() + high.square().mean()).backward()
        synchronise(device)

    def inference() -> None:
        backbone.eval()
        with torch.inference_mode():
            backbone(images)
        synchronise(device)

    return train_step, inference


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["conv4", "resnet12"], choices=sorted(BACKBONES))
    parser.add_argument(
        "--ways", nargs="+", default=["5", "authors"], help="integers, or 'authors' (Conv-4 30, ResNet-12 10)"
    )
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per order (the fastest reported)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    print(
        f"device: {device} ({device_name(device)}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.shot}-shot {args.query}-query {args.image_size}px, channels-last"
    )
    header = (
        f"{'backbone':<9} {'way':>4} {'images':>6} {'train papers ms':>15} {'train ours ms':>13} "
        f"{'infer papers ms':>15} {'infer ours ms':>13} {'train':>6} {'infer':>6}"
    )
    print(header)
    print("-" * len(header))
    for name in args.backbones:
        for setting in args.ways:
            way = AUTHORS_WAY[name] if setting == "authors" else int(setting)
            count = way * (args.shot + args.query)
            torch.manual_seed(0)
            ours = BACKBONES[name]().to(device, memory_format=torch.channels_last)
            papers = in_papers_order(ours)
            images = torch.randn(count, 3, args.image_size, args.image_size, device=device)
            images = images.contiguous(memory_format=torch.channels_last)
            runners = {
                order: backbone_runners(model, images, device)
                for order, model in (("papers", papers), ("ours", ours))
            }
            train = interleaved_fastest({order: run[0] for order, run in runners.items()}, args.repeats)
            infer = interleaved_fastest({order: run[1] for order, run in runners.items()}, args.repeats)
            print(
                f"{name:<9} {way:>4} {count:>6} {train['papers'] * 1e3:>15.0f} {train['ours'] * 1e3:>13.0f} "
                f"{infer['papers'] * 1e3:>15.0f} {infer['ours'] * 1e3:>13.0f} "
                f"{train['papers'] / train['ours']:>5.2f}x {infer['papers'] / infer['ours']:>5.2f}x"
            )


if __name__ == "__main__":
    main()
