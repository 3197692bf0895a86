"""The ``minigen`` command line: ``minigen --help`` lists what it can do.

    minigen demo                                    # a Gated PixelCNN and a DDPM on the digits (minutes)
    minigen train pixelcnn --data digits --steps 2000 --checkpoint run.npz --samples run.png
    minigen train pixelcnn --data digits --steps 4000 --checkpoint run.npz --resume
    minigen train pixelsnail --data digits --steps 1000 --checkpoint snail.npz
    minigen sample --checkpoint run.npz --n 64 --out grid.png
    minigen classify                                # the conv-net digit classifier
    minigen bench --quick                           # sampling/training time, PixelCNN/PixelSNAIL vs DDPM/DDIM
    minigen book export --execute notebooks/        # the book's chapters as .ipynb files
    minigen grade --task 3.2 --json results.json    # score the exercises (Gradescope report)

Mistakes in the input (a missing file, settings that do not fit) print
``minigen: <what is wrong and what to do>`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .engine import backend
from .course import book, grading
from .bench import ar_vs_diffusion
from .data import load_digits
from .models.classifier import accuracy, train_classifier
from .models.config import setting_names
from .models.ddpm import DDIM_STEPS, DDPM, PREDICTIONS
from .models.diffusion import SCHEDULES
from .metrics import bits_per_dim, independent_pixel_nll
from .train import (BOUND_TIMESTEPS, DATASETS, FAMILIES, TrainConfig, load_data,
                    model_from_checkpoint, read_checkpoint, train)
from .viz import save_grid

# The demo's model: the family and settings that reached the best test NLL
# on binarized digits among those tried within a minute's training (the
# demo's own table reports the NLL; longer runs overfit the 1,437 training
# images).
DEMO_FAMILY = "gated-pixelcnn"
DEMO_MODEL = {"hidden": 32, "layers": 6}
DEMO_STEPS = 800
DEMO_BATCH_SIZE = 32
DEMO_LR = 2e-3
# The demo's DDPM: a small U-Net on the same binarized digits.
DEMO_DDPM_MODEL = {"base_channels": 16, "T": 1000, "schedule": "cosine"}
DEMO_DDPM_STEPS = 1500
DEMO_DDPM_LR = 2e-3


# ----------------------------------------------------------------------------
# Shared by the commands


def _class_labels(n: int, num_classes: int | None, labels: list[int] | None):
    """The label of each of ``n`` samples: ``labels`` repeated to length n, or every class
    in turn (0, 1, ..., 0, 1, ...) for a class-conditional model; None for an unconditional one."""
    if num_classes is None:
        if labels is not None:
            raise ValueError("this model is not class-conditional; drop --labels/--class "
                             "(or train one with --conditional)")
        return None
    labels = list(range(num_classes)) if labels is None else labels
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad:
        raise ValueError(f"labels {bad} are out of range: this model knows classes 0..{num_classes - 1}")
    return np.resize(np.asarray(labels, dtype=np.int64), n)


def _sampling_options(model, image_shape, args=None) -> dict:
    """The family-specific sampling settings, from ``args`` or the defaults.

    PixelCNN: image size, temperature, cached or naive. DDPM: the sampler
    (ancestral "ddpm" over all T steps, or "ddim" over --steps), eta, guidance.
    """
    if isinstance(model, DDPM):
        return {"sampler": getattr(args, "sampler", "ddim"), "steps": getattr(args, "steps", None) or DDIM_STEPS,
                "eta": getattr(args, "eta", 0.0), "guidance": getattr(args, "guidance", 1.0)}
    return {"size": tuple(image_shape[1:]), "temperature": getattr(args, "temperature", 1.0),
            "cached": not getattr(args, "naive", False)}


def _describe(options: dict) -> str:
    if "sampler" in options:
        steps = "all T steps" if options["sampler"] == "ddpm" else f"{options['steps']} steps"
        return f"{options['sampler']} sampler, {steps}"
    return f"{'cached' if options['cached'] else 'naive'} sampler"


def _write_samples(model, image_shape, levels: int, path, n: int = 64, labels=None, seed: int = 0,
                   device: str = "cpu", options: dict | None = None) -> float:
    """Sample ``n`` images, write them as a grid PNG to ``path``; returns the sampling time in seconds.

    A class-conditional model's grid has one column per class.
    """
    labels = _class_labels(n, model.num_classes, labels)
    options = options or _sampling_options(model, image_shape)
    start = time.perf_counter()
    images = model.sample(n, labels=labels, seed=seed, device=device, progress=True, **options)
    backend.synchronize(device)
    seconds = time.perf_counter() - start
    save_grid(backend.to_device(images, "cpu"), levels, path, nrow=model.num_classes)
    return seconds


def _train_and_sample(config, samples, resume: bool = False) -> dict:
    """Train ``config`` (which names a checkpoint), then write 64 samples (cached sampler,
    EMA weights) to ``samples``."""
    result = train(config, resume=resume)
    seconds = _write_samples(result["model"], result["image_shape"], config.levels, samples,
                             seed=config.seed, device=config.device)
    print(f"checkpoint: {config.checkpoint}")
    print(f"samples: {samples} (64 images drawn in {seconds:.2f} s)")
    return result


# ----------------------------------------------------------------------------
# The commands


def _demo(args) -> int:
    """Train both families on the binarized digits; write both sample grids and a table
    of test NLL (PixelCNN exact, DDPM a bound) and sampling time."""
    backend.check_device(args.device)
    out = Path(args.out)
    runs = {
        DEMO_FAMILY: TrainConfig(family=DEMO_FAMILY, data="digits", levels=2, model=DEMO_MODEL, steps=args.steps,
                                 batch_size=DEMO_BATCH_SIZE, lr=DEMO_LR, seed=args.seed,
                                 checkpoint=str(out / "pixelcnn.npz"), checkpoint_every=args.steps,
                                 device=args.device),
        "ddpm": TrainConfig(family="ddpm", data="digits", levels=2, model=DEMO_DDPM_MODEL, steps=args.ddpm_steps,
                            batch_size=64, lr=DEMO_DDPM_LR, seed=args.seed, checkpoint=str(out / "ddpm.npz"),
                            checkpoint_every=args.ddpm_steps, device=args.device),
    }
    print(f"minigen demo: a {DEMO_FAMILY} ({args.steps} steps) and a ddpm ({args.ddpm_steps} steps) "
          f"on the bundled 8x8 digits, binarized, on {args.device}")
    rows = []
    for name, config in runs.items():
        result = _train_and_sample(config, out / f"{Path(config.checkpoint).stem}.png")
        model, shape = result["model"], result["image_shape"]
        kind = "exact" if FAMILIES[name].loss_is_nll else f"bound ({BOUND_TIMESTEPS}-step estimate)"
        for options in _demo_samplers(model, shape):
            seconds = _timed_sample(model, shape, options, args)
            rows.append((name, result["test_nll"], result["test_bits_per_dim"], kind, _describe(options), seconds))
    baseline = independent_pixel_nll(load_data("digits", "train", 2), load_data("digits", "test", 2))
    print(_demo_table(rows, baseline))
    print(f"draw more with: minigen sample --checkpoint {out / 'pixelcnn.npz'} --n 100")
    return 0


def _demo_samplers(model, image_shape) -> list:
    """The samplers the demo times: cached and naive PixelCNN; DDIM (50 steps) and full DDPM."""
    if isinstance(model, DDPM):
        return [{"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 1.0},
                {"sampler": "ddpm", "steps": None, "eta": 0.0, "guidance": 1.0}]
    return [{"size": tuple(image_shape[1:]), "temperature": 1.0, "cached": cached} for cached in (True, False)]


def _timed_sample(model, image_shape, options, args, n: int = 64) -> float:
    """Seconds to draw ``n`` images with ``options`` (synchronised, so GPU time counts)."""
    start = time.perf_counter()
    model.sample(n, labels=None, seed=args.seed, device=args.device, **options)
    backend.synchronize(args.device)
    return time.perf_counter() - start


def _demo_table(rows, baseline: float) -> str:
    lines = ["", "| model | test NLL (nats/image) | bits/dim | NLL is | sampler | 64 samples |",
             "|---|---:|---:|---|---|---:|"]
    for name, nll, bpd, kind, sampler, seconds in rows:
        lines.append(f"| {name} | {nll:.2f} | {bpd:.4f} | {kind} | {sampler} | {seconds:.2f} s |")
    lines.append(f"| independent pixels (baseline) | {baseline:.2f} | {bits_per_dim(baseline, 64):.4f} | exact | | |")
    return "\n".join(lines)


def _train(args) -> int:
    """Train (or resume) a model from the command-line settings."""
    settings = {name: getattr(args, name) for name in MODEL_OPTIONS}
    checkpoint = args.checkpoint or f"minigen-out/{args.family}-{args.data}.npz"
    config = TrainConfig(
        family=args.family, data=args.data, levels=args.levels,
        model={key: value for key, value in settings.items() if value is not None},
        conditional=args.conditional, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        grad_clip=args.grad_clip, ema_decay=args.ema_decay, seed=args.seed,
        checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, device=args.device)
    _train_and_sample(config, args.samples or Path(checkpoint).with_suffix(".png"), resume=args.resume)
    return 0


def _sample(args) -> int:
    """Sample from a training checkpoint and write the grid."""
    backend.check_device(args.device)
    state = read_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state, device=args.device)
    labels = [args.class_] if args.class_ is not None else args.labels
    options = _sampling_options(model, state["image_shape"], args)
    seconds = _write_samples(model, state["image_shape"], state["config"]["levels"], args.out, args.n, labels,
                             args.seed, args.device, options)
    print(f"sampled {args.n} images in {seconds:.2f} s ({_describe(options)}, {args.device}) -> {args.out}")
    return 0


def _classify(args) -> int:
    """Train the conv-net digit classifier on the bundled digits and report accuracy."""
    backend.manual_seed(args.seed)
    train_set, test_set = load_digits("train"), load_digits("test")
    print(f"minigen classify: a conv net on the bundled 8x8 digits "
          f"({len(train_set)} train / {len(test_set)} test images) on {args.device}")
    model, seconds = train_classifier(train_set, epochs=args.epochs, device=args.device, seed=args.seed)
    print(f"test accuracy {accuracy(model, test_set, args.device):.1%} "
          f"after {args.epochs} epochs in {seconds:.1f} s ({model.num_parameters():,} parameters)")
    return 0


# ----------------------------------------------------------------------------
# Parsing


def _positive(kind):
    """An argparse type: ``kind`` (int or float) that must be > 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


