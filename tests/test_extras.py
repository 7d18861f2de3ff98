"""The slim core: what the core modules load, and the one-line error of a missing extra.

Each check runs in a fresh interpreter (sys.modules of this one already holds everything).
A missing package is simulated by ``sys.modules[name] = None``, which makes its import fail
as it does when the package is not installed."""

import json
import os
import subprocess
import sys

HEAVY = ("matplotlib", "sklearn", "scipy", "mnist1d", "pandas", "ray", "kornia", "mlxtend",
         "tensorboard", "lightning", "pytorch_lightning", "transformers", "accelerate", "PIL",
         "playwright")
CORE = ("descend.optim", "descend.schedules", "descend.init", "descend.nn", "descend.losses",
        "descend.regularize", "descend.data", "descend.train", "descend.cli")


def _python(code, tmp_path, block=()):
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_core_modules_pull_no_plotting_or_data_library(tmp_path):
    # together: if their union loads none, none of them does
    code = (f"import json, {', '.join(CORE)}\ndescend.cli.build_parser()\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    assert _python(code, tmp_path) == []


def test_the_trainer_and_the_cli_run_without_any_extra(tmp_path):
    code = """
import json, torch
from descend.cli import build_parser
from descend.train import Trainer, GradientNormMonitor
from descend import schedules
import descend.optim as do
build_parser().parse_args(["doctor", "."])
m = torch.nn.Linear(3, 2)
opt = do.Adam(m.parameters(), lr=0.1)
t = Trainer(m, opt, schedulers=[schedules.LRScheduler(opt, schedules.cosine(0.1, total=4))],
            callbacks=[GradientNormMonitor(1)], progress=False)
t.fit((torch.randn(16, 3), torch.zeros(16, dtype=torch.long)), epochs=2)
print(json.dumps(len(t.history.steps["loss"])))
"""
    assert _python(code, tmp_path, block=HEAVY) == 2


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    code = """
import contextlib, io, json
from descend.cli import main
from descend._extras import MissingExtra
out = {}
for argv in (["compare", "tiny", "--out", "runs"], ["train", "tiny", "--out", "runs"],
             ["sweep", "tiny", "--out", "runs"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out[argv[0]] = [rc, err.getvalue()]
calls = {
    "plots": "from descend.train.monitors import plot_monitors; plot_monitors({}, 'm.png')",
    "lightning": "import descend.integrations.lightning",
    "transformers": "import descend.integrations.transformers",
    "mnist1d": "from descend.data import load; load('mnist1d')",
}
for name, call in calls.items():
    try:
        exec(call)
        out[name] = None
    except MissingExtra as e:
        out[name] = str(e)
import os
out["runs"] = sorted(os.listdir("runs")) if os.path.isdir("runs") else []
print(json.dumps(out))
"""
    out = _python(code, tmp_path, block=HEAVY)
    assert out["compare"] == [2, "descend: error: descend compare's plots and report need "
                                 "matplotlib: pip install 'descend[compare]'\n"]
    rc, err = out["train"]  # the runner names the recipe file and its field first
    assert rc == 2 and err.count("\n") == 1 and err.startswith("descend: error: ")
    assert err.endswith("data: the bundled dataset 'digits' needs scikit-learn: "
                        "pip install 'descend[data]'\n")
    assert out["sweep"] == [2, "descend: error: tuning on Ray Tune (descend sweep, compare --tune) needs ray[tune]: "
                               "pip install 'descend[sweep]'\n"]
    assert out["plots"] == "plots need matplotlib: pip install 'descend[plots]'"
    assert out["lightning"] == "the Lightning integration needs lightning: pip install 'descend[lightning]'"
    assert out["transformers"] == ("the Hugging Face integration needs transformers: "
                                   "pip install 'descend[transformers]'")
    assert out["mnist1d"] == "the bundled dataset 'mnist1d' needs mnist1d: pip install 'descend[data]'"
    assert out["runs"] == []  # nothing half-written
