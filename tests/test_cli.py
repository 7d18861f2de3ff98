"""The command line's error contract: every error is one line ``descend: error: ...`` naming the
file, the field and the value (exit 2), Ctrl-C is ``descend: interrupted`` (130), an internal
error is one line with a hint (1), and ``--traceback`` / ``DESCEND_TRACEBACK=1`` add the traceback."""

import errno
import os
import subprocess
import sys

import pytest
import yaml

import descend.analysis.commands as analysis_commands
from descend.cli import error_line, main

TINY = {"name": "t", "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 256, "epochs": 1, "seeds": [0],
        "monitors": False}


def write(tmp_path, recipe, name="r.yaml"):
    p = tmp_path / name
    if isinstance(recipe, bytes):
        p.write_bytes(recipe)
    else:
        p.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return p


def one_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ the examples, by name

@pytest.mark.parametrize("change, field, shows", [
    ({"seeds": [10**30]}, "seeds[0]", "4294967295"),
    ({"variants": -1}, "variants", "variants=-1"),
    ({"variants": [{"name": {"a": 1}}]}, "variants[0].name", "name={'a': 1}"),
    ({"model": {"name": "mlp", "hidden": [2**40]}}, "model", "parameters"),
    ({"schedule": {"lr": -1}}, "schedule.lr", "`lr` must be >= 0"),
    ({"variants": [{"name": "../../../../victim"}]}, "variants[0].name", "../../../../victim"),
    ({"epochs": 10**7}, "epochs", "1000000"),
])
@pytest.mark.parametrize("command", ["compare", "train"])
def test_recipe_errors_are_one_line_naming_file_field_and_value(tmp_path, capsys, change, field, shows, command):
    r = write(tmp_path, {**TINY, **change})
    assert main([command, str(r), "--check", "--out", str(tmp_path / "runs")]) == 2
    line = one_line(capsys)
    assert line.startswith(f"descend: error: {r}: {field}: "), line
    assert shows in line
    assert not (tmp_path / "runs").exists()


def test_a_binary_recipe_is_one_line_naming_the_file(tmp_path, capsys):
    r = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\xff" * 10)
    assert main(["compare", str(r), "--check"]) == 2
    assert one_line(capsys) == f"descend: error: {r} is not UTF-8 text (byte 0x89 at offset 0); a YAML file is a text file."


