"""``descend sweep``: the same as ``descend compare RECIPE --tune`` (fair tuning on Ray Tune).

A sweep used to run a recipe's (variant, seed) pairs as Ray Tune trials; tuning is now one
thing with one recipe format: every variant gets the same budget of quasirandom trials
from its ``search`` space, is chosen on validation and run on fresh seeds
(:mod:`descend.experiments.tuning`). ``descend sweep RECIPE [--trials N] [--address ADDR]
[--early-stopping]`` is kept as a name for it. Ray is an optional extra:
``pip install 'descend[sweep]'``.
"""

from __future__ import annotations

import sys

from descend.experiments.recipe import RecipeError


def sweep(recipe, **kwargs):
    """Tune a recipe on Ray Tune; see :func:`descend.experiments.tuning.tune` (same arguments).

    Example (minutes; needs the 'sweep' extra)::

        folder, results = sweep("mnist1d-tuned", out="runs", trials=8)
    """
    from descend.experiments.tuning import tune
    return tune(recipe, **kwargs)


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand (an alias of ``compare --tune``)."""
    from descend.experiments import recipe as recipes
    from descend.experiments.commands import tuning_options
    p = subparsers.add_parser(
        "sweep", help="tune every variant of a recipe with an equal budget on Ray Tune (= compare --tune)",
        description="The same as `descend compare RECIPE --tune`: every variant gets the same number of "
                    "scrambled-Sobol trials from its `search` space on Ray Tune (locally, or on a cluster "
                    "with --address), optionally stopping hopeless trials with ASHA; the best trial per "
                    "variant (on validation) is run on fresh seeds and compared on test. Writes "
                    "DIR/<name>-tuned. Needs: pip install 'descend[sweep]'.")
    p.add_argument("recipe", nargs="?", default="default", metavar="RECIPE",
                   help=f"a recipe file or a bundled name ({', '.join(recipes.bundled_names())})")
    p.add_argument("--out", default="runs", metavar="DIR")
    tuning_options(p, always=True)
    p.add_argument("--device", default=None)
    p.add_argument("--epochs", type=int, default=None, metavar="N")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads in this process")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.threads < 1:
        print(f"descend: error: --threads: `threads` must be an integer >= 1. Received: threads={args.threads}",
              file=sys.stderr)
        return 2
    import torch
    torch.set_num_threads(args.threads)
    try:
        sweep(args.recipe, out=args.out, trials=args.trials, address=args.address,
              early_stopping=args.early_stopping, max_concurrent=args.max_concurrent, device=args.device,
              epochs=args.epochs, quiet=args.quiet, overwrite=args.overwrite)
    except (RecipeError, ImportError, ValueError, TypeError) as e:
        print(f"descend: error: {e}", file=sys.stderr)
        return 2
    return 0
