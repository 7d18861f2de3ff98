"""The ``descend`` command line.

Each subcommand lives next to the code it drives, in a module that defines
``register(subparsers)``; that function adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
A new subcommand is one line in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `descend --help`.
COMMAND_MODULES: list[str] = [
    "descend.experiments.commands",
    "descend.experiments.sweep",
    "descend.playground.command",
    "descend.analysis.commands",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``descend`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="descend",
        description=(
            "descend: the toolbox of optimization for deep learning, on PyTorch. "
            "Train, compare and diagnose optimizers, schedules, initializations, "
            "normalizations and regularizers."
        ),
    )
    from descend import __version__

    parser.add_argument("--version", action="version", version=f"descend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``descend`` command line on ``argv`` (``sys.argv[1:]`` if None); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from descend._extras import MissingExtra

    try:
        return int(args.func(args) or 0)
    except MissingExtra as e:  # a feature whose optional dependency is not installed
        print(f"descend: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