def test_check_validates_without_training_or_writing(tmp_path, capsys):
    r = write(tmp_path, TINY)
    assert main(["compare", str(r), "--check", "--out", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.strip() == f"{r}: ok (1 variant, 1 run)"
    assert not (tmp_path / "runs").exists()


def test_a_negative_lr_schedule_no_longer_trains(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "schedule": {"lr": {"name": "linear_to", "e0": 0.1, "e_tau": -0.1, "tau": 50}}})
    assert main(["train", str(r), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    line = one_line(capsys)
    assert "schedule.lr: `lr` must be >= 0 at every step" in line and "reaches -0.1" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_seed_flag_is_checked(tmp_path, capsys):
    r = write(tmp_path, TINY)
    assert main(["train", str(r), "--seed", str(2**40), "--out", str(tmp_path / "runs")]) == 2
    assert "--seed: `seed` must be an integer in [0, 4294967295]" in one_line(capsys)


# ------------------------------------------------------------------ --resume

def test_resume_with_a_changed_model_is_one_line(tmp_path, capsys):
    r = write(tmp_path, TINY)
    out = tmp_path / "runs"
    assert main(["train", str(r), "--out", str(out), "--checkpoint-every", "3", "--quiet"]) == 0
    capsys.readouterr()
    r16 = write(tmp_path, {**TINY, "model": {"name": "mlp", "hidden": [16]}})
    assert main(["train", str(r16), "--out", str(out), "--resume", "--quiet"]) == 2
    line = one_line(capsys)
    assert line.startswith("descend: error: --resume: ") and "model.safetensors does not match the model" in line
    assert "expected (16, 64), found (8, 64)" in line


# ------------------------------------------------------------------ a full disk

def test_a_full_disk_is_one_line_and_the_old_run_is_kept(tmp_path, capsys, monkeypatch):
    r = write(tmp_path, TINY)
    out = tmp_path / "runs"
    (out / "t").mkdir(parents=True)
    (out / "t" / "results.json").write_text("the old run")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr("descend.io.os.fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    assert main(["compare", str(r), "--out", str(out), "--overwrite", "--quiet"]) == 2
    line = one_line(capsys)
    assert "No space left on device (ENOSPC)" in line and "results.json" in line
    assert "nothing was replaced" in line
    assert (out / "t" / "results.json").read_text() == "the old run"
    assert sorted(p.name for p in out.iterdir()) == ["t"]  # no half-written folder left


# ------------------------------------------------------------------ the contract itself

def _raising(exc):
    def func(args):
        raise exc
    return func


@pytest.mark.parametrize("exc, status, start", [
    (ValueError("`lr` must be >= 0. Received: lr=-1"), 2, "descend: error: `lr` must be >= 0."),
    (OSError(errno.EACCES, "Permission denied", "/x/y"), 2, "descend: error: /x/y: Permission denied (EACCES)"),
    (KeyboardInterrupt(), 130, "descend: interrupted"),
    (MemoryError(), 2, "descend: error: out of memory"),
    (ZeroDivisionError("division by zero"), 1, "descend: internal error: ZeroDivisionError: division by zero"),
    (RuntimeError("a\nmulti-line\nmessage"), 1, "descend: internal error: RuntimeError: a multi-line message"),
])
def test_every_exception_becomes_one_line(monkeypatch, capsys, tmp_path, exc, status, start):
    monkeypatch.setattr(analysis_commands, "_doctor", _raising(exc))
    monkeypatch.delenv("DESCEND_TRACEBACK", raising=False)
    assert main(["doctor", str(tmp_path)]) == status
    line = one_line(capsys)
    assert line.startswith(start), line
    if status == 1:
        assert "--traceback" in line and "DESCEND_TRACEBACK=1" in line


@pytest.mark.parametrize("argv_env", [(["--traceback", "doctor", "X"], {}), (["doctor", "X", "--traceback"], {}),
                                      (["doctor", "X"], {"DESCEND_TRACEBACK": "1"})])
def test_traceback_on_request(monkeypatch, capsys, argv_env):
    argv, env = argv_env
    monkeypatch.setattr(analysis_commands, "_doctor", _raising(ZeroDivisionError("boom")))
    monkeypatch.delenv("DESCEND_TRACEBACK", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: boom" in err
    assert err.strip().splitlines()[-1].startswith("descend: internal error: ZeroDivisionError: boom")


def test_long_values_are_cut(capsys):
    line, status = error_line(ValueError("x" * 10_000))
    assert status == 2 and len(line) <= 2000 + len("descend: error: ")


@pytest.mark.parametrize("argv, shows", [
    (["doctor", "/nonexistent/run"], "`run_dir` must be an existing directory"),
    (["reproduce", "no-such-claim"], "no-such-claim"),
    (["reproduce"], "name a CLAIM"),
    (["playground", "--port", "70000", "--no-browser"], "--port: `port` must be an integer >= 0 and <= 65535"),
    (["compare", "/nonexistent/r.yaml", "--check"], "recipe file not found: /nonexistent/r.yaml"),
])
def test_other_commands_errors_are_one_line(capsys, argv, shows):
    assert main(argv) == 2
    line = one_line(capsys)
    assert line.startswith("descend: error: ") and shows in line


@pytest.mark.slow
def test_a_real_process_prints_no_traceback(tmp_path):
    r = write(tmp_path, {**TINY, "variants": -1})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DESCEND_TRACEBACK", None)
    p = subprocess.run([sys.executable, "-m", "descend", "compare", str(r), "--check"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 2
    assert p.stderr == f"descend: error: {r}: variants: `variants` must be a list of variants. Received: variants=-1\n"


def test_a_full_disk_outside_descend_io_names_the_run_folder(tmp_path, capsys, monkeypatch):
    def full(*a, **k):  # matplotlib's own write fails: an OSError that names no file
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("descend.experiments.plots.write_plots", full)
    r = write(tmp_path, TINY)
    assert main(["compare", str(r), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    line = one_line(capsys)
    assert line.startswith(f"descend: error: {tmp_path / 'runs' / 't'} (while writing it): No space left on device")
    assert list((tmp_path / "runs").iterdir()) == []
