"""Fast paths (descend.optim.fused) give the reference path's results, and are chosen
as documented. Float64 on CPU: "tiled" runs the same operations as the reference (equal
to round-off of a reordered nothing: 1e-15), torch's kernels to 1e-12."""

import io

import pytest
import torch

import descend.optim as do
from descend.optim import fused
from descend.optim.fused import tiled

from optim_helpers import loss_fn, make_params, trajectory


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    # 10 float64 numbers per slice: the 3x4 matrix is cut across tiles and the small
    # tensors are packed together, so both code paths of the tiling run.
    monkeypatch.setattr(tiled, "TILE_BYTES", 80)


# (class, kwargs, backends to check against the reference)
CASES = [
    ("SGD", dict(lr=0.05), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, momentum_form="textbook", nesterov=True), ["tiled"]),
    ("SGD", dict(lr=0.05, momentum=0.9, l1=0.01, l1_mode="proximal", clip_value=1.0), ["tiled"]),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
     ["tiled", "foreach", "fused"]),
    ("RMSprop", dict(lr=0.01), ["tiled", "foreach"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, maximize=True),
     ["tiled", "foreach"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, nesterov=True, eps=0.0, eps_root=1e-6), ["tiled"]),
    ("Adadelta", dict(lr=1.0, weight_decay=0.01), ["tiled", "foreach"]),
    ("Adam", dict(lr=0.01, weight_decay=0.01), ["tiled", "foreach", "fused"]),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True), ["tiled", "foreach", "fused"]),
    ("Adam", dict(lr=0.01, eps_root=1e-8, l1=0.001), ["tiled"]),
    ("AdamW", dict(lr=0.01, weight_decay=0.1), ["tiled", "foreach", "fused"]),
]
IDS = [f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)]


def _traj(name, kwargs, backend, steps=10, **kw):
    return trajectory(lambda p: getattr(do, name)(p, backend=backend, **kwargs), steps=steps, **kw)


@pytest.mark.parametrize("name,kwargs,backends", CASES, ids=IDS)
def test_every_fast_path_equals_the_reference(name, kwargs, backends):
    ref = _traj(name, kwargs, "reference")
    for backend in backends:
        got = _traj(name, kwargs, backend)
        tol = 1e-15 if backend == "tiled" else 1e-12
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=backend)


@pytest.mark.parametrize("name,kwargs,backends", CASES, ids=IDS)
def test_state_is_the_reference_state_and_grads_are_untouched(name, kwargs, backends):
    for backend in backends:
        states = []
        for b in ("reference", backend):
            params = make_params()
            opt = getattr(do, name)(params, backend=b, **kwargs)
            for t in range(3):
                opt.zero_grad()
                loss_fn(params, t).backward()
                grads = [p.grad.clone() for p in params]
                opt.step()
                for p, g in zip(params, grads):
                    assert torch.equal(p.grad, g), backend
            assert opt.last_backend == b
            states.append(opt.state_dict()["state"])
        ref, got = states
        for i in ref:
            assert set(ref[i]) == set(got[i]), backend
            for k in ref[i]:
                torch.testing.assert_close(got[i][k].double(), ref[i][k].double(),
                                           rtol=1e-12, atol=1e-12, msg=f"{backend} {k}")


def test_auto_picks_fused_then_tiled_then_foreach_then_reference():
    def picked(name, dtype=torch.float32, **kwargs):
        params = make_params(dtype)
        opt = getattr(do, name)(params, **kwargs)
        return fused.choose(opt.transform, opt.param_groups[0], params)[0]

    assert picked("Adam") == "fused"
    assert picked("AdamW") == "fused"
    assert picked("SGD", momentum=0.9) == "fused"
    assert picked("Adagrad") == "fused"
    assert picked("RMSprop") == "tiled"
    assert picked("Adadelta") == "tiled"
    assert picked("RMSprop", momentum=0.9, nesterov=True) == "tiled"   # not in torch
    assert picked("Adam", clip_norm=1.0) == "reference"                 # couples coordinates
    assert picked("Adam", grad_noise=0.1) == "reference"
    assert picked("Adam", dtype=torch.bfloat16) == "reference"         # CPU half precision
    assert picked("Adam", backend="reference") == "reference"


def test_auto_runs_the_reference_first_for_tiled_state():
    params = make_params()
    opt = do.RMSprop(params, lr=0.01, momentum=0.9)
    seen = []
    for t in range(3):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
        seen.append(opt.last_backend)
    assert seen == ["reference", "tiled", "tiled"]
    # turning on an option that makes new state sends one step back to the reference
    opt.param_groups[0]["centered"] = True
    opt.zero_grad()
    loss_fn(params, 3).backward()
    opt.step()
    assert opt.last_backend == "reference" and "grad_avg" in opt.state[params[0]]


