"""Fast paths (descend.optim.fused) give the reference path's results, and are chosen
as documented. Float64 on CPU: "tiled" runs the same operations as the reference (equal
to round-off of a reordered nothing: 1e-15), torch's kernels and descend's own kernels
("kernel") to 1e-12."""

import io

import pytest
import torch

import descend.optim as do
from descend.optim import fused
from descend.optim.fused import kernels, tiled

from optim_helpers import loss_fn, make_params, trajectory


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    # 10 float64 numbers per slice: the 3x4 matrix is cut across tiles and the small
    # tensors are packed together, so both code paths of the tiling run. For "kernel",
    # tensors of 4 or more numbers are sliced (the matrix in two, the vector whole) and the
    # scalar goes to a pack run by the chain's transforms.
    monkeypatch.setattr(tiled, "TILE_BYTES", 80)
    monkeypatch.setattr(kernels, "TILE_BYTES", 80)
    monkeypatch.setattr(kernels, "SMALL_ELEMS", 4)


# (class, kwargs, backends to check against the reference)
CASES = [
    ("SGD", dict(lr=0.05), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True), ["tiled", "foreach", "fused"]),
    ("SGD", dict(lr=0.05, momentum=0.9, momentum_form="textbook", nesterov=True), ["tiled"]),
    ("SGD", dict(lr=0.05, momentum=0.9, l1=0.01, l1_mode="proximal", clip_value=1.0), ["tiled"]),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
     ["tiled", "foreach", "fused"]),
    ("RMSprop", dict(lr=0.01), ["kernel", "tiled", "foreach"]),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.1, maximize=True), ["kernel", "tiled", "foreach"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, maximize=True),
     ["kernel", "tiled", "foreach"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, nesterov=True, eps=0.0, eps_root=1e-6), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, dampening=0.3, maximize=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, alpha=0.95, momentum=0.9, momentum_form="textbook"), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, centered=True, eps_root=1e-8, weight_decay=0.1,
                     decoupled_weight_decay=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, momentum=0.8, dampening=0.2, weight_decay=0.1,
                     decoupled_weight_decay=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, nesterov=True, centered=True, weight_decay=0.1,
                     decoupled_weight_decay=True, maximize=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, momentum_form="textbook", nesterov=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, momentum=0.9, momentum_form="textbook", weight_decay=0.1,
                     decoupled_weight_decay=True), ["kernel", "tiled"]),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), ["kernel", "tiled"]),
    ("Adadelta", dict(lr=1.0, weight_decay=0.01), ["kernel", "tiled", "foreach"]),
    ("Adadelta", dict(lr=0.5, rho=0.95, eps=1e-5, maximize=True), ["kernel", "tiled", "foreach"]),
    ("Adadelta", dict(lr=0.5, weight_decay=0.1, decoupled_weight_decay=True), ["kernel", "tiled"]),
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


KERNEL_CASES = [(name, kwargs) for name, kwargs, backends in CASES if "kernel" in backends]


@pytest.mark.parametrize("fused_adam", [True, False], ids=["fused-adam-routes", "tiles-only"])
@pytest.mark.parametrize("name,kwargs", KERNEL_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(KERNEL_CASES)])
def test_kernel_equals_the_reference_while_lr_and_momentum_change(name, kwargs, fused_adam,
                                                                   monkeypatch):
    # RMSprop without centering, eps_root, decay with momentum or Nesterov runs through
    # torch's fused Adam (beta1=0, no bias correction) unless that route is switched off;
    # every other case runs on the tiles either way
    monkeypatch.setattr(kernels, "FUSED_ADAM_FOR_RMSPROP", fused_adam)

    def on_step(opt, t):
        g = opt.param_groups[0]
        g["lr"] *= 0.7 if t % 2 else 1.3
        if g.get("momentum"):
            g["momentum"] = 0.5 if t % 3 == 1 else kwargs["momentum"]

    def run(backend):
        seen = []

        def record(opt, t):
            seen.append(opt.last_backend)
            on_step(opt, t)

        return _traj(name, kwargs, backend, steps=12, on_step=record), seen

    ref, _ = run("reference")
    got, seen = run("kernel")
    assert seen == ["reference"] + ["kernel"] * 11
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs,route_lr", [
    (dict(lr=0.01), 0.01), (dict(lr=0.01, maximize=True, weight_decay=0.1), 0.01),
    (dict(lr=0.01, momentum=0.9, dampening=0.25), -0.75),
    (dict(lr=0.01, momentum=0.9, momentum_form="textbook"), 0.01),
    (dict(lr=0.01, momentum=0.9, weight_decay=0.1), None),
    (dict(lr=0.01, momentum=0.9, nesterov=True), None), (dict(lr=0.01, centered=True), None),
    (dict(lr=0.01, eps_root=1e-8), None),
    (dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), None)])
