import csv
import json
import math
import re

import pytest
import yaml

from descend.cli import build_parser, main

TINY = {
    "name": "t",
    "data": {"name": "digits", "val_fraction": 0.1},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "batch_size": 128,
    "epochs": 2,
    "seeds": [0, 1],
    "target_accuracy": 0.2,
    "variants": [{"name": "sgd"}, {"name": "adam", "optimizer": {"name": "adam", "lr": 0.01}}],
}


def write(tmp_path, recipe, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(recipe))
    return str(p)


def test_compare_end_to_end(tmp_path, capsys):
    r = write(tmp_path, TINY)
    assert main(["compare", r, "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "final val acc" in out and re.search(r"^adam\s", out, re.M)
    run = tmp_path / "runs" / "t"
    res = json.loads((run / "results.json").read_text())
    assert set(res) >= {"name", "meta", "target_accuracy", "recipe", "summary", "variants"}
    assert [v["name"] for v in res["variants"]] == ["sgd", "adam"]
    steps_per_epoch = math.ceil(1294 / 128)
    for v in res["variants"]:
        assert [x["seed"] for x in v["runs"]] == [0, 1]
        for x in v["runs"]:
            assert len(x["steps"]["loss"]) == 2 * steps_per_epoch == x["steps_run"]
            assert x["steps"]["step"] == list(range(1, 2 * steps_per_epoch + 1))
            assert len(x["epochs"]["val_acc"]) == 2
            for k in ("final_val_acc", "best_val_acc", "final_test_acc"):
                assert 0.0 <= x[k] <= 1.0
            assert x["best_val_acc"] == max(x["epochs"]["val_acc"])
            assert x["final_val_acc"] == x["epochs"]["val_acc"][-1]
            assert x["steps_to_target"] in x["epochs"]["step"]  # target 20% is reached
        s = v["summary"]
        accs = [x["final_test_acc"] for x in v["runs"]]
        assert s["final_test_acc"]["mean"] == pytest.approx(sum(accs) / 2)
        assert s["final_test_acc"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
        assert s["reached"] == "2/2"
    # the two seeds differ, the same seed is reproducible across variants' data split
    sgd = res["variants"][0]["runs"]
    assert sgd[0]["steps"]["loss"] != sgd[1]["steps"]["loss"]
    html = (run / "report.html").read_text()
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) == 7 and "loss_vs_steps.png" in imgs and "lr_vs_steps.png" in imgs
    assert "grad_norm_per_layer.png" in imgs and "<h2>Monitors</h2>" in html
    # readable layer names, not torch's module paths
    assert "dead: layer 1 ReLU" in html and "dead 1.1" not in html
    # the answer in words comes first, with the statistics behind it
    assert html.index("<h2>Answer</h2>") < html.index("<h2>Summary</h2>")
    assert "<h2>Pairwise comparisons</h2>" in html and "Holm" in html
    assert set(res["statistics"]["measures"]) == {"final_test_acc", "steps_to_target"}
    first = out.split("\n\n")[1].splitlines()[0]
    assert first.startswith(("Not distinguishable", "adam best", "sgd best"))
    for v in res["variants"]:
        assert v["runs"][0]["layer_names"]["1.0"] == "layer 1 (Linear 64→8)"
        assert v["runs"][0]["load"] is None or len(v["runs"][0]["load"]) == 3
    # the default monitors: one file per run, named in results.json, not inlined
    for v in res["variants"]:
        for x in v["runs"]:
            assert "monitors" not in x
            assert x["monitors_file"] == f"monitors/{v['name']}-seed{x['seed']}.json"
            tables = json.loads((run / x["monitors_file"]).read_text())
            assert tables["grad_norm"]["step"] == [0, 20]  # every 20 of the 22 steps
            assert {"grad_norm/1.0.weight", "grad_norm/2.weight"} <= set(tables["grad_norm"])
            assert set(tables["activations"]) == {"step", "mean/1.1", "std/1.1", "dead/1.1"}
    for f in imgs:
        assert (run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in html and "http" not in html
    assert "final test acc" in html


def test_existing_run_is_kept_and_failures_leave_nothing(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "epochs": 1, "seeds": [0], "variants": [{"name": "sgd"}]})
    out = str(tmp_path / "runs")
    assert main(["compare", r, "--out", out, "--quiet"]) == 0
    first = (tmp_path / "runs" / "t" / "results.json").read_text()
    assert main(["compare", r, "--out", out, "--quiet", "--seeds", "3"]) == 0
    assert (tmp_path / "runs" / "t" / "results.json").read_text() == first
    again = json.loads((tmp_path / "runs" / "t-2" / "results.json").read_text())
    assert again["variants"][0]["runs"][0]["seed"] == 3
    # a recipe that fails while building: error names the field, nothing new written
    bad = write(tmp_path, {**TINY, "variants": [{"name": "sgd"}, {"name": "x", "optimizer": {"name": "sgd", "lr": -1}}]},
                "bad.yaml")
    capsys.readouterr()
    assert main(["compare", bad, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "variants[1].optimizer.lr: " in err and "Received: lr=-1" in err, err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["t", "t-2"]
    # --overwrite replaces the folder only once the new run is complete
    assert main(["compare", r, "--out", out, "--quiet", "--overwrite", "--seeds", "5"]) == 0
    assert json.loads((tmp_path / "runs" / "t" / "results.json").read_text())["variants"][0]["runs"][0]["seed"] == 5


@pytest.mark.parametrize("section, expected", [
    ({"optimizer": {"name": "sgd", "lr": 0.1, "momentun": 0.9}}, "optimizer.momentun: "),
    ({"optimizer": {"name": "sgdd"}}, "optimizer: `optimizer` must be one of"),
    ({"model": {"name": "mlp", "hidden": [8], "activation": "relu", "dropout": 2.0}}, "model.dropout: "),
    ({"schedule": {"lr": {"name": "inverse_time", "e0": 0.1, "k": -1}}}, "schedule.lr.k: `k` must be >= 0. Received: k=-1"),
    ({"callbacks": [{"name": "nope"}]}, "callbacks[0]: `callback` must be one of"),
    ({"grid": {"optimizer.lr": [0.1, -0.5]}}, "grid.optimizer.lr: "),
])
def test_constructor_errors_name_the_field(tmp_path, capsys, section, expected):
    r = write(tmp_path, {**TINY, **section, "variants": [{"name": "sgd"}]})
    assert main(["compare", r, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"r.yaml: {expected}" in err, err
    assert not (tmp_path / "runs" / "t").exists()


def test_compare_then_doctor_finds_the_monitors(tmp_path, capsys):
    from descend.analysis.doctor import load_histories
    # a sigmoid MLP with large initial weights: saturated units, only a monitor can see them
    sat = {**TINY, "seeds": [0], "variants": [{"name": "sgd"}], "init": {"name": "normal", "std": 3.0},
           "model": {"name": "mlp", "hidden": [32], "activation": "sigmoid"}, "monitors": 5}
    out = tmp_path / "runs"
    assert main(["compare", write(tmp_path, sat), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    hist = load_histories(out / "t")
    assert list(hist) == ["sgd (seed 0)"]
    assert set(hist["sgd (seed 0)"]["monitors"]) == {"grad_norm", "activations"}
    assert main(["doctor", str(out / "t")]) == 0
    report = capsys.readouterr().out
    assert "[sgd (seed 0)] Saturated units" in report, report
    html = (out / "t" / "report.html").read_text()
    assert "saturated: layer 1 Sigmoid" in html and "layer 1 Sigmoid: " in report
    # --no-monitors: no files, no monitor section; the doctor still reads the run
    assert main(["compare", write(tmp_path, sat), "--out", str(out), "--quiet", "--no-monitors"]) == 0
    run = out / "t-2"
    assert not (run / "monitors").exists() and "<h2>Monitors</h2>" not in (run / "report.html").read_text()
    assert "monitors_file" not in json.loads((run / "results.json").read_text())["variants"][0]["runs"][0]
    assert load_histories(run)["sgd (seed 0)"]["monitors"] == {}
    assert yaml.safe_load((run / "recipe.yaml").read_text())["monitors"] is False


def test_train_one_variant(tmp_path, capsys):
    r = write(tmp_path, TINY)
    assert main(["train", r, "--variant", "adam", "--seed", "4", "--out", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "t-adam"
    res = json.loads((run / "results.json").read_text())
    assert res["variant"] == "adam" and res["result"]["seed"] == 4
    assert res["config"]["optimizer"] == {"name": "adam", "lr": 0.01}
    with open(run / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 11 and float(rows[0]["lr"]) == 0.01
    assert (run / "model.safetensors").stat().st_size > 0
    tables = json.loads((run / "monitors.json").read_text())
    assert tables["grad_norm"]["step"] == [0, 20] and "dead/1.1" in tables["activations"]
    assert "epoch 2" in capsys.readouterr().out
    from descend.analysis.doctor import load_histories
    assert set(load_histories(run)["adam"]["monitors"]) == {"grad_norm", "activations"}
    assert main(["train", r, "--no-monitors", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert not (tmp_path / "runs" / "t-sgd" / "monitors.json").exists()
    assert main(["train", r, "--variant", "nope", "--out", str(tmp_path / "runs")]) == 2
    assert "--variant: `variant` must be one of 'sgd', 'adam'. Received: variant='nope'" in capsys.readouterr().err


def test_device_errors(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("checks the message without CUDA")
    assert main(["compare", write(tmp_path, TINY), "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device: `device` must be 'cpu' when CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["train", "--help"]])
def test_help_is_complete(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    if argv == ["--help"]:
        assert "compare" in out and "train" in out
    else:
        for flag in ("--out", "--device", "--epochs", "--quiet", "--overwrite", "--threads",
                     "--no-monitors", "RECIPE"):
            assert flag in out
        assert ("--seeds" in out) == (argv[0] == "compare")
        assert ("--variant" in out) == (argv[0] == "train")
    sub = build_parser()._subparsers._group_actions[0].choices
    assert {"compare", "train"} <= set(sub)


def test_epochs_that_do_not_fit_the_schedule_warn(tmp_path, capsys):
    r = write(tmp_path, {**TINY, "seeds": [0], "variants": [{"name": "sgd"}],
                         "schedule": {"lr": {"name": "cosine", "e0": 0.1, "total": 22}}})
    assert main(["compare", r, "--out", str(tmp_path / "runs"), "--quiet", "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "descend: warning: --epochs 1: the recipe has 2 epochs and its schedule lr has a horizon in steps " \
           "(total=22)" in err and "not stretched" in err
    assert main(["compare", r, "--out", str(tmp_path / "runs"), "--quiet", "--epochs", "2"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_train_is_a_library_function(tmp_path):
    from descend.experiments import train
    folder, res = train(write(tmp_path, TINY), variant="adam", seed=1, out=tmp_path / "runs", quiet=True)
    assert folder == tmp_path / "runs" / "t-adam" and res["seed"] == 1
    assert (folder / "model.safetensors").is_file() and (folder / "steps.csv").is_file()
    assert json.loads((folder / "results.json").read_text())["result"]["final_test_acc"] == res["final_test_acc"]
    with pytest.raises(Exception, match="`variant` must be one of 'sgd', 'adam'"):
        train(write(tmp_path, TINY), variant="nope", out=tmp_path / "runs", quiet=True)
