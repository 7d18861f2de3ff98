"""descend's optimizers as drop-in replacements for torch.optim: param groups carrying any
key, torch's ``foreach`` / ``fused`` flags choosing the backend, state dicts that round
trip exactly, and ``clip_norm`` over every parameter of the optimizer (as
``torch.nn.utils.clip_grad_norm_``)."""

import copy
import math

import pytest
import torch

import descend.optim as do
from descend import schedules as S
from descend.optim import backends
from descend.optim.core import Chain
from optim_helpers import loss_fn, make_params, trajectory
from state_fuzz import canonical
from test_registry import CONFIG, NAMES


def _run(opt, params, steps=6):
    out = []
    for t in range(steps):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
        out.append(torch.cat([p.detach().reshape(-1).clone() for p in params]))
    return torch.stack(out)


def _groups(params, **keys):
    return [{"params": [params[0]], "lr": 0.02, **keys},
            {"params": params[1:], "weight_decay": 0.1}]


# -- 1. param groups take every key torch.optim takes ------------------------------------
def test_other_tools_group_keys_are_kept_and_ignored_by_the_math():
    keys = {"name": "net", "lr_scale": 0.5, "layer_id": 3, "my_note": [1, 2]}
    p1, p2 = make_params(), make_params()
    opt = do.AdamW(_groups(p1, **keys), lr=0.05)
    assert {k: opt.param_groups[0][k] for k in keys} == keys
    plain = _run(do.AdamW(_groups(p2), lr=0.05), p2)
    assert torch.equal(_run(opt, p1), plain)          # ignored by the math
    saved = opt.state_dict()["param_groups"][0]
    assert {k: saved[k] for k in keys} == keys          # and kept in the state dict
    # torch.optim keeps the same keys: the same groups build both
    pt = make_params()
    ref = _run(torch.optim.AdamW(_groups(pt, **keys), lr=0.05), pt)
    torch.testing.assert_close(plain, ref, rtol=1e-12, atol=1e-12)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "colour": "red"})
    assert opt.param_groups[-1]["colour"] == "red"


def test_a_schedule_reads_lr_scale_from_hand_built_groups_as_with_torch_optim():
    def run(cls):
        params = make_params()
        groups = [{"params": [params[0]], "lr_scale": 0.25, "layer_id": 0},
                  {"params": params[1:], "lr_scale": 1.0, "layer_id": 1, "name": "head"}]
        opt = cls(groups, lr=1.0)
        sch = S.LRScheduler(opt, S.cosine(0.1, total=8))
        lrs = []
        for t in range(5):
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
            sch.step()
            lrs.append([g["lr"] for g in opt.param_groups])
        return lrs, torch.cat([p.detach().reshape(-1) for p in params])

    lrs, ours = run(do.AdamW)
    lrs_t, theirs = run(torch.optim.AdamW)
    assert lrs == lrs_t
    value = 0.1 * (1 + math.cos(math.pi * 5 / 8)) / 2
    assert lrs[-1] == pytest.approx([0.25 * value, value], rel=1e-15)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_a_misspelt_constructor_keyword_still_raises_with_the_closest_name():
    with pytest.raises(TypeError, match=r"^Adam got unexpected keyword argument\(s\): lrr "
                       r"\(did you mean 'lr'\?\)\. Received: lrr=0\.1$"):
        do.Adam(make_params(), lrr=0.1)
    with pytest.raises(TypeError, match=r"did you mean 'momentum'"):
        do.SGD(make_params(), lr=0.1, momentun=0.9)


def test_group_flags_are_checked_and_a_refused_group_is_not_added():
    params = make_params()
    opt = do.Adam([{"params": [params[0]]}], lr=0.1)
    with pytest.raises(ValueError, match=r"^`differentiable` must be False \(the update is not "
                       r"differentiable\)\. Received: differentiable=True$"):
        opt.add_param_group({"params": [params[1]], "differentiable": True})
    with pytest.raises(TypeError, match=r"`capturable` must be a bool. Received: capturable='yes'"):
        opt.add_param_group({"params": [params[1]], "capturable": "yes"})
    with pytest.raises(ValueError, match=r"^`backend` must be 'auto' or 'foreach' when "
                       r"foreach=True\. Received: param group backend='tiled'$"):
        opt.add_param_group({"params": [params[1]], "foreach": True, "backend": "tiled"})
    with pytest.raises(ValueError, match=r"^`fused=True` needs one of torch's fused kernels for "
                       r"the group \(clipping is not in torch's adam\)\. Received: fused=True$"):
        opt.add_param_group({"params": [params[1]], "fused": True, "clip_value": 1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [params[1]], "fused": False, "differentiable": False,
                         "capturable": False, "foreach": None})
    assert len(opt.param_groups) == 2


