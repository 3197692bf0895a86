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

Mistakes in the input (a missing file, settings that do not fit, an option
the model does not use, an output that cannot be written) are found before
any work, print ``minigen: <what is wrong and what to do>`` and exit with
status 2; only minigen's own error types (:class:`minigen.errors.UserError`
and the engine's DeviceError) are shown this way, so a bug keeps its
traceback. Ctrl-C saves the training run, says how to continue it, and exits
with status 130.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np

from . import __version__
from .engine import backend
from .course import book, grading, release
from .bench import ar_vs_diffusion
from .data import load_digits
from .errors import MissingFileError, UserError
from .files import check_writable
from .models.classifier import accuracy, train_classifier
from .models.config import config_dict, setting_names
from .models.ddpm import DDIM_STEPS, DDPM, PREDICTIONS
from .models.diffusion import SCHEDULES
from .models.latent import LatentDiffusion, TokenPrior
from .metrics import bits_per_dim, independent_pixel_nll
from .train import (BOUND_TIMESTEPS, DATASETS, FAMILIES, TrainConfig, TrainingInterrupted, load_data,
                    model_from_checkpoint, read_checkpoint, rebuilt_model, train)
from .viz import MIN_SIZE, grid_format, save_grid

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

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# `minigen train`'s defaults are TrainConfig's; the parser leaves options at
# None, so a setting given on the command line can be told from a default
# (--resume takes the checkpoint's settings and refuses conflicting ones).
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
DEFINING_OPTIONS = ("family", "data", "levels", "conditional", "batch_size", "lr", "grad_clip", "ema_decay", "seed",
                    "autoencoder")
RUN_OPTIONS = ("steps", "checkpoint_every", "device")  # these may change on --resume

# The sampling options of `minigen sample`, by the families that use them.
DIFFUSION_FAMILIES = ("ddpm", "latent-ddpm")
AUTOENCODERS = ("vae", "vqvae")  # they reconstruct; a second stage trained on them samples
AUTOREGRESSIVE_OPTIONS = ("temperature", "naive")
DDPM_OPTIONS = ("sampler", "steps", "eta", "guidance")

# Memory to sample one image and draw it in a grid, measured with tracemalloc
# on the digits (8x8) for every family: the samplers keep 55 to 165 bytes per
# feature-map channel ("hidden", a ddpm's "base_channels") per pixel, the grid
# 26 to 28 bytes per pixel of the enlarged image. Rounded up.
SAMPLER_BYTES_PER_FEATURE_PIXEL = 192
GRID_BYTES_PER_PIXEL = 32


# ----------------------------------------------------------------------------
# Shared by the commands


def _option(name: str) -> str:
    """The command-line spelling of setting ``name``: "batch_size" -> "--batch-size"."""
    return "FAMILY" if name == "family" else "--" + name.replace("_", "-")


