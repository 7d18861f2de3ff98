"""Backends (descend.optim.backends) give the reference path's results and are chosen as
documented. Every case of the table runs on every backend the dispatcher gives it.
"tiled", "kernel" (numba) and "triton" (Triton's interpreter on CPU tensors) evaluate
the same per-element program as the reference path, operation for operation, correctly
rounded: equal to it bitwise in float64 and float32. torch's kernels ("foreach",
"fused") order some operations differently: 1e-12 in float64, 1e-5 in float32."""

import pytest
import torch

import descend.optim as do
from descend.optim import backends
from descend.optim.backends import cpu, tiled, triton_kernels

from cases import CASES, IDS, backends_for, make, needs_closure
from optim_helpers import loss_fn, make_params

GENERATED = ("tiled", "kernel", "triton")
needs_numba = pytest.mark.skipif(not cpu.available(), reason="needs numba")
needs_triton = pytest.mark.skipif(not triton_kernels.available(), reason="needs triton")


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    # 10 float64 numbers per tile slice: the 4x6 matrix is cut across tiles and the small
    # tensors are packed together
    monkeypatch.setattr(tiled, "TILE_BYTES", 80)


def odd_params(dtype=torch.float64, seed=0):
    """A matrix, a strided (transposed) matrix, a vector, a scalar and an empty tensor."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(5, 3, generator=g, dtype=torch.float64).to(dtype)
    return [torch.nn.Parameter(torch.randn(4, 6, generator=g, dtype=torch.float64).to(dtype)),
            torch.nn.Parameter(base.t()),
            torch.nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64).to(dtype)),
            torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64).to(dtype)),
            torch.nn.Parameter(torch.zeros(0, dtype=dtype))]


def odd_loss(params, t):
    return sum((((q.double() * (1 + 0.1 * t)) - 0.2) ** 2).sum() + 0.1 * (q.double() ** 4).sum()
               for q in params)


def run_case(case, backend, dtype=torch.float64, steps=4, change_lr=True, seed=0):
    params = odd_params(dtype, seed)
    opt = make(case, params, backend=backend)
    seen = []
    for t in range(steps):
        torch.manual_seed(t)   # the same noise draws on every path

        def closure(t=t):
            opt.zero_grad()
            loss = odd_loss(params, t)
            loss.backward()
            return loss
        opt.step(closure) if needs_closure(case) else (closure(), opt.step())
        seen.append(opt.last_backend)
        if change_lr:   # a new learning rate at every step: data, never new code
            for g in opt.param_groups:
                g["lr"] = g["lr"] * (0.7 if t % 2 else 1.3)
    assert not params[1].is_contiguous()
    return torch.cat([p.detach().double().reshape(-1) for p in params]), seen, opt


CASE_BACKENDS = [(c, b) for c in CASES for b in backends_for(c)]


@pytest.mark.parametrize("case,backend", CASE_BACKENDS,
                         ids=[f"{i}-{b}" for c, i in zip(CASES, IDS) for b in backends_for(c)])
def test_every_backend_of_every_case_equals_the_reference(case, backend):
    ref, _, _ = run_case(case, "reference")
    got, seen, _ = run_case(case, backend)
    assert set(seen) == {backend}
    if backend in GENERATED:
        assert torch.equal(got, ref)
    else:
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


FIRST_OF_EACH = [(c, i) for k, (c, i) in enumerate(zip(CASES, IDS))
                 if c[0] not in {n for n, _ in CASES[:k]}]


@pytest.mark.parametrize("backend", ["kernel", "triton"])
@pytest.mark.parametrize("case", [c for c, _ in FIRST_OF_EACH], ids=[i for _, i in FIRST_OF_EACH])
def test_generated_kernels_equal_the_reference_bitwise_in_float32(case, backend):
    if backend not in backends_for(case, torch.float32):
        pytest.skip(f"{backend} does not run this case")
    ref, _, _ = run_case(case, "reference", torch.float32, steps=3)
    got, _, _ = run_case(case, backend, torch.float32, steps=3)
    assert torch.equal(got, ref)


def test_every_case_has_the_generated_backends():
    for case in CASES:
        got = backends_for(case)
        assert "tiled" in got, case
        if cpu.available():
            assert "kernel" in got, case
        if triton_kernels.available():
            assert "triton" in got, case


@needs_numba
def test_a_new_learning_rate_never_compiles_again():
    case = ("adam", dict(lr=0.01))
    run_case(case, "kernel", steps=2)
    compiled = len(cpu._KERNELS)
    run_case(case, "kernel", steps=6)   # new learning rates at every step
    assert len(cpu._KERNELS) == compiled


@pytest.mark.parametrize("case,backend", [(c, b) for c, b in CASE_BACKENDS if b != "reference"][::5],
                         ids=lambda x: str(x) if isinstance(x, str) else None)
def test_state_is_the_reference_state_and_grads_are_untouched(case, backend):
    states = []
    for b in ("reference", backend):
        params = make_params()
        opt = make(case, params, backend=b)
        for t in range(3):
            torch.manual_seed(t)

            def closure(t=t):
                opt.zero_grad()
                loss = loss_fn(params, t)
                loss.backward()
                return loss
            if needs_closure(case):
                opt.step(closure)
            else:
                closure()
                grads = [p.grad.clone() for p in params]
                opt.step()
                for p, g in zip(params, grads):
                    assert torch.equal(p.grad, g), backend
        states.append(opt.state_dict()["state"])
    ref, got = states
    for i in ref:
        assert set(ref[i]) == set(got[i]), backend
        for k in ref[i]:
            torch.testing.assert_close(got[i][k].double(), ref[i][k].double(),
                                       rtol=1e-12, atol=1e-12, msg=f"{backend} {k}")


def test_auto_on_cpu():
    def picked(name, dtype=torch.float32, **kwargs):
        params = make_params(dtype)
        opt = do.create(name, params, **kwargs)
        return backends.choose(opt.transform, opt.param_groups[0], params)[0]

    kernel = "kernel" if cpu.available() else None
    assert picked("sgd") == "foreach"                          # measured faster than fused
    assert picked("sgd", weight_decay=0.1) == "foreach"
    for name in ("momentum", "adagrad"):
        assert picked(name) == (kernel or "fused"), name
    for name in ("adam", "adamw"):                             # torch's fused: measured faster
        assert picked(name) == "fused", name
    for name in ("rmsprop", "adadelta", "rmsprop_nesterov", "momentum_textbook"):
        assert picked(name) == (kernel or "tiled"), name
    assert picked("adam", clip_norm=1.0, grad_noise=0.1) == (kernel or "tiled")
    assert picked("adam", dtype=torch.bfloat16) == "reference"   # CPU half precision
    assert picked("adam", backend="reference") == "reference"


def test_forced_backends_that_cannot_run_say_why():
    p = make_params()
    with pytest.raises(ValueError, match=r"^`backend` must be one of 'auto', 'reference', "
                       r"'tiled', 'kernel', 'triton', 'foreach', 'fused'. Received: backend='gpu'$"):
        do.Adam(p, backend="gpu")
    with pytest.raises(ValueError, match="Received: backend='fast'"):
        do.SGD(p).add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "backend": "fast"})
    for name, kwargs, backend, why in [
        ("rmsprop", {}, "fused", "torch has no fused rmsprop kernel for these parameters"),
        ("adam", dict(clip_norm=1.0), "foreach", "clipping is not in torch's adam"),
        ("adam", dict(eps_root=1e-8), "fused", "eps_root is not in torch's adam"),
        ("rmsprop", dict(momentum=0.9, dampening=0.5), "foreach",
         "dampening is not in torch's rmsprop"),
        ("adadelta", dict(decoupled_weight_decay=True, weight_decay=0.1), "foreach",
         "decoupled_weight_decay is not in torch's adadelta"),
        ("momentum_textbook", {}, "fused", "momentum_form is not in torch's sgd"),
    ]:
        params = make_params()
        opt = do.create(name, params, backend=backend, **kwargs)
        loss_fn(params).backward()
        with pytest.raises(ValueError, match=f"`backend` must be a backend that computes this "
                           f"group \\({why}\\). Received: backend='{backend}'"):
            opt.step()


def test_a_hand_made_chain_is_recognised_by_what_its_transforms_are():
    from descend.optim import Optimizer, chain, scale_by_adam, scale_by_lr
    w = torch.nn.Parameter(torch.zeros(3))
    opt = Optimizer([w], chain(scale_by_adam(), scale_by_lr()), lr=0.1)
    assert backends.torch_config(opt.transform, opt.param_groups[0])[0] == "adam"
    opt = Optimizer([w], chain(scale_by_lr(), scale_by_adam()), lr=0.1)   # another order
    assert backends.torch_config(opt.transform, opt.param_groups[0])[0] is None


def test_option_changes_mid_run_follow_the_reference():
    def run(backend):
        params = make_params()
        opt = do.Adam(params, lr=0.05, backend=backend)
        for t in range(8):
            if t == 3:
                opt.param_groups[0]["amsgrad"] = True
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1) for p in params])

    ref = run("reference")
    for backend in backends_for(("adam", {})):
        torch.testing.assert_close(run(backend), ref, rtol=1e-12, atol=1e-12, msg=backend)


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


def test_param_groups_may_choose_their_own_backend():
    a, b, c = make_params()
    opt = do.Adam([{"params": [a]}, {"params": [b, c], "backend": "reference"}], lr=0.01)
    assert opt.param_groups[0]["backend"] == "auto"
    assert opt.param_groups[1]["backend"] == "reference"


def test_several_dtypes_in_one_group_run_per_dtype():
    params = [torch.nn.Parameter(torch.randn(5, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(4, dtype=torch.float32))]
    out = []
    for b in ["reference"] + [b for b in GENERATED if b in backends_for(("adam", {}))]:
        ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
        opt = do.Adam(ps, lr=0.1, backend=b)
        for t in range(3):
            opt.zero_grad()
            sum((q.double() ** 2).sum() for q in ps).backward()
            opt.step()
        out.append(torch.cat([q.detach().double() for q in ps]))
    for o in out[1:]:
        assert torch.equal(o, out[0])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_takes_half_precision_parameters_computing_in_float32(dtype):
    # the kernel computes in float32 and rounds once per stored value; the reference rounds
    # after every operation: equal to the parameters' precision
    ref, _, _ = run_case(("adam", dict(lr=0.01)), "reference", dtype, steps=3)
    got, _, _ = run_case(("adam", dict(lr=0.01)), "triton", dtype, steps=3)
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)


def _elementwise(name):
    """Whether the registry optimizer is a chain whose update is elementwise (has kernels)."""
    opt = do.create(name, [torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    return getattr(getattr(opt, "transform", None), "elementwise", False)


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in do.OPTIMIZERS.names() if _elementwise(n)])
def test_triton_kernels_compile_for_sm90(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    opt = do.create(name, [torch.nn.Parameter(torch.zeros(2))], **({"lr": 0.01}))
    prog = opt.transform.program(opt.param_groups[0])
    for dtype in (torch.float32, torch.bfloat16):
        k = triton_kernels.compile_for(prog, dtype)
        assert k.asm["cubin"] and ".target sm_90" in k.asm["ptx"]
        assert "fma.rn.f32" not in k.asm["ptx"]   # no contraction: the reference's arithmetic


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_backends_equal_the_reference(case):
    def run(backend):
        params = [torch.nn.Parameter(p.detach().float().cuda()) for p in make_params()]
        opt = make(case, params, backend=backend)
        for t in range(10):
            def closure(t=t):
                opt.zero_grad()
                loss = loss_fn(params, t)
                loss.backward()
                return loss
            opt.step(closure) if needs_closure(case) else (closure(), opt.step())
        return torch.cat([p.detach().cpu().reshape(-1) for p in params])

    ref = run("reference")
    for backend in backends_for(case, torch.float32):
        if backend == "kernel":
            continue
        torch.testing.assert_close(run(backend), ref, rtol=1e-5, atol=1e-6, msg=backend)


def test_the_backends_docstring_example_runs():
    import doctest
    result = doctest.testmod(backends, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
