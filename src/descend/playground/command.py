"""``descend playground``: start the local web playground (loopback, port flag)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``playground`` subcommand to the ``descend`` parser."""
    p = subparsers.add_parser(
        "playground",
        help="watch optimizers descend and a small network learn, in the browser",
        description=(
            "Start a local web server with two views computed by the library: an "
            "optimizer race on 2-D surfaces and a network trainer on 2-D toy sets. "
            "The page works offline."
        ),
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765,
                   help="port to listen on; 0 picks a free one (default: 8765)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--max-sessions", type=int, default=16,
                   help="training runs kept at once; the least recently used goes first")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``descend playground`` with parsed ``args``: serve until interrupted; return the exit status."""
    from descend._validation import check_int
    from descend.playground.server import serve

    for flag, name, value, hi in (("--port", "port", args.port, 65535),
                                  ("--max-sessions", "max_sessions", args.max_sessions, 1024)):
        try:
            check_int(name, value, ge=0 if name == "port" else 1, le=hi)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{flag}: {e}") from None
    try:
        return serve(args.host, args.port, open_browser=not args.no_browser,
                     max_sessions=args.max_sessions, verbose=args.verbose)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, f"cannot serve on {args.host}:{args.port}: "
                               f"{e.strerror or e}") from e
