"""``descend doctor RUN_DIR`` and ``descend reproduce CLAIM``."""

from __future__ import annotations

import argparse
import json
import sys


def _doctor(args: argparse.Namespace) -> int:
    from descend.analysis.doctor import doctor, format_findings

    found = doctor(args.run_dir)  # a bad folder or file: one line from descend.cli.main
    if args.json:
        print(json.dumps({k: [f.to_dict() for f in v] for k, v in found.items()}, indent=1))
    else:
        for label, findings in found.items():
            print(format_findings(findings, label))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from descend.analysis.reproduce import CLAIMS, run_claims, write_index

    if args.list:
        for name, doc in CLAIMS.describe().items():
            print(f"{name:26s} {doc}")
        return 0
    names = CLAIMS.names() if args.all or args.claim == "all" else ([args.claim] if args.claim else [])
    if not names:
        print("descend: error: reproduce: name a CLAIM, or use --all / --list", file=sys.stderr)
        return 2
    for n in names:
        CLAIMS.get(n)  # an unknown name: one line from descend.cli.main

    def show(r):
        print(f"{r.name}: {'held' if r.held else 'DID NOT HOLD'} ({r.seconds:.1f} s) - {r.measured}",
              flush=True)

    results = run_claims(names, size=args.size, out=args.out, progress=show)
    if len(results) > 1:
        write_index(results, args.out)
    print(f"wrote {args.out}/")
    return 0


def register(subparsers) -> None:
    """Add the ``doctor`` subcommand to the ``descend`` parser."""
    p = subparsers.add_parser(
        "doctor", help="diagnose a training run (vanishing/exploding gradients, dead units, ...)",
        description="Read RUN_DIR (a `descend compare` folder: results.json and monitors/*.json; "
                    "a `descend train` folder: steps.csv/epochs.csv and monitors.json) and "
                    "report divergence, exploding or vanishing gradients, dead or saturated "
                    "units, a too-small learning rate and overfitting, with what to do.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=_doctor)

    r = subparsers.add_parser(
        "reproduce", help="re-run the experiments behind the notes' claims and report",
        description="Re-run a claim of the notes at laptop scale on bundled data and write a "
                    "report (markdown, html, PNG) stating the claim, the measured figures and "
                    "whether it held.")
    r.add_argument("claim", nargs="?", metavar="CLAIM", help="claim name (see --list), or 'all'")
    r.add_argument("--list", action="store_true", help="list the claims")
    r.add_argument("--all", action="store_true", help="run every claim")
    r.add_argument("--size", choices=["tiny", "full"], default="full",
                   help="tiny: seconds (smoke test); full: minutes on CPU (default)")
    r.add_argument("--out", default="reproduce", metavar="DIR", help="output directory (default: reproduce)")
    r.set_defaults(func=_reproduce)
