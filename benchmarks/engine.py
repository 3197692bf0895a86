"""Engine benchmarks, side by side with PyTorch CPU eager when it is installed.

    python benchmarks/engine.py [--device cpu|cuda] [--json results.json]

Measures, in one run:
  1. conv2d forward+backward, N=64, C=64->64, 28x28, 3x3, padding 1;
  2. per-op overhead: forward+backward of 10 elements through add, mul, sum;
  3. one training step of the small digit conv net (batch 64, 8x8, Adam);
  4. peak extra memory of one step of that net at batch 256, 28x28;
and the conv's achieved GFLOP/s next to a plain float32 matmul of the same
FLOP count. Results print as a Markdown table (copied into the README).
"""

from __future__ import annotations

import argparse

import numpy as np

import minigen as mg
from minigen.engine import backend
from minigen import functional as F
from minigen import optim
from minigen.bench.report import cell, markdown_table, publish
from minigen.bench.timing import (adam_step, facts_line, machine_facts, measure, peak_extra_memory_mib, run_worker,
                                  serve_worker)
from minigen.models.classifier import DigitClassifier

try:
    import torch
except ImportError:  # the bench extra is optional
    torch = None

CONV = dict(n=64, c=64, size=28, k=3)


def conv_flops() -> float:
    """Multiply-adds x 2 for forward, and twice that again for the two backward products."""
    n, c, s, k = CONV["n"], CONV["c"], CONV["size"], CONV["k"]
    forward = 2 * n * s * s * c * c * k * k
    return 3 * forward


def bench_conv_minigen(device):
    rng = np.random.default_rng(0)
    n, c, s, k = CONV["n"], CONV["c"], CONV["size"], CONV["k"]
    x = mg.tensor(rng.standard_normal((n, c, s, s)), requires_grad=True, device=device)
    w = mg.tensor(rng.standard_normal((c, c, k, k)) * 0.05, requires_grad=True, device=device)
    b = mg.tensor(np.zeros(c), requires_grad=True, device=device)

    def step():
        x.grad = w.grad = b.grad = None
        F.conv2d(x, w, b, padding=1).sum().backward()

    return measure(step, repeats=10, warmup=2, device=device)


def bench_conv_torch():
    torch.manual_seed(0)
    n, c, s, k = CONV["n"], CONV["c"], CONV["size"], CONV["k"]
    x = torch.randn(n, c, s, s, requires_grad=True)
    w = (torch.randn(c, c, k, k) * 0.05).requires_grad_()
    b = torch.zeros(c, requires_grad=True)

    def step():
        x.grad = w.grad = b.grad = None
        torch.nn.functional.conv2d(x, w, b, padding=1).sum().backward()

    return measure(step, repeats=10, warmup=2)


def bench_matmul_gflops(device) -> float:
    """GFLOP/s of one float32 matmul shaped like the conv's forward product."""
    n, c, s, k = CONV["n"], CONV["c"], CONV["size"], CONV["k"]
    xp = backend.xp_for(device)
    a = xp.ones((n * s * s, c * k * k), dtype=np.float32)
    b = xp.ones((c * k * k, c), dtype=np.float32)
    timing = measure(lambda: a @ b, repeats=10, warmup=2, device=device)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / timing.median / 1e9


def bench_overhead_minigen(device):
    a = mg.tensor(np.arange(10.0), requires_grad=True, device=device)
    b = mg.tensor(np.ones(10), requires_grad=True, device=device)

    def step():
        a.grad = b.grad = None
        ((a + b) * b).sum().backward()

    return measure(step, repeats=2000, warmup=50, device=device)


def bench_overhead_torch():
    a = torch.arange(10.0, requires_grad=True)
    b = torch.ones(10, requires_grad=True)

    def step():
        a.grad = b.grad = None
        ((a + b) * b).sum().backward()

    return measure(step, repeats=2000, warmup=50)


def torch_classifier(size: int = 8):
    """The same architecture as minigen's DigitClassifier, in PyTorch."""
    nn, half = torch.nn, (size + 1) // 2
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * half * half, 10))


def bench_step(framework: str, device: str = "cpu"):
    return measure(_training_closure(framework, batch=64, size=8, device=device),
                   repeats=50, warmup=5, device=device)