def test_kernel_routes_rmsprop_through_torchs_fused_adam(kwargs, route_lr, monkeypatch):
    calls = []
    real = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    params = make_params()
    opt = do.RMSprop(params, backend="kernel", **kwargs)
    for t in range(3):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
    assert len(calls) == (2 if route_lr is not None else 0)
    if calls:
        assert calls[-1]["beta1"] == 0.0 and calls[-1]["beta2"] == 0.99
        assert calls[-1]["lr"] == pytest.approx(route_lr)
    # the parameters' own step counter is the reference's
    assert [float(opt.state[p]["step"]) for p in params] == [3.0] * 3


def test_kernel_with_lookahead_nesterov_equals_the_reference():
    kwargs = dict(lr=0.01, momentum=0.9, nesterov=True, lookahead=True)
    ref = _traj("RMSprop", kwargs, "reference", closure=True)
    for route in (True, False):
        kernels.FUSED_ADAM_FOR_RMSPROP = route
        try:
            got = _traj("RMSprop", kwargs, "kernel", closure=True)
        finally:
            kernels.FUSED_ADAM_FOR_RMSPROP = True
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


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


def test_auto_picks_fused_then_kernel_then_tiled_then_foreach_then_reference():
    def picked(name, dtype=torch.float32, **kwargs):
        params = make_params(dtype)
        opt = getattr(do, name)(params, **kwargs)
        return fused.choose(opt.transform, opt.param_groups[0], params)[0]

    assert picked("Adam") == "fused"
    assert picked("AdamW") == "fused"
    assert picked("SGD", momentum=0.9) == "fused"
    assert picked("Adagrad") == "fused"
    assert picked("RMSprop") == "kernel"
    assert picked("Adadelta") == "kernel"
    assert picked("RMSprop", momentum=0.9, centered=True) == "kernel"
    assert picked("RMSprop", momentum=0.9, nesterov=True) == "kernel"  # not in torch
    assert picked("RMSprop", clip_value=1.0) == "tiled"                # not in the kernel
    assert picked("Adadelta", l1=0.01) == "tiled"
    assert picked("Adagrad", clip_value=1.0) == "tiled"                # no kernel for Adagrad
    assert picked("Adam", clip_norm=1.0) == "reference"                 # couples coordinates
    assert picked("Adam", grad_noise=0.1) == "reference"
    assert picked("Adam", dtype=torch.bfloat16) == "reference"         # CPU half precision
    assert picked("Adam", backend="reference") == "reference"


def test_auto_runs_the_reference_first_for_kernel_and_tiled_state():
    params = make_params()
    opt = do.RMSprop(params, lr=0.01, momentum=0.9)
    seen = []
    for t in range(3):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
        seen.append(opt.last_backend)
    assert seen == ["reference", "kernel", "kernel"]
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


def test_tiled_and_kernel_under_a_scheduler_and_after_a_state_dict_round_trip():
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
    for split in (None, 5):
        torch.testing.assert_close(run("kernel", split=split), ref, rtol=1e-12, atol=1e-12)


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
                       r"'kernel', 'tiled', 'foreach', 'fused'. Received: backend='triton'$"):
        do.Adam(p, backend="triton")
    with pytest.raises(ValueError, match="Received: backend='fast'"):
        do.SGD(p).add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "backend": "fast"})
    for name, kwargs, backend, why in [
        ("RMSprop", {}, "fused", "torch has no fused rmsprop kernel for these parameters"),
        ("Adam", dict(clip_norm=1.0), "tiled", "clip_norm couples all coordinates"),
        ("Adam", dict(clip_norm=1.0), "foreach", "clipping is not in torch's adam"),
        ("Adam", {}, "kernel", "descend has kernels for RMSprop and Adadelta only"),
        ("RMSprop", dict(clip_value=1.0), "kernel", "clipping is not in descend's rmsprop kernel"),
        ("Adadelta", dict(l1=0.1), "kernel", "l1 is not in descend's adadelta kernel"),
        ("SGD", dict(momentum=0.9, momentum_form="textbook"), "fused",
         "momentum_form is not in torch's sgd"),
    ]:
        params = make_params()
        opt = getattr(do, name)(params, backend=backend, **kwargs)
        loss_fn(params).backward()
        with pytest.raises(ValueError, match=f"`backend` must be a backend that computes this "
                           f"group \\({why}\\). Received: backend='{backend}'"):
            opt.step()