def test_option_changes_mid_run_follow_the_reference():
    def run(backend):
        def on_step(opt, t):
            if t == 3:
                opt.param_groups[0]["amsgrad"] = True
            opt.param_groups[0]["lr"] *= 0.9
        return _traj("Adam", dict(lr=0.05), backend, on_step=on_step)

    ref = run("reference")
    for backend in ("tiled", "foreach", "fused"):
        torch.testing.assert_close(run(backend), ref, rtol=1e-12, atol=1e-12, msg=backend)


def test_tiled_under_a_scheduler_and_after_a_state_dict_round_trip():
    def run(backend, split=None):
        params = make_params()
        opt = do.RMSprop(params, lr=0.02, momentum=0.5, backend=backend)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        for t in range(10):
            if t == split:
                buf = io.BytesIO()
                torch.save(opt.state_dict(), buf)
                buf.seek(0)
                opt = do.RMSprop(params, lr=1.0, momentum=0.5, backend=backend)
                opt.load_state_dict(torch.load(buf))
                sched.optimizer = opt
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
            sched.step()
        return torch.cat([p.detach().reshape(-1) for p in params])

    ref = run("reference")
    assert torch.equal(run("tiled"), ref)
    assert torch.equal(run("tiled", split=5), ref)


def test_torch_checkpoint_continues_on_the_fused_path():
    params_t = make_params()
    opt_t = torch.optim.Adam(params_t, lr=0.01, foreach=False)
    params_d = make_params()
    opt_d = do.Adam(params_d, lr=0.01, backend="fused")
    for t in range(4):
        for opt, params in ((opt_t, params_t), (opt_d, params_d)):
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
    back = torch.optim.Adam(make_params(), lr=0.01)
    back.load_state_dict(opt_d.state_dict())
    for pt, pd in zip(params_t, params_d):
        torch.testing.assert_close(pd, pt, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(back.state_dict()["state"][0]["exp_avg"],
                                   opt_t.state_dict()["state"][0]["exp_avg"])


def test_param_groups_may_choose_their_own_backend():
    a, b, c = make_params()
    opt = do.Adam([{"params": [a]}, {"params": [b, c], "backend": "reference"}], lr=0.01)
    assert opt.param_groups[0]["backend"] == "auto"
    assert opt.param_groups[1]["backend"] == "reference"


def test_bad_backends_are_refused_with_the_reason():
    p = make_params()
    with pytest.raises(ValueError, match=r"^`backend` must be one of 'auto', 'reference', "
                       r"'tiled', 'foreach', 'fused'. Received: backend='triton'$"):
        do.Adam(p, backend="triton")
    with pytest.raises(ValueError, match="Received: backend='fast'"):
        do.SGD(p).add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "backend": "fast"})
    for name, kwargs, backend, why in [
        ("RMSprop", {}, "fused", "torch has no fused rmsprop kernel for these parameters"),
        ("Adam", dict(clip_norm=1.0), "tiled", "clip_norm couples all coordinates"),
        ("Adam", dict(clip_norm=1.0), "foreach", "clipping is not in torch's adam"),
        ("SGD", dict(momentum=0.9, momentum_form="textbook"), "fused",
         "momentum_form is not in torch's sgd"),
    ]:
        params = make_params()
        opt = getattr(do, name)(params, backend=backend, **kwargs)
        loss_fn(params).backward()
        with pytest.raises(ValueError, match=f"`backend` must be a backend that computes this "
                           f"group \\({why}\\). Received: backend='{backend}'"):
            opt.step()


def test_tiled_handles_strided_empty_and_scalar_parameters():
    base = torch.randn(6, 8, dtype=torch.float64)
    params = [torch.nn.Parameter(base.t()), torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
              torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(40, dtype=torch.float64))]
    out = []
    for backend in ("reference", "tiled"):
        ps = [torch.nn.Parameter(p.detach().clone() if p.dim() != 2 else p.detach().t().clone().t())
              for p in params]
        opt = do.Adadelta(ps, backend=backend)
        for t in range(4):
            opt.zero_grad()
            sum(((q * (1 + t)) ** 2).sum() for q in ps).backward()
            opt.step()
        out.append(torch.cat([q.detach().reshape(-1) for q in ps]))
    assert not params[0].is_contiguous()
    assert torch.equal(out[0], out[1])


@pytest.mark.gpu
@pytest.mark.parametrize("name,kwargs,backends", CASES, ids=IDS)
def test_cuda_fast_paths_equal_the_reference(name, kwargs, backends):
    # float32 on the GPU: torch's kernels order operations differently (documented 1e-5)
    def run(backend):
        params = [torch.nn.Parameter(p.detach().float().cuda()) for p in make_params()]
        opt = getattr(do, name)(params, backend=backend, **kwargs)
        for t in range(10):
            opt.zero_grad()
            loss_fn([p.cpu() for p in params], t).backward()
            opt.step()
        return torch.cat([p.detach().cpu().reshape(-1) for p in params])

    ref = run("reference")
    for backend in backends:
        if backend == "fused" and name in ("Adagrad",):
            continue
        torch.testing.assert_close(run(backend), ref, rtol=1e-5, atol=1e-6, msg=backend)
