"""Pixel space or latent space: five generators of 28x28 MNIST for the same training time.

    python benchmarks/latent.py [--quick] [--json results.json] [--figure samples.png]

Five families, each trained for the same wall-clock budget (one BLAS thread,
batch 32, Adam) on MNIST at its 256 grey levels:

  pixel space   Gated PixelCNN and PixelSNAIL (784 sequential steps to sample),
                a DDPM sampled with DDIM (S steps over all 784 values);
  latent space  a VAE, then a latent DDPM on its 4x7x7 latents (S steps over 196 values);
                a VQ-VAE, then a PixelSNAIL token prior on its 7x7 grid (49 steps).

**The two-stage models' budget includes their autoencoder**: the first stage
trains for ``first_stage_share`` of the budget, the second stage for the
rest, so every row has had the same compute. Both times are reported.

**Why 256 levels.** MNIST is stored at 256 levels; the autoencoders' default
(and their Bernoulli decoder reads x / 255), the DDPM's discretised decoder of
Ho et al. (2020) and the autoregressive softmax are all defined there, so
every family sees the same images and the pixel likelihoods are in the usual
units (bits per dimension of 8-bit pixels). The price is a 256-way softmax per
pixel for the autoregressive models: part of what pixel space costs.

For each family: the time to sample 64 images and its sequential network
evaluations, the peak memory sampling adds, the Frechet distance of its samples
to MNIST test images in the features of a digit classifier trained here with
the engine (beside the floor: as many real training images), the class balance
of the samples, and the likelihood where one is defined. The latent models'
numbers (latent L_simple; the code's NLL in bits per token) are **not** pixel
likelihoods and cannot be compared with the others. Then a resolution sweep:
the sampling time of untrained networks of the trained sizes at 28x28 and at
56x56 (MNIST upsampled, nearest), pixel space against latent space.
``--quick`` is a smoke run of the same code paths: tiny budgets, a subset of
MNIST, few images.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

import minigen as mg
from minigen.bench.long_range import epochs_of, nll_nats, parameter_count, train_for
from minigen.bench.report import cell, markdown_table, publish
from minigen.bench.timing import facts_line, machine_facts, prefix_peak_memory_mib, time_sequential
from minigen.data import ImageSet, data_dir, load_mnist
from minigen.engine import backend
from minigen.engine.autograd import Tensor, no_grad
from minigen.metrics import class_balance, frechet_distance
from minigen.models.autoencoder import VAE, VQVAE
from minigen.models.classifier import accuracy, train_classifier
from minigen.models.ddpm import DDPM
from minigen.models.latent import LatentDiffusion, TokenPrior, denoising_loss
from minigen.models.pixelcnn import GatedPixelCNN
from minigen.models.pixelsnail import PixelSNAIL

LEVELS = 256
SIZE = 28
GATED = dict(hidden=32, layers=6)
SNAIL = dict(hidden=32, blocks=2, residual_layers=2)
UNET = dict(T=1000, schedule="cosine", base_channels=32, channel_mults=(1, 2))
LATENT_UNET = dict(T=1000, schedule="cosine", base_channels=64)  # one U-Net level on the 7x7 grid
VAE_SETTINGS = dict(hidden=32, latent_channels=4)
VQ_SETTINGS = dict(hidden=32, codebook_size=64, embedding_dim=16)
PRIOR = dict(hidden=32, blocks=2, residual_layers=2)
"""The trained sizes: 130,000-550,000 parameters each (printed with the results)."""

FAMILIES = ("Gated PixelCNN", "PixelSNAIL", "DDPM", "VAE + latent DDPM", "VQ-VAE + token prior")
AUTOREGRESSIVE = ("Gated PixelCNN", "PixelSNAIL")
TWO_STAGE = {"VAE + latent DDPM": "VAE", "VQ-VAE + token prior": "VQ-VAE"}
SPACE = {"Gated PixelCNN": "pixels", "PixelSNAIL": "pixels", "DDPM": "pixels",
         "VAE + latent DDPM": "latents", "VQ-VAE + token prior": "tokens"}
LEARNING_RATES = {"Gated PixelCNN": 3e-3, "PixelSNAIL": 3e-3, "DDPM": 1e-3, "VAE": 1e-3, "VQ-VAE": 1e-3,
                  "VAE + latent DDPM": 1e-3, "VQ-VAE + token prior": 3e-3}

PLANS = {
    "full": dict(train_images=60000, budget=270.0, first_stage_share=0.5, batch=32, classifier_images=60000,
                 classifier_epochs=2, reference_images=2000, quality_images=256, timing_batch=64, ddim_steps=50,
                 cap=60.0, nll_images=1000, bound_images=128, bound_timesteps=50, sweep_sizes=(28, 56),
                 sweep_cap=30.0),
    "quick": dict(train_images=512, budget=4.0, first_stage_share=0.4, batch=16, classifier_images=512,
                  classifier_epochs=1, reference_images=64, quality_images=16, timing_batch=8, ddim_steps=4,
                  cap=1.0, nll_images=16, bound_images=4, bound_timesteps=3, sweep_sizes=(28, 56),
                  sweep_cap=0.3),
}


# ----------------------------------------------------------------------------
# The data and the judge


def mnist_root() -> Path | None:
    """Where the MNIST files are: ``$MINIGEN_DATA`` or the cache if they hold them, else the
    ``shared/data/mnist`` folder beside a clone of minigen, else None (the loader's default,
    which downloads)."""
    for folder in (data_dir(), Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"):
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    return None


def load_split(split: str, count: int | None = None) -> ImageSet:
    """The first ``count`` images of an MNIST split (all when None), as int64 levels 0..255."""
    data = load_mnist(split, root=mnist_root())
    count = len(data) if count is None else count
    return ImageSet(data.images[:count].astype(np.int64), data.labels[:count], data.levels)


def upsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling of (N, C, H, W) images by an integer ``factor``."""
    return images.repeat(factor, axis=2).repeat(factor, axis=3)


