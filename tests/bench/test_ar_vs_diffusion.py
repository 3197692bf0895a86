"""`minigen bench`: the quick run writes a valid table; the PyTorch twins compute the same functions."""

import json

import numpy as np
import pytest

import minigen as mg
from minigen import cli
from minigen.bench import ar_vs_diffusion as timing
from minigen.bench.timing import StopTiming
from minigen.models.pixelcnn import PixelCNN


def test_bench_quick_writes_a_valid_json_table_markdown_and_plot(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--no-torch", "--device", "cpu", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "timing.json").read_text())
    plan = timing.PLANS["quick"]
    methods = ["pixelcnn naive", "pixelcnn cached", "pixelsnail naive", "pixelsnail cached", "ddpm T=1000",
               "ddim S=10"]
    rows = {(r["size"], r["method"]): r for r in result["sampling"]}
    assert set(rows) == {(size, m) for size in plan.sizes for m in methods}
    for size in plan.sizes:
        evaluations = [rows[size, m]["evaluations"] for m in methods]
        assert evaluations == [size * size] * 4 + [1000, 10], "C*H*W four times, T and S"
        for m in methods:
            row = rows[size, m]
            assert row["seconds"] > 0 and 1 <= row["steps_timed"] <= row["total_steps"]
            assert row["extrapolated"] == (row["steps_timed"] < row["total_steps"])
            assert row["peak_mib"] is None or row["peak_mib"] >= 0
    assert all(n[f"{family}_flops"] > 0 for n in result["networks"] for family in ("pixelcnn", "pixelsnail", "ddpm"))
    assert len(result["crossovers"]) == 4 * 2, "each autoregressive sampler against each diffusion sampler"
    assert [(r["family"], r["size"]) for r in result["training"]] == [("pixelcnn", 8), ("ddpm", 8)]
    assert all(r["torch_s"] is None for r in result["training"]), "--no-torch"
    assert (tmp_path / "timing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "timing.md").read_text()
    assert table.strip() == capsys.readouterr().out.split("\nwrote ")[0].strip()
    assert "ddpm T=1000" in table and "*" in table, "T = 1000 steps pass the 1 s cap: extrapolated"


def test_bench_rejects_a_bad_cap(capsys, tmp_path):
    assert cli.main(["bench", "--quick", "--cap", "0", "--out", str(tmp_path)]) == 2
    assert "--cap must be a positive number of seconds, got 0" in capsys.readouterr().err


def test_flops_grow_with_the_pixels_and_pixelcnn_and_unet_have_matched_sizes():
    small, large = (timing.flops_per_image(timing.pixelcnn(1, "cpu"), "pixelcnn", 1, s, "cpu") for s in (8, 16))
    assert large == 4 * small, "a fully convolutional network: work proportional to H*W"
    for model in (timing.pixelcnn(1, "cpu"), timing.pixelsnail(1, "cpu")):
        ratio = model.num_parameters() / timing.ddpm(1, 8, "cpu").num_parameters()
        assert 0.8 < ratio < 1.25, f"matched model sizes, got a parameter ratio of {ratio:.2f}"


def test_pixelcnn_on_step_follows_raster_and_colour_order_and_can_stop_the_loop():
    mg.manual_seed(0)
    model = PixelCNN(channels=3, levels=4, hidden=12, blocks=1)
    seen = []
    model.sample(2, (2, 3), cached=True, on_step=lambda c, i, j, x: seen.append((i, j, c)))
    assert seen == [(i, j, c) for i in range(2) for j in range(3) for c in range(3)]

    def stop_after_four(c, i, j, x):
        if len(seen) == 4:
            raise StopTiming
        seen.append((i, j, c))

    seen.clear()
    model.train()
    with pytest.raises(StopTiming):
        model.sample(2, (2, 3), on_step=stop_after_four)
    assert len(seen) == 4 and model.training, "the training mode is restored after an interrupted run"


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="the PyTorch twins need the bench extra (pip install -e '.[bench]')")


def test_twins_compute_the_same_functions_as_minigen(torch):
    from minigen.bench.torch_twins import TorchPixelCNN, TorchUNet

    inputs = timing.training_inputs("pixelcnn", 1, 8, 2)
    model = timing.pixelcnn(1, "cpu")
    ours = model(mg.tensor(inputs["x"])).numpy()
    theirs = TorchPixelCNN.from_minigen(model)(torch.from_numpy(inputs["x"])).detach().numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

    inputs = timing.training_inputs("ddpm", 1, 8, 2)
    model = timing.ddpm(1, 8, "cpu")
    ours = model.net(mg.tensor(inputs["xt"]), mg.tensor(inputs["t"])).numpy()
    twin = TorchUNet.from_ddpm(model)
    theirs = twin(torch.from_numpy(inputs["xt"]), torch.from_numpy(inputs["t"])).detach().numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_bench_training_puts_pytorch_beside_minigen_from_the_same_start(torch):
    plan = timing.Plan(train_sizes=(8,), train_batch=2, train_repeats=1)
    rows = timing.bench_training(plan, "cpu", with_torch=True)
    assert [row["family"] for row in rows] == ["pixelcnn", "ddpm"]
    for row in rows:
        assert row["ratio"] == pytest.approx(row["minigen_s"] / row["torch_s"])
        assert row["torch_first_loss"] == pytest.approx(row["minigen_first_loss"], rel=1e-4)
