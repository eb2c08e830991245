"""Speed of the backbones as ``fsl_core`` computes them, against the papers' form of the same function.

    python bench/backbone_speed.py                        # Conv-4 and ResNet-12, 5-way and the authors' ways
    python bench/backbone_speed.py --backbones conv4 --ways 5 30 --models frn hmdrn --repeats 7

``Conv4`` pools before each ReLU and ``ResNet12`` applies its LeakyReLUs in place; ``in_papers_form`` builds
the papers' form (ReLU before the pool, a new tensor per activation), which gives the same values and gradients
(``fsl_core.models.backbones``). Rows: backbone alone, or a model (``--models``) with that backbone, × episode
size (way·(shot + query) images, channels-last, as training runs them). Columns: a training step (backbone
alone: forward, a loss on both feature maps, backward; a model: ``bench/train_speed.py``'s step with its
optimiser) and, for the backbone alone, an inference forward pass, each in the papers' form and in ours, timed
in turns with the fastest call kept; the ratios are the papers' form's time over ours.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from train_speed import AUTHORS_WAY, episode_runners, interleaved_fastest, synchronise

from fsl_core.models.backbones import BACKBONES, in_papers_form
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
    parser.add_argument("--models", nargs="*", default=[], help="models to time with each backbone too")
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per form (the fastest reported)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    print(
        f"device: {device} ({device_name(device)}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.shot}-shot {args.query}-query {args.image_size}px, channels-last"
    )
    header = (
        f"{'what':<9} {'backbone':<9} {'way':>4} {'images':>6} {'train papers ms':>15} {'train ours ms':>13} "
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
            images = torch.randn(count, 3, args.image_size, args.image_size, device=device)
            images = images.contiguous(memory_format=torch.channels_last)
            runners = {
                "papers": backbone_runners(in_papers_form(ours), images, device),
                "ours": backbone_runners(ours, images, device),
            }
            train = interleaved_fastest({form: run[0] for form, run in runners.items()}, args.repeats)
            infer = interleaved_fastest({form: run[1] for form, run in runners.items()}, args.repeats)
            print(
                f"{'backbone':<9} {name:<9} {way:>4} {count:>6} {train['papers'] * 1e3:>15.0f} "
                f"{train['ours'] * 1e3:>13.0f} {infer['papers'] * 1e3:>15.0f} {infer['ours'] * 1e3:>13.0f} "
                f"{train['papers'] / train['ours']:>5.2f}x {infer['papers'] / infer['ours']:>5.2f}x"
            )
            steps = {
                (model, form): episode_runners(
                    model,
                    name,
                    way,
                    args.shot,
                    args.query,
                    args.image_size,
                    "channels_last",
                    device,
                    amp=False,
                    papers_form=form == "papers",
                )[0]
                for model in args.models
                for form in ("papers", "ours")
            }
            times = interleaved_fastest(steps, args.repeats) if steps else {}
            for model in args.models:
                papers, ours_time = times[model, "papers"], times[model, "ours"]
                print(
                    f"{model:<9} {name:<9} {way:>4} {count:>6} {papers * 1e3:>15.0f} {ours_time * 1e3:>13.0f} "
                    f"{'-':>15} {'-':>13} {papers / ours_time:>5.2f}x {'-':>6}"
                )


if __name__ == "__main__":
    main()
