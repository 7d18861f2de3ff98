"""Run folders: names that become paths stay inside --out, a folder is claimed by one run,
concurrent runs of one name keep every result, and --resume says what it resumed from."""

import json
import re
import os
import subprocess
import sys

import pytest
import yaml

from descend._filelock import FileLock
from descend.cli import main
from descend.experiments.output import _Staging
from descend.experiments.recipe import RecipeError

TINY = {"name": "t", "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 256, "epochs": 1, "seeds": [0],
        "monitors": False}


def write(tmp_path, recipe, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(recipe))
    return str(p)


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs-x", "a/b", "a\\b", "a\x00b", "", "..", "tab\there"])
def test_hostile_variant_names_are_refused_and_nothing_is_written(tmp_path, capsys, name):
    home = tmp_path / "home"
    home.mkdir()
    r = write(home, {**TINY, "variants": [{"name": name}]})
    before = tree(tmp_path)
    for command in (["train", "--checkpoint-every", "1"], ["compare"]):
        assert main([*command, r, "--out", str(home / "runs"), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "r.yaml: variants[0].name: `name` must " in err, err
        assert "Received: name=" in err, err
        assert tree(tmp_path) == before and not os.path.exists("/tmp/abs-x")


@pytest.mark.parametrize("directory", ["/tmp/abs-ck", "../ck", "a/../../ck", "a\x00"])
def test_recipe_callback_folders_stay_inside_out(tmp_path, capsys, directory):
    r = write(tmp_path, {**TINY, "callbacks": [{"name": "checkpoint", "directory": directory}]})
    before = tree(tmp_path)
    assert main(["compare", r, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "r.yaml: callbacks[0].directory: `directory` must be a relative path inside the output folder" in err
    assert sorted(set(tree(tmp_path)) - {"runs"}) == before and not os.path.exists("/tmp/abs-ck")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_relative_recipe_callback_folder_is_taken_inside_out(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "callbacks": [{"name": "csv_logger", "directory": "logs/csv"}]})
    assert main(["train", r, "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert (tmp_path / "runs" / "logs" / "csv" / "epochs.csv").is_file()
    assert not (tmp_path / "logs").exists()


def test_a_claimed_name_goes_to_the_next_run_and_overwrite_refuses_it(tmp_path):
    a = _Staging(tmp_path, "race", overwrite=False)
    b = _Staging(tmp_path, "race", overwrite=False)  # a is still running: b gets the next name
    assert (a.final.name, b.final.name) == ("race", "race-2")
    with pytest.raises(RecipeError, match=r"--out: .*race is being written by another process "
                                          rf"\(pid {os.getpid()}\); not overwriting it"):
        _Staging(tmp_path, "race", overwrite=True)
    with b as tmp:
        (tmp / "results.json").write_text("b")
    with a as tmp:
        (tmp / "results.json").write_text("a")
    assert (tmp_path / "race" / "results.json").read_text() == "a"
    assert (tmp_path / "race-2" / "results.json").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race", "race-2"]  # no lock files left
    # a killed run's leftovers go when the name is claimed again; a finished run is kept
    (tmp_path / ".race-3.partial-99999").mkdir()
    c = _Staging(tmp_path, "race", overwrite=False)
    assert c.final.name == "race-3" and not (tmp_path / ".race-3.partial-99999").exists()
    c.release()
    with _Staging(tmp_path, "race", overwrite=True) as tmp:  # free now: it replaces
        (tmp / "results.json").write_text("c")
    assert (tmp_path / "race" / "results.json").read_text() == "c"


def test_overwrite_never_removes_a_folder_a_live_process_is_writing(tmp_path, capsys):
    r = write(tmp_path, TINY)
    out = tmp_path / "runs"
    assert main(["compare", r, "--out", str(out), "--quiet"]) == 0
    first = (out / "t" / "results.json").read_text()
    lock = FileLock(out / ".t.lock")  # another run of this name, still writing
    assert lock.acquire()
    capsys.readouterr()
    assert main(["compare", r, "--out", str(out), "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is being written by another process" in err and err.count("\n") == 1
    assert (out / "t" / "results.json").read_text() == first
    lock.release()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["compare"])  # train claims through the same code
def test_four_concurrent_runs_of_one_name_keep_four_results(tmp_path, command):
    r = write(tmp_path, {**TINY, "seeds": [0]})
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", DESCEND_NO_FSYNC="1")
    procs = [subprocess.Popen([sys.executable, "-m", "descend", command, r, "--out", str(out), "--quiet",
                               "--seed" if command == "train" else "--seeds", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    folders = sorted(o.strip().splitlines()[-1] for o, _ in outs)
    assert len(set(folders)) == 4
    seeds = set()
    for f in folders:
        res = json.loads(open(os.path.join(f, "results.json")).read())
        seeds.add(res["result"]["seed"] if command == "train" else res["variants"][0]["runs"][0]["seed"])
    assert seeds == {0, 1, 2, 3}  # every run's own result survived
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_resume_says_what_it_resumed_from(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "epochs": 2})
    out = str(tmp_path / "runs")
    assert main(["train", r, "--out", out, "--resume", "--epochs", "1"]) == 0
    ck = tmp_path / "runs" / "t-base-seed0.checkpoints"
    assert f"no checkpoint in {ck}: starting fresh" in capsys.readouterr().out
    assert main(["train", r, "--out", out, "--resume"]) == 0
    said = capsys.readouterr().out
    assert f"resumed from {ck}/ckpt-e000001-s000000006 (epoch 1, step 6, 0 batches into epoch 2)" in said, said
    res = json.loads((tmp_path / "runs" / "t-base-2" / "results.json").read_text())["result"]
    assert res["epochs_run"] == 2 and len(res["epochs"]["epoch"]) == 2
    lock = FileLock(ck / ".lock")  # a live fit of this run holds its checkpoints
    assert lock.acquire()
    assert main(["train", r, "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--out: checkpoint folder {ck} is in use by another fit (pid {os.getpid()})" in err
    lock.release()


def test_a_diverging_variant_is_a_result_of_compare_and_an_error_of_train(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "epochs": 2, "variants": [
        {"name": "ok"}, {"name": "huge", "optimizer": {"name": "sgd", "lr": 1e30}}]})
    out = tmp_path / "runs"
    assert main(["compare", r, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert re.search(r"huge .*non-finite loss \((nan|inf)\) at step \d+ \(epoch 1\)", said), said
    res = json.loads((out / "t" / "results.json").read_text())
    ok, huge = (v["runs"][0] for v in res["variants"])
    assert "diverged" not in ok and ok["epochs_run"] == 2
    assert "NanGuard" in huge["diverged"] and huge["epochs_run"] == 0
    try:  # one run alone stops with the error (one line once the CLI turns errors into lines)
        code = main(["train", r, "--variant", "huge", "--out", str(out)])
    except FloatingPointError as e:
        code = 2 if "non-finite loss" in str(e) else 1
    assert code == 2
    assert not (out / "t-huge").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]
