"""The matrix products of one BERT tower layer, alone: XLA (`jax.jit`) against PyTorch on the
same device, dtype and shapes. This is the ceiling for benchmarks (b) and (c) of
bench_vs_torch.py: when most of a step's time is in these products, a step cannot beat the
reference by more than its products do.

Run from the repository root:

    python bench/bench_matmul.py                   # CPU: BERT-mini shapes, float32
    python bench/bench_matmul.py --size base       # mBERT-base shapes (bfloat16 on a GPU)

Per layer, with N = batch x length tokens: the four attention projections [N, h] x [h, h];
the feed-forward pair [N, h] x [h, ff] and [N, ff] x [ff, h]; the two batched attention
products over batch x heads; and, for the backward pass, the weight gradients X^T dY
([h, N] x [N, h], [h, N] x [N, ff], [ff, N] x [N, h]). Each is timed as the best of
`--repeats` runs after a warm-up. The last two rows weight every product by how often a
layer runs it (forward: 4 + 1 + 1 + 2; the backward adds the input gradients, the weight
gradients and four attention products) and give total FLOPs over total time, for each side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_vs_torch import _best_of, accelerator_defaults, print_and_record  # noqa: E402

SECTION = "## Matrix products alone, XLA against PyTorch (bench/bench_matmul.py)"
HEADER = (
    "| date | device | versions | command | product | XLA GFLOP/s | PyTorch GFLOP/s | XLA / PyTorch |\n"
    "|---|---|---|---|---|---|---|---|\n"
)

# hidden, heads, feed-forward; batch and length of the tokens (bench_vs_torch's encode batch)
SIZES = {"mini": (256, 4, 1024, 64, 256), "base": (768, 12, 3072, 512, 256)}


def products(size: str) -> list[tuple[str, tuple[int, ...], tuple[int, ...], bool, int, int]]:
    """(name, lhs shape, rhs shape, lhs transposed, forward count, backward count) per layer.

    Shapes are [batch?, m, k] x [batch?, k, n]; a transposed lhs is stored [k, m] (X^T dY).
    Backward counts: a dense product's input gradient costs what the forward does (the
    feed-forward pair swap shapes, so each is counted once more); the weight gradients are
    their own rows; the attention backward is one scores-shaped product (dP = dO V^T) and three
    weighted-sum-shaped ones (dQ, dK, dV).
    """
    h, heads, ff, batch, length = SIZES[size]
    n, hd, bh = batch * length, h // heads, batch * heads
    return [
        (f"projection [{n},{h}]x[{h},{h}]", (n, h), (h, h), False, 4, 4),
        (f"ffn in [{n},{h}]x[{h},{ff}]", (n, h), (h, ff), False, 1, 1),
        (f"ffn out [{n},{ff}]x[{ff},{h}]", (n, ff), (ff, h), False, 1, 1),
        (f"scores [{bh}x{length},{hd}]x[{hd},{length}]", (bh, length, hd), (bh, hd, length), False, 1, 1),
        (f"weighted sum [{bh}x{length},{length}]x[{length},{hd}]", (bh, length, length), (bh, length, hd), False, 1, 3),
        (f"dW projection [{h},{n}]x[{n},{h}]", (n, h), (n, h), True, 0, 4),
        (f"dW ffn in [{h},{n}]x[{n},{ff}]", (n, h), (n, ff), True, 0, 1),
        (f"dW ffn out [{ff},{n}]x[{n},{h}]", (n, ff), (n, h), True, 0, 1),
    ]


def flops(lhs: tuple[int, ...], rhs: tuple[int, ...], transposed: bool) -> float:
    batch = lhs[0] if len(lhs) == 3 else 1
    m, k = (lhs[-1], lhs[-2]) if transposed else (lhs[-2], lhs[-1])
    return 2.0 * batch * m * k * rhs[-1]


def _warm_best_of(fn, repeats: int) -> float:
    fn()  # compilation, allocation
    return _best_of(fn, repeats)


def time_jax(lhs, rhs, transposed: bool, dtype: str, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, lhs, jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), rhs, jnp.dtype(dtype))
    f = jax.jit((lambda a, b: jnp.swapaxes(a, -1, -2) @ b) if transposed else (lambda a, b: a @ b))
    return _warm_best_of(lambda: f(a, b).block_until_ready(), repeats)


def time_torch(lhs, rhs, transposed: bool, dtype: str, repeats: int) -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dt = getattr(torch, dtype)
    a, b = torch.randn(lhs, dtype=dt, device=device), torch.randn(rhs, dtype=dt, device=device)

    def run():
        with torch.no_grad():
            (a.transpose(-1, -2) @ b) if transposed else (a @ b)
        if device == "cuda":
            torch.cuda.synchronize()

    return _warm_best_of(run, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), help="tower shapes (default: base on a GPU, mini on a CPU)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per product and side; the best is reported")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    size, dtype, _ = accelerator_defaults(args)
    rows, totals = [], {"forward": [0.0, 0.0, 0.0], "forward + backward": [0.0, 0.0, 0.0]}
    for name, lhs, rhs, transposed, fwd_count, bwd_count in products(size):
        ours, ref = time_jax(lhs, rhs, transposed, dtype, args.repeats), time_torch(lhs, rhs, transposed, dtype, args.repeats)
        work = flops(lhs, rhs, transposed)
        rows.append((name, work / ours, work / ref))
        for label, count in (("forward", fwd_count), ("forward + backward", fwd_count + bwd_count)):
            totals[label][0] += count * work
            totals[label][1] += count * ours
            totals[label][2] += count * ref
        print(f"  {name}: {work / ours / 1e9:.0f} vs {work / ref / 1e9:.0f} GFLOP/s", flush=True)
    for label, (work, ours, ref) in totals.items():
        rows.append((f"one {size} layer, {label}, FLOP-weighted", work / ours, work / ref))

    table = [[f"{name}, {dtype}", f"{ours / 1e9:.0f}", f"{ref / 1e9:.0f}", f"{ours / ref:.2f}x"] for name, ours, ref in rows]
    print_and_record("bench_matmul.py", argv, ["product", "XLA GFLOP/s", "PyTorch GFLOP/s", "XLA / PyTorch"], table, SECTION,
                     HEADER, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