# -- 2. fused= / foreach= mean torch's -----------------------------------------------------
def _last_backends(opt, params):
    seen = []
    orig = opt._update_group

    def spy(group, *a):
        orig(group, *a)
        seen.append(opt.last_backend)
    opt._update_group = spy
    opt.zero_grad()
    loss_fn(params, 0).backward()
    opt.step()
    return seen


@pytest.mark.parametrize("cls,kw", [(do.SGD, dict(lr=0.05, momentum=0.9)), (do.Adam, {}),
                                    (do.AdamW, {}), (do.Adagrad, {})])
def test_fused_true_runs_torchs_fused_kernel_and_equals_torch(cls, kw):
    torch_cls = getattr(torch.optim, cls.__name__)
    ours = trajectory(lambda p: cls(p, fused=True, **kw))
    theirs = trajectory(lambda p: torch_cls(p, fused=True, **kw))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    params = make_params()
    assert _last_backends(cls(params, fused=True, **kw), params) == ["fused"]


@pytest.mark.parametrize("cls", [do.SGD, do.Adam, do.AdamW, do.Adagrad, do.RMSprop, do.Adadelta])
def test_foreach_chooses_torchs_multi_tensor_or_the_single_path(cls):
    params = make_params()
    assert _last_backends(cls(params, lr=0.01, foreach=True), params) == ["foreach"]
    assert _last_backends(cls(params, lr=0.01, foreach=False), params) == ["reference"]
    assert _last_backends(cls(params, lr=0.01, foreach=None), params) != ["reference"]
    torch_cls = getattr(torch.optim, cls.__name__)
    for foreach in (True, False):
        torch.testing.assert_close(trajectory(lambda p: cls(p, lr=0.01, foreach=foreach)),
                                   trajectory(lambda p: torch_cls(p, lr=0.01, foreach=foreach)),
                                   rtol=1e-12, atol=1e-12)


def test_flag_errors_are_torchs():
    p = make_params()
    with pytest.raises(ValueError, match=r"^`fused` and `foreach` cannot be True together"):
        do.Adam(p, fused=True, foreach=True)
    with pytest.raises(ValueError, match=r"^`fused=True` needs one of torch's fused kernels "
                       r"for the group \(eps_root is not in torch's adam\)\. Received: fused=True$"):
        do.Adam(p, fused=True, eps_root=1e-8)
    with pytest.raises(ValueError, match=r"^`backend` must be 'auto' or 'fused' when fused=True\. "
                       r"Received: backend='tiled'$"):
        do.Adam(p, fused=True, backend="tiled")
    with pytest.raises(ValueError, match=r"'reference' when foreach=False\. Received: "
                       r"backend='kernel'$"):
        do.SGD(p, lr=0.1, foreach=False, backend="kernel")
    with pytest.raises(TypeError, match=r"`fused` must be a bool. Received: fused='yes'"):
        do.SGD(p, lr=0.1, fused="yes")
    do.Adam(p, fused=True, backend="fused")   # agreeing with the flag is fine
    do.Adam(p, fused=False, foreach=False)


def test_group_flags_choose_that_groups_backend():
    params = make_params()
    opt = do.Adam([{"params": [params[0]], "foreach": False},
                   {"params": [params[1]], "fused": True},
                   {"params": [params[2]], "foreach": True}], lr=0.01, backend="tiled")
    assert _last_backends(opt, params) == ["reference", "fused", "foreach"]
    assert [g["backend"] for g in opt.param_groups] == ["reference", "fused", "foreach"]


# -- 3. the state dict round-trips exactly ---------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_after_load_equals_the_saved_one(name):
    def build(params):
        groups = [{"params": params[:2], "name": "body", "lr_scale": 0.5},
                  {"params": params[2:], "layer_id": 1}]
        return do.create(name, groups, **CONFIG[name][0])

    params = make_params()
    opt = build(params)
    assert isinstance(opt.transform, Chain)
    for t in range(2):
        def closure(t=t):
            opt.zero_grad()
            loss = loss_fn(params, t)
            loss.backward()
            return loss
        opt.step(closure)
    saved = opt.state_dict()
    before = canonical(saved)
    other = build(make_params(seed=1))
    other.load_state_dict(copy.deepcopy(saved))
    assert canonical(other.state_dict()) == before
    opt.load_state_dict(copy.deepcopy(saved))
    assert canonical(opt.state_dict()) == before
    assert "differentiable" not in other.defaults


