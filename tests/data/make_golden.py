"""Reference logits of every model the toolkit builds, for ``tests/test_models.py``.

Each case builds a model with ``fsl_core.models.build_model``, overwrites every parameter and the BatchNorm
running statistics with values drawn from a generator seeded by the tensor's name (so the values depend
neither on torch's initialisers nor on the order of the modules), puts it in eval mode and runs one fixed
episode on the CPU with one thread. The logits are written to ``tests/data/golden_logits.json`` as
``float.hex`` strings of the float32 values.

Run it only when a change of what a model computes is intended, and say so in the change:

    .venv/bin/python tests/data/make_golden.py          # rewrite tests/data/golden_logits.json
    .venv/bin/python tests/data/make_golden.py --check  # compare with the stored values, write nothing

Each line printed gives the fraction of the test's tolerance that the float32 logits use against a float64
run of the same case ("float64") and, with ``--check``, against the stored values ("stored"); the test
passes while the latter is at most 1. The float64 figure estimates how much another CPU's kernels may move
the values: keep it well below 1 when adding a case.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

from fsl_core.models import build_model

GOLDEN = Path(__file__).resolve().parent / "golden_logits.json"
FORMAT = 1
WAY, SHOT, QUERY = 3, 2, 2
IMAGE_SIZE = 32
RTOL, ATOL = 1e-5, 1e-6
"""The tolerance of the test (``torch.testing.assert_close``)."""
WEIGHT_SEED = 2024
EPISODE_SEED = 7
GSFL = dict(num_classes=4, groups=2, class_groups=[0, 0, 1, 1], hidden=16)
PLUGIN = dict(num_classes=4, class_groups=[0, 0, 1, 1], hidden=16)

CASES: dict[str, dict[str, Any]] = {
    "protonet/conv4": dict(name="protonet", backbone="conv4", options=dict(image_size=IMAGE_SIZE)),
    "frn/conv4": dict(name="frn", backbone="conv4", options=dict(image_size=IMAGE_SIZE)),
    "bifrn/conv4": dict(name="bifrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE)),
    "hmdrn/conv4": dict(name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE)),
    "hmdrn/conv4/levels=last": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, levels="last")
    ),
    "hmdrn/conv4/mask=False": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, mask=False)
    ),
    "hmdrn/conv4/reconstruction=ridge": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, reconstruction="ridge")
    ),
    "hmdrn/conv4/reconstruction=bidirectional": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, reconstruction="bidirectional")
    ),
    "hmdrn/conv4/fusion=fixed": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, fusion="fixed")
    ),
    "hmdrn/conv4/gsfl": dict(
        name="hmdrn", backbone="conv4", options=dict(image_size=IMAGE_SIZE, gsfl=PLUGIN)
    ),
    "gsfl/conv4": dict(name="gsfl", backbone="conv4", options=dict(GSFL)),
    "gsfl/conv4/feature=sd,normalise=sqrt_l2": dict(
        name="gsfl", backbone="conv4", options=dict(GSFL, feature="sd", normalise="sqrt_l2")
    ),
    "gsfl/conv4/classify": dict(name="gsfl", backbone="conv4", options=dict(GSFL), classify=True),
    "protonet/resnet12": dict(name="protonet", backbone="resnet12", options=dict(image_size=IMAGE_SIZE)),
    "frn/resnet12": dict(name="frn", backbone="resnet12", options=dict(image_size=IMAGE_SIZE)),
    "bifrn/resnet12": dict(name="bifrn", backbone="resnet12", options=dict(image_size=IMAGE_SIZE)),
    "hmdrn/resnet12": dict(name="hmdrn", backbone="resnet12", options=dict(image_size=IMAGE_SIZE)),
    "gsfl/resnet12": dict(name="gsfl", backbone="resnet12", options=dict(GSFL)),
}
"""Case id → build_model arguments; ``classify`` cases record ``model.classify(queries)`` (the logits over
the base classes) instead of the episode's logits."""


def name_seed(name: str) -> int:
    """A seed that depends on the tensor's name only."""
    return WEIGHT_SEED + zlib.crc32(name.encode())


