"""DDPM sampling: time and quality of ancestral sampling (all T steps) vs DDIM,
with a Gated PixelCNN trained on the same data as the autoregressive reference.

    python benchmarks/ddpm.py [--steps 3000] [--n 256] [--json results.json]

Trains one DDPM on the 8x8 digits (17 grey levels) with the shared training
loop, then draws ``n`` images with each sampler and reports seconds and the
sample-quality measures of :mod:`minigen.metrics` (Frechet distance in the
engine-trained classifier's features, class-balance entropy), next to what as
many real images score.
"""

from __future__ import annotations

import argparse
import time

from minigen.engine import backend
from minigen.metrics import sample_quality
from minigen.train import TrainConfig, train
from minigen.bench.report import markdown_table, publish

SAMPLERS = [("ddpm", None)] + [("ddim", s) for s in (10, 20, 50, 100)]


def _row(name: str, evaluations: int, draw, device: str) -> dict:
    """Time ``draw()`` (synchronised) and score its images."""
    start = time.perf_counter()
    images = draw()
    backend.synchronize(device)
    seconds = time.perf_counter() - start
    quality = sample_quality(backend.to_device(images, "cpu"), 17)
    return {"sampler": name, "steps": evaluations, "seconds": seconds,
            "frechet_distance": quality["frechet_distance"],
            "class_entropy_bits": quality["class_balance"]["entropy_bits"],
            "real_images_frechet_distance": quality["real_images_frechet_distance"]}


def run(steps: int, n: int, device: str = "cpu", pixelcnn_steps: int = 1000) -> dict:
    common = dict(data="digits", levels=17, batch_size=64, lr=2e-3, device=device, verbose=False)
    result = train(TrainConfig(family="ddpm", steps=steps, **common,
                               model={"base_channels": 32, "T": 1000, "schedule": "cosine"}))
    model = result["model"]
    rows = [_row(sampler, sampler_steps or model.schedule.T,
                 lambda: model.sample(n, sampler=sampler, steps=sampler_steps, seed=1, device=device), device)
            for sampler, sampler_steps in SAMPLERS]
    reference = train(TrainConfig(family="gated-pixelcnn", steps=pixelcnn_steps, **common,
                                  model={"hidden": 32, "layers": 6}))
    pixelcnn = reference["model"]
    rows.append(_row("gated-pixelcnn (cached)", 64,
                     lambda: pixelcnn.sample(n, cached=True, seed=1, device=device), device))
    return {"train_steps": steps, "n": n, "device": device, "parameters": model.num_parameters(),
            "test_nll_bound_bits_per_dim": result["test_bits_per_dim"], "train_seconds": result["seconds"],
            "pixelcnn_test_bits_per_dim": reference["test_bits_per_dim"], "pixelcnn_steps": pixelcnn_steps,
            "rows": rows, "date": time.strftime("%Y-%m-%d")}


def markdown(result: dict) -> str:
    """The results table, with the two models' training above it and real images' score below."""
    rows = [[row["sampler"], row["steps"], f"{row['seconds']:.2f}", f"{row['frechet_distance']:.1f}",
             f"{row['class_entropy_bits']:.2f}"] for row in result["rows"]]
    rows.append([f"{result['n']} real training images", "-", "-",
                 f"{result['rows'][0]['real_images_frechet_distance']:.1f}", "-"])
    return "\n".join([
        f"DDPM ({result['parameters']:,} parameters, {result['train_steps']} training steps in "
        f"{result['train_seconds']:.0f} s, test bound {result['test_nll_bound_bits_per_dim']:.3f} bits/dim) "
        f"on 8x8 digits with 17 levels; Gated PixelCNN ({result['pixelcnn_steps']} steps, exact test NLL "
        f"{result['pixelcnn_test_bits_per_dim']:.3f} bits/dim) on the same data; {result['n']} samples each; "
        f"{result['device']}; {result['date']}.", "",
        markdown_table(["sampler", "network evaluations", "seconds", "Frechet distance",
                        "class entropy (bits, max 3.32)"], rows, "lrrrr")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    parser.add_argument("--n", type=int, default=256, help="samples per sampler (default 256)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(args.steps, args.n, args.device)
    publish(result, markdown(result), args.json)


if __name__ == "__main__":
    main()