# -- 4. clipping by the norm over every parameter ----------------------------------------------
def _clip_grad_norm_reference(torch_cls, max_norm, norm_type=2.0, steps=8, **kw):
    params = make_params()
    opt = torch_cls([{"params": [params[0]], "lr": 0.03}, {"params": params[1:]}], **kw)
    out = []
    for t in range(steps):
        opt.zero_grad()
        loss_fn(params, t).backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        opt.step()
        out.append(torch.cat([p.detach().reshape(-1).clone() for p in params]))
    return torch.stack(out)


def _clipped(cls, backend, max_norm, norm_type=2.0, steps=8, scope=None, **kw):
    params = make_params()
    extra = {} if scope is None else {"clip_norm_scope": scope}
    opt = cls([{"params": [params[0]], "lr": 0.03}, {"params": params[1:]}], backend=backend,
              clip_norm=max_norm, clip_norm_type=norm_type, **extra, **kw)
    return _run(opt, params, steps)


@pytest.mark.parametrize("cls,kw", [(do.SGD, dict(lr=0.1, momentum=0.9)), (do.Adam, dict(lr=0.05))])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_norm_is_over_all_groups_like_clip_grad_norm_(cls, kw, norm_type):
    torch_cls = getattr(torch.optim, cls.__name__)
    ref = _clip_grad_norm_reference(torch_cls, 0.5, norm_type, **kw)
    probe = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    opt = cls(probe, clip_norm=0.5, **kw)
    names = [b for b in backends.BACKENDS if b not in ("auto",) and
             backends.choose(opt.transform, {**opt.param_groups[0], "backend": b}, probe)[0]]
    assert "reference" in names and "tiled" in names
    runs = {b: _clipped(cls, b, 0.5, norm_type, **kw) for b in names + ["auto"]}
    torch.testing.assert_close(runs["reference"], ref, rtol=1e-12, atol=1e-12)
    for b, run in runs.items():   # every backend computes the reference's numbers
        assert torch.equal(run, runs["reference"]), b


def test_one_clipped_step_with_two_groups_has_norm_clip_norm():
    a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    norms = {}
    for scope in ("global", "group"):
        with torch.no_grad():
            a.zero_(), b.zero_()
        opt = do.SGD([{"params": [a]}, {"params": [b]}], lr=1.0, clip_norm=1.0,
                     clip_norm_scope=scope)
        a.grad, b.grad = torch.full_like(a, 3.0), torch.full_like(b, -2.0)
        opt.step()
        norms[scope] = float(torch.cat([a.detach(), b.detach()]).norm())
    assert norms["global"] == pytest.approx(1.0, abs=1e-5)
    assert norms["group"] == pytest.approx(math.sqrt(2), abs=1e-5)   # each group to norm 1


def test_clip_norm_scope_is_validated_and_per_group():
    p = make_params()
    with pytest.raises(ValueError, match=r"^`clip_norm_scope` must be one of 'global', 'group'\. "
                       r"Received: clip_norm_scope='all'$"):
        do.Adam(p, clip_norm=1.0, clip_norm_scope="all")
    # a group on its own scope is clipped alone; the others share their norm
    opt = do.SGD([{"params": [p[0]], "clip_norm_scope": "group"}, {"params": p[1:]}],
                 lr=1.0, clip_norm=1e-3)
    g = [torch.randn_like(x) for x in p]
    for x, gx in zip(p, g):
        x.grad = gx.clone()
    before = [x.detach().clone() for x in p]
    opt.step()
    steps = [b - x.detach() for b, x in zip(before, p)]
    assert float(steps[0].norm()) == pytest.approx(1e-3, rel=1e-6)
    assert float(torch.cat([s.reshape(-1) for s in steps[1:]]).norm()) == pytest.approx(1e-3, rel=1e-6)


def test_a_global_norm_after_a_stateful_transform_is_refused_with_the_way_out():
    from descend.optim import chain, clip_by_global_norm, scale_by_adam, scale_by_lr
    p = make_params()

    def make(scope):
        return do.Optimizer([{"params": [p[0]]}, {"params": p[1:]}],
                            chain(scale_by_adam(), clip_by_global_norm(clip_norm=1.0),
                                  scale_by_lr()), lr=0.1, clip_norm_scope=scope)
    loss_fn(p).backward()
    with pytest.raises(ValueError, match=r"^`clip_norm_scope` must be 'group' for a chain that "
                       r"clips a norm of values that depend on the state\. "
                       r"Received: clip_norm_scope='global'$"):
        make("global").step()
    make("group").step()