def _given(args, names) -> dict:
    """The options among ``names`` given on the command line (the parser leaves the others None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _check_outputs(checkpoint=None, grid=None) -> None:
    """Refuse, before any work, outputs that cannot be written or a grid whose extension
    names a format minigen does not write."""
    if checkpoint is not None:
        check_writable(checkpoint, "the checkpoint")
    if grid is not None:
        grid_format(grid)
        check_writable(grid, "the sample grid")


def _refuse_to_replace(checkpoint, what_to_do: str) -> None:
    """A fresh run must not silently replace a saved one: refuse when ``checkpoint`` exists."""
    if not os.path.exists(checkpoint):
        return
    try:
        state = read_checkpoint(checkpoint)
        held = f"a {state['config']['family']} run at step {state['step']}"
    except UserError:
        held = "a file that is not a minigen checkpoint"
    raise UserError(f"{checkpoint} already holds {held}; {what_to_do}")


def _class_labels(n: int, num_classes: int | None, labels: list[int] | None):
    """The label of each of ``n`` samples: ``labels`` repeated to length n, or every class
    in turn (0, 1, ..., 0, 1, ...) for a class-conditional model; None for an unconditional one."""
    if num_classes is None:
        if labels is not None:
            raise UserError("this model is not class-conditional; drop --labels/--class "
                            "(or train one with --conditional)")
        return None
    labels = list(range(num_classes)) if labels is None else labels
    bad = [label for label in labels if not 0 <= label < num_classes]
    if bad:
        raise UserError(f"labels {bad} are out of range: this model knows classes 0..{num_classes - 1}")
    return np.resize(np.asarray(labels, dtype=np.int64), n)


def _arg(args, name: str, default):
    """``args.name`` if it was given (not None), else ``default``."""
    value = getattr(args, name, None)
    return default if value is None else value


def _sampling_options(model, image_shape, args=None) -> dict:
    """The family-specific sampling settings, from ``args`` or the defaults.

    PixelCNN: image size, temperature, cached or naive. DDPM: the sampler
    (ancestral "ddpm" over all T steps, or "ddim" over --steps), eta, guidance.
    """
    if isinstance(model, (DDPM, LatentDiffusion)):
        T = (model if isinstance(model, DDPM) else model.diffusion).schedule.T
        sampler = _arg(args, "sampler", "ddim")
        steps = _arg(args, "steps", min(DDIM_STEPS, T)) if sampler == "ddim" else None
        return {"sampler": sampler, "steps": steps,
                "eta": _arg(args, "eta", 0.0), "guidance": _arg(args, "guidance", 1.0)}
    size = {} if isinstance(model, TokenPrior) else {"size": tuple(image_shape[1:])}  # a token grid's size is fixed
    return size | {"temperature": _arg(args, "temperature", 1.0), "cached": not _arg(args, "naive", False)}


def _describe(options: dict) -> str:
    if "sampler" in options:
        steps = "all T steps" if options["sampler"] == "ddpm" else f"{options['steps']} steps"
        return f"{options['sampler']} sampler, {steps}"
    return f"{'cached' if options['cached'] else 'naive'} sampler"


def _write_samples(model, image_shape, levels: int, path, n: int = 64, labels=None, seed: int = 0,
                   device: str = "cpu", options: dict | None = None, run: dict | None = None) -> float:
    """Sample ``n`` images, write them as a grid image to ``path``; returns the sampling time in seconds.

    A class-conditional model's grid has one column per class. With ``run``
    (its family, data and step) the grid gets a title line saying what drew
    it, and a row of real test images to compare with.
    """
    labels = _class_labels(n, model.num_classes, labels)
    options = options or _sampling_options(model, image_shape)
    start = time.perf_counter()
    images = model.sample(n, labels=labels, seed=seed, device=device, progress=True, **options)
    backend.synchronize(device)
    seconds = time.perf_counter() - start
    nrow = model.num_classes or min(n, 8)
    title = real = None
    if run is not None:
        title, real = _grid_title(run, options, labels), _real_images(run, levels, nrow)
    save_grid(backend.to_device(images, "cpu"), levels, path, nrow=nrow, title=title, real=real)
    return seconds


def _grid_title(run: dict, options: dict, labels) -> str:
    """One line: which model drew the grid, how, after how many steps, and its classes."""
    return f"{run['family']} on {run['data']}, step {run['step']}: {_describe(options)}{_classes(labels)}"


def _classes(labels) -> str:
    """"; columns: classes 0-9" (or "3, 7"), or nothing for an unconditional grid."""
    if labels is None:
        return ""
    shown = sorted(set(labels.tolist()))
    consecutive = len(shown) > 2 and shown == list(range(shown[0], shown[-1] + 1))
    return f"; columns: classes {f'{shown[0]}-{shown[-1]}' if consecutive else ', '.join(map(str, shown))}"


def _real_images(run: dict, levels: int, count: int):
    """The first ``count`` test images of the run's data, or None where they cannot be read
    (the grid is then drawn without them: they are a comparison, not the result)."""
    try:
        return load_data(run["data"], "test", levels).images[:count]
    except UserError:
        return None


def _train_and_sample(config, samples, resume: bool = False) -> dict:
    """Train ``config`` (which names a checkpoint), then write 64 samples (cached sampler,
    EMA weights) to ``samples``, or an autoencoder's reconstructions of test images.
    Ctrl-C while sampling says the run is saved."""
    result = train(config, resume=resume)
    try:
        if config.family in AUTOENCODERS:
            _write_reconstructions(result["model"], config, samples)
            what = f"samples: {samples} (rows of 8 test images, each followed by a row of their reconstructions)"
        else:
            seconds = _write_samples(result["model"], result["image_shape"], config.levels, samples,
                                     seed=config.seed, device=config.device,
                                     run={"family": config.family, "data": config.data, "step": result["step"]})
            what = f"samples: {samples} (64 images drawn in {seconds:.2f} s)"
    except KeyboardInterrupt:
        raise TrainingInterrupted(result["step"], config.steps, config.checkpoint, finished=True) from None
    print(f"checkpoint: {config.checkpoint}")
    print(what)
    return result


def _write_reconstructions(model, config, path, rows: int = 4) -> None:
    """A grid of ``rows`` rows of 8 test images, each followed by their reconstructions."""
    images = load_data(config.data, "test", config.levels).images[:8 * rows]
    rebuilt = backend.to_device(model.reconstruct(backend.to_device(images, config.device)), "cpu")
    paired = np.stack([images.reshape(rows, 8, *images.shape[1:]), rebuilt.reshape(rows, 8, *images.shape[1:])],
                      axis=1)
    save_grid(paired.reshape(-1, *images.shape[1:]), config.levels, path, nrow=8)


def _interrupted(interrupt: TrainingInterrupted) -> str:
    """The one line Ctrl-C during training prints: what is saved where, and how to go on."""
    if interrupt.checkpoint is None:
        return (f"interrupted at step {interrupt.step} of {interrupt.total}, before a step finished; "
                "nothing was saved")
    path = shlex.quote(interrupt.checkpoint)
    if interrupt.finished:
        return (f"interrupted after training; the run (step {interrupt.step}) is saved in {interrupt.checkpoint}: "
                f"draw samples with `minigen sample --checkpoint {path}`")
    return (f"interrupted at step {interrupt.step} of {interrupt.total}; the run is saved in "
            f"{interrupt.checkpoint}: continue it with `minigen train --resume --checkpoint {path}`")


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
    for config in runs.values():
        _check_outputs(config.checkpoint, Path(config.checkpoint).with_suffix(".png"))
        if not args.force:
            _refuse_to_replace(config.checkpoint, "replace the demo's files with --force, "
                                                  "or write them elsewhere with --out DIR")
    print(f"minigen demo: a {DEMO_FAMILY} ({args.steps} steps) and a ddpm ({args.ddpm_steps} steps) "
          f"on the bundled 8x8 digits, binarized, on {args.device}")
    rows = []
    for name, config in runs.items():
        result = _train_and_sample(config, Path(config.checkpoint).with_suffix(".png"))
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
    """Seconds to draw ``n`` images with ``options`` (synchronised, so GPU time counts), under a
    progress bar: the full DDPM sampler takes minutes on a CPU."""
    start = time.perf_counter()
    model.sample(n, labels=None, seed=args.seed, device=args.device, progress=True, **options)
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
    """Train a model from the command-line settings, or continue a saved run (--resume)."""
    if args.resume and args.force:
        raise UserError("--resume continues the run in --checkpoint and --force replaces it: choose one")
    config = _resumed_config(args) if args.resume else _fresh_config(args)
    samples = args.samples or Path(config.checkpoint).with_suffix(".png")
    _check_outputs(config.checkpoint, samples)
    if not args.resume and not args.force:
        _refuse_to_replace(config.checkpoint, "continue it with --resume, replace it with --force, "
                                              "or choose another --checkpoint")
    _train_and_sample(config, samples, resume=args.resume)
    return 0


def _default_checkpoint(args) -> str:
    """minigen-out/FAMILY-DATA.npz, the checkpoint of a run given no --checkpoint."""
    if args.family is None or args.data is None:
        raise UserError("--resume needs --checkpoint PATH (or the FAMILY and --data that name the default "
                        "checkpoint, minigen-out/FAMILY-DATA.npz)")
    return f"minigen-out/{args.family}-{args.data}.npz"


def _fresh_config(args) -> TrainConfig:
    """A new run: the options given, TrainConfig's defaults for the rest."""
    if args.family is None or args.data is None:
        raise UserError("train needs a FAMILY and --data, e.g. `minigen train pixelcnn --data digits`; "
                        "to continue a saved run, give --resume --checkpoint PATH")
    if args.p_uncond is not None and not args.conditional:
        raise UserError("--p-uncond is how often a conditional ddpm drops its label in training; "
                        "add --conditional, or drop --p-uncond")
    settings = TRAIN_DEFAULTS | _autoencoder_levels(args) | _given(args, DEFINING_OPTIONS + RUN_OPTIONS)
    settings |= {"model": _given(args, MODEL_OPTIONS), "checkpoint": args.checkpoint or _default_checkpoint(args)}
    return TrainConfig(**settings)