def _training_closure(framework: str, batch: int, size: int, device: str = "cpu"):
    """One Adam step of the digit conv net on random (batch, 1, size, size) images."""
    rng = np.random.default_rng(0)
    x_np = rng.random((batch, 1, size, size), dtype=np.float32)
    y_np = rng.integers(0, 10, batch)
    if framework == "minigen":
        mg.manual_seed(0)
        model = DigitClassifier(image_size=size).to(device)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x, y, loss_fn = mg.tensor(x_np, device=device), mg.tensor(y_np, device=device), F.cross_entropy
    else:
        torch.manual_seed(0)
        model = torch_classifier(size)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y, loss_fn = torch.from_numpy(x_np), torch.from_numpy(y_np), torch.nn.functional.cross_entropy
    return adam_step(opt, lambda: loss_fn(model(x), y))


MEMORY_SHAPE = dict(batch=256, size=28)


def peak_memory_mib(framework: str) -> float | None:
    """Extra peak resident memory (MiB) of one training step at MEMORY_SHAPE
    (:func:`minigen.bench.timing.peak_extra_memory_mib`), after a first step has
    created the optimizer state and caches. Freed memory goes back to the system
    for both frameworks (glibc's default): with minigen's default of keeping it
    (``keep_freed_memory``) a second step would reuse the first one's pages."""
    backend.keep_freed_memory(False)
    step = _training_closure(framework, **MEMORY_SHAPE)
    step()
    return peak_extra_memory_mib(step)


def worker(framework: str, plan, device: str) -> dict:
    """All measurements for one framework, run in this (fresh) process (``plan`` is unused: the sizes are fixed)."""
    if framework == "minigen":
        conv, overhead = bench_conv_minigen(device), bench_overhead_minigen(device)
    else:
        conv, overhead = bench_conv_torch(), bench_overhead_torch()
    step = bench_step(framework, device)
    return {"conv": conv.median, "overhead": overhead.median, "step": step.median,
            "memory": peak_memory_mib(framework) if device == "cpu" else None,
            "matmul_gflops": bench_matmul_gflops(device) if framework == "minigen" else None}


ROWS = {"conv": "conv2d fwd+bwd (64x64x28x28, 3x3)",
        "overhead": "per-op overhead (add, mul, sum; fwd+bwd of 10 elements)",
        "step": "digit conv net training step (batch 64, 8x8, Adam)"}


def run(device: str) -> dict:
    ours = run_worker(__file__, "minigen", device=device)
    theirs = run_worker(__file__, "torch", device="cpu") if torch is not None and device == "cpu" else None
    rows = {}
    for key, name in ROWS.items():
        ratio = ours[key] / theirs[key] if theirs else None
        rows[name] = {"minigen_ms": ours[key] * 1e3, "torch_ms": theirs[key] * 1e3 if theirs else None,
                      "ratio": ratio}
    return {
        **machine_facts([device], torch.__version__ if theirs else None),
        "rows": rows,
        "peak_memory_mib": {"minigen": ours["memory"], "torch": theirs["memory"] if theirs else None},
        "conv_gflops": conv_flops() / ours["conv"] / 1e9,
        "matmul_gflops": ours["matmul_gflops"],
    }


def markdown(result: dict) -> str:
    """The results table, with the machine facts above it and the conv's GFLOP/s below."""
    rows = [[name, f"{row['minigen_ms']:.3f} ms", cell(row["torch_ms"], "{:.3f} ms"), cell(row["ratio"], "{:.2f}x")]
            for name, row in result["rows"].items()]
    memory = result.get("peak_memory_mib")
    if memory:
        ratio = f"{memory['minigen'] / memory['torch']:.2f}x" if memory["torch"] else "-"
        rows.append(["peak extra memory of one training step (batch 256, 28x28)", f"{memory['minigen']:.1f} MiB",
                     cell(memory["torch"], "{:.1f} MiB"), ratio])
    return "\n".join([
        facts_line(result), "",
        markdown_table(["benchmark", "minigen", "PyTorch CPU", "minigen / PyTorch"], rows, "lrrr"), "",
        f"conv2d achieves {result['conv_gflops']:.1f} GFLOP/s; a plain float32 matmul of "
        f"the same shape achieves {result['matmul_gflops']:.1f} GFLOP/s "
        f"({result['conv_gflops'] / result['matmul_gflops']:.0%})."])


def main() -> None:
    if serve_worker(worker):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(args.device)
    publish(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