# The model settings `minigen train` offers, with their meaning; each family's
# config dataclass holds the defaults, which the help reads from it.
MODEL_OPTIONS = {
    "hidden": (_positive(int), None, "feature maps per layer"),
    "blocks": (_positive(int), None, "residual blocks (pixelsnail: residual layers + attention)"),
    "layers": (_positive(int), None, "gated layers"),
    "residual_layers": (_positive(int), None, "gated residual layers per attention block"),
    "heads": (_positive(int), None, "attention heads per colour"),
    "key_channels": (_positive(int), None, "query and key features per attention head"),
    "value_channels": (_positive(int), None, "value features per attention head"),
    "T": (_positive(int), None, "diffusion steps"),
    "schedule": (str, sorted(SCHEDULES), "noise schedule"),
    "base_channels": (_positive(int), None, "U-Net width"),
    "prediction": (str, list(PREDICTIONS), "what the U-Net predicts"),
    "p_uncond": (float, None, "label-dropout probability of a conditional model, for guidance"),
}


def _add_model_options(parser) -> None:
    """One --option per MODEL_OPTIONS entry; its help lists each family's default from the family's config."""
    for name, (kind, choices, meaning) in MODEL_OPTIONS.items():
        defaults = [f"{family} {getattr(family_info.model_class.Config(), name)}"
                    for family, family_info in FAMILIES.items()
                    if name in setting_names(family_info.model_class.Config)]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, choices=choices,
                            help=f"{meaning} (default: {'; '.join(defaults)})")


