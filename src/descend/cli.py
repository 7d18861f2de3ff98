"""The ``descend`` command line.

Each subcommand lives next to the code it drives, in a module that defines
``register(subparsers)``; that function adds its parser and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
A new subcommand is one line in ``COMMAND_MODULES``.

Errors: whatever a subcommand raises ends as one line on stderr, never a traceback
(:func:`error_line`): ``descend: error: <message>`` with exit status 2 for bad input
(a recipe, a file, an argument, a full disk: the message names the file, the field and
the value), ``descend: interrupted`` with 130 for Ctrl-C, and ``descend: internal
error: ...`` with 1 for anything else (a bug), with a hint to rerun with
``--traceback`` (or ``DESCEND_TRACEBACK=1`` in the environment), which prints the
traceback as well.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys

# Order here is the order in `descend --help`.
COMMAND_MODULES: list[str] = [
    "descend.experiments.commands",
    "descend.experiments.sweep",
    "descend.playground.command",
    "descend.analysis.commands",
]

EXIT_USAGE = 2        # bad input: a recipe, a file, an argument, the environment
EXIT_INTERNAL = 1     # an unexpected error: a bug
EXIT_INTERRUPTED = 130
MAX_MESSAGE = 2000    # characters of one error line (a huge `Received:` value is cut)
TRACEBACK_ENV = "DESCEND_TRACEBACK"


def build_parser() -> argparse.ArgumentParser:
    """The ``descend`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="descend",
        description=(
            "descend: the toolbox of optimization for deep learning, on PyTorch. "
            "Train, compare and diagnose optimizers, schedules, initializations, "
            "normalizations and regularizers."
        ),
        epilog=("Errors are printed as one line (`descend: error: ...`, exit status 2; "
                "Ctrl-C: 130; an internal error: 1). --traceback, or DESCEND_TRACEBACK=1 in "
                "the environment, also prints the Python traceback."),
    )
    from descend import __version__

    parser.add_argument("--version", action="version", version=f"descend {__version__}")
    tb_help = ("on an error, also print the Python traceback (for debugging; "
               f"the same as {TRACEBACK_ENV}=1)")
    parser.add_argument("--traceback", action="store_true", help=tb_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():  # also accepted after the subcommand
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=tb_help)
    return parser


def _one_line(text: str) -> str:
    text = re.sub(r"\s*\n\s*", " ", str(text)).strip()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 20] + " ... (cut)"
    return text


def _os_message(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    name = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    msg = f"{where}: {what}" if where else what
    if name and name not in msg:
        msg += f" ({name})"
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        msg += (". The disk is full: nothing was replaced (descend writes to a temporary file or "
                "folder and moves it into place only when it is complete)")
    return msg


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one line printed for ``exc`` and the exit status, as :func:`main` reports it.

    >>> error_line(ValueError("r.yaml: epochs: `epochs` must be >= 1. Received: epochs=0"))
    ('descend: error: r.yaml: epochs: `epochs` must be >= 1. Received: epochs=0', 2)
    >>> error_line(OSError(28, "No space left on device", "runs/r/results.json"))[0][:72]
    'descend: error: runs/r/results.json: No space left on device (ENOSPC). T'
    >>> error_line(KeyboardInterrupt())
    ('descend: interrupted', 130)
    >>> line, status = error_line(ZeroDivisionError("division by zero"))
    >>> status, line.startswith("descend: internal error: ZeroDivisionError: division by zero")
    (1, True)
    """
    from descend._extras import MissingExtra
    from descend.io import FileSafetyError

    if isinstance(exc, KeyboardInterrupt):
        return "descend: interrupted", EXIT_INTERRUPTED
    if isinstance(exc, OSError) and not isinstance(exc, FileSafetyError):
        return "descend: error: " + _one_line(_os_message(exc)), EXIT_USAGE
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return ("descend: error: out of memory: " + _one_line(str(exc) or type(exc).__name__)
                + " (use a smaller model or batch size)"), EXIT_USAGE
    if isinstance(exc, (ValueError, TypeError, FloatingPointError, FileSafetyError, MissingExtra)):
        # descend's own checks raise these with the message shape "`x` must be ... Received: ...";
        # FloatingPointError: a run that diverged (the message says what to do)
        return "descend: error: " + _one_line(str(exc) or type(exc).__name__), EXIT_USAGE
    text = _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return (f"descend: internal error: {text} (rerun with --traceback or {TRACEBACK_ENV}=1 to see "
            "where; if descend is at fault, please report it)"), EXIT_INTERNAL


def _wants_traceback(argv: list[str]) -> bool:
    return "--traceback" in argv or os.environ.get(TRACEBACK_ENV, "") not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    """Run the ``descend`` command line on ``argv`` (``sys.argv[1:]`` if None); return the exit status.

    Every error ends as one line on stderr (see :func:`error_line`); ``--traceback`` or
    ``DESCEND_TRACEBACK=1`` adds the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BrokenPipeError:  # `descend ... | head`: the reader left; nothing to report
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
            pass
        return 141
    except BaseException as e:  # noqa: BLE001 - the one place every error is turned into a line
        line, status = error_line(e)
        if getattr(args, "traceback", False) or _wants_traceback(argv):
            import traceback
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # pragma: no cover
            pass
        print(line, file=sys.stderr, flush=True)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
