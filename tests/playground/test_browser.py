"""Drive the playground page in headless Chromium: both views run, draw, and show the
library's numbers; bad input and divergence get a message. Screenshots are saved."""

import os
import shutil
import tempfile

import pytest

from descend.analysis.testfunctions import TEST_FUNCTIONS
from descend.playground.server import url_of
from playground_client import start_server

CHROMIUM = os.environ.get("DESCEND_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install playwright; the browser is Debian's chromium)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def page():
    srv = start_server(max_sessions=4)
    profile = tempfile.mkdtemp(prefix="playground-profile-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 860})
        pg = ctx.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # offline: any request that leaves the server is a failure
        pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url_of(srv))
                 else (errors.append("external request: " + route.request.url), route.abort()))
        pg.goto(url_of(srv))
        pg.wait_for_function("window.playground.ready === true")
        yield pg
        assert errors == []
        ctx.close()
    srv.shutdown()
    srv.server_close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Screenshots go to a temporary folder, or to $DESCEND_PLAYGROUND_SHOTS when set."""
    out = os.environ.get("DESCEND_PLAYGROUND_SHOTS")
    if out:
        os.makedirs(out, exist_ok=True)
        from pathlib import Path
        return Path(out)
    return tmp_path_factory.mktemp("playground-screens")


def _pixels(page, canvas_id):
    return page.evaluate(f"document.getElementById('{canvas_id}').toDataURL()")


def _num(page, selector):
    return float(page.inner_text(selector))


def _error(page):
    page.wait_for_selector("#error:not([hidden])")
    return page.inner_text("#error")


def test_optimizer_race_view(page, shots):
    import torch
    from test_api import _library_path

    page.fill("#steps", "120")
    blank = _pixels(page, "race-canvas")
    page.click("#run-race")
    page.wait_for_function("window.playground.raceDone === true")
    assert _pixels(page, "race-canvas") != blank  # trajectories drawn over the contours
    assert page.is_hidden("#error")
    tf = TEST_FUNCTIONS.create("quadratic")
    rows = page.query_selector_all("#race-table tbody tr")
    racers = page.evaluate("""[...document.querySelectorAll('.racer')].map(d => {
        const h = {}; d.querySelectorAll('.hyper:not(.sched) input').forEach(i => h[i.dataset.name] = i.value);
        return [d.querySelector('.opt-name').value, h]; })""")
    assert len(rows) == len(racers) == 3
    for row, (name, fields) in zip(rows, racers):
        assert row.query_selector(".name").inner_text() == name
        assert int(row.query_selector(".step").inner_text()) == 120
        hyper = {"lr": float(fields["lr"])}
        if name == "sgd":
            hyper["momentum"] = float(fields["momentum"])
        path = _library_path(name, hyper, list(tf.start), 120, tf.fn)
        x, y = (float(v) for v in path[-1])
        loss = float(tf.fn(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))
        assert float(row.query_selector(".x").inner_text()) == pytest.approx(x, rel=1e-5, abs=1e-300)
        assert float(row.query_selector(".y").inner_text()) == pytest.approx(y, rel=1e-5, abs=1e-300)
        assert float(row.query_selector(".loss").inner_text()) == pytest.approx(loss, rel=1e-5, abs=1e-300)
        assert float(row.query_selector(".dist").inner_text()) == pytest.approx(
            (x * x + y * y) ** 0.5, rel=1e-5, abs=1e-300)
    # the whole table fits in the window (the status column was cut off at 1280 px)
    right = page.evaluate("document.querySelector('#race-table').getBoundingClientRect().right")
    assert right <= page.viewport_size["width"] and page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "race.png"))

    # bad input: a message on the page, nothing drawn changes
    lr = page.locator(".racer .hyper input[data-name=lr]").first
    lr.fill("nan")
    page.click("#run-race")
    assert "`lr` must be finite. Received: lr=nan" in _error(page)
    # a diverging run stops cleanly and says so
    lr.fill("1e3")
    page.click("#run-race")
    page.wait_for_function("window.playground.raceDone === true && document.getElementById('error').hidden")
    status = page.locator("#race-table tbody tr .status").first.inner_text()
    assert status.startswith("diverged at step")
    # a malformed expression
    page.select_option("#surface", "expression")
    page.fill("#expression", "__import__('os').system('true')")
    page.dispatch_event("#expression", "change")
    assert "`expression`" in _error(page)
    page.fill("#expression", "x^2 + 4*sin(y)^2")
    page.dispatch_event("#expression", "change")
    page.wait_for_function("document.getElementById('error').hidden")
    assert page.query_selector_all("#race-table tbody tr") == []  # the last race was on another surface
    lr.fill("0.05")
    page.fill("#start-y", "1.2")  # in the basin of the minimum at the origin
    page.click("#run-race")
    page.wait_for_function("window.playground.race && window.playground.raceDone === true && window.playground.race.surface === 'expression'")
    assert len(page.query_selector_all("#race-table tbody tr")) == 3
    page.screenshot(path=str(shots / "race-expression.png"))


def test_network_trainer_view(page, shots):
    from test_api import by_hand

    page.click("#tab-trainer")
    page.select_option("#dataset", "spirals")
    page.fill("#classes", "3")
    page.fill("#n", "300")
    page.fill("#noise", "0.05")
    page.fill("#test_fraction", "0.3")
    page.fill("#hidden", "16, 16")
    page.select_option("#activation", "relu")
    page.select_option("#init", "he_normal")
    page.select_option("#trainer-opt .opt-name", "adam")
    page.locator("#trainer-opt .hyper input[data-name=lr]").fill("0.03")
    page.fill("#per-frame", "25")
    page.click("#apply")
    page.wait_for_function("window.playground.trainer && window.playground.trainer.steps === 0 "
                           "&& window.playground.config.dataset === 'spirals'")
    before = _pixels(page, "boundary")
    page.click("#step")
    page.wait_for_function("window.playground.trainer.steps === 1")
    page.click("#play")
    page.wait_for_function("window.playground.trainer.steps >= 300", timeout=30000)
    page.click("#play")  # pause
    page.wait_for_function("!window.playground.playing && !window.playground.looping")
    page.wait_for_timeout(300)
    steps = int(page.inner_text("#m-step"))
    assert steps >= 300
    assert _pixels(page, "boundary") != before  # the decision boundary moved
    # three classes, three colours of points
    config = page.evaluate("window.playground.config")
    assert config["classes"] == 3 and config["init"] == "he_normal" and config["activation"] == "relu"
    colours = page.evaluate("""(() => { const c = document.getElementById('boundary');
        const g = c.getContext('2d'), seen = new Set();
        for (let i = 0; i < 40; i++) for (let j = 0; j < 40; j++) {
          const d = g.getImageData(5 + i * 10, 5 + j * 10, 1, 1).data;
          seen.add(d[0] > d[2] + 40 ? (d[1] > d[0] ? 'g' : 'o') : d[2] > d[0] + 40 ? 'b' : d[1] > d[0] + 40 ? 'g' : '-');
        } return [...seen]; })()""")
    assert {"b", "o", "g"} <= set(colours), colours

    # the numbers shown equal descend's own: MODELS + init + optim, recomputed here
    metrics, _, grads, act_std = by_hand(config, steps)
    assert _num(page, "#m-train-loss") == pytest.approx(metrics["train_loss"], rel=1e-5)
    assert _num(page, "#m-test-loss") == pytest.approx(metrics["test_loss"], rel=1e-5)
    assert _num(page, "#m-train-acc") == pytest.approx(metrics["train_acc"], rel=1e-5)
    assert _num(page, "#m-test-acc") == pytest.approx(metrics["test_acc"], rel=1e-5)
    first, _, _, _ = by_hand(config, 0)
    shown_first = page.evaluate("window.playground.history[0].train_loss")
    assert shown_first == pytest.approx(first["train_loss"], rel=1e-6) and metrics["train_loss"] < shown_first
    norms = [float(t) for t in page.locator("#stats .grad-norm").all_inner_texts()]
    assert norms == pytest.approx(grads, rel=1e-5)
    stds = [float(t) for t in page.locator("#stats .act-std").all_inner_texts() if t != "—"]
    assert stds == pytest.approx(act_std, rel=1e-5)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "trainer.png"))

    page.click("#reset")
    page.wait_for_function("window.playground.trainer.steps === 0")
    assert page.inner_text("#m-step") == "0"
    # bad input and a diverging run
    page.fill("#dropout", "2")
    page.click("#apply")
    assert "`dropout` must be" in _error(page)
    page.fill("#dropout", "0")
    page.select_option("#trainer-opt .opt-name", "sgd")
    page.locator("#trainer-opt .hyper input[data-name=lr]").fill("1e38")
    page.click("#apply")
    page.wait_for_function("document.getElementById('error').hidden")
    page.click("#play")
    page.wait_for_function("window.playground.trainer.stopped !== null && !window.playground.playing")
    assert page.inner_text("#status").startswith("Stopped: diverged at step")
    page.screenshot(path=str(shots / "trainer-diverged.png"))