@torch.no_grad()
def reinitialise(model: torch.nn.Module) -> torch.nn.Module:
    """Overwrite weights and BatchNorm running statistics with name-seeded draws; other buffers (positional
    tables, fixed fusion weights, GSFL centres) keep their constructed values."""
    for name, parameter in model.named_parameters():
        g = torch.Generator().manual_seed(name_seed(name))
        noise = torch.randn(parameter.shape, generator=g, dtype=torch.float32)
        if parameter.dim() >= 2:
            fan_in = parameter[0].numel()
            parameter.copy_(noise.mul_((2.0 / fan_in) ** 0.5))
        elif name.endswith("bias"):
            parameter.copy_(noise.mul_(0.1))
        else:  # norm scales, temperatures, fusion weights
            parameter.copy_(noise.mul_(0.1).add_(1.0))
    for name, buffer in model.named_buffers():
        g = torch.Generator().manual_seed(name_seed(name))
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=g, dtype=torch.float32).mul_(0.1))
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=g, dtype=torch.float32).add_(0.5))
    return model


def golden_episode(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support (WAY*SHOT, 3, S, S), support labels (class-major), queries (WAY*QUERY, 3, S, S)).

    Each image has its own contrast and colour offset, so that pooled features differ from image to image by
    much more than float32 rounding (distances between near-identical features would amplify it)."""
    g = torch.Generator().manual_seed(EPISODE_SEED)
    count = WAY * (SHOT + QUERY)
    images = torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g, dtype=torch.float64)
    contrast = torch.exp(0.5 * torch.randn(count, 1, 1, 1, generator=g, dtype=torch.float64))
    offset = torch.randn(count, 3, 1, 1, generator=g, dtype=torch.float64)
    images = (images * contrast + offset).to(dtype)
    labels = torch.arange(WAY).repeat_interleave(SHOT)
    return images[: WAY * SHOT], labels, images[WAY * SHOT :]


def build_case(case: dict[str, Any]) -> torch.nn.Module:
    """The case's model, reinitialised, in eval mode."""
    model = build_model(case["name"], case["backbone"], **copy.deepcopy(case["options"]))
    return reinitialise(model).eval()


@torch.no_grad()
def case_logits(case: dict[str, Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits of one case on the golden episode (float32 unless ``dtype`` says otherwise)."""
    model = build_case(case).to(dtype)
    support, labels, queries = golden_episode(dtype)
    if case.get("classify"):
        return model.classify(queries)
    return model(support, labels, queries)


def tolerance_used(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual − expected| / (ATOL + RTOL·|expected|): the test passes while this is at most 1."""
    if actual.shape != expected.shape:
        return float("inf")
    return float(((actual - expected).abs() / (ATOL + RTOL * expected.abs())).max())


def encode(values: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(values.shape), "hex": [float(v).hex() for v in values.flatten().tolist()]}


def decode(entry: dict[str, Any]) -> torch.Tensor:
    """A stored entry → float32 tensor of its shape (exact: the hex strings hold float32 values)."""
    values = torch.tensor([float.fromhex(h) for h in entry["hex"]], dtype=torch.float64)
    return values.reshape(entry["shape"]).float()


def spec(case: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description of a case stored beside its logits."""
    return json.loads(json.dumps(case))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored file, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stored = json.loads(GOLDEN.read_text())["cases"] if args.check else {}
    cases = {}
    failed = 0
    for case_id, case in CASES.items():
        logits = case_logits(case)
        line = f"{case_id:42s} |logit| max {float(logits.abs().max()):.3g}"
        try:
            exact = case_logits(case, torch.float64)
        except RuntimeError:  # a head that solves in float32 on purpose (the ridge reconstruction)
            line += "  float64: n/a"
        else:
            line += f"  float64 {tolerance_used(logits.double(), exact):.2f}"
        if args.check:
            used = tolerance_used(logits, decode(stored[case_id])) if case_id in stored else float("inf")
            failed += not used <= 1.0
            line += f"  stored {used:.2f}" + ("" if used <= 1.0 else ": DIFFERS")
        print(line)
        cases[case_id] = {"case": spec(case), **encode(logits)}
    if args.check:
        return int(failed > 0)
    document = {
        "format": FORMAT,
        "written_with": {"torch": torch.__version__},
        "episode": {"way": WAY, "shot": SHOT, "query": QUERY, "image_size": IMAGE_SIZE, "seed": EPISODE_SEED},
        "weight_seed": WEIGHT_SEED,
        "cases": cases,
    }
    GOLDEN.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
