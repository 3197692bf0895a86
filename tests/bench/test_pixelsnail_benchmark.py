"""benchmarks/pixelsnail.py: matched model sizes, the receptive-field figure, and exact tables."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pixelsnail.py"


def _load():
    spec = importlib.util.spec_from_file_location("pixelsnail_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_three_models_have_about_the_same_number_of_parameters():
    bench = _load()
    from minigen.bench.long_range import parameter_count
    for levels in (2, 17):
        counts = [parameter_count(build(levels)) for build in bench.MODELS.values()]
        assert max(counts) / min(counts) < 1.1, counts


def test_only_attention_reaches_the_first_pixel_from_the_last(tmp_path):
    bench = _load()
    reached = bench.field_figure(str(tmp_path / "fields.png"), size=16)
    assert reached["PixelSNAIL"] == 1.0 and reached["DDPM U-Net"] == 1.0
    assert reached["PixelCNN"] < 0.5 and reached["Gated PixelCNN"] < 0.5
    assert (tmp_path / "fields.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_reports_each_model_and_the_published_figure():
    bench = _load()
    facts = dict(machine="x86_64, 2 cores", devices=["cpu"], date="2026-01-01 00:00 UTC", numpy="2", torch=None)
    result = {**facts, "plan": bench.PLANS["full"],
              "copy_rows": [dict(model="PixelSNAIL", parameters=96354, steps=500, copied_bits=0.01234,
                                 free_bits=1.0004, bits_per_image=240.2)],
              "likelihood": [dict(data="binarized MNIST 28x28", model="PixelCNN", parameters=103910, steps=700,
                                  nll=95.123)]}
    table = bench.markdown(result)
    assert "| PixelSNAIL | 96,354 | 500 | 0.012 | 1.000 | 240.2 |" in table
    assert "| binarized MNIST 28x28 | PixelCNN | 103,910 | 700 | 95.12 | 81.30 |" in table
