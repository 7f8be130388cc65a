"""`python -m app COMMAND ...`: a thin dispatcher.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Only the chosen command's module is imported, so `predict` never pays for training code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("app.inference.cli", "segment every CT in a folder (the FLARE entrypoint)"),
    "export-weights": ("app.weights_export", "convert an nnU-Net v1 model folder into weights/"),
    "synth": ("app.synth.cli", "write synthetic abdominal CT phantoms with labels"),
    "train": ("app.training.cli", "plan, preprocess, train, consolidate and export with nnU-Net v1"),
    "evaluate": ("app.evaluation.cli", "score masks against ground truth: DSC and NSD at 1 mm"),
    "efficiency": ("app.evaluation.efficiency", "time and GPU memory per case, one fresh run per case"),
}


def _usage() -> str:
    lines = ["usage: python -m app COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<16}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines.append("\n`python -m app COMMAND -h` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"python -m app {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)