def _autoencoder_levels(args) -> dict:
    """A second stage's grey levels default to its autoencoder's: {"levels": L}, or {}."""
    if args.autoencoder is None or args.levels is not None:
        return {}
    return {"levels": read_checkpoint(args.autoencoder)["config"]["levels"]}


def _resumed_config(args) -> TrainConfig:
    """The run saved in the checkpoint, with the run options given (--steps, --checkpoint-every,
    --device) replacing the saved ones; any other option given must agree with the checkpoint."""
    path = args.checkpoint or _default_checkpoint(args)
    if not os.path.isfile(path):
        raise MissingFileError(f"cannot resume: no checkpoint at {path!r}; check the path, "
                               "or start a new run without --resume")
    state = read_checkpoint(path)
    _refuse_conflicts(path, state, args)
    names = {f.name for f in fields(TrainConfig)}
    saved = {key: value for key, value in state["config"].items() if key in names}
    return TrainConfig(**saved | _given(args, RUN_OPTIONS) | {"checkpoint": path, "verbose": True})


def _refuse_conflicts(path: str, state: dict, args) -> None:
    """A UserError naming both values when an option given with --resume differs from the checkpoint's."""
    family = state["config"]["family"]
    saved = {name: state["config"].get(name) for name in DEFINING_OPTIONS}
    model_settings = _trained_settings(state)
    for name in _given(args, MODEL_OPTIONS):
        if name not in model_settings:
            raise UserError(f"cannot resume with {_option(name)}: {path} holds a {family} run, which has no "
                            f"{name} setting; drop {_option(name)}")
        saved[name] = model_settings[name]
    for name, value in _given(args, DEFINING_OPTIONS + tuple(MODEL_OPTIONS)).items():
        if value != saved[name]:
            raise UserError(f"cannot resume with {_option(name)} {value}: {path} was trained with "
                            f"{_option(name)} {saved[name]}; drop {_option(name)} (--resume takes the settings "
                            "from the checkpoint), or start a new run with another --checkpoint")


