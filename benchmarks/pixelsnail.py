"""What attention buys: PixelCNN, Gated PixelCNN and PixelSNAIL side by side.

    python benchmarks/pixelsnail.py [--quick] [--json results.json] [--figure fields.png]

Three models of about the same parameter count (and PixelSNAIL once more with
the paper's linear position channels only), each trained for the same
wall-clock time (one BLAS thread, the default on this machine), on:
  1. copy-row images (``minigen.bench.long_range``): random bits, the last row a
     copy of the first; bits per copied pixel and per free pixel on fresh test
     images. A model that sees the first row from the last pays 0 bits on the
     copies; one that does not pays 1;
  2. real data: the 8x8 digits, binarized and with 17 grey levels, and (not in
     ``--quick``) binarized MNIST 28x28 (Larochelle's fixed binarization, the
     set behind the published 81.30 nats of PixelCNN and 79.20 of PixelRNN);
     test NLL in nats per image;
  3. receptive fields by autograd of the last pixel, for the three models and
     the DDPM U-Net (``--figure``).
``--quick`` is a smoke run: short budgets, the digits only.
"""

from __future__ import annotations

import argparse

import numpy as np

import minigen as mg
from minigen.bench.long_range import (epochs_of, long_range_experiment, nll_nats, parameter_count,
                                      receptive_field, train_for)
from minigen.bench.report import cell, markdown_table, publish
from minigen.bench.timing import facts_line, machine_facts
from minigen.data import load_binarized_mnist, load_digits
from minigen.engine import backend
from minigen.models.pixelcnn import GatedPixelCNN, PixelCNN
from minigen.models.pixelsnail import PixelSNAIL
from minigen.models.unet import UNet

MODELS = {
    "PixelCNN": lambda levels: PixelCNN(channels=1, levels=levels, hidden=84, blocks=4),
    "Gated PixelCNN": lambda levels: GatedPixelCNN(channels=1, levels=levels, hidden=28, layers=5),
    "PixelSNAIL": lambda levels: PixelSNAIL(channels=1, levels=levels, hidden=28, blocks=2, residual_layers=2),
    "PixelSNAIL, the paper's linear position": lambda levels: PixelSNAIL(
        channels=1, levels=levels, hidden=28, blocks=2, residual_layers=2, position_frequencies=0),
}
"""Names and builders (for K levels) of the three models: about 100,000 parameters each (printed with
the results). The convolution stacks reach 5-7 rows up: less than the 11 or 15 rows between the
first and the last row of the copy-row images."""

PLANS = {"full": dict(copy_size=16, copy_seconds=150.0, digit_seconds=60.0, mnist_seconds=180.0, batch=32),
         "quick": dict(copy_size=12, copy_seconds=4.0, digit_seconds=3.0, mnist_seconds=None, batch=16)}


ABLATION = "PixelSNAIL, the paper's linear position"  # on the copy-row images only


def builders(levels: int, names=tuple(MODELS)) -> dict:
    return {name: (lambda build=MODELS[name]: build(levels)) for name in names}


def likelihood_rows(name: str, train: np.ndarray, test: np.ndarray, levels: int, seconds: float,
                    batch: int, seed: int = 0) -> list:
    """Each model trained for ``seconds`` on ``train``; its test NLL in nats per image."""
    rows = []
    for model_name, build in builders(levels, [name for name in MODELS if name != ABLATION]).items():
        with backend.seeded(seed):
            model = build()
        steps = train_for(model, epochs_of(train, batch, seed), seconds)
        rows.append(dict(data=name, model=model_name, parameters=parameter_count(model), steps=steps,
                         nll=nll_nats(model, test)))
        print(f"  {name}, {model_name}: {rows[-1]['nll']:.2f} nats after {steps} steps", flush=True)
    return rows


def data_sets(plan: dict) -> list:
    """(name, train images, test images, levels) for the likelihood experiment."""
    sets = [("digits 8x8, binarized", load_digits("train", levels=2).images, load_digits("test", levels=2).images, 2),
            ("digits 8x8, 17 levels", load_digits("train").images, load_digits("test").images, 17)]
    if plan["mnist_seconds"]:
        sets.append(("binarized MNIST 28x28", load_binarized_mnist("train").images,
                     load_binarized_mnist("test").images, 2))
    return sets


