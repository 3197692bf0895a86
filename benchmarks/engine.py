"""Engine benchmarks, side by side with PyTorch CPU eager when it is installed.

    python benchmarks/engine.py [--device cpu|cuda] [--json results.json]

Measures, in one run:
  1. conv2d forward+backward, N=64, C=64->64, 28x28, 3x3, padding 1;
  2. per-op overhead: forward+backward of 10 elements through add, mul, sum;
  3. one training step of the small digit conv net (batch 64, 8x8, Adam);
  4. peak extra memory of that step (max RSS in a fresh process);
and the conv's achieved GFLOP/s next to a plain float32 matmul of the same
FLOP count. Results print as a Markdown table (copied into the README).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np

import minigen as mg
from minigen import backend
from minigen import functional as F
from minigen import optim
from minigen.bench import measure
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


def _digits_batch(rng):
    return rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 64)


def bench_step_minigen(device):
    mg.manual_seed(0)
    model = DigitClassifier().to(device)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x_np, y_np = _digits_batch(np.random.default_rng(0))
    x, y = mg.tensor(x_np, device=device), mg.tensor(y_np, device=device)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return measure(step, repeats=50, warmup=5, device=device)


def torch_classifier():
    """The same architecture as minigen's DigitClassifier, in PyTorch."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def bench_step_torch():
    torch.manual_seed(0)
    model = torch_classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_np, y_np = _digits_batch(np.random.default_rng(0))
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return measure(step, repeats=50, warmup=5)


PEAK_MEMORY_SCRIPT = """
import resource, sys
sys.argv = ['x']
sys.path.insert(0, {here!r})
import engine
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
step = engine.{name}_training_closure()
for _ in range(5):
    step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def minigen_training_closure():
    mg.manual_seed(0)
    model = DigitClassifier()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x_np, y_np = _digits_batch(np.random.default_rng(0))
    x, y = mg.tensor(x_np), mg.tensor(y_np)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def torch_training_closure():
    model = torch_classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_np, y_np = _digits_batch(np.random.default_rng(0))
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def peak_memory_mib(name: str) -> float:
    """Extra peak resident memory (MiB) of 5 training steps, in a fresh process."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    script = PEAK_MEMORY_SCRIPT.format(here=here, name=name)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(device: str) -> dict:
    rows = {}
    with_torch = torch is not None and device == "cpu"
    if with_torch:
        torch.set_num_threads(max(1, torch.get_num_threads()))
    conv = bench_conv_minigen(device)
    rows["conv2d fwd+bwd (64x64x28x28, 3x3)"] = (conv, bench_conv_torch() if with_torch else None)
    rows["per-op overhead (add, mul, sum; fwd+bwd of 10 elements)"] = (
        bench_overhead_minigen(device), bench_overhead_torch() if with_torch else None)
    rows["digit conv net training step (batch 64, Adam)"] = (
        bench_step_minigen(device), bench_step_torch() if with_torch else None)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os_cpu_count()} cores",
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "numpy": np.__version__,
        "torch": torch.__version__ if with_torch else None,
        "rows": {name: {"minigen_ms": m.median * 1e3,
                        "torch_ms": t.median * 1e3 if t else None,
                        "ratio": m.median / t.median if t else None}
                 for name, (m, t) in rows.items()},
        "conv_gflops": conv_flops() / conv.median / 1e9,
        "matmul_gflops": bench_matmul_gflops(device),
    }
    if device == "cpu":
        result["peak_memory_mib"] = {"minigen": peak_memory_mib("minigen"),
                                     "torch": peak_memory_mib("torch") if with_torch else None}
    return result


def os_cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; device {result['device']}; {result['date']}; "
             f"NumPy {result['numpy']}; PyTorch {result['torch'] or 'not installed'}.", "",
             "| benchmark | minigen | PyTorch CPU | minigen / PyTorch |", "|---|---:|---:|---:|"]
    for name, row in result["rows"].items():
        torch_ms = f"{row['torch_ms']:.3f} ms" if row["torch_ms"] else "-"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
        lines.append(f"| {name} | {row['minigen_ms']:.3f} ms | {torch_ms} | {ratio} |")
    memory = result.get("peak_memory_mib")
    if memory:
        torch_mem = f"{memory['torch']:.1f} MiB" if memory["torch"] is not None else "-"
        lines.append(f"| peak extra memory of 5 training steps | {memory['minigen']:.1f} MiB | {torch_mem} | |")
    lines += ["", f"conv2d achieves {result['conv_gflops']:.1f} GFLOP/s; a plain float32 matmul of "
              f"the same shape achieves {result['matmul_gflops']:.1f} GFLOP/s "
              f"({result['conv_gflops'] / result['matmul_gflops']:.0%})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(args.device)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
