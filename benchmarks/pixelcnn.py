"""PixelCNN benchmarks: cached vs naive sampling, and a training step beside PyTorch CPU eager.

    python benchmarks/pixelcnn.py [--quick] [--full-naive] [--device cpu|cuda] [--json results.json]

Measures, in one run:
  1. the time to sample 16 images at 8x8, 16x16 and 28x28 with the naive
     sampler (one full forward pass per sub-pixel) and the cached one
     (Ramachandran et al. 2017), for PixelCNN and GatedPixelCNN, and checks
     that both samplers return exactly the same images. At 28x28 the naive
     time is extrapolated (the median of a few forward passes times the
     C*H*W passes it makes) and the images are not compared, unless
     ``--full-naive`` runs it in full (C*H*W full forward passes: slow);
  2. one training step (forward, backward, Adam) of the reference PixelCNN on
     a batch of 64 binary images at 8x8 and 28x28, in minigen and in PyTorch
     CPU eager. The PyTorch network is built here with minigen's own masks and
     starts from minigen's weights, so both first losses must agree.
Every library runs in its own fresh process. ``--quick`` is a smoke run: 8x8
only, few repeats. Results print as Markdown tables (copied into the README).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import minigen as mg
from minigen import optim
from minigen.bench.report import cell, markdown_table, publish
from minigen.bench.timing import adam_step, facts_line, machine_facts, measure, run_worker, serve_worker
from minigen.models.pixelcnn import GatedPixelCNN, PixelCNN

try:
    import torch
    from minigen.bench.torch_twins import TorchPixelCNN
except ImportError:  # the bench extra is optional
    torch = None

REFERENCE = dict(channels=1, levels=2, hidden=64, blocks=5)
"""The reference PixelCNN: binary images, the class's default size; it is also compared with PyTorch."""

MODELS = {"PixelCNN": (PixelCNN, REFERENCE),
          "GatedPixelCNN": (GatedPixelCNN, dict(channels=1, levels=2, hidden=32, layers=6))}

SAMPLE_BATCH, TRAIN_BATCH = 16, 64

PLANS = {
    "full": dict(sample_sizes=[8, 16, 28], naive_sizes=[8, 16], forward_repeats=10, cached_repeats=3,
                 train_sizes=[8, 28], train_repeats=10),
    "quick": dict(sample_sizes=[8], naive_sizes=[8], forward_repeats=3, cached_repeats=1,
                  train_sizes=[8], train_repeats=3),
}
"""What a run measures. The naive sampler runs in full once at each of
``naive_sizes`` (even at 8x8 one run is 64 forward passes); at other sizes
its time is extrapolated from the median of ``forward_repeats`` forward passes."""

# ----------------------------------------------------------------------------
# Measurements (each worker runs in a fresh process)


def parameter_count(name: str) -> int:
    """Trainable numbers in the model, masked-out weights included (as PyTorch counts them)."""
    model_class, config = MODELS[name]
    return sum(p.data.size for p in model_class(**config).parameters())


def bench_sampling(name: str, size: int, plan: dict, device: str) -> dict:
    """Seconds to sample SAMPLE_BATCH images of size x size, cached and naive, and
    whether both samplers drew the same images (None where naive was extrapolated)."""
    model_class, config = MODELS[name]
    mg.manual_seed(0)
    model = model_class(**config).to(device)
    images = {}

    def sampler(cached: bool):
        def sample():
            images[cached] = model.sample(SAMPLE_BATCH, (size, size), cached=cached, seed=0, device=device)
        return sample

    cached = measure(sampler(True), repeats=plan["cached_repeats"], warmup=1, device=device).median
    if size not in plan["naive_sizes"]:
        naive = naive_extrapolated(model, size, plan["forward_repeats"], device)
        return {"naive_s": naive, "naive_extrapolated": True, "cached_s": cached, "identical": None}
    naive = measure(sampler(False), repeats=1, warmup=0, device=device).median
    return {"naive_s": naive, "naive_extrapolated": False, "cached_s": cached,
            "identical": bool((images[False] == images[True]).all())}


def naive_extrapolated(model, size: int, repeats: int, device: str) -> float:
    """The naive sampler's seconds, estimated: it makes one full forward pass per
    sub-pixel, C*H*W in all, each on a batch of the same shape, so the median
    forward pass times C*H*W (the sampling arithmetic around it is negligible)."""
    x = mg.zeros(SAMPLE_BATCH, model.channels, size, size, dtype="int64", device=device)
    model.eval()
    with mg.no_grad():
        forward = measure(lambda: model(x), repeats=repeats, warmup=1, device=device)
    return forward.median * model.channels * size * size


def training_step(framework: str, size: int, device: str = "cpu"):
    """A closure: one Adam step of the reference PixelCNN on a fixed batch of
    random binary images, returning the loss. Both frameworks start from the
    same weights (minigen's, seed 0), so their first losses agree."""
    images = np.random.default_rng(0).integers(0, 2, (TRAIN_BATCH, 1, size, size))
    mg.manual_seed(0)
    model = PixelCNN(**REFERENCE)
    if framework == "minigen":
        model.to(device)
        x, opt = mg.tensor(images, device=device), optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = TorchPixelCNN.from_minigen(model)
        x, opt = torch.from_numpy(images), torch.optim.Adam(model.parameters(), lr=1e-3)
    return adam_step(opt, lambda: model.loss(x))


