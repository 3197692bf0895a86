"""The timing harness: warm-up, device synchronisation, repeats, median and spread.

Timing GPU code without synchronising measures how fast work is *queued*,
not done; timing the first call measures allocation and compilation. So
every measurement here runs ``warmup`` untimed calls, then ``repeats`` timed
calls, each closed by :func:`minigen.synchronize`, and reports the median
(robust to the odd slow call) with the interquartile range as the spread.

Also here: the training-step closure that every benchmark times, and the
protocol that runs one library's measurements in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..engine import backend
from ..engine.nn import Conv2d, Linear


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the 25th/75th percentiles of the repeats."""

    median: float
    q25: float
    q75: float
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.q25 * 1e3:.3f}-{self.q75 * 1e3:.3f}, n={self.repeats})"


def measure(fn, repeats: int = 20, warmup: int = 3, device: str = "cpu",
            clock=time.perf_counter, sync=backend.synchronize) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` synchronised, timed calls.

    Each repeat reads ``clock()`` before the call and after ``sync(device)``
    (a GPU runs asynchronously: without the sync a timing measures the
    queueing of work, not the work); one ``sync`` also ends the warm-up.
    Returns ``Timing(median, q25, q75, repeats)`` in seconds, the percentiles
    as ``np.percentile`` computes them (linear interpolation).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    ### BEGIN SOLUTION
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    q25, median, q75 = np.percentile(times, [25, 50, 75])
    return Timing(float(median), float(q25), float(q75), repeats)
    ### END SOLUTION


def adam_step(opt, loss_fn):
    """A closure: zero the gradients, compute ``loss_fn()``, backward, update; return the loss.

    The same five calls in minigen and in PyTorch, so one closure times a
    training step in either (any optimizer with ``zero_grad`` and ``step``;
    the benchmarks use Adam).
    """
    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()
    return step


# ----------------------------------------------------------------------------
# Long sequential loops: time a prefix, extrapolate the rest


class StopTiming(Exception):
    """Raised from a sampler's ``on_step`` to end a timed prefix early."""


@dataclass(frozen=True)
class SequentialTiming:
    """Seconds for a whole loop of ``total_steps`` sequential steps.

    ``extrapolated`` is True when only the first ``steps_timed`` steps ran (the
    time cap was reached) and ``seconds`` = their time x total / timed.
    ``runs`` full runs were timed otherwise (``seconds`` is their median).
    """

    seconds: float
    total_steps: int
    steps_timed: int
    extrapolated: bool
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def time_sequential(run, total_steps: int, cap: float, device: str = "cpu", repeats: int = 3,
                    warmup_steps: int = 2, clock=time.perf_counter, sync=backend.synchronize) -> SequentialTiming:
    """Time ``run(on_step)``, a loop of ``total_steps`` steps that calls ``on_step()`` after each.

    First a warm-up prefix of ``warmup_steps`` steps (allocation, cached weights),
    untimed. Then whole runs, up to ``repeats`` of them, starting another only
    while the runs so far took under half of ``cap`` seconds. A run that passes ``cap`` is stopped at the
    next step and its time extrapolated linearly: the steps of a sampling loop
    (a network evaluation each) cost the same, so a measured prefix predicts the
    whole. The device is synchronised before every clock reading.
    """
    if total_steps < 1 or cap <= 0 or repeats < 1:
        raise ValueError(f"time_sequential: need total_steps >= 1, cap > 0 and repeats >= 1, "
                         f"got {total_steps}, {cap} and {repeats}")
    _run_prefix(run, lambda done: done >= warmup_steps)
    sync(device)
    times, started = [], clock()
    while len(times) < repeats and (not times or clock() - started < cap / 2):
        start = clock()

        def over_cap(done):
            sync(device)
            return clock() - start > cap

        done = _run_prefix(run, over_cap)
        sync(device)
        elapsed = clock() - start
        if done < total_steps:
            return SequentialTiming(elapsed * total_steps / done, total_steps, done, True, 1)
        times.append(elapsed)
    return SequentialTiming(float(np.median(times)), total_steps, total_steps, False, len(times))


def prefix_peak_memory_mib(run, steps: int) -> float | None:
    """The peak extra memory (MiB) of the first ``steps`` steps of ``run(on_step)``
    (see :func:`peak_extra_memory_mib`): for a loop too long to run whole, the
    same prefix that :func:`time_sequential` timed."""
    return peak_extra_memory_mib(lambda: _run_prefix(run, lambda done: done >= steps))


def _run_prefix(run, should_stop) -> int:
    """Run ``run(on_step)`` until it ends or ``should_stop(steps done)``; return the steps done."""
    done = 0

    def on_step(*_):
        nonlocal done
        done += 1
        if should_stop(done):
            raise StopTiming

    try:
        run(on_step)
    except StopTiming:
        pass
    return done


# ----------------------------------------------------------------------------
# Work per network evaluation, and where two cost curves cross


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_memory_mib(fn) -> float | None:
    """The peak resident memory (MiB) that calling ``fn()`` adds to this process,
    or None where it cannot be read (not Linux).

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs;
    ``fn``'s own peak is then VmHWM minus the resident size before the call.
    While it runs, freed memory goes back to the system (glibc's default, see
    :func:`minigen.engine.backend.keep_freed_memory`): pages kept from earlier
    work would otherwise be reused and not counted.
    """
    kept = backend.keeps_freed_memory()
    backend.keep_freed_memory(False)  # hands back kept pages now: before the peak is reset
    try:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return None
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    finally:
        if kept:
            backend.keep_freed_memory(True)


def count_flops(model, *inputs) -> int:
    """Floating-point operations of one call ``model(*inputs)``, counted over its
    convolutions and linear layers (2 per multiply-add; masked weights count, as
    dense kernels compute them; normalisations and activations are left out).
    """
    total = 0

    def counted(layer):
        forward = layer.forward

        def wrapper(x, *rest, **kwargs):
            nonlocal total
            out = forward(x, *rest, **kwargs)
            per_output = layer.weight.size // layer.weight.shape[0]  # in * kh * kw, or in
            total += 2 * per_output * out.size
            return out
        return wrapper

    layers = [m for m in model.modules() if isinstance(m, (Conv2d, Linear))]
    for layer in layers:
        object.__setattr__(layer, "forward", counted(layer))
    try:
        model(*inputs)
    finally:
        for layer in layers:
            del layer.__dict__["forward"]
    return total


def crossover(sizes, slower_first, faster_later):
    """Where ``faster_later`` becomes cheaper than ``slower_first``, on log-log axes.

    ``sizes`` increase; the two sequences are costs at those sizes. Returns the
    size where the cost ratio crosses 1 (interpolating log ratio linearly in
    log size), ``sizes[0]`` if ``faster_later`` is already cheaper there, or
    None if it never becomes cheaper within ``sizes``.
    """
    log_ratio = np.log(np.asarray(faster_later, dtype=float) / np.asarray(slower_first, dtype=float))
    if log_ratio[0] < 0:
        return float(sizes[0])
    for k in range(1, len(sizes)):
        if log_ratio[k] < 0:
            a, b = np.log(sizes[k - 1]), np.log(sizes[k])
            fraction = log_ratio[k - 1] / (log_ratio[k - 1] - log_ratio[k])
            return float(np.exp(a + fraction * (b - a)))
    return None


# ----------------------------------------------------------------------------
# One library per process: the worker protocol


def run_in_fresh_process(*argv: str) -> dict:
    """Run ``python *argv`` in a new interpreter; return the JSON of its last stdout line.

    One process per library keeps one library's thread pool from competing
    with another's for the cores. The worker's stderr passes through.
    """
    out = subprocess.run([sys.executable, *argv], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(target, kind: str, plan=None, device: str = "cpu"):
    """Run the ``kind`` worker of a benchmark in a fresh interpreter; return its JSON result.

    ``target`` starts the benchmark: a script's path, or ``("-m", module)``.
    It is called as ``target --worker KIND --plan JSON --device DEVICE`` and
    answers through :func:`serve_worker`; ``plan`` is anything JSON can carry.
    """
    target = [target] if isinstance(target, str) else list(target)
    return run_in_fresh_process(*target, "--worker", kind, "--plan", json.dumps(plan), "--device", device)


def serve_worker(work, argv=None) -> bool:
    """The worker's half of :func:`run_worker`, called first thing by the benchmark.

    When ``argv`` (default: the command line) starts with ``--worker``, print
    ``work(kind, plan, device)`` as one JSON line and return True; otherwise
    return False, and the benchmark goes on to its own command line.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["--worker"]:
        return False
    parser = argparse.ArgumentParser(description="one worker of a benchmark (see minigen.bench.timing.run_worker)")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--plan", type=json.loads, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(json.dumps(work(args.worker, args.plan, args.device)))
    return True


def machine_facts(devices, torch_version: str | None = None) -> dict:
    """Machine, devices, date and library versions: the first keys of every benchmark result."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"machine": f"{platform.machine()}, {cores} cores", "devices": list(devices),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "numpy": np.__version__,
            "torch": torch_version}


def facts_line(result: dict) -> str:
    """The sentence above a results table, from the keys :func:`machine_facts` wrote."""
    return (f"Machine: {result['machine']}; devices {', '.join(result['devices'])}; {result['date']}; "
            f"NumPy {result['numpy']}; PyTorch {result['torch'] or 'not installed'}.")