def _trained_settings(state: dict) -> dict:
    """The settings the model options set in the run saved in ``state``: the model's own, or
    a two-stage model's second stage's (its DDPM's, or its prior network's)."""
    if FAMILIES[state["config"]["family"]].first_stage is None:
        return state["model_config"]
    model = rebuilt_model(state)
    second_stage = model.diffusion if isinstance(model, LatentDiffusion) else model.prior
    return config_dict(second_stage.config)


def _sample(args) -> int:
    """Sample from a training checkpoint and write the grid."""
    backend.check_device(args.device)
    _check_outputs(grid=args.out)
    state = read_checkpoint(args.checkpoint)
    _check_sampling_options(args, state)
    _check_memory(args.n, state)
    labels = [args.class_] if args.class_ is not None else args.labels
    _class_labels(args.n, state["model_config"].get("num_classes"), labels)
    model = model_from_checkpoint(state, device=args.device)
    options = _sampling_options(model, state["image_shape"], args)
    run = {"family": state["config"]["family"], "data": state["config"]["data"], "step": state["step"]}
    seconds = _write_samples(model, state["image_shape"], state["config"]["levels"], args.out, args.n, labels,
                             args.seed, args.device, options, run)
    print(f"sampled {args.n} images in {seconds:.2f} s ({_describe(options)}, {args.device}) -> {args.out}")
    return 0


