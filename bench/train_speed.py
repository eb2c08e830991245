"""Training and evaluation speed of every model: a table of steps/s and episodes/s.

    python bench/train_speed.py                      # Conv-4, all models, 5-way and the authors' ways
    python bench/train_speed.py --backbones conv4 resnet12 --formats eager channels_last compile
    python bench/train_speed.py --device cuda --amp  # on a GPU, bf16 autocast
    python bench/train_speed.py --precisions float32 bf16  # both, timed in turns (a CPU with AMX or AVX-512 BF16)
    python bench/train_speed.py --models frn hmdrn hmdrn:attention_dropout=0 hmdrn:levels=last  # ablations
    THP_MEM_ALLOC_ENABLE=0 python bench/train_speed.py  # large CPU tensors in 4 KiB pages, as without fsl_core

Rows: model × backbone × episode setting × memory format × precision (float32, or bf16: bfloat16 autocast, as
training with ``amp`` runs it, evaluation included). Columns: training steps/s, evaluation episodes/s (full
forward, no cache), the training-step time relative to FRN with the same backbone, setting, format and precision,
the float32 step's time over the bf16 one's (when both are timed), and the step's peak memory above what was in
use before it (resident memory on CPU, allocated memory on CUDA). The models and precisions of a row group are
timed in turns and each one's fastest call kept, so the ratios hold on a shared machine.

A second table splits one profiled training step of each model into backbone, transformers, reconstruction
(cross attention, or FRN's ridge regression), optimiser and the rest (loss, fusion, autograd bookkeeping): each
part's forward operators plus the backward operators autograd runs for them, in CPU time on a CPU and in the
GPU's kernel time on CUDA (where "other" then also holds the time the GPU waited for work).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from fsl_core.models import build_model
from fsl_core.models.backbones import in_papers_form
from fsl_core.models.products import product
from fsl_core.runtime import device_name, native_bfloat16, resolve_device

AUTHORS_WAY = {"conv4": 30, "resnet12": 10}
PARTS = {"backbone": "backbone", "transformers": "transformers", "reconstruction": "reconstructions"}
"""Step parts: the model attribute holding each part's module (or ModuleDict of modules, one per level)."""
PART_PREFIX = "step part: "


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
    papers_form: bool = False,
) -> tuple[Callable[[], None], Callable[[], None], nn.Module]:
    """(one training step, one evaluation episode, the model) of a fresh model on a random episode; with
    ``papers_form`` its backbone computed as the papers write it (``in_papers_form``)."""
    torch.manual_seed(0)
    name, options = parse_model_spec(spec)
    model = build_model(name, backbone, image_size=image_size, **options)
    if papers_form:
        model.backbone = in_papers_form(model.backbone)
    model = model.to(device)
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

    return train_step, eval_episode, model


def peak_step_memory(step: Callable[[], None], device: torch.device) -> float | None:
    """Bytes in use at the step's peak above those in use before it, or None where it cannot be read.

    CUDA: the caching allocator's peak. CPU (Linux): the process's resident high-water mark, reset first
    through /proc/self/clear_refs; PyTorch returns large blocks to the system when freed, so it counts
    tensors and NumPy buffers alike.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return float(torch.cuda.max_memory_allocated() - before)
    status, clear_refs = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not (status.exists() and clear_refs.exists()):
        return None

    def kilobytes(field: str) -> int:
        line = next(line for line in status.read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])

    clear_refs.write_text("5")  # resets VmHWM to the current resident size
    before = kilobytes("VmRSS:")
    step()
    return float(kilobytes("VmHWM:") - before) * 1024


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points the process's standard error (file descriptor 2) at /dev/null for the block: the profiler's
    start and stop write lines there from C++ (and, on a machine without a GPU, an error about finding none),
    whatever KINETO_LOG_LEVEL says. The block's exceptions still propagate and are printed after it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_parts(model: nn.Module, step: Callable[[], None], device: torch.device) -> dict[str, float]:
    """Seconds of one training step spent in each part (PARTS, "optimiser", "other"), read from a profile.

    Forward: the operators run inside a part's modules (tagged by forward hooks). Backward: the autograd
    functions whose sequence numbers those forward operators created. Optimiser: ``optimizer.step``. On CUDA the
    seconds are those of the kernels the operators launched (the CPU only queues them), and "other" is the
    rest of the step's wall time.
    """
    hooks = []
    for part, attribute in PARTS.items():
        found = getattr(model, attribute, None)
        modules = list(found.values()) if isinstance(found, nn.ModuleDict) else [found] if found else []
        for module in modules:
            tag = record_function(PART_PREFIX + part)

            def enter(*_, tag=tag) -> None:
                tag.__enter__()

            def leave(*_, tag=tag) -> None:
                tag.__exit__(None, None, None)

            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    on_gpu = device.type == "cuda"
    trace = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else []))

    def spent(event) -> float:
        return (event.device_time_total if on_gpu else event.cpu_time_total) / 1e6

    try:
        with native_stderr_silenced():
            trace.start()
        try:
            start = time.perf_counter()
            step()
            total = time.perf_counter() - start
        finally:
            with native_stderr_silenced():
                trace.stop()
    finally:
        for hook in hooks:
            hook.remove()
    seconds: dict[str, float] = defaultdict(float)
    part_of_sequence: dict[int, str] = {}
    # the operators as the CPU ran them (with CUDA, the GPU's copies of the tagged ranges would count twice)
    events = [event for event in trace.events() if event.device_type == DeviceType.CPU]
    for event in events:
        if event.name.startswith(PART_PREFIX):
            part = event.name[len(PART_PREFIX) :]
            seconds[part] += spent(event)
            pending = list(event.cpu_children)
            while pending:
                child = pending.pop()
                if child.sequence_nr >= 0:
                    part_of_sequence[child.sequence_nr] = part
                pending.extend(child.cpu_children)
    for event in events:
        if (
            event.name.startswith("autograd::engine::evaluate_function")
            and event.sequence_nr in part_of_sequence
        ):
            seconds[part_of_sequence[event.sequence_nr]] += spent(event)
        elif event.name.startswith("Optimizer.step#"):
            seconds["optimiser"] += spent(event)
    seconds["other"] = max(0.0, total - sum(seconds.values()))
    return dict(seconds)


def interleaved_fastest(runners: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Fastest seconds per call of each runner over ``repeats`` calls, timed in turns (A B C A B C …) after one
    warm-up call each. Other jobs on a shared machine only ever add time, and in bursts: on a shared 2-core
    VM the medians of seven calls put HMDRN's 5-way step at 1.34× to 2.08× FRN's within an hour, the fastest
    calls at 1.55× to 1.68×."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def product_speed(device: torch.device, size: int = 2048) -> float:
    """GFLOP/s of the float32 matrix product the models use (``product``: oneDNN on CPU where PyTorch has it),
    fastest of five on size² matrices: the compute side of the CPU, which sets how far HMDRN's attention and
    transformers trail the backbone (one 2-core EPYC generation ran it at 475 GFLOP/s, another at 171–214)."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    seconds = interleaved_fastest({"product": lambda: (product(a, b), synchronise(device))}, 5)["product"]
    return 2 * size**3 / seconds / 1e9


