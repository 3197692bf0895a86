"""benchmarks/latent.py: its tables, its counts of sequential evaluations, the judge's
features and the Frechet floor, and a tiny plan end to end on real MNIST (skipped without it)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "latent.py"


def _load():
    spec = importlib.util.spec_from_file_location("latent_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FACTS = dict(machine="x86_64, 2 cores", devices=["cpu"], date="2026-01-01 00:00 UTC", numpy="2", torch=None)


def _fake_result(bench):
    sampling = dict(seconds=1.234, extrapolated=False, evaluations=784, peak_mib=12.3)
    quality = dict(frechet=1.23456, class_counts=[1] * 10, class_entropy_bits=3.1234)
    rows = [
        dict(family="PixelSNAIL", space="pixels", parameters=134816, train_seconds=270.2, steps=300,
             first_stage_seconds=0.0, first_stage_steps=0, sampling=sampling, quality=quality,
             likelihood=dict(kind="exact", nats=700.04, bits_per_dim=1.28819)),
        dict(family="DDPM", space="pixels", parameters=551905, train_seconds=270.0, steps=400,
             first_stage_seconds=0.0, first_stage_steps=0, sampling={**sampling, "extrapolated": True,
                                                                     "evaluations": 50, "peak_mib": None},
             quality=quality, likelihood=dict(kind="bound", nats=900.0, bits_per_dim=1.656)),
        dict(family="VAE + latent DDPM", space="latents", parameters=539972, train_seconds=130.0, steps=1000,
             first_stage_seconds=140.0, first_stage_steps=350, sampling={**sampling, "evaluations": 51},
             quality=quality, likelihood=dict(kind="latent L_simple", value=0.12345),
             first_stage=dict(kind="VAE", parameters=452297, reconstruction_frechet=0.5, mean_abs_error=7.25)),
        dict(family="VQ-VAE + token prior", space="tokens", parameters=128480, train_seconds=135.0, steps=1500,
             first_stage_seconds=135.0, first_stage_steps=340, sampling={**sampling, "evaluations": 50},
             quality=quality, likelihood=dict(kind="code NLL", value=3.456, uniform=6.0),
             first_stage=dict(kind="VQ-VAE", parameters=463825, reconstruction_frechet=0.75, mean_abs_error=9.0,
                              rate_bits=294.0, perplexity=31.25)),
    ]
    sweep = [dict(family="DDPM", space="pixels", size=56, grid=56, seconds=100.5, extrapolated=True,
                  evaluations=50, peak_mib=190.4),
             dict(family="VQ-VAE + token prior", space="tokens", size=56, grid=14, seconds=0.321,
                  extrapolated=False, evaluations=197, peak_mib=5.0)]
    return {**FACTS, "plan": bench.PLANS["full"], "judge_accuracy": 0.981, "frechet_floor": 0.0456,
            "rows": rows, "sweep": sweep}


def test_markdown_rows_say_what_each_likelihood_is():
    bench = _load()
    text = bench.markdown(_fake_result(bench))
    assert ("| PixelSNAIL | pixels | 134,816 | 270 s, 300 steps | 1.23 | 784 | 12 | 1.235 | 3.12 of 3.32 "
            "| NLL 700.0 nats (1.288 bits/dim), exact |") in text
    assert ("| DDPM | pixels | 551,905 | 270 s, 400 steps | 1.23* | 50 | - | 1.235 | 3.12 of 3.32 "
            "| NLL <= 900.0 nats (1.656 bits/dim), bound |") in text
    assert ("| VAE + latent DDPM | latents | 539,972 | 140 s, 350 steps + 130 s, 1,000 steps | 1.23 | 51 | 12 "
            "| 1.235 | 3.12 of 3.32 | latent L_simple 0.1235 (not a pixel likelihood) |") in text
    assert ("| VQ-VAE + token prior | tokens | 128,480 | 135 s, 340 steps + 135 s, 1,500 steps | 1.23 | 50 | 12 "
            "| 1.235 | 3.12 of 3.32 | code NLL 3.46 bits/token of 6 uniform (not a pixel likelihood) |") in text
    assert "| VAE | 452,297 | 140 | 350 | 0.500 | 7.2 | 4x7x7 floats |" in text
    assert "| VQ-VAE | 463,825 | 135 | 340 | 0.750 | 9.0 | 294 bits, perplexity 31.2 of 64 |" in text
    assert "| DDPM | pixels | 56x56 | 56x56 | 50 | 100.50* | 190 |" in text
    assert "| VQ-VAE + token prior | tokens | 56x56 | 14x14 | 197 | 0.32 | 5 |" in text
    assert "**0.046**" in text and "98.1% test accuracy" in text and "sampling 64 (s)" in text


@pytest.mark.parametrize("family", ["Gated PixelCNN", "DDPM", "VAE + latent DDPM", "VQ-VAE + token prior"])
def test_the_sampling_loop_makes_the_counted_steps_and_returns_images(family):
    bench = _load()
    first = {kind: bench.build_first_stage(kind).eval() for kind in ("VAE", "VQ-VAE")}
    model = bench.build(family, 28, first.get(bench.TWO_STAGE.get(family))).eval()
    steps = []
    images = bench.sampling_run(family, model, 2, 28, ddim_steps=3)(lambda *_: steps.append(1))
    assert len(steps) == bench.loop_steps(family, 28, 3)
    assert bench.sequential_evaluations(family, 28, 3) == len(steps) + (family in bench.TWO_STAGE)
    assert images.shape == (2, 1, 28, 28) and images.min() >= 0 and images.max() <= 255


def test_the_timed_run_draws_what_model_sample_draws():
    bench = _load()
    vq = bench.build_first_stage("VQ-VAE").eval()
    prior = bench.build("VQ-VAE + token prior", 28, vq).eval()
    timed = bench.sampling_run("VQ-VAE + token prior", prior, 3, 28, 50, seed=4)(bench.ignore)
    np.testing.assert_array_equal(timed, prior.sample(3, seed=4))
    vae = bench.build_first_stage("VAE").eval()
    latent = bench.build("VAE + latent DDPM", 28, vae).eval()
    timed = bench.sampling_run("VAE + latent DDPM", latent, 2, 28, 3, seed=1)(bench.ignore)
    np.testing.assert_array_equal(timed, latent.sample(2, steps=3, seed=1))


def test_judge_features_are_pooled_and_the_floor_of_identical_sets_is_zero():
    bench = _load()
    from minigen.models.classifier import DigitClassifier
    judge = DigitClassifier(1, 28).eval()
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28))
    features, classes = bench.judge_features(judge, images)
    assert features.shape == (40, 128) and classes.shape == (40,) and set(classes) <= set(range(10))
    assert bench.frechet_floor(judge, features, images) == pytest.approx(0.0, abs=1e-6)
    assert bench.frechet_floor(judge, features, images[:20] // 2) > 1e-3


def test_upsample_repeats_each_pixel():
    bench = _load()
    x = np.arange(4).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(bench.upsample(x, 2)[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                                                [2, 2, 3, 3]])


def test_a_tiny_plan_runs_end_to_end_on_mnist():
    bench = _load()
    if bench.mnist_root() is None:
        pytest.skip("the MNIST files are not here ($MINIGEN_DATA, the cache, or shared/data/mnist beside the clone)")
    plan = {**bench.PLANS["quick"], "budget": 0.5, "train_images": 64, "classifier_images": 64,
            "reference_images": 16, "quality_images": 4, "timing_batch": 2, "ddim_steps": 2, "cap": 0.2,
            "nll_images": 4, "bound_images": 2, "bound_timesteps": 2, "sweep_sizes": (28,), "sweep_cap": 0.05}
    result = bench.run(plan, families=("DDPM", "VQ-VAE + token prior"), progress=lambda line: None)
    kinds = [row["likelihood"]["kind"] for row in result["rows"]]
    assert kinds == ["bound", "code NLL"]
    assert result["rows"][1]["first_stage"]["rate_bits"] == 49 * 6
    assert [row["evaluations"] for row in result["sweep"]] == [784, 784, 2, 3, 50]
    assert "| VQ-VAE + token prior | tokens |" in bench.markdown(result)
