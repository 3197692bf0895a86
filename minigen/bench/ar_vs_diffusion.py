"""``minigen bench``: how long autoregressive and diffusion models take to sample and train, measured.

    minigen bench --quick                # a smoke run: two small sizes, one channel, short caps
    minigen bench --out results/         # the full run behind the README's timing tables

The question is not "which is faster" but "how many sequential network
evaluations does each sampler make, and what does one cost":

- PixelCNN, naive: one full-image evaluation per sub-pixel, C*H*W of them;
- PixelCNN, cached: C*H*W evaluations of one pixel's worth of network each;
- PixelSNAIL, naive and cached: the same counts; its cached step also compares
  one query with the keys of every pixel drawn so far (a cache that grows);
- DDPM: T full-image evaluations (T = 1000); DDIM: S of them (S = 10..100).

The networks have about the same number of parameters, and the tables give
the floating-point operations of one full-image evaluation of each. Where a
run would pass the time cap, a measured prefix of its sequential steps is timed
and extrapolated (marked ``*``). Beside each time: the peak memory the run
adds to the process (of the timed prefix, for an extrapolated run). Training steps are timed too, beside the same
networks in PyTorch when the ``bench`` extra is installed (in a fresh process).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..engine import backend, optim
from ..engine import functional as F
from ..engine.autograd import Tensor
from .report import cell, markdown_table
from .timing import (adam_step, count_flops, crossover, facts_line, machine_facts, measure,
                     prefix_peak_memory_mib, run_worker, serve_worker, time_sequential)
from ..errors import UserError
from ..files import check_writable, write_atomically, write_text_atomically
from ..engine.creation import tensor
from ..models.ddpm import DDPM
from ..models.diffusion import Schedule, q_sample
from ..models.pixelcnn import PixelCNN
from ..models.pixelsnail import PixelSNAIL
from ..progress import tqdm

PIXELCNN = dict(levels=16, hidden=84, blocks=5)
"""The autoregressive network: 16 grey levels, about as many parameters as the U-Net."""
PIXELSNAIL = dict(levels=16, hidden=33, blocks=2, residual_layers=2)
"""The attention network: the same 16 levels and about as many parameters (hidden: a multiple of 3 colours)."""
UNET = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, groups=8)
"""The diffusion network (the demo's U-Net)."""
T = 1000


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    sizes: tuple = (8, 16, 32, 64)
    channels: tuple = (1, 3)
    batch: int = 16
    ddim_steps: tuple = (10, 50, 100)
    cap: float = 10.0
    train_sizes: tuple = (16, 32)
    train_batch: int = 32
    train_repeats: int = 5


PLANS = {"full": Plan(),
         "quick": Plan(sizes=(8, 16), channels=(1,), batch=4, ddim_steps=(10,), cap=1.0,
                       train_sizes=(8,), train_batch=8, train_repeats=2)}


# ----------------------------------------------------------------------------
# The networks and their samplers


def pixelcnn(channels: int, device: str) -> PixelCNN:
    """The benchmark's PixelCNN, with the same initial weights every time (seed 0)."""
    with backend.seeded(0):
        return PixelCNN(channels=channels, **PIXELCNN).to(device)


def pixelsnail(channels: int, device: str) -> PixelSNAIL:
    """The benchmark's PixelSNAIL, seed 0."""
    with backend.seeded(0):
        return PixelSNAIL(channels=channels, **PIXELSNAIL).to(device)


AUTOREGRESSIVE = ("pixelcnn", "pixelsnail")


def ddpm(channels: int, size: int, device: str) -> DDPM:
    """The benchmark's DDPM (T = 1000, cosine) for ``size`` x ``size`` images, seed 0."""
    with backend.seeded(0):
        return DDPM(channels=channels, image_size=size, T=T, schedule="cosine", **UNET).to(device)


def samplers(plan: Plan) -> dict:
    """Method name -> (family, sampling settings)."""
    methods = {f"{family} {kind}": (family, dict(cached=kind == "cached"))
               for family in AUTOREGRESSIVE for kind in ("naive", "cached")}
    methods[f"ddpm T={T}"] = ("ddpm", dict(sampler="ddpm"))
    methods.update({f"ddim S={s}": ("ddpm", dict(sampler="ddim", steps=s)) for s in plan.ddim_steps})
    return methods


def sequential_evaluations(family: str, settings: dict, channels: int, size: int) -> int:
    """Network evaluations that must run one after another to draw one batch."""
    if family in AUTOREGRESSIVE:
        return channels * size * size
    return settings.get("steps") or T


def sampling_run(model, family: str, settings: dict, batch: int, size: int, device: str):
    """``run(on_step)``: draw one batch, calling ``on_step`` after every sequential step."""
    if family in AUTOREGRESSIVE:
        return lambda on_step: model.sample(batch, (size, size), seed=0, device=device, on_step=on_step, **settings)
    return lambda on_step: model.generate(batch, seed=0, device=device, on_step=on_step, **settings)


def flops_per_image(model, family: str, channels: int, size: int, device: str) -> int:
    """FLOPs of one full-image network evaluation, per image (convolutions and linear
    layers: a PixelSNAIL's attention products are not counted)."""
    if family in AUTOREGRESSIVE:
        x = backend.xp_for(device).zeros((1, channels, size, size), dtype=np.int64)
        return count_flops(model, Tensor(x))
    x = backend.xp_for(device).zeros((1, channels, size, size), dtype=np.float32)
    return count_flops(model.net, Tensor(x), Tensor(backend.xp_for(device).zeros((1,), dtype=np.int64)))


def bench_sampling(plan: Plan, device: str) -> tuple[list, list]:
    """Every sampler at every size and channel count: (timing rows, network rows)."""
    methods = samplers(plan)
    rows, networks = [], []
    jobs = [(c, s) for c in plan.channels for s in plan.sizes]
    bar = tqdm(total=len(jobs) * len(methods), desc=f"sampling on {device}", unit="run")
    for channels, size in jobs:
        models = {"pixelcnn": pixelcnn(channels, device), "pixelsnail": pixelsnail(channels, device),
                  "ddpm": ddpm(channels, size, device)}
        networks.append({"device": device, "channels": channels, "size": size,
                         **{f"{family}_{what}": value for family, model in models.items()
                            for what, value in (("parameters", model.num_parameters()),
                                                ("flops", flops_per_image(model, family, channels, size, device)))}})
        for name, (family, settings) in methods.items():
            bar.set_postfix_str(f"{name}, {channels}x{size}x{size}")
            run = sampling_run(models[family], family, settings, plan.batch, size, device)
            evaluations = sequential_evaluations(family, settings, channels, size)
            timing = time_sequential(run, evaluations, plan.cap, device)
            memory = prefix_peak_memory_mib(run, timing.steps_timed) if device == "cpu" else None
            rows.append({"device": device, "channels": channels, "size": size, "method": name,
                         "evaluations": evaluations, **timing.as_dict(), "peak_mib": memory})
            bar.update(1)
    bar.close()
    return rows, networks


def crossovers(rows: list, plan: Plan) -> list:
    """For each diffusion sampler and autoregressive sampler: the image size (pixels
    H*W) from which the diffusion sampler is the cheaper one, per device and channels."""
    found = []
    for device in sorted({r["device"] for r in rows}):
        for channels in plan.channels:
            seconds = {r["method"]: [] for r in rows}
            for r in rows:
                if r["device"] == device and r["channels"] == channels:
                    seconds[r["method"]].append(r["seconds"])
            pixels = [s * s for s in plan.sizes]
            for slow in [m for m in seconds if m.split()[0] in AUTOREGRESSIVE]:
                for fast in [m for m in seconds if m.split()[0] not in AUTOREGRESSIVE]:
                    found.append({"device": device, "channels": channels, "autoregressive": slow,
                                  "diffusion": fast, "pixels": crossover(pixels, seconds[slow], seconds[fast])})
    return found


# ----------------------------------------------------------------------------
# Training steps, in minigen and (in a fresh process) in PyTorch


def training_inputs(family: str, channels: int, size: int, batch: int) -> dict:
    """A fixed batch: integer images for PixelCNN; x_t, t and the noise for the U-Net."""
    rng = np.random.default_rng(0)
    shape = (batch, channels, size, size)
    if family == "pixelcnn":
        return {"x": rng.integers(0, PIXELCNN["levels"], shape)}
    x0 = rng.uniform(-1, 1, shape).astype(np.float32)
    t = rng.integers(0, T, batch)
    noise = rng.standard_normal(shape).astype(np.float32)
    xt = q_sample(Schedule.make("cosine", T), Tensor(x0), Tensor(t), Tensor(noise)).data
    return {"xt": xt.astype(np.float32), "t": t, "noise": noise}


def minigen_training_step(family: str, channels: int, size: int, batch: int, device: str):
    """A closure: one Adam step (forward, backward, update) of the reference network; returns the loss.
    The network is the closure's ``model`` attribute."""
    arrays = {k: tensor(v, device=device) for k, v in training_inputs(family, channels, size, batch).items()}
    model = pixelcnn(channels, device) if family == "pixelcnn" else ddpm(channels, size, device).net
    if family == "pixelcnn":
        loss_fn = lambda: model.loss(arrays["x"])
    else:
        loss_fn = lambda: F.mse_loss(model(arrays["xt"], arrays["t"]), arrays["noise"])
    step = adam_step(optim.Adam(model.parameters(), lr=1e-3), loss_fn)
    step.model = model
    return step


def torch_training_step(family: str, channels: int, size: int, batch: int):
    """The same step in PyTorch CPU eager, from the same weights and the same batch."""
    import torch

    from .torch_twins import TorchPixelCNN, TorchUNet

    arrays = {k: torch.from_numpy(v) for k, v in training_inputs(family, channels, size, batch).items()}
    if family == "pixelcnn":
        model = TorchPixelCNN.from_minigen(pixelcnn(channels, "cpu"))
        loss_fn = lambda: model.loss(arrays["x"])
    else:
        model = TorchUNet.from_ddpm(ddpm(channels, size, "cpu"))
        loss_fn = lambda: torch.nn.functional.mse_loss(model(arrays["xt"], arrays["t"]), arrays["noise"])
    return adam_step(torch.optim.Adam(model.parameters(), lr=1e-3), loss_fn)


def time_training(framework: str, plan: Plan, device: str) -> list:
    """Median seconds per training step of both families at every training size."""
    rows = []
    for family in ("pixelcnn", "ddpm"):
        for size in plan.train_sizes:
            if framework == "minigen":
                step = minigen_training_step(family, 1, size, plan.train_batch, device)
            else:
                step = torch_training_step(family, 1, size, plan.train_batch)
            first_loss = step()
            timing = measure(step, repeats=plan.train_repeats, warmup=1, device=device)
            rows.append({"family": family, "size": size, "seconds": timing.median, "q25": timing.q25,
                         "q75": timing.q75, "first_loss": first_loss})
    return rows


def torch_available() -> str | None:
    """PyTorch's version when the bench extra is installed, else None (never imports torch here)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def bench_training(plan: Plan, device: str, with_torch: bool) -> list:
    """Training-step rows for minigen on ``device`` and, on the CPU, PyTorch beside it."""
    ours = time_training("minigen", plan, device)
    theirs = None
    if with_torch and device == "cpu":
        theirs = run_worker(("-m", "minigen.bench.ar_vs_diffusion"), "torch", asdict(plan))
    rows = []
    for k, row in enumerate(ours):
        twin = theirs[k] if theirs else None
        rows.append({"device": device, "family": row["family"], "size": row["size"], "batch": plan.train_batch,
                     "minigen_s": row["seconds"], "minigen_first_loss": row["first_loss"],
                     "torch_s": twin["seconds"] if twin else None,
                     "torch_first_loss": twin["first_loss"] if twin else None,
                     "ratio": row["seconds"] / twin["seconds"] if twin else None})
    return rows


# ----------------------------------------------------------------------------
# The whole run, its tables and its plot


def run(plan: Plan, devices, with_torch: bool = True) -> dict:
    """Every measurement on every device; the dict that ``--out`` writes as timing.json."""
    result = {**machine_facts(devices, torch_available()), "plan": asdict(plan), "T": T,
              "models": {"pixelcnn": PIXELCNN, "unet": {**UNET, "channel_mults": list(UNET["channel_mults"])}},
              "sampling": [], "networks": [], "training": []}
    with_torch = with_torch and result["torch"] is not None
    for device in devices:
        rows, networks = bench_sampling(plan, device)
        result["sampling"] += rows
        result["networks"] += networks
        result["training"] += bench_training(plan, device, with_torch)
    result["crossovers"] = crossovers(result["sampling"], plan)
    return result


def _seconds(row: dict) -> str:
    value = row["seconds"]
    text = f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"
    return text + ("*" if row["extrapolated"] else "")


def _memory(row: dict) -> str:
    if row.get("peak_mib") is None:
        return "-"
    return f"{row['peak_mib']:.1f}" + ("*" if row["extrapolated"] else "")


FAMILIES = ("pixelcnn", "pixelsnail", "ddpm")
NAMES = {"pixelcnn": "PixelCNN", "pixelsnail": "PixelSNAIL", "ddpm": "U-Net"}


def _where(pixels, sizes) -> str:
    """A crossover in words: none, already at the smallest size, or the interpolated size."""
    if pixels is None:
        return f"none up to {max(sizes)}x{max(sizes)}"
    if pixels <= min(sizes) ** 2:
        return f"already at {min(sizes)}x{min(sizes)}, the smallest size measured"
    side = np.sqrt(pixels)
    return f"{pixels:,.0f} pixels (about {side:.0f}x{side:.0f})"


def markdown(result: dict) -> str:
    """The run as Markdown: facts, sampling times, networks, crossovers, training steps."""
    plan = result["plan"]
    methods = list(dict.fromkeys(r["method"] for r in result["sampling"]))
    sampling = []
    for device in result["devices"]:
        for channels in plan["channels"]:
            for size in plan["sizes"]:
                cells = [f"{_seconds(r)} ({r['evaluations']:,})" for m in methods for r in result["sampling"]
                         if (r["device"], r["channels"], r["size"], r["method"]) == (device, channels, size, m)]
                sampling.append([device, f"{channels}x{size}x{size}", *cells])
    memory = [[f"{channels}x{size}x{size}", *(_memory(r) for m in methods for r in result["sampling"]
                                             if (r["device"], r["channels"], r["size"], r["method"])
                                             == ("cpu", channels, size, m))]
              for channels in plan["channels"] for size in plan["sizes"]]
    networks = [[f"{n['channels']}x{n['size']}x{n['size']}",
                 *(text for family in FAMILIES for text in (f"{n[family + '_parameters']:,}",
                                                             f"{n[family + '_flops'] / 1e9:.4f}"))]
                for n in result["networks"] if n["device"] == result["devices"][0]]
    crossings = [[c["device"], c["channels"], c["autoregressive"], c["diffusion"], _where(c["pixels"], plan["sizes"])]
                 for c in result["crossovers"]]
    training = [[r["device"], "PixelCNN" if r["family"] == "pixelcnn" else "U-Net (DDPM)", f"{r['size']}x{r['size']}",
                 cell(r["minigen_s"], "{:.1f} ms", 1e3), cell(r["torch_s"], "{:.1f} ms", 1e3),
                 cell(r["ratio"], "{:.2f}x"),
                 f"{r['minigen_first_loss']:.4f} / {cell(r['torch_first_loss'], '{:.4f}')}"]
                for r in result["training"]]
    return "\n".join([
        facts_line(result), "",
        f"**Sampling a batch of {plan['batch']} images** (seconds; * = extrapolated from a timed prefix "
        f"of the sequential steps, cap {plan['cap']:g} s). Sequential network evaluations in brackets.", "",
        markdown_table(["device", "image", *methods], sampling, "ll" + "r" * len(methods)), "",
        "**Peak memory of sampling** (MiB the run adds to the process on the CPU; * = of the timed prefix "
        "only, so a cache that grows with the image is undercounted there).", "",
        markdown_table(["image", *methods], memory, "l" + "r" * len(methods)), "",
        "**The networks** (parameters; GFLOPs of one full-image evaluation, per image, counted over "
        "convolutions and linear layers):", "",
        markdown_table(["image", *(f"{NAMES[family]} {what}" for family in FAMILIES for what in ("params", "GFLOPs"))],
                       networks, "l" + "rr" * len(FAMILIES)), "",
        "**Crossover**: the image size (pixels H*W, interpolated on log-log axes) from which the "
        "diffusion sampler is faster than the autoregressive one.", "",
        markdown_table(["device", "channels", "autoregressive", "diffusion", "crossover"], crossings, "lrlll"), "",
        f"**Training step** (forward, backward, Adam; batch {plan['train_batch']}, 1 channel; median of "
        f"{plan['train_repeats']}); PyTorch CPU eager runs the same networks from the same weights.", "",
        markdown_table(["device", "network", "image", "minigen", "PyTorch", "minigen / PyTorch",
                        "first loss, minigen / PyTorch"], training, "lllrrrr")])


def figure(result: dict):
    """Log-log sampling time vs pixels, one panel per device and channel count; hollow
    markers are extrapolated; dotted lines mark where DDIM overtakes the cached PixelCNN."""
    import matplotlib.pyplot as plt

    panels = [(d, c) for d in result["devices"] for c in result["plan"]["channels"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (device, channels) in zip(axes[0], panels):
        rows = [r for r in result["sampling"] if r["device"] == device and r["channels"] == channels]
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            pixels = [r["size"] ** 2 for r in mine]
            line, = ax.plot(pixels, [r["seconds"] for r in mine], "-", label=method)
            for p, r in zip(pixels, mine):
                ax.plot(p, r["seconds"], "o", color=line.get_color(),
                        markerfacecolor="none" if r["extrapolated"] else line.get_color())
        overtakes = [c for c in result["crossovers"]
                     if (c["device"], c["channels"], c["autoregressive"]) == (device, channels, "pixelcnn cached")
                     and c["diffusion"].startswith("ddim") and c["pixels"] is not None]
        for k, c in enumerate(overtakes):
            ax.axvline(c["pixels"], linestyle=":", color="grey",
                       label="DDIM overtakes the cached PixelCNN" if k == 0 else None)
        ax.set(xscale="log", yscale="log", xlabel="pixels (H x W)", ylabel="seconds per batch",
               title=f"{device}, {channels} channel{'s' if channels > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_outputs(result: dict, out_dir) -> dict:
    """timing.json, timing.md and timing.png in ``out_dir``; returns their paths."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "timing.json", "markdown": out / "timing.md", "plot": out / "timing.png"}
    write_text_atomically(paths["json"], json.dumps(result, indent=2))
    write_text_atomically(paths["markdown"], markdown(result) + "\n")
    fig = figure(result)
    write_atomically(str(paths["plot"]), lambda file: fig.savefig(file, format="png", dpi=120))
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------
# The command


def _devices(choice: str | None) -> list:
    if choice == "all":
        return ["cpu", "cuda"]
    if choice:
        return [choice]
    return ["cpu", "cuda"] if backend.cuda_available() else ["cpu"]


def _bench(args) -> int:
    plan = PLANS["quick" if args.quick else "full"]
    if args.cap is not None and args.cap <= 0:
        raise UserError(f"--cap must be a positive number of seconds, got {args.cap}")
    check_writable(Path(args.out) / "timing.json", "the results")  # before minutes of timing
    if args.cap is not None:
        plan = Plan(**{**asdict(plan), "cap": args.cap})
    devices = _devices(args.device)
    for device in devices:
        backend.check_device(device)
    result = run(plan, devices, with_torch=not args.no_torch)
    paths = write_outputs(result, args.out)
    print(markdown(result))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


def add_command(commands) -> None:
    """The ``bench`` sub-command of the ``minigen`` CLI."""
    bench = commands.add_parser(
        "bench", help="time sampling (and its memory) and training: PixelCNN, PixelSNAIL, DDPM/DDIM (tables, plot)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="smoke run: 8x8 and 16x16, one channel, short caps")
    bench.add_argument("--device", choices=["cpu", "cuda", "all"],
                       help="where to run (default: the CPU, and the GPU too when one is available)")
    bench.add_argument("--cap", type=float, help="seconds before a sampling run is cut short and extrapolated "
                                                 f"(default {PLANS['full'].cap:g}; --quick {PLANS['quick'].cap:g})")
    bench.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison even if installed")
    bench.add_argument("--out", default="minigen-out/bench",
                       help="folder for timing.json, timing.md and timing.png (default minigen-out/bench)")
    bench.set_defaults(run=_bench)


if __name__ == "__main__":
    # The PyTorch half of bench_training, in its own process (see run_worker).
    serve_worker(lambda framework, plan, device: time_training(framework, Plan(**plan), device))
