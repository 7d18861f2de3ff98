"""Does the report's answer hold? Two constructed cases, 20 seeded repetitions each.

* ``identical``: the same optimizer twice (Adam, lr 1e-3) on five seeds each, the two
  variants on different seeds (``10r..10r+4`` and ``10r+5..10r+9``), so the runs differ
  by noise only and the test is Welch's: the answer should be "Not distinguishable" in
  at least 95% of the repetitions (the nominal false-positive rate is 5%).
* ``large``: Adam at lr 1e-2 against SGD at lr 1e-3, paired on five seeds: the answer
  should name Adam best and SGD lower.

Each repetition is a ``descend compare`` of a generated recipe (an MLP 64-32-10 on the
digits, 3 epochs), written to a temporary folder. Run:
``python benchmarks/compare_verdicts.py`` (40 comparisons; ``--quick``: one of each).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def recipe(case: str, r: int, epochs: int) -> dict:
    a, b = 10 * r, 10 * r + 5
    base = {"name": f"{case}-{r}", "data": {"name": "digits", "val_fraction": 0.25},
            "model": {"name": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.001},
            "batch_size": 64, "epochs": epochs, "target_accuracy": 0.8, "monitors": False}
    if case == "identical":
        return {**base, "variants": [{"name": "adam_a", "seeds": list(range(a, a + 5))},
                                     {"name": "adam_b", "seeds": list(range(b, b + 5))}]}
    return {**base, "seeds": list(range(a, a + 5)),
            "variants": [{"name": "adam", "optimizer": {"name": "adam", "lr": 0.01}},
                         {"name": "sgd_small_lr", "optimizer": {"name": "sgd", "lr": 0.001}}]}


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repetitions", type=int, default=20)
    args = p.parse_args(argv)
    import torch

    from descend.experiments.commands import compare
    torch.set_num_threads(1)
    reps = 1 if args.quick else args.repetitions
    epochs = 1 if args.quick else 3
    load = {"before": common.load_average()}
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(reps):
            for case in ("identical", "large"):
                _, res = compare(recipe(case, r, epochs), out=tmp, quiet=True, progress=False)
                answer = res["statistics"]["answer"]
                if case == "identical":
                    ok = answer[0].startswith("Not distinguishable")
                else:
                    ok = answer[0].startswith("adam best") and answer[1].startswith("sgd_small_lr lower by")
                rows.append({"case": case, "repetition": r, "as_expected": ok, "answer": answer[0],
                             "second": answer[1] if len(answer) > 1 else ""})
    load["after"] = common.load_average()
    seconds = time.perf_counter() - t0
    counts = {c: sum(x["as_expected"] for x in rows if x["case"] == c) for c in ("identical", "large")}
    payload = {"quick": args.quick, "repetitions": reps, "epochs": epochs, "counts": counts, "load": load,
               "seconds": round(seconds, 1), "machine": common.machine(torch.device("cpu")), "rows": rows}
    stem = "compare_verdicts" + ("_quick" if args.quick else "")
    md = (f"# The report's answer on constructed cases\n\n"
          f"{reps} seeded repetitions of each case ({epochs} epochs; {seconds:.0f} s). "
          f"{common.load_line(load)}\n\n"
          f"- identical optimizer on different seeds: \"Not distinguishable\" in {counts['identical']}/{reps} "
          f"(should be at least 95%)\n"
          f"- Adam lr 1e-2 vs SGD lr 1e-3, paired: Adam best and SGD lower in {counts['large']}/{reps}\n\n"
          + common.table(rows, [("case", "case", ""), ("repetition", "r", ""), ("as_expected", "as expected", ""),
                                ("answer", "first line of the answer", "")]))
    common.write(args.out, stem, payload, md)
    print(md.split("\n\n")[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