def _way_setting(text: str) -> str:
    """A ``--settings`` entry: 'authors' or a way of at least 2."""
    if text == "authors" or (text.isdigit() and int(text) >= 2):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected a way (an integer of at least 2, e.g. 5) or 'authors'"
    )


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
        type=_way_setting,
        default=["5", "authors"],
        help="ways to time: integers of at least 2, or 'authors' (Conv-4 30-way, ResNet-12 10-way)",
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
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32"],
        choices=["float32", "bf16"],
        help="bf16: bfloat16 autocast",
    )
    parser.add_argument("--amp", action="store_true", help="the same as --precisions bf16")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (the fastest reported)")
    args = parser.parse_args()
    precisions = ["bf16"] if args.amp else list(dict.fromkeys(args.precisions))

    device = resolve_device(args.device)
    name = device_name(device)
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"native bf16 {native_bfloat16(device)}, huge pages {os.environ.get('THP_MEM_ALLOC_ENABLE') == '1'}, "
        f"{args.shot}-shot {args.query}-query {args.image_size}px, float32 product {product_speed(device):.0f} GFLOP/s"
    )
    width = max(9, *(len(model) for model in args.models))
    header = (
        f"{'model':<{width}} {'backbone':<9} {'way':>4} {'format':<14} {'precision':<9} {'train step/s':>12} "
        f"{'eval ep/s':>10} {'step vs FRN':>11} {'fp32 / bf16':>11} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    shares: list[tuple[str, str, int, str, str, dict[str, float]]] = []
    for backbone in args.backbones:
        for setting in args.settings:
            way = AUTHORS_WAY[backbone] if setting == "authors" else int(setting)
            for fmt in args.formats:
                runners = {
                    (model, precision): episode_runners(
                        model,
                        backbone,
                        way,
                        args.shot,
                        args.query,
                        args.image_size,
                        fmt,
                        device,
                        precision == "bf16",
                    )
                    for precision in precisions
                    for model in args.models
                }
                steps = interleaved_fastest({key: run[0] for key, run in runners.items()}, args.repeats)
                episodes = interleaved_fastest({key: run[1] for key, run in runners.items()}, args.repeats)
                if fmt != "compile":
                    shares += [
                        (model, backbone, way, fmt, precision, step_parts(network, train_step, device))
                        for (model, precision), (train_step, _, network) in runners.items()
                    ]
                for (model, precision), (train_step, *_) in runners.items():
                    peak = peak_step_memory(train_step, device)
                    step, episode = steps[model, precision], episodes[model, precision]
                    ratio = f"{step / steps['frn', precision]:.2f}x" if ("frn", precision) in steps else "-"
                    speedup = (
                        f"{steps[model, 'float32'] / step:.2f}x"
                        if precision == "bf16" and (model, "float32") in steps
                        else "-"
                    )
                    memory = f"{peak / 2**20:.0f}" if peak is not None else "-"
                    print(
                        f"{model:<{width}} {backbone:<9} {way:>4} {fmt:<14} {precision:<9} {1 / step:>12.3g} "
                        f"{1 / episode:>10.3g} {ratio:>11} {speedup:>11} {memory:>8}",
                        flush=True,
                    )
    columns = [*PARTS, "optimiser", "other"]
    print("\nshare of one profiled training step (forward and backward of each part)")
    header = f"{'model':<{width}} {'backbone':<9} {'way':>4} {'format':<14} {'precision':<9} " + " ".join(
        f"{column:>14}" for column in columns
    )
    print(header)
    print("-" * len(header))
    for model, backbone, way, fmt, precision, seconds in shares:
        total = sum(seconds.values())
        cells = " ".join(f"{100 * seconds.get(column, 0.0) / total:>13.1f}%" for column in columns)
        print(f"{model:<{width}} {backbone:<9} {way:>4} {fmt:<14} {precision:<9} {cells}")


if __name__ == "__main__":
    main()