def run(plan: dict) -> dict:
    sets = data_sets(plan)  # first: a missing data file stops the run before any training
    mg.manual_seed(0)
    print(f"copy-row images {plan['copy_size']}x{plan['copy_size']}, {plan['copy_seconds']:g} s per model", flush=True)
    copy_rows = long_range_experiment(builders(2), size=plan["copy_size"], seconds=plan["copy_seconds"],
                                      batch=plan["batch"], progress=lambda row: print(f"  {row}", flush=True))
    likelihood = []
    for name, train, test, levels in sets:
        seconds = plan["mnist_seconds"] if "MNIST" in name else plan["digit_seconds"]
        likelihood += likelihood_rows(name, train, test, levels, seconds, plan["batch"])
    return {**machine_facts(["cpu"]), "plan": plan, "copy_rows": copy_rows, "likelihood": likelihood}


def markdown(result: dict) -> str:
    plan = result["plan"]
    copy = [[r["model"], f"{r['parameters']:,}", f"{r['steps']:,}", f"{r['copied_bits']:.3f}",
             f"{r['free_bits']:.3f}", f"{r['bits_per_image']:.1f}"] for r in result["copy_rows"]]
    published = {"binarized MNIST 28x28": {"PixelCNN": "81.30"}}
    likelihood = [[r["data"], r["model"], f"{r['parameters']:,}", f"{r['steps']:,}", f"{r['nll']:.2f}",
                   cell(published.get(r["data"], {}).get(r["model"]), "{}")] for r in result["likelihood"]]
    size = plan["copy_size"]
    return "\n".join([
        facts_line(result), "",
        f"**Copy-row images** ({size}x{size}; the last row copies the first; {plan['copy_seconds']:g} s of "
        f"training each, batch {plan['batch']}, fresh images every step). The best possible: 0 bits per "
        "copied pixel, 1 per free one.", "",
        markdown_table(["model", "parameters", "steps", "bits per copied pixel", "bits per free pixel",
                        "bits per image"], copy, "lrrrrr"), "",
        f"**Test NLL** (nats per image; {plan['digit_seconds']:g} s of training on the digits"
        + (f", {plan['mnist_seconds']:g} s on MNIST" if plan["mnist_seconds"] else "")
        + "). Published on binarized MNIST: PixelCNN 81.30, PixelRNN 79.20 (van den Oord et al. 2016), "
          "after days of GPU training.", "",
        markdown_table(["data", "model", "parameters", "steps", "test NLL (nats)", "published"], likelihood,
                       "llrrrr")])


def field_figure(path: str, size: int = 16) -> dict:
    """The receptive field of the last pixel of a ``size`` x ``size`` image, by autograd,
    for the three autoregressive models and the U-Net; saves the figure and
    returns, per model, the fraction of earlier pixels it reaches."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mg.manual_seed(0)
    shape, last = (2, 1, size, size), (size - 1, size - 1)
    fields = {name: receptive_field(build(2).network, shape, lambda logits: logits[:, :, 0, last[0], last[1]])[0]
              for name, build in MODELS.items()}
    unet = UNet(channels=1, base_channels=16, channel_mults=(1, 2))
    t = mg.tensor(np.array([500, 500]))
    fields["DDPM U-Net"] = receptive_field(lambda x: unet(x, t), shape, lambda eps: eps[:, 0, last[0], last[1]])[0]
    fig, axes = plt.subplots(1, len(fields), figsize=(3 * len(fields), 3.2))
    for ax, (name, field) in zip(axes, fields.items()):
        ax.imshow(field > 0, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(plt.Rectangle((last[1] - 0.5, last[0] - 0.5), 1, 1, fill=False, edgecolor="red"))
        ax.set_title(name, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"What the last pixel of a {size}x{size} image depends on (white: non-zero gradient)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    earlier = size * size - 1
    return {name: float((field > 0).sum() - (field[last] > 0)) / earlier for name, field in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short budgets, the digits only")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--figure", help="also draw the receptive fields to this PNG file")
    args = parser.parse_args()
    if args.figure:
        reached = field_figure(args.figure)
        print("earlier pixels reached by the last one: "
              + ", ".join(f"{name} {share:.0%}" for name, share in reached.items()))
    result = run(PLANS["quick" if args.quick else "full"])
    publish(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
