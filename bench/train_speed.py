"""Training and evaluation speed of every model: a table of steps/s and episodes/s.

    python bench/train_speed.py                      # Conv-4, all models, 5-way and the authors' ways
    python bench/train_speed.py --backbones conv4 resnet12 --formats eager channels_last compile
    python bench/train_speed.py --device cuda --amp  # on a GPU, bf16 autocast
    python bench/train_speed.py --models frn hmdrn hmdrn:attention_dropout=0 hmdrn:levels=last  # ablations

Rows: model × backbone × episode setting × memory format. Columns: training steps/s, evaluation episodes/s
(full forward, no cache), and the training-step time relative to FRN with the same backbone, setting and format.
The models of a row group are timed in turns and the median kept, so the ratios hold on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from fsl_core.models import build_model
from fsl_core.runtime import device_name, resolve_device

AUTHORS_WAY = {"conv4": 30, "resnet12": 10}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_model_spec(spec: str) -> tuple[str, dict[str, object]]:
    """ "hmdrn:levels=last,attention_dropout=0" → ("hmdrn", {"levels": "last", "attention_dropout": 0})."""
    name, _, options = spec.partition(":")
    parsed: dict[str, object] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"model option {item!r} in {spec!r}: expected key=value")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return name, parsed


def episode_runners(
    spec: str,
    backbone: str,
    way: int,
    shot: int,
    query: int,
    image_size: int,
    fmt: str,
    device: torch.device,
    amp: bool,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one training step, one evaluation episode) of a fresh model on a random episode."""
    torch.manual_seed(0)
    name, options = parse_model_spec(spec)
    model = build_model(name, backbone, image_size=image_size, **options).to(device)
    support = torch.randn(way * shot, 3, image_size, image_size, device=device)
    queries = torch.randn(way * query, 3, image_size, image_size, device=device)
    labels = torch.arange(way, device=device).repeat_interleave(shot)
    query_labels = torch.arange(way, device=device).repeat_interleave(query)
    if fmt in ("channels_last", "compile"):
        model = model.to(memory_format=torch.channels_last)
        support = support.contiguous(memory_format=torch.channels_last)
        queries = queries.contiguous(memory_format=torch.channels_last)
    step_fn = torch.compile(model.episode_loss) if fmt == "compile" else model.episode_loss
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    def train_step() -> None:
        model.train()
        with autocast():
            loss, _ = step_fn(support, labels, queries, query_labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        synchronise(device)

    def eval_episode() -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            model(support, labels, queries)
        synchronise(device)

    return train_step, eval_episode


def interleaved_medians(runners: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each runner, timed in turns (A B C A B C …) after one warm-up call each, so
    that a change in the machine's load shifts every runner alike and the ratios stay fair."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["protonet", "frn", "bifrn", "hmdrn"],
        help="names, or name:key=value,… for a model with options (an ablation)",
    )
    parser.add_argument("--backbones", nargs="+", default=["conv4"], choices=["conv4", "resnet12"])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["5", "authors"],
        help="ways to time: integers, or 'authors' (Conv-4 30-way, ResNet-12 10-way)",
    )
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["eager", "channels_last"],
        choices=["eager", "channels_last", "compile"],
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (median reported)")
    parser.add_argument(
        "--no-huge-pages",
        action="store_true",
        help="allocate large CPU tensors in 4 KiB pages (the default without fsl_core)",
    )
    args = parser.parse_args()

    if args.no_huge_pages:
        os.environ["THP_MEM_ALLOC_ENABLE"] = (
            "0"  # read at PyTorch's first large allocation, which is still ahead
        )
    device = resolve_device(args.device)
    name = device_name(device)
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"amp {'bf16' if args.amp else 'off'}, huge pages {os.environ.get('THP_MEM_ALLOC_ENABLE') == '1'}, "
        f"{args.shot}-shot {args.query}-query {args.image_size}px"
    )
    width = max(9, *(len(model) for model in args.models))
    header = (
        f"{'model':<{width}} {'backbone':<9} {'way':>4} {'format':<14} {'train step/s':>12} {'eval ep/s':>10} "
        f"{'step vs FRN':>11}"
    )
    print(header)
    print("-" * len(header))
    for backbone in args.backbones:
        for setting in args.settings:
            way = AUTHORS_WAY[backbone] if setting == "authors" else int(setting)
            for fmt in args.formats:
                runners = {
                    model: episode_runners(
                        model, backbone, way, args.shot, args.query, args.image_size, fmt, device, args.amp
                    )
                    for model in args.models
                }
                steps = interleaved_medians({model: pair[0] for model, pair in runners.items()}, args.repeats)
                episodes = interleaved_medians(
                    {model: pair[1] for model, pair in runners.items()}, args.repeats
                )
                for model in args.models:
                    step, episode = steps[model], episodes[model]
                    ratio = f"{step / steps['frn']:.2f}x" if "frn" in steps else "-"
                    print(
                        f"{model:<{width}} {backbone:<9} {way:>4} {fmt:<14} {1 / step:>12.2f} {1 / episode:>10.2f} "
                        f"{ratio:>11}"
                    )


if __name__ == "__main__":
    main()
