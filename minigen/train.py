"""One training loop for every model family: progress bar, EMA, checkpoints, exact resume.

A model family plugs in through two things only:

* ``model.loss(x, labels)``: a scalar Tensor for a batch of integer images x
  (PixelCNN: the mean negative log-likelihood in nats per image; DDPM: the
  noise-prediction error L_simple);
* a test score: nats per image for each image of a batch (exact NLL for
  PixelCNN, a bound for diffusion, what an autoencoder or a latent model can
  say), registered in :data:`FAMILIES` with its name.

A two-stage family (latent diffusion, a token prior) also names the kind of
autoencoder it trains on: ``autoencoder`` in the config is the path of a
training checkpoint of one, whose weights the model copies and freezes.

Everything else is shared::

    config = TrainConfig(family="pixelcnn", data="digits", steps=2000, checkpoint="run.npz")
    result = train(config)                       # trains, checkpoints, evaluates on the test set
    result = train(replace(config, steps=4000), resume=True)   # 2000 more steps
    model = load_model("run.npz")                # the EMA weights, ready to sample

Ctrl-C saves the run at the last finished step and raises
:class:`TrainingInterrupted` (a KeyboardInterrupt) saying where, so nothing
trained is lost. Resuming is exact: a run of 2N steps and a run of N steps resumed for N more
take the same steps with the same losses. That holds because nothing in a
run depends on anything but its config and the state in the checkpoint: the
weights, Adam's moments, the EMA, the random generator's state, and the step
number, from which the data order follows (epoch e is shuffled with seed
``seed + e``, so the position in the data is a pure function of the step).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .engine import backend, optim
from .engine.creation import ones
from .checkpoint import CheckpointError, load, save
from .data import MAX_LEVELS, ImageSet, batches, load_binarized_mnist, load_digits, load_mnist, quantize
from .errors import MissingFileError, UserError
from .files import check_writable
from .models.ddpm import DDPM
from .metrics import bits_per_dim
from .models.config import config_dict, configure, setting_names
from .models.autoencoder import VAE, VQVAE
from .models.latent import LatentDiffusion, TokenPrior
from .models.pixelcnn import GatedPixelCNN, PixelCNN
from .models.pixelsnail import PixelSNAIL
from .progress import tqdm

# ----------------------------------------------------------------------------
# What differs between families and data sets


def _pixels(model, image_shape) -> int:
    return int(np.prod(image_shape))


class Family(NamedTuple):
    """A model family: its class, how to score test images, and whether its
    training loss is itself a negative log-likelihood in nats per image.

    ``test_nll(model, x, labels)`` returns nats per image, shape (N,), of the
    kind ``metric`` names; ``dims(model, image_shape)`` is what bits per
    dimension divide by, None where the score is no likelihood of the data.
    ``first_stage`` is the autoencoder class a two-stage family trains on.
    """

    model_class: type
    test_nll: Callable
    loss_is_nll: bool
    metric: str = "NLL"
    dims: Callable | None = _pixels
    unit: str = "nats/image"
    first_stage: type | None = None


def _autoregressive_nll(model, x, labels):
    """Exact: -log p(x), summed over the sub-pixels of each image."""
    return -model.log_prob(x, labels)


BOUND_TIMESTEPS = 100  # random steps per image that estimate the bound's sum over T steps


def _diffusion_nll(model, x, labels):
    """The variational bound on -log p(x), its T-step sum estimated from
    BOUND_TIMESTEPS random steps (unbiased; exact with all T)."""
    return model.nll_bound(x, labels, timesteps=min(BOUND_TIMESTEPS, model.schedule.T - 1))


def _negative_elbo(model, x, labels):
    """A VAE's -ELBO with beta = 1, one posterior sample: reconstruction + KL, per image."""
    reconstruction, kl = model.loss_terms(x)
    return reconstruction + kl


def _reconstruction(model, x, labels):
    """A VQ-VAE's reconstruction cross-entropy per image, through its quantised code."""
    return model.loss_terms(x)[0]