def _check_sampling_options(args, state: dict) -> None:
    """Refuse options the checkpoint's family does not use, and DDPM options that contradict
    each other or the model: a silently ignored option reads as a setting that took effect."""
    family = state["config"]["family"]
    if family in AUTOENCODERS:
        second = "latent-ddpm" if family == "vae" else "token-prior"
        raise UserError(f"{args.checkpoint} holds a {family}, which encodes and decodes images but does not "
                        f"generate them; train a {second} on it (minigen train {second} --autoencoder "
                        f"{args.checkpoint}) and sample from that")
    if family in DIFFUSION_FAMILIES:
        unused, users, own = AUTOREGRESSIVE_OPTIONS, "the autoregressive families (pixelcnn, gated-pixelcnn, " \
                                                     "pixelsnail, token-prior)", DDPM_OPTIONS
    else:
        unused, users, own = DDPM_OPTIONS, "the diffusion families (ddpm, latent-ddpm)", AUTOREGRESSIVE_OPTIONS
    for name in _given(args, unused):
        raise UserError(f"{_option(name)} is a sampling option of {users}, but {args.checkpoint} holds a "
                        f"{family} model; drop it (a {family} takes {', '.join(map(_option, own))})")
    if family in DIFFUSION_FAMILIES:
        _check_ddpm_options(args, _trained_settings(state))


def _check_ddpm_options(args, model_config: dict) -> None:
    T = model_config["T"]
    if args.guidance is not None and model_config.get("num_classes") is None:
        raise UserError(f"--guidance steers a class-conditional ddpm towards its labels, but {args.checkpoint} "
                        "was trained without --conditional; drop --guidance")
    if args.sampler == "ddpm":
        for name in _given(args, ("steps", "eta")):
            raise UserError(f"{_option(name)} is a setting of the ddim sampler; the ddpm sampler always takes "
                            f"all T={T} steps with its own noise: drop {_option(name)}, or add --sampler ddim")
    if args.steps is not None and args.steps > T:
        raise UserError(f"--steps {args.steps} is more than the model's T={T} diffusion steps; use at most {T}")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError(f"--eta must be in [0, 1] (0: deterministic, 1: as noisy as the ddpm sampler), "
                        f"got {args.eta}")


def _sampling_bytes(image_shape, model_config: dict) -> int:
    """About how much memory sampling one image and drawing it in the grid takes
    (see SAMPLER_BYTES_PER_FEATURE_PIXEL)."""
    channels, height, width = image_shape
    nested = model_config.get("diffusion_settings") or model_config.get("prior_settings") or {}
    features = (model_config.get("hidden") or model_config.get("base_channels") or nested.get("hidden")
                or nested.get("base_channels") or 64)
    scale = max(1, math.ceil(MIN_SIZE / max(height, width)))
    grid_pixels = channels * (height * scale + 1) * (width * scale + 1)
    return SAMPLER_BYTES_PER_FEATURE_PIXEL * features * height * width + GRID_BYTES_PER_PIXEL * grid_pixels