def worker(kind: str, plan: dict, device: str) -> dict:
    """All measurements of one kind ("sampling", or training in "minigen" or "torch"), in this process."""
    results = {}
    if kind == "sampling":
        for name in MODELS:
            for size in plan["sample_sizes"]:
                print(f"sampling: {name} {size}x{size}", file=sys.stderr, flush=True)
                results[f"{name} {size}x{size}"] = bench_sampling(name, size, plan, device)
        return results
    for size in plan["train_sizes"]:
        print(f"training step: {kind} {size}x{size}", file=sys.stderr, flush=True)
        step = training_step(kind, size, device)
        first_loss = step()
        timing = measure(step, repeats=plan["train_repeats"], warmup=1, device=device)
        results[f"{size}x{size}"] = {"step": timing.median, "first_loss": first_loss}
    return results


def run(plan: dict, device: str) -> dict:
    """Every worker in turn, each in a fresh process; the results as one dict (what --json writes)."""
    sampled = run_worker(__file__, "sampling", plan, device)
    ours = run_worker(__file__, "minigen", plan, device)
    theirs = run_worker(__file__, "torch", plan, "cpu") if torch is not None and device == "cpu" else None
    sampling = {}
    for name, (_, config) in MODELS.items():
        sizes = {}
        for size in plan["sample_sizes"]:
            row = sampled[f"{name} {size}x{size}"]
            sizes[f"{size}x{size}"] = {**row, "speedup": row["naive_s"] / row["cached_s"]}
        sampling[name] = {"config": config, "parameters": parameter_count(name), "sizes": sizes}
    training = {}
    for size, row in ours.items():
        twin = theirs[size] if theirs else None
        training[size] = {"minigen_ms": row["step"] * 1e3, "torch_ms": twin["step"] * 1e3 if twin else None,
                          "ratio": row["step"] / twin["step"] if twin else None,
                          "minigen_first_loss": row["first_loss"],
                          "torch_first_loss": twin["first_loss"] if twin else None}
    return {**machine_facts([device], torch.__version__ if theirs else None), "plan": plan,
            "sample_batch": SAMPLE_BATCH, "train_batch": TRAIN_BATCH,
            "sampling": sampling, "training": training}


def markdown(result: dict) -> str:
    """The two results tables, with the machine facts above them."""
    plan = result["plan"]
    sampling = []
    for name, model in result["sampling"].items():
        settings = ", ".join(f"{key}={value}" for key, value in model["config"].items())
        for index, (size, row) in enumerate(model["sizes"].items()):
            label = f"{name}({settings}), {model['parameters']:,} parameters" if index == 0 else ""
            naive = f"{row['naive_s']:.2f} s" + ("*" if row["naive_extrapolated"] else "")
            identical = {True: "yes", False: "no", None: "not compared"}[row["identical"]]
            sampling.append([label, size, naive, f"{row['cached_s']:.3f} s", f"{row['speedup']:.1f}x", identical])
    training = [[size, f"{row['minigen_ms']:.1f} ms", cell(row["torch_ms"], "{:.1f} ms"), cell(row["ratio"], "{:.2f}x"),
                 f"{row['minigen_first_loss']:.4f} / {cell(row['torch_first_loss'], '{:.4f}')}"]
                for size, row in result["training"].items()]
    return "\n".join([
        facts_line(result), "",
        f"Sampling {result['sample_batch']} images. Naive: one full forward pass per sub-pixel, "
        f"one run; *extrapolated: the median of {plan['forward_repeats']} forward passes "
        f"times their number, C*H*W. Cached: one pixel's worth of network per sub-pixel, "
        f"median of n={plan['cached_repeats']}. Identical: the two samplers drew the same images.", "",
        markdown_table(["model", "image", "naive", "cached", "speed-up", "identical"], sampling, "llrrrl"), "",
        f"Training step of the reference PixelCNN: forward, backward and Adam on "
        f"{result['train_batch']} binary images (median of n={plan['train_repeats']}). "
        "Both start from the same weights; the first loss is in nats per image.", "",
        markdown_table(["image", "minigen", "PyTorch CPU", "minigen / PyTorch", "first loss, minigen / PyTorch"],
                       training, "lrrrr")])


def check(result: dict) -> None:
    """Fail (after the tables are out) if the samplers disagree or the two networks differ."""
    different = [f"{name} {size}" for name, model in result["sampling"].items()
                 for size, row in model["sizes"].items() if row["identical"] is False]
    if different:
        raise SystemExit(f"the cached sampler's images differ from the naive sampler's for {', '.join(different)}")
    for size, row in result["training"].items():
        ours, theirs = row["minigen_first_loss"], row["torch_first_loss"]
        if theirs is not None and not np.isclose(ours, theirs, rtol=1e-4):
            raise SystemExit(f"{size}: minigen's first loss {ours} differs from PyTorch's {theirs}: "
                             "the two networks are not the same")


def main() -> None:
    if serve_worker(worker):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8x8 only, few repeats")
    parser.add_argument("--full-naive", action="store_true",
                        help="run the naive sampler in full at every size (and compare its images there)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    plan = PLANS["quick" if args.quick else "full"]
    if args.full_naive:
        plan = {**plan, "naive_sizes": plan["sample_sizes"]}
    result = run(plan, args.device)
    publish(result, markdown(result), args.json)
    check(result)


if __name__ == "__main__":
    main()
