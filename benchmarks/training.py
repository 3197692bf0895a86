"""Training-step speed beside PyTorch CPU eager, alone and beside a busy core.

    python benchmarks/training.py [--quick] [--json results.json]

Measures, in one run, one training step (forward, backward, Adam) of the
benchmark PixelCNN and of the DDPM U-Net (``minigen.bench.ar_vs_diffusion``'s
networks and batches, the same weights in both frameworks) at 16x16 and 32x32,
batch 32:
  1. alone: minigen and PyTorch each in a fresh process, alternating, the best
     (lowest) median over the rounds, so a passing hiccup of the machine hits
     neither side alone;
  2. beside one CPU-bound competing process (``while True: pass``, started
     here and killed after): the slowdown of each framework against its own
     time alone. A BLAS pool that wants every core stalls whenever one of its
     threads is descheduled; see ``minigen.set_num_threads``.
minigen runs twice: with its default BLAS threads (every core but one) and
with all cores (``mg.set_num_threads(cores)``), PyTorch with its own default
(all cores).
``--quick`` is a smoke run (8x8, batch 8, one round, few repeats).

A last column splits minigen's gap into BLAS and engine: the step's
convolution products alone (for every convolution the im2col product, the
weight-gradient product and the input-gradient product, on matrices of the
step's shapes, at the default threads), with nothing else of the step. No
im2col engine on this BLAS can be faster than that floor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

import minigen as mg
from minigen import nn
from minigen.bench.ar_vs_diffusion import minigen_training_step, torch_available, torch_training_step
from minigen.bench.report import cell, markdown_table, publish
from minigen.bench.timing import facts_line, machine_facts, measure, run_worker, serve_worker

FAMILIES = ("pixelcnn", "ddpm")
FRAMEWORKS = ("minigen", "minigen-all-cores", "torch")
PRODUCTS = "minigen-products"  # the floor: the step's convolution products alone
PLANS = {"full": dict(sizes=[16, 32], batch=32, repeats=5, rounds=2),
         "quick": dict(sizes=[8], batch=8, repeats=2, rounds=1)}


def product_shapes(model_step, model) -> list:
    """(rows, inner, columns) of the im2col product of every convolution that one
    call of ``model_step`` runs: rows = N*Ho*Wo, inner = the live taps times the
    input channels, columns = the output channels."""
    shapes = []

    def recorded(layer):
        forward = layer.forward

        def wrapper(x):
            out = forward(x)
            taps = getattr(layer, "taps", None)
            n, c = x.shape[:2]
            out_channels, _, kh, kw = layer.weight.shape
            shapes.append((n * out.shape[2] * out.shape[3], (len(taps) if taps else kh * kw) * c, out_channels))
            return out
        return wrapper

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for layer in layers:
        object.__setattr__(layer, "forward", recorded(layer))
    try:
        model_step()
    finally:
        for layer in layers:
            del layer.__dict__["forward"]
    return shapes


def products_alone(shapes):
    """A closure that runs, for each (rows, inner, columns), the three products of a
    convolution's training step: cols @ W, g^T @ cols and g @ W^T."""
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, o), dtype=np.float32),
             rng.standard_normal((m, o), dtype=np.float32)) for m, k, o in shapes]

    def run():
        for cols, w, g in mats:
            cols @ w, g.T @ cols, g @ w.T
    return run


def worker(framework: str, plan: dict, device: str) -> dict:
    """Median seconds per training step of each family and size, in this (fresh) process."""
    if framework == PRODUCTS:
        return {key: measure(products_alone(shapes), repeats=plan["repeats"], warmup=1).median
                for key, shapes in step_product_shapes(plan).items()}
    if framework == "minigen-all-cores":
        mg.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    results = {}
    for family in FAMILIES:
        for size in plan["sizes"]:
            if framework.startswith("minigen"):
                step = minigen_training_step(family, 1, size, plan["batch"], device)
            else:
                step = torch_training_step(family, 1, size, plan["batch"])
            step()  # first step: optimizer state and caches
            results[f"{family} {size}"] = measure(step, repeats=plan["repeats"], warmup=1, device=device).median
    return results


def step_product_shapes(plan: dict) -> dict:
    """For each family and size, the convolution product shapes of one training step."""
    shapes = {}
    for family in FAMILIES:
        for size in plan["sizes"]:
            step = minigen_training_step(family, 1, size, plan["batch"], "cpu")
            shapes[f"{family} {size}"] = product_shapes(step, step.model)
    return shapes


def best_of(frameworks, plan: dict, rounds: int) -> dict:
    """Each framework's workers in turn, ``rounds`` times; the lowest time per row over the rounds."""
    best = {f: {} for f in frameworks}
    for _ in range(rounds):
        for framework in frameworks:
            for key, seconds in run_worker(__file__, framework, plan).items():
                best[framework][key] = min(seconds, best[framework].get(key, seconds))
    return best


def run(plan: dict, with_torch: bool = True) -> dict:
    frameworks = FRAMEWORKS if with_torch else FRAMEWORKS[:2]
    alone = best_of(frameworks + (PRODUCTS,), plan, plan["rounds"])
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = best_of(frameworks, plan, 1)
    finally:
        hog.kill()
        hog.wait()
    return {**machine_facts(["cpu"], torch_available() if with_torch else None), "plan": plan,
            "alone": alone, "busy": busy}


def markdown(result: dict) -> str:
    """One row per network and size: times alone, the ratios to PyTorch, and each one's slowdown when busy."""
    alone, busy, batch = result["alone"], result["busy"], result["plan"]["batch"]
    ratio = lambda a, b: None if a is None or b is None else a / b  # noqa: E731
    rows = []
    for key in alone["minigen"]:
        family, size = key.split()
        name = {"pixelcnn": "PixelCNN", "ddpm": "DDPM U-Net"}[family]
        ours, all_cores, theirs, products = (alone.get(f, {}).get(key) for f in FRAMEWORKS + (PRODUCTS,))
        slowdowns = [ratio(busy.get(f, {}).get(key), alone.get(f, {}).get(key)) for f in FRAMEWORKS]
        rows.append([f"{name} {size}x{size}, batch {batch}", cell(ours, "{:.1f} ms", 1e3),
                     cell(all_cores, "{:.1f} ms", 1e3), cell(theirs, "{:.1f} ms", 1e3),
                     cell(ratio(ours, theirs), "{:.2f}x"), cell(ratio(all_cores, theirs), "{:.2f}x"),
                     *(cell(s, "{:.2f}x") for s in slowdowns),
                     cell(products, "{:.1f} ms", 1e3), cell(ratio(products, theirs), "{:.2f}x")])
    header = ["training step (fwd, bwd, Adam)", "minigen (default threads)", "minigen (all cores)", "PyTorch CPU",
              "minigen / PyTorch", "minigen all cores / PyTorch", "slowdown, 1 busy core: minigen",
              "minigen all cores", "PyTorch", "conv products alone (default threads)", "products alone / PyTorch"]
    return "\n".join([
        facts_line(result) + f" minigen's default BLAS threads: {mg.backend.default_num_threads()}.", "",
        markdown_table(header, rows, "l" + "r" * 10)])


def main() -> None:
    if serve_worker(worker):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8x8, batch 8, one round")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(PLANS["quick" if args.quick else "full"], with_torch=torch_available() is not None)
    publish(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