def _memory_limit() -> int:
    """Half of this machine's memory (8 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def _size(size: int) -> str:
    """A byte count for people: 1.5 GiB."""
    for unit, power in (("TiB", 40), ("GiB", 30)):
        if size >= 2**power:
            return f"{size / 2**power:.1f} {unit}"
    return f"{size / 2**20:.1f} MiB"


def _check_memory(n: int, state: dict) -> None:
    """Refuse an --n whose samples and grid would not fit in memory, before sampling starts."""
    per_image = _sampling_bytes(state["image_shape"], state["model_config"])
    limit = _memory_limit()
    if n * per_image > limit:
        raise UserError(f"--n {n} would need about {_size(n * per_image)} of memory (about "
                        f"{per_image // 1024} KiB per image), more than the {_size(limit)} allowed (half of this "
                        f"machine's); draw at most {limit // per_image} at a time, with another --seed for each grid")


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


def _positive(kind, zero_allowed: bool = False):
    """An argparse type: ``kind`` (int or float) that must be > 0 (>= 0 with ``zero_allowed``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (value >= 0 if zero_allowed else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero_allowed else 'positive'}, got {text}")
        return value
    return parse


# The model settings `minigen train` offers, with their meaning; each family's
# config dataclass holds the defaults, which the help reads from it.
MODEL_OPTIONS = {
    "hidden": (_positive(int), None, "feature maps per layer"),
    "blocks": (_positive(int, zero_allowed=True), None, "residual blocks (pixelsnail: residual layers + attention)"),
    "layers": (_positive(int), None, "gated layers"),
    "residual_layers": (_positive(int, zero_allowed=True), None, "gated residual layers per attention block"),
    "heads": (_positive(int), None, "attention heads per colour"),
    "key_channels": (_positive(int), None, "query and key features per attention head"),
    "value_channels": (_positive(int), None, "value features per attention head"),
    "position_frequencies": (_positive(int, zero_allowed=True), None,
                             "sines and cosines of each position beside its row and column (0: the paper's)"),
    "latent_channels": (_positive(int), None, "channels of the latent grid (1/4 of the image's height and width)"),
    "codebook_size": (_positive(int), None, "code vectors in the codebook"),
    "embedding_dim": (_positive(int), None, "length of each code vector"),
    "beta": (_positive(float, zero_allowed=True), None, "weight of the KL (vae) or commitment (vqvae) term"),
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


def _add_common(parser, seed_help: str, inherited: bool = False) -> None:
    """--device and --seed; ``inherited``: left None, so --resume can take the checkpoint's."""
    later = "; with --resume, the checkpoint's" if inherited else ""
    parser.add_argument("--device", default=None if inherited else "cpu", choices=backend.DEVICES,
                        help=f"cpu (default{later}) or cuda")
    parser.add_argument("--seed", type=int, default=None if inherited else 0,
                        help=f"{seed_help} (default 0{later})")


def _train_default(name: str) -> str:
    """Help text for a `minigen train` option whose default --resume replaces by the checkpoint's."""
    return f"default {TRAIN_DEFAULTS[name]}; with --resume, the checkpoint's"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigen", description="Image generation from scratch, taught in code.")
    parser.add_argument("--version", action="version", version=f"minigen {__version__}")
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
    demo.add_argument("--force", action="store_true", help="replace the checkpoints of an earlier demo in --out")
    demo.set_defaults(run=_demo)

    train = commands.add_parser(
        "train", help="train a model, with checkpoints and resume",
        description="Train a model. With --resume, the run saved in --checkpoint continues with its own settings "
                    "(FAMILY and --data may be left out); Ctrl-C saves the run and says how to continue it.")
    train.add_argument("family", nargs="?", choices=list(FAMILIES), metavar="FAMILY",
                       help=f"one of {', '.join(FAMILIES)} (with --resume: the checkpoint's)")
    train.add_argument("--data", choices=DATASETS,
                       help="the MNIST files are read from $MINIGEN_DATA (or downloaded to a cache)")
    train.add_argument("--levels", type=int, help=f"grey levels to quantize to, 2..256 ({_train_default('levels')})")
    train.add_argument("--steps", type=_positive(int), help="total training steps, counting those done before a "
                                                            f"--resume ({_train_default('steps')})")
    train.add_argument("--batch-size", type=_positive(int), help=_train_default("batch_size"))
    train.add_argument("--lr", type=_positive(float), help=f"Adam's learning rate ({_train_default('lr')})")
    train.add_argument("--grad-clip", type=_positive(float),
                       help="clip the gradient norm to this (default: no clipping; with --resume, the checkpoint's)")
    train.add_argument("--ema-decay", type=float, help=f"decay of the weight average ({_train_default('ema_decay')})")
    _add_model_options(train)
    train.add_argument("--conditional", action="store_true", default=None, help="condition on the class labels")
    train.add_argument("--autoencoder", help="latent-ddpm: a vae checkpoint; token-prior: a vqvae checkpoint "
                                             "(its settings and weights are copied and frozen; --levels defaults "
                                             "to its)")
    train.add_argument("--checkpoint", help="checkpoint file (default minigen-out/FAMILY-DATA.npz); an existing one "
                                            "is continued with --resume or replaced with --force, never silently")
    train.add_argument("--checkpoint-every", type=_positive(int),
                       help=f"steps between checkpoints ({_train_default('checkpoint_every')}); Ctrl-C saves too")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    train.add_argument("--force", action="store_true", help="replace an existing --checkpoint with a new run")
    train.add_argument("--samples", help="sample grid (.png or .jpg) written at the end (default: the checkpoint's "
                                         "path ending in .png)")
    _add_common(train, "seed of the initialisation and data order", inherited=True)
    train.set_defaults(run=_train)

    sample = commands.add_parser("sample", help="draw images from a trained checkpoint into a grid image")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint written by minigen train")
    sample.add_argument("--n", type=_positive(int), default=64, help="how many images (default 64)")
    sample.add_argument("--out", default="samples.png", help="the grid to write, .png or .jpg (default samples.png)")
    sample.add_argument("--temperature", type=_positive(float),
                        help="pixelcnn families: below 1 sharper, above 1 more varied (default 1)")
    sample.add_argument("--naive", action="store_true", default=None,
                        help="pixelcnn families: the textbook sampler (one full pass per sub-pixel) "
                             "instead of the cached one")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"],
                        help="ddpm: ancestral over all T steps, or DDIM (default ddim)")
    sample.add_argument("--steps", type=_positive(int), help=f"ddpm, --sampler ddim: steps (default {DDIM_STEPS})")
    sample.add_argument("--eta", type=float, help="ddpm, --sampler ddim: noise in [0, 1], 0 deterministic "
                                                  "(default), 1 as noisy as the ddpm sampler")
    sample.add_argument("--guidance", type=float,
                        help="a conditional ddpm: classifier-free guidance scale (default 1: none)")
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
    release.add_command(commands)
    return parser


# The course's commands (book, grade) still raise plain ValueError and
# FileNotFoundError for mistakes in their input; until they raise UserError,
# those two stay one-line messages for them (and only for them).
COURSE_INPUT_ERRORS = (ValueError, FileNotFoundError)


def _input_errors(args) -> tuple:
    """The exception types that mean a mistake in the input of ``args``'s command."""
    own = (UserError, backend.DeviceError)
    return own + COURSE_INPUT_ERRORS if args.run.__module__.startswith("minigen.course") else own


def main(argv=None) -> int:
    """Run one command; mistakes in the input exit 2 with one line, Ctrl-C exits 130 with one line."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except TrainingInterrupted as interrupt:
        print(f"minigen: {_interrupted(interrupt)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("minigen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _input_errors(args) as exc:
        print(f"minigen: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
