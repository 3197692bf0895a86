"""The ``minigen`` command line: ``minigen --help`` lists what it can do."""

from __future__ import annotations

import argparse
import sys

from . import backend


def _demo(args) -> int:
    """Train the conv-net digit classifier on the bundled digits and report accuracy."""
    from .data import load_digits
    from .models.classifier import accuracy, train_classifier

    backend.manual_seed(args.seed)
    train, test = load_digits("train"), load_digits("test")
    print(f"minigen demo: a conv net on the bundled 8x8 digits "
          f"({len(train)} train / {len(test)} test images) on {args.device}")
    model, seconds = train_classifier(train, epochs=args.epochs, device=args.device, seed=args.seed)
    print(f"test accuracy {accuracy(model, test, args.device):.1%} "
          f"after {args.epochs} epochs in {seconds:.1f} s ({model.num_parameters():,} parameters)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigen", description="Image generation from scratch, taught in code.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="train a small model on the bundled digits and report it")
    demo.add_argument("--device", default="cpu", choices=backend.DEVICES, help="cpu (default) or cuda")
    demo.add_argument("--epochs", type=int, default=15, help="passes over the training set (default 15)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except backend.DeviceError as exc:
        print(f"minigen: {exc}", file=sys.stderr)
        return 2