@pytest.mark.parametrize("name,kwargs,backend", [
    ("Adadelta", {}, "tiled"), ("Adadelta", {}, "kernel"), ("RMSprop", {}, "kernel"),
    ("RMSprop", dict(momentum=0.9, centered=True), "kernel")])
def test_fast_paths_handle_strided_empty_and_scalar_parameters(name, kwargs, backend):
    base = torch.randn(6, 8, dtype=torch.float64)
    params = [torch.nn.Parameter(base.t()), torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
              torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(40, dtype=torch.float64))]
    out = []
    for b in ("reference", backend):
        ps = [torch.nn.Parameter(p.detach().clone() if p.dim() != 2 else p.detach().t().clone().t())
              for p in params]
        opt = getattr(do, name)(ps, backend=b, **kwargs)
        for t in range(4):
            opt.zero_grad()
            sum(((q * (1 + t)) ** 2).sum() for q in ps).backward()
            opt.step()
        assert opt.last_backend == b
        out.append(torch.cat([q.detach().reshape(-1) for q in ps]))
    assert not params[0].is_contiguous()
    tol = 0 if backend == "tiled" else 1e-12
    torch.testing.assert_close(out[1], out[0], rtol=tol, atol=tol)


def test_kernel_on_float32_parameters_of_several_sizes(monkeypatch):
    # default tile sizes: large tensors cut in slices, small ones packed
    monkeypatch.setattr(kernels, "TILE_BYTES", 1 << 12)
    monkeypatch.setattr(kernels, "SMALL_ELEMS", 256)
    gen = torch.Generator().manual_seed(0)
    shapes = [(100, 30), (3000,), (7,), (64, 4), ()]
    for name, kwargs in [("RMSprop", dict(lr=1e-3)), ("RMSprop", dict(lr=1e-3, momentum=0.9)),
                         ("Adadelta", dict(lr=1.0))]:
        init = [torch.randn(s, generator=gen) for s in shapes]
        grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]
        out = []
        for backend in ("reference", "kernel"):
            ps = [torch.nn.Parameter(w.clone()) for w in init]
            opt = getattr(do, name)(ps, backend=backend, **kwargs)
            for gs in grads:
                for p, g in zip(ps, gs):
                    p.grad = g.clone()
                opt.step()
            out.append(torch.cat([p.detach().reshape(-1) for p in ps]))
        torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-6)


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


def test_the_backends_docstring_example_runs():
    import doctest
    result = doctest.testmod(fused, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("backend", ["kernel", "tiled"])
def test_plan_is_built_once_and_each_step_reads_the_gradients_it_is_given(backend):
    # zero_grad(set_to_none=True) makes new gradient tensors at every backward: the slices
    # of parameters and state are planned once, the gradients are sliced at every step
    # (also when one arrives with other strides than its parameter)
    def run(b):
        params = make_params()
        opt = do.RMSprop(params, lr=0.01, momentum=0.9, centered=True, backend=b)
        plans = set()
        for t in range(8):
            opt.zero_grad(set_to_none=True)
            loss_fn(params, t).backward()
            if t == 5:
                w = params[0]
                w.grad = w.grad.t().contiguous().t()
                assert not w.grad.is_contiguous()
            opt.step()
            cache = opt.__dict__.get("_descend_kernel_plans") or opt.__dict__.get("_descend_tiles")
            if cache:
                plans.add(id(next(iter(cache.values()))[1]))
        return torch.cat([p.detach().reshape(-1) for p in params]), plans

    ref, _ = run("reference")
    got, plans = run(backend)
    assert len(plans) == 1
    tol = 0 if backend == "tiled" else 1e-12
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