def _latent_denoising_error(model, x, labels):
    """A latent DDPM's L_simple on the batch (one random step per image), given to each of its images."""
    return model.loss(x, labels) * ones(len(x), device=x.device)


def _token_nll(model, x, labels):
    """Exact -log p(tokens of x) under the prior, nats per image of code."""
    return -model.log_prob_tokens(model.encode(x), labels)


def _tokens(model, image_shape) -> int:
    return model.latent_size ** 2


FAMILIES = {
    "pixelcnn": Family(PixelCNN, _autoregressive_nll, loss_is_nll=True),
    "gated-pixelcnn": Family(GatedPixelCNN, _autoregressive_nll, loss_is_nll=True),
    "pixelsnail": Family(PixelSNAIL, _autoregressive_nll, loss_is_nll=True),
    "ddpm": Family(DDPM, _diffusion_nll, loss_is_nll=False, metric="NLL bound"),
    "vae": Family(VAE, _negative_elbo, loss_is_nll=False, dims=None,
                  metric="negative ELBO (Bernoulli decoder on grey levels: not a normalised likelihood)"),
    "vqvae": Family(VQVAE, _reconstruction, loss_is_nll=False, dims=None, metric="reconstruction cross-entropy"),
    "latent-ddpm": Family(LatentDiffusion, _latent_denoising_error, loss_is_nll=False, dims=None,
                          metric="latent L_simple (a denoising error, not a likelihood)", first_stage=VAE,
                          unit="(mean squared error of the predicted noise)"),
    "token-prior": Family(TokenPrior, _token_nll, loss_is_nll=True, dims=_tokens,
                          metric="NLL of the VQ-VAE code (bits/dim: per token)", first_stage=VQVAE),
}
LATENT_SCALE_IMAGES = 10_000  # training images whose latents set a VAE's scale for latent diffusion

DATASETS = ("digits", "mnist", "binarized-mnist")


def load_data(name: str, split: str, levels: int) -> ImageSet:
    """Data set ``name``'s ``split`` as integer images with ``levels`` grey levels."""
    if name == "digits":
        return load_digits(split, levels)
    if name == "mnist":
        data = load_mnist(split)
        return ImageSet(quantize(data.images, data.levels, levels), data.labels, levels)
    if name == "binarized-mnist":
        return load_binarized_mnist(split)
    raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------
# The configuration of a run