def train_judge(train: ImageSet, epochs: int, seed: int = 0):
    """The engine's digit classifier (``DigitClassifier`` at 28x28) trained on ``train``."""
    model, _ = train_classifier(ImageSet(train.images.astype(np.uint8), train.labels, train.levels),
                                epochs=epochs, seed=seed, progress=False)
    return model.eval()


POOL = 7  # the classifier's 14x14 feature maps averaged over 7x7 blocks: 32 x 2 x 2 = 128 features


def judge_features(judge, images: np.ndarray, levels: int = LEVELS, batch: int = 256):
    """(features (N, 128), predicted classes (N,)) of integer images.

    The features are the classifier's penultimate maps (N, 32, 14, 14) averaged
    over 7x7 blocks: FID's features are pooled too (Inception's pool3), and
    6,272 raw features would need far more than a few hundred images for a
    covariance estimate."""
    features, classes = [], []
    with no_grad():
        for start in range(0, len(images), batch):
            unit = (np.asarray(images[start:start + batch], np.float32) / (levels - 1)).astype(np.float32)
            h = judge.features(Tensor(unit))
            classes.append(judge.head(h).numpy().argmax(axis=1))
            maps = h.numpy().reshape(len(unit), -1, 14, 14)
            pooled = maps.reshape(len(unit), maps.shape[1], 14 // POOL, POOL, 14 // POOL, POOL).mean(axis=(3, 5))
            features.append(pooled.reshape(len(unit), -1))
    return np.concatenate(features).astype(np.float64), np.concatenate(classes)


def quality(judge, reference_features: np.ndarray, images: np.ndarray) -> dict:
    """Frechet distance of ``images`` to the reference (test) features, and their class balance."""
    features, classes = judge_features(judge, images)
    balance = class_balance(classes)
    return {"frechet": frechet_distance(reference_features, features), "class_counts": balance["counts"],
            "class_entropy_bits": balance["entropy_bits"]}


def frechet_floor(judge, reference_features: np.ndarray, real_images: np.ndarray) -> float:
    """The Frechet distance that real images (training images, as many as the samples) reach:
    what a perfect generator would score with this sample size (the estimate is biased upwards)."""
    return frechet_distance(reference_features, judge_features(judge, real_images)[0])


# ----------------------------------------------------------------------------
# The models, their training and their samplers


def build_first_stage(kind: str):
    """An untrained VAE or VQ-VAE of the trained size."""
    return VAE(levels=LEVELS, **VAE_SETTINGS) if kind == "VAE" else VQVAE(levels=LEVELS, **VQ_SETTINGS)


def build(family: str, size: int = SIZE, autoencoder=None):
    """An untrained model of ``family`` for ``size`` x ``size`` images (a two-stage one on ``autoencoder``)."""
    if family == "Gated PixelCNN":
        return GatedPixelCNN(levels=LEVELS, **GATED)
    if family == "PixelSNAIL":
        return PixelSNAIL(levels=LEVELS, **SNAIL)
    if family == "DDPM":
        return DDPM(levels=LEVELS, image_size=size, **UNET)
    if family == "VAE + latent DDPM":
        return LatentDiffusion(autoencoder=autoencoder, image_size=size, diffusion_settings=LATENT_UNET)
    return TokenPrior(autoencoder=autoencoder, image_size=size, prior_settings=PRIOR)


def train_family(family: str, train: np.ndarray, plan: dict, seed: int = 0) -> dict:
    """Train one family for the plan's budget; returns the model, its first stage (or None) and
    the seconds and steps of each stage. A two-stage family spends ``first_stage_share`` of the
    budget on its autoencoder (and fits the VAE's latent scale inside its share)."""
    draw = epochs_of(train, plan["batch"], seed)
    first, first_seconds, first_steps = None, 0.0, 0
    second_budget = plan["budget"]
    if family in TWO_STAGE:
        kind = TWO_STAGE[family]
        first_budget = plan["budget"] * plan["first_stage_share"]
        start = time.perf_counter()
        with backend.seeded(seed):
            first = build_first_stage(kind)
        first_steps = train_for(first, draw, first_budget, lr=LEARNING_RATES[kind])
        first.eval()
        if kind == "VAE":
            first.fit_latent_scale(train[:2048], seed=seed)
        first_seconds = time.perf_counter() - start
        second_budget = plan["budget"] - first_seconds
    with backend.seeded(seed):
        model = build(family, autoencoder=first)
    start = time.perf_counter()
    steps = train_for(model, draw, max(second_budget, 0.0), lr=LEARNING_RATES[family])
    model.eval()
    return dict(model=model, first_stage=first, first_seconds=first_seconds, first_steps=first_steps,
                seconds=time.perf_counter() - start, steps=steps)


def loop_steps(family: str, size: int, ddim_steps: int) -> int:
    """The sampler's loop: sub-pixels for a pixel AR model, DDIM steps, or tokens."""
    if family in AUTOREGRESSIVE:
        return size * size
    if family == "VQ-VAE + token prior":
        return (size // 4) ** 2
    return ddim_steps


def sequential_evaluations(family: str, size: int, ddim_steps: int) -> int:
    """Network evaluations that must run one after another for one batch: the loop's,
    plus the decoder's one pass for a two-stage model."""
    return loop_steps(family, size, ddim_steps) + (family in TWO_STAGE)


def sampling_run(family: str, model, n: int, size: int, ddim_steps: int, seed: int = 0):
    """``run(on_step)``: draw ``n`` images as integer levels, calling ``on_step`` after every loop step.

    The same images as ``model.sample`` (cached autoregressive sampling; DDIM
    with ``ddim_steps``, unclipped for latents); the two-stage models' loops
    are their submodules' so that ``on_step`` reaches them, then one decoder pass."""
    if family in AUTOREGRESSIVE:
        return lambda on_step: model.sample(n, (size, size), cached=True, seed=seed, on_step=on_step)
    if family == "DDPM":
        return lambda on_step: model.sample(n, sampler="ddim", steps=ddim_steps, seed=seed, on_step=on_step)
    if family == "VAE + latent DDPM":
        return lambda on_step: model.autoencoder.from_latents(model.diffusion.generate(
            n, sampler="ddim", steps=ddim_steps, seed=seed, clip=False, on_step=on_step))
    grid = size // 4
    return lambda on_step: model.autoencoder.decode_tokens(
        model.prior.sample(n, (grid, grid), cached=True, seed=seed, on_step=on_step)[:, 0])


def ignore(*_):
    """An ``on_step`` that does nothing."""


def draw_images(family: str, model, count: int, batch: int, ddim_steps: int) -> np.ndarray:
    """``count`` samples, in batches of ``batch`` with seeds 0, 1, ..."""
    parts = [sampling_run(family, model, min(batch, count - start), SIZE, ddim_steps, seed=k)(ignore)
             for k, start in enumerate(range(0, count, batch))]
    return np.concatenate([backend.to_device(part, "cpu") for part in parts])


def time_sampling(family: str, model, size: int, batch: int, ddim_steps: int, cap: float) -> dict:
    """Seconds to draw ``batch`` images (a prefix extrapolated past ``cap``), the sequential
    evaluations, and the peak memory the same run (or prefix) adds."""
    run = sampling_run(family, model, batch, size, ddim_steps)
    timing = time_sequential(run, loop_steps(family, size, ddim_steps), cap, repeats=1)
    return dict(seconds=timing.seconds, extrapolated=timing.extrapolated,
                evaluations=sequential_evaluations(family, size, ddim_steps),
                peak_mib=prefix_peak_memory_mib(run, timing.steps_timed))


# ----------------------------------------------------------------------------
# Likelihoods: exact, a bound, or a number about the code


def likelihood(family: str, model, test: np.ndarray, plan: dict) -> dict:
    """What each family can say about probability, with its kind:
    ``exact`` and ``bound`` are nats per image of the pixels (and bits/dim);
    ``latent L_simple`` (mean squared error of the noise on test latents) and
    ``code NLL`` (bits per token) are about the latents, not the pixels."""
    dims = test[0].size
    if family in AUTOREGRESSIVE:
        nats = nll_nats(model, test[:plan["nll_images"]])
        return dict(kind="exact", nats=nats, bits_per_dim=nats / (dims * math.log(2)))
    if family == "DDPM":
        nats = float(backend.to_device(model.nll_bound(test[:plan["bound_images"]],
                                                       timesteps=plan["bound_timesteps"]).data, "cpu").mean())
        return dict(kind="bound", nats=nats, bits_per_dim=nats / (dims * math.log(2)))
    x = test[:plan["nll_images"]]
    if family == "VAE + latent DDPM":
        with no_grad(), backend.seeded(0):
            latents = in_batches(model.latents, x)
            value = float(denoising_loss(model.diffusion, Tensor(latents)).item())
        return dict(kind="latent L_simple", value=value)
    tokens = in_batches(model.encode, x)
    with no_grad():
        nats = -float(backend.to_device(model.log_prob_tokens(tokens).data, "cpu").mean())
    cells = tokens[0].size
    return dict(kind="code NLL", value=nats / (cells * math.log(2)), uniform=math.log2(model.codebook_size))


def in_batches(fn, images: np.ndarray, batch: int = 250) -> np.ndarray:
    """``fn`` (images -> an array or Tensor per image) over ``images`` a batch at a time, concatenated
    on the host: an encoder's activations for a thousand 28x28 images at once would take gigabytes."""
    parts = [fn(images[start:start + batch]) for start in range(0, len(images), batch)]
    arrays = [part.data if isinstance(part, Tensor) else part for part in parts]
    return np.concatenate([backend.to_device(array, "cpu") for array in arrays])


def first_stage_report(kind: str, autoencoder, test: np.ndarray, judge, reference_features) -> dict:
    """How well the frozen autoencoder reconstructs test images: Frechet distance of the
    reconstructions (the ceiling of the two-stage model's quality), mean absolute error in
    levels, and for the VQ-VAE the code's rate and the codebook's perplexity."""
    from minigen.models.autoencoder import perplexity
    reconstructions = backend.to_device(autoencoder.reconstruct(test), "cpu")
    report = dict(parameters=parameter_count(autoencoder),
                  reconstruction_frechet=quality(judge, reference_features, reconstructions)["frechet"],
                  mean_abs_error=float(np.abs(reconstructions - test).mean()))
    if kind == "VQ-VAE":
        tokens = autoencoder.encode_tokens(test)
        report.update(rate_bits=autoencoder.rate(SIZE, SIZE),
                      perplexity=perplexity(autoencoder.codebook_usage(tokens)))
    return report


# ----------------------------------------------------------------------------
# The resolution sweep: sampling time only, untrained networks of the trained sizes


def sweep_models(size: int, seed: int = 0) -> dict:
    """Untrained models of every family for ``size`` x ``size`` images (weights do not change the time)."""
    with backend.seeded(seed):
        first = {kind: build_first_stage(kind).eval() for kind in ("VAE", "VQ-VAE")}
        return {family: build(family, size, first.get(TWO_STAGE.get(family))).eval() for family in FAMILIES}


def resolution_sweep(plan: dict, progress=print) -> list:
    """Sampling time of ``timing_batch`` images per family at each size of ``sweep_sizes``."""
    rows = []
    for size in plan["sweep_sizes"]:
        for family, model in sweep_models(size).items():
            row = dict(family=family, size=size, space=SPACE[family],
                       grid=size if SPACE[family] == "pixels" else size // 4,
                       **time_sampling(family, model, size, plan["timing_batch"], plan["ddim_steps"],
                                       plan["sweep_cap"]))
            rows.append(row)
            progress(f"  sweep {size}x{size}, {family}: {row['seconds']:.2f} s")
    return rows


# ----------------------------------------------------------------------------
# The whole run


def evaluate(family: str, trained: dict, test: np.ndarray, judge, reference_features, plan: dict,
             samples: dict | None = None) -> dict:
    """One row of the main table: training, sampling, quality and likelihood (the drawn
    images go into ``samples[family]`` when a dict is given, for the figure)."""
    model = trained["model"]
    images = draw_images(family, model, plan["quality_images"], plan["timing_batch"], plan["ddim_steps"])
    if samples is not None:
        samples[family] = images
    row = dict(family=family, space=SPACE[family], parameters=parameter_count(model),
               train_seconds=trained["seconds"], steps=trained["steps"],
               first_stage_seconds=trained["first_seconds"], first_stage_steps=trained["first_steps"],
               sampling=time_sampling(family, model, SIZE, plan["timing_batch"], plan["ddim_steps"], plan["cap"]),
               quality=quality(judge, reference_features, images),
               likelihood=likelihood(family, model, test, plan))
    if family in TWO_STAGE:
        kind = TWO_STAGE[family]
        row["first_stage"] = dict(kind=kind, **first_stage_report(
            kind, trained["first_stage"], test[:plan["quality_images"]], judge, reference_features))
    return row


def run(plan: dict, families=FAMILIES, progress=print, samples: dict | None = None) -> dict:
    """Everything the tables show, for ``families``; ``samples`` (a dict) receives each family's images."""
    mg.manual_seed(0)
    train, test = load_split("train", plan["train_images"]), load_split("test")
    start = time.perf_counter()
    judge = train_judge(load_split("train", plan["classifier_images"]), plan["classifier_epochs"])
    judge_seconds = time.perf_counter() - start
    reference = judge_features(judge, test.images[:plan["reference_images"]])[0]
    floor = frechet_floor(judge, reference, train.images[-plan["quality_images"]:])
    judge_accuracy = accuracy(judge, test)
    progress(f"judge: {judge_accuracy:.1%} test accuracy after {judge_seconds:.0f} s; "
             f"real-image Frechet floor {floor:.3f}")
    rows = []
    for family in families:
        trained = train_family(family, train.images, plan)
        rows.append(evaluate(family, trained, test.images, judge, reference, plan, samples))
        progress(f"  {family}: {trained['steps']} steps, Frechet {rows[-1]['quality']['frechet']:.3f}, "
                 f"sampling {rows[-1]['sampling']['seconds']:.2f} s")
    return {**machine_facts(["cpu"]), "plan": plan, "threads": os.environ.get("OMP_NUM_THREADS"),
            "judge_accuracy": judge_accuracy, "judge_seconds": judge_seconds, "frechet_floor": floor,
            "rows": rows, "sweep": resolution_sweep(plan, progress)}


# ----------------------------------------------------------------------------
# Tables


def _seconds(sampling: dict) -> str:
    """Seconds, marked * when extrapolated from a prefix of the loop."""
    return f"{sampling['seconds']:.2f}" + ("*" if sampling["extrapolated"] else "")


def _training(row: dict) -> str:
    """Training seconds and steps; a two-stage model's autoencoder first."""
    second = f"{row['train_seconds']:.0f} s, {row['steps']:,} steps"
    if "first_stage" not in row:
        return second
    return f"{row['first_stage_seconds']:.0f} s, {row['first_stage_steps']:,} steps + {second}"


def _likelihood(value: dict) -> str:
    """The likelihood cell, saying what the number is."""
    if value["kind"] == "exact":
        return f"NLL {value['nats']:.1f} nats ({value['bits_per_dim']:.3f} bits/dim), exact"
    if value["kind"] == "bound":
        return f"NLL <= {value['nats']:.1f} nats ({value['bits_per_dim']:.3f} bits/dim), bound"
    if value["kind"] == "latent L_simple":
        return f"latent L_simple {value['value']:.4f} (not a pixel likelihood)"
    return (f"code NLL {value['value']:.2f} bits/token of {value['uniform']:.0f} uniform "
            f"(not a pixel likelihood)")


def _classes(value: dict) -> str:
    return f"{max(value['class_entropy_bits'], 0.0):.2f} of 3.32"  # one class: -0.0 bits, written 0.00


def main_table(result: dict) -> str:
    rows = [[r["family"], r["space"], f"{r['parameters']:,}", _training(r), _seconds(r["sampling"]),
             f"{r['sampling']['evaluations']:,}", cell(r["sampling"]["peak_mib"], "{:.0f}"),
             f"{r['quality']['frechet']:.3f}", _classes(r["quality"]), _likelihood(r["likelihood"])]
            for r in result["rows"]]
    return markdown_table(["model", "space", "parameters", "training", "sampling 64 (s)", "sequential evaluations",
                           "peak MiB", "Frechet distance", "class entropy (bits)", "likelihood"], rows,
                          "llrlrrrrrl")


def first_stage_table(result: dict) -> str:
    rows = []
    for r in result["rows"]:
        stage = r.get("first_stage")
        if stage is None:
            continue
        code = (f"{stage['rate_bits']:.0f} bits, perplexity {stage['perplexity']:.1f} of {VQ_SETTINGS['codebook_size']}"
                if stage["kind"] == "VQ-VAE" else f"{VAE_SETTINGS['latent_channels']}x7x7 floats")
        rows.append([stage["kind"], f"{stage['parameters']:,}", f"{r['first_stage_seconds']:.0f}",
                     f"{r['first_stage_steps']:,}", f"{stage['reconstruction_frechet']:.3f}",
                     f"{stage['mean_abs_error']:.1f}", code])
    return markdown_table(["autoencoder", "parameters", "seconds", "steps", "reconstruction Frechet",
                           "mean abs error (levels)", "code per image"], rows, "lrrrrrl")


def sweep_table(result: dict) -> str:
    rows = [[r["family"], r["space"], f"{r['size']}x{r['size']}", f"{r['grid']}x{r['grid']}",
             f"{r['evaluations']:,}", _seconds(r), cell(r["peak_mib"], "{:.0f}")] for r in result["sweep"]]
    return markdown_table(["model", "space", "image", "sampled grid", "sequential evaluations",
                           "sampling 64 (s)", "peak MiB"], rows, "lllrrrr")


def markdown(result: dict) -> str:
    plan = result["plan"]
    batch = plan["timing_batch"]
    return "\n".join([
        facts_line(result), "",
        f"**Same training time** ({plan['budget']:g} s per model, one BLAS thread, batch {plan['batch']}, "
        f"{plan['train_images']:,} MNIST training images at 256 levels; a two-stage model's autoencoder trains "
        f"for {plan['first_stage_share']:.0%} of its budget). Sampling: {batch} images, cached autoregressive "
        f"sampling, DDIM with {plan['ddim_steps']} steps; * = a prefix of the loop timed and extrapolated. "
        f"Frechet distance of {plan['quality_images']} samples to {plan['reference_images']:,} test images in the "
        f"pooled features of the engine's classifier ({result['judge_accuracy']:.1%} test accuracy); the floor, "
        f"{plan['quality_images']} real training images: **{result['frechet_floor']:.3f}**. Likelihoods on test "
        "images; the latent models' numbers are about their codes and cannot be compared with pixel NLLs.", "",
        main_table(result).replace("sampling 64", f"sampling {batch}"), "",
        "**The first stages** (on test images): what the two-stage models can at best reproduce.", "",
        first_stage_table(result), "",
        f"**Resolution sweep** (untrained networks of the trained sizes, {batch} images; 56x56 is MNIST upsampled "
        "nearest). For PixelSNAIL an extrapolated time is a lower bound: its cached step grows with the "
        "number of pixels drawn.", "",
        sweep_table(result).replace("sampling 64", f"sampling {batch}")])


def sample_figure(result_models: dict, path: str, count: int = 8) -> None:
    """One row of ``count`` samples per family, written to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minigen.viz import image_grid

    fig, axes = plt.subplots(len(result_models), 1, figsize=(count * 0.9, 1.1 * len(result_models)))
    for ax, (family, images) in zip(np.atleast_1d(axes), result_models.items()):
        ax.imshow(image_grid(images[:count], LEVELS, nrow=count), cmap="gray")
        ax.set_title(family, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets, a subset of MNIST")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--figure", help="also draw samples of every trained model to this PNG file")
    args = parser.parse_args()
    started, samples = time.perf_counter(), {}
    result = run(PLANS["quick" if args.quick else "full"], samples=samples)
    result["total_seconds"] = time.perf_counter() - started
    publish(result, markdown(result), args.json)
    print(f"\n(the whole run took {result['total_seconds']:.0f} s)")
    if args.figure:
        sample_figure(samples, args.figure)


if __name__ == "__main__":
    main()