def _label_list(text: str) -> list[int]:
    """An argparse type: comma-separated class labels, e.g. '0,1,2'."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        message = f"expected comma-separated integers like 0,1,2, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _add_common(parser, seed_help: str) -> None:
    parser.add_argument("--device", default="cpu", choices=backend.DEVICES, help="cpu (default) or cuda")
    parser.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigen", description="Image generation from scratch, taught in code.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", help="train a Gated PixelCNN and a DDPM on the bundled digits; sample; compare NLL and speed")
    _add_common(demo, "random seed")
    demo.add_argument("--steps", type=_positive(int), default=DEMO_STEPS,
                      help=f"training steps of the PixelCNN (default {DEMO_STEPS}, about a minute on 2 cores)")
    demo.add_argument("--ddpm-steps", type=_positive(int), default=DEMO_DDPM_STEPS,
                      help=f"training steps of the ddpm (default {DEMO_DDPM_STEPS})")
    demo.add_argument("--out", default="minigen-out",
                      help="folder for the checkpoints and sample grids (default minigen-out)")
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a model, with checkpoints and resume")
    train.add_argument("family", choices=list(FAMILIES))
    train.add_argument("--data", required=True, choices=DATASETS,
                       help="the MNIST files are read from $MINIGEN_DATA (or downloaded to a cache)")
    train.add_argument("--levels", type=int, default=2, help="grey levels to quantize to (default 2: binary)")
    train.add_argument("--steps", type=_positive(int), default=1000,
                       help="total training steps, counting those done before a --resume (default 1000)")
    train.add_argument("--batch-size", type=_positive(int), default=64, help="default 64")
    train.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam's learning rate (default 1e-3)")
    train.add_argument("--grad-clip", type=_positive(float), default=None,
                       help="clip the gradient norm to this (default: no clipping)")
    train.add_argument("--ema-decay", type=float, default=0.999,
                       help="decay of the weight average (default 0.999)")
    _add_model_options(train)
    train.add_argument("--conditional", action="store_true", help="condition on the class labels")
    train.add_argument("--checkpoint", help="checkpoint file, overwritten unless --resume "
                                            "(default minigen-out/FAMILY-DATA.npz)")
    train.add_argument("--checkpoint-every", type=_positive(int), default=500,
                       help="steps between checkpoints (default 500)")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    train.add_argument("--samples", help="sample grid PNG written at the end (default: the checkpoint's "
                                         "path ending in .png)")
    _add_common(train, "seed of the initialisation and data order")
    train.set_defaults(run=_train)

    sample = commands.add_parser("sample", help="draw images from a trained checkpoint into a grid PNG")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint written by minigen train")
    sample.add_argument("--n", type=_positive(int), default=64, help="how many images (default 64)")
    sample.add_argument("--out", default="samples.png", help="the grid PNG to write (default samples.png)")
    sample.add_argument("--temperature", type=_positive(float), default=1.0,
                        help="below 1: sharper, above 1: more varied (default 1)")
    sample.add_argument("--naive", action="store_true",
                        help="the textbook sampler (one full pass per sub-pixel) instead of the cached one")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim",
                        help="a ddpm's sampler: ancestral over all T steps, or DDIM (default ddim)")
    sample.add_argument("--steps", type=_positive(int), help="DDIM steps (default 50)")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 ancestral-like")
    sample.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance scale of a conditional ddpm (default 1: none)")
    which = sample.add_mutually_exclusive_group()
    which.add_argument("--labels", type=_label_list, help="classes to draw, e.g. 0,1,2, repeated to fill --n")
    which.add_argument("--class", dest="class_", type=int, metavar="K", help="draw every image from class K")
    _add_common(sample, "sampling seed")
    sample.set_defaults(run=_sample)

    classify = commands.add_parser("classify", help="train the conv-net digit classifier and report accuracy")
    _add_common(classify, "random seed")
    classify.add_argument("--epochs", type=_positive(int), default=15,
                          help="passes over the training set (default 15)")
    classify.set_defaults(run=_classify)
    book.add_command(commands)
    ar_vs_diffusion.add_command(commands)
    grading.add_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, backend.DeviceError) as exc:  # CheckpointError, DatasetError too
        print(f"minigen: {exc}", file=sys.stderr)
        return 2