@dataclass
class TrainConfig:
    """Everything that defines a training run; each checkpoint stores it.

    ``model`` holds the model's own settings (constructor arguments such as
    ``hidden`` and ``blocks``); channels, levels and classes come from the data.
    ``grad_clip`` None means no clipping; ``checkpoint`` None means none is
    written. ``autoencoder``: the training checkpoint of the first stage a
    two-stage family needs (a VAE for latent-ddpm, a VQ-VAE for token-prior),
    None for every other family. The run settings listed in :data:`RUN_SETTINGS` may change when
    resuming (train longer, elsewhere); every other field must stay the same.
    """

    family: str = "pixelcnn"
    data: str = "digits"
    levels: int = 2
    model: dict = field(default_factory=dict)
    conditional: bool = False
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float | None = None
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint: str | None = None
    checkpoint_every: int = 500
    device: str = "cpu"
    verbose: bool = True
    autoencoder: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UserError(f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        self._check_stages()
        if self.data not in DATASETS:
            raise UserError(f"unknown data set {self.data!r}; choose one of {', '.join(DATASETS)}")
        if self.data == "binarized-mnist" and self.levels != 2:
            raise UserError(f"binarized-mnist has 2 levels, but levels={self.levels}; "
                            "use levels=2, or data 'mnist' for more grey levels")
        if self.data == "binarized-mnist" and self.conditional:
            raise UserError("binarized-mnist has no labels, so it cannot train a class-conditional "
                            "model; drop the conditional flag, or use data 'mnist'")
        for name, low in (("levels", 2), ("steps", 0), ("batch_size", 1), ("checkpoint_every", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise UserError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if self.levels > MAX_LEVELS:
            raise UserError(f"levels must be at most {MAX_LEVELS} (images are 8-bit grey), got {self.levels}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"grad_clip must be positive (or None for no clipping), got {self.grad_clip!r}")

    def _check_stages(self) -> None:
        """An autoencoder path exactly for the two-stage families; no classes for an autoencoder."""
        first_stage = FAMILIES[self.family].first_stage
        if first_stage is not None and self.autoencoder is None:
            maker = "vae" if first_stage is VAE else "vqvae"
            raise UserError(f"{self.family} trains on a {first_stage.__name__}'s code: give the checkpoint of one "
                            f"(--autoencoder PATH, made by `minigen train {maker}`)")
        if first_stage is None and self.autoencoder is not None:
            raise UserError(f"{self.family} trains on pixels; an autoencoder is for latent-ddpm and token-prior: "
                            "drop --autoencoder")
        if self.family in ("vae", "vqvae") and self.conditional:
            raise UserError(f"a {self.family} is unconditional (it encodes any image); drop --conditional, and "
                            "condition the second stage (latent-ddpm, token-prior) instead")


RUN_SETTINGS = ("steps", "checkpoint", "checkpoint_every", "device", "verbose")


def build_model(config: TrainConfig, data: ImageSet):
    """A freshly initialised model of ``config.family`` for images like ``data``'s.

    The family's config dataclass says which settings exist; channels, levels,
    classes and image size come from the data, the rest from ``config.model``.
    A two-stage family's ``config.model`` holds its second stage's settings
    (the latent DDPM's, or the token prior's network's), and its autoencoder
    comes from ``config.autoencoder`` (:func:`first_stage_of`).
    """
    model_class = FAMILIES[config.family].model_class
    from_data = {"channels": data.images.shape[1], "levels": config.levels,
                 "num_classes": int(data.labels.max()) + 1 if config.conditional else None,
                 "image_size": data.images.shape[-1]}
    allowed = [name for name in setting_names(_settings_class(config)) if name not in from_data]
    unknown = sorted(set(config.model) - set(allowed))
    if unknown:
        raise UserError(f"{config.family} has no setting {', '.join(map(repr, unknown))}; "
                        f"its settings are {', '.join(allowed)}")
    names = setting_names(model_class.Config)
    settings = {name: value for name, value in from_data.items() if name in names}
    if FAMILIES[config.family].first_stage is None:
        return model_class(configure(model_class.Config, **(settings | config.model)))
    nested = "diffusion_settings" if model_class is LatentDiffusion else "prior_settings"
    settings[nested] = dict(config.model)
    return model_class(configure(model_class.Config, **settings), autoencoder=first_stage_of(config, data))


def _settings_class(config: TrainConfig) -> type:
    """The config dataclass whose settings ``config.model`` may hold: the family's own, or
    for a two-stage family its second stage's (the DDPM's, or the token prior's network's)."""
    model_class = FAMILIES[config.family].model_class
    if model_class is LatentDiffusion:
        return DDPM.Config
    if model_class is TokenPrior:
        return PixelSNAIL.Config  # the prior's network: TokenPrior's default prior family
    return model_class.Config


def first_stage_of(config: TrainConfig, data: ImageSet):
    """The trained autoencoder at ``config.autoencoder`` (EMA weights) for a two-stage family,
    checked to be the kind it needs; a VAE's latent scale is fitted to ``data`` first
    (Rombach et al. 2022, sec. 4.3.2: unit-variance latents for the diffusion)."""
    kind = FAMILIES[config.family].first_stage
    state = read_checkpoint(config.autoencoder)
    found = FAMILIES[state["config"]["family"]].model_class
    if found is not kind:
        raise UserError(f"{config.family} trains on a {kind.__name__}, but {config.autoencoder} holds a "
                        f"{state['config']['family']} model; give the checkpoint of a "
                        f"{'vae' if kind is VAE else 'vqvae'} run")
    autoencoder = model_from_checkpoint(state)
    if kind is VAE:
        autoencoder.fit_latent_scale(data.images[:LATENT_SCALE_IMAGES], seed=config.seed)
    return autoencoder


# ----------------------------------------------------------------------------
# Checkpoints

_CHECKPOINT_KEYS = ("step", "config", "model_config", "image_shape", "model", "optimizer", "ema", "rng")


def _save_checkpoint(config, model, optimizer, ema, step: int, image_shape) -> None:
    """Write the whole state of the run at ``step`` to ``config.checkpoint``, atomically."""
    save({
        "step": step,
        "config": asdict(config),
        "model_config": config_dict(model.config),
        "image_shape": list(image_shape),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict(),
        "rng": backend.get_rng_state(),
    }, config.checkpoint)


def read_checkpoint(path) -> dict:
    """The state saved by :func:`train` at ``path``, checked to be a complete training checkpoint."""
    state = load(path)
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{os.fspath(path)!r} is not a checkpoint written by minigen train "
                              f"(it lacks {', '.join(missing)}); make one with `minigen train`")
    if state["config"]["family"] not in FAMILIES:
        raise CheckpointError(f"{os.fspath(path)!r} holds a {state['config']['family']!r} model, "
                              f"which this minigen does not know ({', '.join(FAMILIES)})")
    return state


def model_from_checkpoint(state: dict, ema: bool = True, device: str = "cpu"):
    """The model saved in ``state`` (from :func:`read_checkpoint`), in eval mode on ``device``.

    With ``ema`` (the default) it holds the exponential moving averages of the
    weights, which usually sample and score better than the last weights.
    """
    model = rebuilt_model(state)
    model.load_state_dict(state["model"])
    if ema:
        averages = optim.EMA(model)
        averages.load_state_dict(state["ema"])
        averages.copy_to()
    return model.to(device).eval()


def rebuilt_model(state: dict):
    """A model of the architecture saved in ``state`` (freshly initialised; its settings
    are the checkpoint's, a two-stage model's autoencoder included)."""
    return FAMILIES[state["config"]["family"]].model_class(**state["model_config"])


def load_model(path, ema: bool = True, device: str = "cpu"):
    """The model in the training checkpoint at ``path`` (EMA weights by default)."""
    return model_from_checkpoint(read_checkpoint(path), ema, device)


def _differences(saved: dict, wanted: dict) -> list[str]:
    """A line 'key: saved value in the checkpoint, wanted value now' for each key that differs."""
    return [f"{key}: {saved.get(key)!r} in the checkpoint, {wanted.get(key)!r} now"
            for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]


def _check_resumable(path: str, saved: dict, wanted: dict, what: str) -> None:
    """Refuse to resume when ``what`` (settings as dicts) differ between checkpoint and now."""
    differences = _differences(saved, wanted)
    if differences:
        raise UserError(f"cannot resume from {path!r}: the {what} differ ({'; '.join(differences)}); resume "
                        "with the checkpoint's settings, or start a new run with another checkpoint path")


def _read_for_resume(config: TrainConfig) -> dict:
    """The checkpoint to resume from, after checking that it continues this config."""
    if config.checkpoint is None:
        raise UserError("resume needs a checkpoint path; set checkpoint (--checkpoint PATH)")
    if not os.path.isfile(config.checkpoint):
        raise MissingFileError(f"cannot resume: no checkpoint at {config.checkpoint!r}; "
                               "check the path, or start a new run without resume")
    state = read_checkpoint(config.checkpoint)
    _check_resumable(config.checkpoint, _defining(state["config"]), _defining(asdict(config)),
                     "training settings")
    return state


def _defining(settings: dict) -> dict:
    """The settings that define a run's trajectory: all but the RUN_SETTINGS."""
    return {key: value for key, value in settings.items() if key not in RUN_SETTINGS}


# ----------------------------------------------------------------------------
# The loop


def _batch_stream(data: ImageSet, config: TrainConfig, step: int):
    """Mini-batches (images, labels) from training step ``step`` on, forever.

    Epoch e visits the data in the order seeded by ``seed + e`` and drops the
    last incomplete batch, so step s always sees the same batch: the one
    numbered s mod (batches per epoch) of epoch s // (batches per epoch).
    """
    per_epoch = len(data) // config.batch_size
    if per_epoch == 0:
        raise UserError(f"batch_size {config.batch_size} is larger than the training set "
                        f"({len(data)} images); use a smaller batch size")
    epoch, skip = divmod(step, per_epoch)
    while True:
        epoch_batches = batches((data.images, data.labels), config.batch_size, seed=config.seed + epoch,
                                device=config.device, drop_last=True)
        for index, batch in enumerate(epoch_batches):
            if index >= skip:
                yield batch
        epoch, skip = epoch + 1, 0


def _ema_decay(step: int, decay: float) -> float:
    """The EMA decay at ``step``: at most (1 + step) / (10 + step), so early on the
    average spans roughly the steps taken so far and forgets the random start."""
    return min(decay, (1 + step) / (10 + step))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the run's state at ``step`` (of ``total``) is saved in ``checkpoint``.

    ``checkpoint`` is None when nothing could be saved (no checkpoint path, or
    not one step finished). ``finished`` is True when every step was done and
    the interrupt came during the test-set evaluation.
    """

    def __init__(self, step: int, total: int, checkpoint: str | None, finished: bool = False):
        super().__init__(step, total, checkpoint, finished)
        self.step, self.total, self.checkpoint, self.finished = step, total, checkpoint, finished


@contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C until the block ends, then raise it: the weights, Adam's moments and
    the EMA change together, so a checkpoint never holds a half-taken step.

    Only the main thread receives signals, so elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def training_step(model, optimizer, x, labels=None, grad_clip: float | None = None):
    """One step of training: the loss ``model.loss(x, labels)`` (a scalar Tensor, returned),
    its gradient with respect to every parameter, and ``optimizer.step()``.

    The gradients of the step before must not leak in: ``backward`` adds to what
    ``p.grad`` holds, so clear it first (``optimizer.zero_grad()``). With
    ``grad_clip``, rescale the gradients to that total norm at most
    (``optim.clip_grad_norm_(model.parameters(), grad_clip)``) before the update.
    """
    ### BEGIN SOLUTION
    loss = model.loss(x, labels)
    optimizer.zero_grad()
    loss.backward()
    if grad_clip is not None:
        optim.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss
    ### END SOLUTION


def _fit(model, optimizer, ema, data: ImageSet, config: TrainConfig, start: int) -> list[float]:
    """Train from step ``start`` to ``config.steps``; returns the loss of each step taken.

    On Ctrl-C the run is saved at the last finished step (if any step has
    finished since the last save) and :class:`TrainingInterrupted` is raised.
    """
    family = FAMILIES[config.family]
    dims = family.dims(model, data.images.shape[1:]) if family.loss_is_nll and family.dims else None
    stream = _batch_stream(data, config, start)
    losses = []
    done, saved = start, start or None  # steps finished; the step this run's checkpoint holds, if any
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps,
               desc=f"training {config.family}", disable=not config.verbose)
    model.train()
    try:
        for step in bar:
            x, labels = next(stream)
            with _interrupts_deferred():
                loss = training_step(model, optimizer, x, labels if config.conditional else None, config.grad_clip)
                ema.decay = _ema_decay(step, config.ema_decay)
                ema.update()
                losses.append(loss.item())
                done = step + 1
            shown = {"bpd": f"{bits_per_dim(losses[-1], dims):.3f}"} if dims else {}
            bar.set_postfix(loss=f"{losses[-1]:.3f}", **shown)
            if config.checkpoint and (done % config.checkpoint_every == 0 or done == config.steps):
                _save_checkpoint(config, model, optimizer, ema, done, data.images.shape[1:])
                saved = done
    except KeyboardInterrupt:
        bar.close()
        if config.checkpoint and done > (saved or 0):
            _save_checkpoint(config, model, optimizer, ema, done, data.images.shape[1:])
            saved = done
        raise TrainingInterrupted(done, config.steps, config.checkpoint if saved else None) from None
    bar.close()
    return losses


def evaluate_nll(model, data: ImageSet, family: str, conditional: bool = False,
                 batch_size: int = 256, device: str = "cpu", progress: bool = False) -> float:
    """The mean test NLL of ``model`` on ``data`` in nats per image (no gradients).

    ``progress`` shows a bar over the images: a DDPM's bound takes a minute or two.
    """
    score = FAMILIES[family].test_nll
    what = "test " + FAMILIES[family].metric.split(" (")[0]
    total = 0.0
    with model.evaluating(), tqdm(total=len(data), desc=what, unit="image", disable=not progress) as bar:
        for x, labels in batches((data.images, data.labels), batch_size, shuffle=False, device=device):
            total += score(model, x, labels if conditional else None).sum().item()
            bar.update(len(x))
    return total / len(data)


def _restore(saved: dict, config: TrainConfig, model, optimizer, ema) -> int:
    """Put the checkpoint ``saved`` back into the run's objects; returns its step."""
    _check_resumable(config.checkpoint, saved["model_config"], config_dict(model.config), "model settings")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    ema.load_state_dict(saved["ema"])
    backend.set_rng_state(saved["rng"])
    return saved["step"]


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Train (or, with ``resume``, continue) the run ``config`` describes, then score the test set.

    Returns a dict: ``model`` (holding the EMA weights, in eval mode),
    ``losses`` (of the steps taken now), ``step`` (steps done in all),
    ``test_nll`` (nats per image, with the EMA weights), ``test_bits_per_dim``,
    ``image_shape`` (C, H, W) and ``seconds`` (training time). A checkpoint
    path that cannot be written is refused before any work. Ctrl-C raises
    :class:`TrainingInterrupted` after saving the run (see :func:`_fit`).
    """
    backend.check_device(config.device)
    if config.checkpoint:
        check_writable(config.checkpoint, "the checkpoint")
    saved = _read_for_resume(config) if resume else None
    train_set = load_data(config.data, "train", config.levels)
    test_set = load_data(config.data, "test", config.levels)
    backend.manual_seed(config.seed)
    model = (build_model(config, train_set) if saved is None else rebuilt_model(saved)).to(config.device)
    optimizer = optim.Adam(model.parameters(), lr=config.lr)
    ema = optim.EMA(model, config.ema_decay)
    start = 0 if saved is None else _restore(saved, config, model, optimizer, ema)
    if config.checkpoint:
        os.makedirs(os.path.dirname(os.path.abspath(config.checkpoint)), exist_ok=True)
    began = time.perf_counter()
    losses = _fit(model, optimizer, ema, train_set, config, start)
    seconds = time.perf_counter() - began
    step = max(start, config.steps)
    ema.copy_to()
    model.eval()
    try:
        nll = evaluate_nll(model, test_set, config.family, config.conditional, device=config.device,
                           progress=config.verbose)
    except KeyboardInterrupt:
        raise TrainingInterrupted(step, config.steps, config.checkpoint, finished=True) from None
    family = FAMILIES[config.family]
    bpd = bits_per_dim(nll, family.dims(model, test_set.images.shape[1:])) if family.dims else None
    if config.verbose:
        per_dim = f" = {bpd:.4f} bits/dim" if bpd is not None else ""
        print(f"test {family.metric} {nll:.2f} {family.unit}{per_dim} ({config.family} on {config.data}, "
              f"{len(test_set)} test images, EMA weights, step {step})")
    return {"model": model, "losses": losses, "step": step, "test_nll": nll, "test_bits_per_dim": bpd,
            "image_shape": tuple(test_set.images.shape[1:]), "seconds": seconds}
