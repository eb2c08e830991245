"""Speed of the reconstruction cross attention with dropout, at the shapes of HMDRN's penultimate level.

    python bench/attention_speed.py               # Conv-4 5-way and 30-way (5-shot 15-query, 10×10 tokens)
    python bench/attention_speed.py --ways 5 10 --channels 320   # ResNet-12's penultimate level

One forward and backward pass of softmax(Q K_bᵀ/√C) V_b for B = way classes, L = way·query·N query tokens and
S = shot·N support tokens per class, followed by the squared error against a target, by four paths: PyTorch's
``scaled_dot_product_attention`` with dropout (its reference path on CPU); the chunked path ``fsl_core`` uses
for training on CPU, returning the output, and returning the squared errors themselves (what the
reconstruction heads ask for while training); and, for comparison, PyTorch's fused kernel without dropout
(what evaluation runs). A second table times the squared error of the
rebuilt tokens (evaluation, or a caller asking for the tokens): the written-out formula against
``squared_error``; while training, the chunked path returns the errors itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from train_speed import interleaved_fastest

from fsl_core.models.cross_attention import cross_attention, squared_error
from fsl_core.runtime import device_name


def attention_paths(way: int, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """One forward and backward pass by each path, on random inputs of the episode's shapes."""
    torch.manual_seed(0)
    length, support = way * args.query * args.tokens, args.shot * args.tokens
    queries = torch.randn(length, args.channels, requires_grad=True)
    keys, values = (torch.randn(way, support, args.channels, requires_grad=True) for _ in range(2))
    target = torch.randn(length, args.channels)

    def step(attend: Callable[[], torch.Tensor]) -> None:
        (attend() - target).pow(2).sum().backward()

    return {
        "sdpa reference (dropout)": lambda: step(
            lambda: F.scaled_dot_product_attention(
                queries.expand(way, -1, -1), keys, values, dropout_p=args.dropout
            )
        ),
        "chunked (dropout)": lambda: step(lambda: cross_attention(queries, keys, values, args.dropout, True)),
        "chunked (dropout), errors": lambda: (
            cross_attention(queries, keys, values, args.dropout, True, target=target).sum().backward()
        ),
        "fused sdpa, no dropout": lambda: step(
            lambda: F.scaled_dot_product_attention(queries.expand(way, -1, -1), keys, values)
        ),
    }


def error_paths(way: int, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """Forward and backward of the squared error of the rebuilt query tokens (way, n_query, N, C) against the
    queries' values, a slice of their qkv projection (n_query, N, 3C) as in the model."""
    torch.manual_seed(0)
    n_query = way * args.query
    rebuilt = torch.randn(way, n_query, args.tokens, args.channels, requires_grad=True)
    qkv = torch.randn(n_query, args.tokens, 3 * args.channels, requires_grad=True)

    def step(error: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        error(rebuilt, qkv.chunk(3, dim=-1)[2].unsqueeze(0)).sum().backward()

    return {
        "formula": lambda: step(lambda a, b: (a - b).pow(2).sum(-1)),
        "squared_error": lambda: step(squared_error),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ways", nargs="+", type=int, default=[5, 30])
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument(
        "--tokens", type=int, default=100, help="N: tokens per image (10×10 for Conv-4 at 84px)"
    )
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(
        f"device: cpu ({device_name('cpu')}), torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, dropout {args.dropout}, C {args.channels}"
    )
    header = f"{'way':>4} {'L':>7} {'S':>5} {'path':<26} {'fwd+bwd ms':>10} {'vs reference':>12}"
    print(header)
    print("-" * len(header))
    for way in args.ways:
        length, support = way * args.query * args.tokens, args.shot * args.tokens
        paths = attention_paths(way, args)
        times = interleaved_fastest(paths, args.repeats)
        reference = times["sdpa reference (dropout)"]
        for name, seconds in times.items():
            print(
                f"{way:>4} {length:>7} {support:>5} {name:<26} {seconds * 1e3:>10.0f} {reference / seconds:>11.2f}x"
            )
    header = f"{'way':>4} {'squared error':<26} {'fwd+bwd ms':>10} {'vs formula':>12}"
    print("\n" + header)
    print("-" * len(header))
    for way in args.ways:
        times = interleaved_fastest(error_paths(way, args), args.repeats)
        for name, seconds in times.items():
            print(f"{way:>4} {name:<26} {seconds * 1e3:>10.1f} {times['formula'] / seconds:>11.2f}x")


if __name__ == "__main__":
    main()
