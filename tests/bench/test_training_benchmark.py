"""benchmarks/training.py: its quick plan runs minigen's side (no PyTorch needed),
and its table reports the ratios and the slowdowns beside a busy core."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "training.py"


def _load():
    spec = importlib.util.spec_from_file_location("training_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_worker_times_every_network_in_minigen():
    training = _load()
    plan = dict(training.PLANS["quick"], repeats=1)
    result = training.worker("minigen", plan, "cpu")
    assert set(result) == {f"{family} {size}" for family in training.FAMILIES for size in plan["sizes"]}
    assert all(seconds > 0 for seconds in result.values())


def test_markdown_reports_ratios_and_slowdowns_without_torch():
    training = _load()
    facts = dict(machine="x86_64, 2 cores", devices=["cpu"], date="2026-01-01 00:00 UTC", numpy="2", torch=None)
    result = {**facts, "plan": training.PLANS["full"],
              "alone": {"minigen": {"pixelcnn 16": 0.1}, "minigen-all-cores": {"pixelcnn 16": 0.08},
                        "torch": {"pixelcnn 16": 0.05}},
              "busy": {"minigen": {"pixelcnn 16": 0.12}, "minigen-all-cores": {"pixelcnn 16": 0.16},
                       "torch": {"pixelcnn 16": 0.2}}}
    table = training.markdown(result)
    assert ("| PixelCNN 16x16, batch 32 | 100.0 ms | 80.0 ms | 50.0 ms | 2.00x | 1.60x | 1.20x | 2.00x | 4.00x "
            "| - | - |") in table
    result = {**result, "alone": {"minigen": {"ddpm 32": 0.1}, "minigen-products": {"ddpm 32": 0.04}},
              "busy": {"minigen": {"ddpm 32": 0.1}}}
    assert ("| DDPM U-Net 32x32, batch 32 | 100.0 ms | - | - | - | - | 1.00x | - | - | 40.0 ms | - |"
            in training.markdown(result))


def test_the_products_floor_records_every_convolution_of_a_step():
    training = _load()
    from minigen.bench.ar_vs_diffusion import PIXELCNN, minigen_training_step
    step = minigen_training_step("pixelcnn", 1, 8, 4, "cpu")
    shapes = training.product_shapes(step, step.model)
    first_kernel, hidden, blocks = PIXELCNN.get("first_kernel", 7), PIXELCNN["hidden"], PIXELCNN["blocks"]
    assert len(shapes) == 1 + 3 * blocks + 2  # mask A, three per residual block, two 1x1 heads
    live_a = first_kernel * first_kernel // 2  # mask A keeps the taps strictly before the centre
    assert shapes[0] == (4 * 8 * 8, live_a * 1, hidden)
    assert all(rows == 4 * 8 * 8 for rows, _, _ in shapes)
    timing = training.worker("minigen-products", dict(training.PLANS["quick"], repeats=1), "cpu")
    assert set(timing) == {f"{family} {size}" for family in training.FAMILIES for size in [8]}
