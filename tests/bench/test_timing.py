"""The timing harness, on a fake clock: warm-up excluded, sync called, medians right; and the worker protocol."""

import json

import pytest

import minigen as mg
from minigen import nn
from minigen.bench.timing import (adam_step, count_flops, crossover, measure, peak_extra_memory_mib, run_worker,
                                  serve_worker, time_sequential)
from minigen.engine import backend


class FakeClock:
    """Each call to fn advances time by the next duration; the clock reads it."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self):
        return self.now

    def work(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_warmup_is_excluded_and_median_is_right():
    clock = FakeClock([100.0, 100.0, 3.0, 1.0, 2.0, 50.0, 4.0])  # two slow warm-up calls
    syncs = []
    timing = measure(clock.work, repeats=5, warmup=2, device="cuda",
                     clock=clock, sync=lambda device: syncs.append(device))
    assert clock.calls == 7
    assert timing.median == 3.0 and timing.q25 == 2.0 and timing.q75 == 4.0
    assert timing.repeats == 5
    assert syncs == ["cuda"] * 6, "one sync after warm-up and one after every timed call"


def test_measure_synchronises_the_gpu_by_default(cuda_stand_in):
    """With the default ``sync``, every timed call ends in a device synchronisation
    (the CuPy stand-in counts them), and the CPU needs none."""
    seen = []
    measure(lambda: seen.append(cuda_stand_in.cuda.synchronizations), repeats=4, warmup=2, device="cuda")
    assert seen == [0, 0, 1, 2, 3, 4], "the warm-up is synchronised before the first timed call, each call after it"
    assert cuda_stand_in.cuda.synchronizations == 5
    measure(lambda: None, repeats=3, warmup=1, device="cpu")
    assert cuda_stand_in.cuda.synchronizations == 5


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure(lambda: None, repeats=0)


# ----------------------------------------------------------------------------
# time_sequential: a prefix of a long loop, timed and extrapolated


def loop_of(clock, step_seconds):
    """run(on_step) for a loop whose k-th step takes step_seconds[k] on the fake clock."""
    def run(on_step):
        for seconds in step_seconds:
            clock.now += seconds
            on_step()
    return run


def test_time_sequential_extrapolates_a_prefix_past_the_cap():
    clock = FakeClock([])
    syncs = []
    run = loop_of(clock, [1.0] * 100)  # 100 steps of 1 s; the cap stops it after 11 s
    timing = time_sequential(run, total_steps=100, cap=10.5, device="cuda", warmup_steps=2,
                             clock=clock, sync=syncs.append)
    assert timing.extrapolated and timing.runs == 1
    assert timing.steps_timed == 11
    assert timing.seconds == pytest.approx(11.0 * 100 / 11)
    assert set(syncs) == {"cuda"} and len(syncs) >= 12, "synchronised before every clock reading"


def test_time_sequential_excludes_warmup_and_takes_the_median_of_whole_runs():
    clock = FakeClock([])
    runs = iter([[50.0] * 2, [1.0] * 4, [3.0] * 4, [2.0] * 4])  # warm-up prefix, then three runs

    def run(on_step):
        loop_of(clock, next(runs))(on_step)

    timing = time_sequential(run, total_steps=4, cap=1000.0, repeats=3, warmup_steps=2,
                             clock=clock, sync=lambda device: None)
    assert not timing.extrapolated
    assert timing.runs == 3 and timing.steps_timed == 4
    assert timing.seconds == 8.0, "median of 4, 12 and 8 s; the 100 s warm-up is not counted"


def test_time_sequential_rejects_bad_arguments():
    with pytest.raises(ValueError, match="total_steps >= 1"):
        time_sequential(lambda on_step: None, total_steps=0, cap=1.0)
    with pytest.raises(ValueError, match="cap > 0"):
        time_sequential(lambda on_step: None, total_steps=3, cap=0)


# ----------------------------------------------------------------------------
# count_flops and crossover


def test_count_flops_counts_convolutions_and_linear_layers_exactly():
    mg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 5 * 5, 10))
    x = mg.zeros(2, 3, 5, 5)
    conv = 2 * (3 * 3 * 3) * (2 * 8 * 5 * 5)
    linear = 2 * (8 * 5 * 5) * (2 * 10)
    assert count_flops(model, x) == conv + linear
    assert all("forward" not in layer.__dict__ for layer in model.modules()), "the counters are removed"
    assert model(x).shape == (2, 10)


def test_count_flops_removes_its_counters_when_the_model_raises():
    layer = nn.Linear(4, 2)
    with pytest.raises(ValueError):
        count_flops(layer, mg.zeros(1, 3))
    assert "forward" not in layer.__dict__


def test_crossover_of_two_power_laws_is_exact():
    pixels = [10, 100, 10_000]
    autoregressive = [1e-3 * p for p in pixels]  # grows linearly
    diffusion = [1.0, 1.0, 1.0]  # flat: cheaper from p = 1000 on
    assert crossover(pixels, autoregressive, diffusion) == pytest.approx(1000.0)
    assert crossover(pixels, autoregressive, [1e-9] * 3) == 10.0, "already cheaper at the smallest size"
    assert crossover(pixels, autoregressive, [1e9] * 3) is None, "never cheaper"


# ----------------------------------------------------------------------------
# The training-step closure and the fresh-process worker protocol


def test_adam_step_zeroes_computes_backpropagates_updates_and_returns_the_loss():
    calls = []

    class Loss:
        def backward(self):
            calls.append("backward")

        def item(self):
            return 0.5

    class Optimizer:
        def zero_grad(self):
            calls.append("zero_grad")

        def step(self):
            calls.append("step")

    step = adam_step(Optimizer(), lambda: calls.append("loss") or Loss())
    assert calls == [], "building the closure runs nothing"
    assert step() == 0.5
    assert calls == ["zero_grad", "loss", "backward", "step"]


WORKER = '''
import sys
from minigen.bench.timing import serve_worker

def work(kind, plan, device):
    print("a line before the result", flush=True)
    return {"kind": kind, "plan": plan, "device": device}

if not serve_worker(work):
    sys.exit("not called as a worker")
'''


def test_run_worker_round_trips_kind_plan_and_device_through_a_fresh_script(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    plan = {"sizes": [8, 16], "cap": 1.5, "name": "quick"}
    assert run_worker(str(script), "sampling", plan, "cuda") == {"kind": "sampling", "plan": plan, "device": "cuda"}
    assert run_worker(str(script), "torch") == {"kind": "torch", "plan": None, "device": "cpu"}


def test_serve_worker_answers_only_a_worker_call(capsys):
    def work(kind, plan, device):
        return [kind, plan, device]

    assert serve_worker(work, ["--quick", "--json", "out.json"]) is False
    assert capsys.readouterr().out == ""
    assert serve_worker(work, ["--worker", "minigen", "--plan", '{"n": 2}', "--device", "cpu"]) is True
    assert json.loads(capsys.readouterr().out) == ["minigen", {"n": 2}, "cpu"]


def test_the_bench_command_serves_its_training_worker_as_a_module():
    plan = {"train_sizes": [8], "train_batch": 2, "train_repeats": 1}
    rows = run_worker(("-m", "minigen.bench.ar_vs_diffusion"), "minigen", plan)
    assert [(row["family"], row["size"]) for row in rows] == [("pixelcnn", 8), ("ddpm", 8)]
    assert all(row["seconds"] > 0 and row["first_loss"] > 0 for row in rows)


def test_peak_extra_memory_counts_what_a_call_touches_and_restores_the_allocator():
    import numpy as np
    import os
    kept = backend.keeps_freed_memory()
    small = peak_extra_memory_mib(lambda: None)
    if not os.path.exists("/proc/self/clear_refs"):  # not Linux: the documented answer is None
        assert small is None and backend.keeps_freed_memory() == kept
        return
    big = peak_extra_memory_mib(lambda: np.ones(40 * 2**20 // 4, dtype=np.float32).sum())  # 40 MiB, touched
    assert small < 4 and 39 < big < 48
    assert backend.keeps_freed_memory() == kept
