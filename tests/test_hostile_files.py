"""Every hostile file of the corpus (tests/hostile_files.py) through every entry point that reads
it: refused with one line (CLI: exit 2, ``descend: error: ...``; Python: one of descend's errors),
no code run (no marker file), nothing written outside the folder given."""

import os
import subprocess
import sys

import pytest

import hostile_files as H

KINDS = ["state", "weights", "manifest", "checkpoint", "recipe", "results", "archive", "idx", "cifar"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    cases, markers = H.build(out)
    return cases, H.Harness(out, markers, in_process=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_hostile_file_is_refused_on_one_line_by_every_entry_point(corpus, kind, monkeypatch):
    monkeypatch.delenv("DESCEND_TRACEBACK", raising=False)
    cases, harness = corpus
    mine = [c for c in cases if c.kind == kind]
    assert mine
    outcomes = [harness.run(c, e) for c in mine for e in c.entries]
    failed = [f"{o.case} via {o.entry}: {o.detail}" for o in outcomes if not o.refused]
    assert not failed, "\n".join(failed)


def test_the_corpus_covers_the_entry_points(corpus):
    cases, _ = corpus
    entries = {e for c in cases for e in c.entries}
    assert entries == {"api:load_state", "api:restore", "cli:train --resume", "api:load_weights",
                       "api:recipe.load", "cli:compare --check", "cli:train --check", "api:load_histories",
                       "cli:doctor", "api:safe_extract", "api:load_idx_dataset", "api:load_cifar10"}
    assert len(cases) >= 80


REAL = ["exec-proto2", "system-proto4", "memo-stack-global", "inst-opcode", "obj-opcode", "torch-gadget",
        "numpy-runstring", "getattr-chain", "torch-zip-exec"]


@pytest.mark.slow
def test_the_payloads_are_real(tmp_path):
    """Loaded without restrictions (in a child process), each pickle does run its code: the
    markers that stay absent above prove that descend ran nothing."""
    payloads = H.pickle_payloads(lambda n: tmp_path / f"ran-{n}")
    for name in REAL:
        (tmp_path / f"{name}.pt").write_bytes(payloads[name][0])
    code = ("import sys, pickle, torch\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n        torch.load(f, weights_only=False)\n"
            "    except Exception:\n"
            "        try:\n            pickle.loads(open(f, 'rb').read())\n"
            "        except Exception as e:\n            print(f, e)\n")
    p = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / f"{n}.pt") for n in REAL)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == sorted(f"ran-{n}" for n in REAL), p.stdout + p.stderr
