"""descend.schedules.LRScheduler: a descend schedule as a torch LRScheduler."""

import io
import math

import pytest
import torch

import descend.optim as do
from descend import schedules as S
from descend.train import Trainer


def _params(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64)) for _ in range(n)]


def _loss(params, t):
    g = torch.Generator().manual_seed(100 + t)
    return sum(((p - torch.randn(4, generator=g, dtype=torch.float64)) ** 2).sum() for p in params)


def _plain(obj):
    """True if ``obj`` is made only of numbers, strings, None, tensors, lists and dicts."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_plain(x) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in obj.items())
    return False


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_is_a_torch_lr_scheduler_and_sets_the_schedule_values():
    opt = torch.optim.SGD(_params(), lr=1.0)
    lr = S.warmup(S.cosine(0.1, total=6), steps=2)
    sch = S.LRScheduler(opt, lr)
    assert isinstance(sch, torch.optim.lr_scheduler.LRScheduler)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(9):
        opt.step()
        sch.step()
        seen.append(opt.param_groups[0]["lr"])
    # step by step: t = 0..9, the schedule's own values (warmup 0, 0.05, then cosine)
    expected = [0.0, 0.05] + [0.1 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)] + [0.0, 0.0]
    assert seen == pytest.approx(expected, abs=1e-15)
    assert sch.get_last_lr() == [seen[-1]]
    assert sch.last_epoch == 9


def test_relative_scale_equals_torch_lambdalr():
    p1, p2 = _params(seed=1), _params(seed=1)
    groups = lambda ps: [{"params": ps[:1], "lr": 0.2}, {"params": ps[1:], "lr": 0.05}]  # noqa: E731
    factor = S.step_decay(1.0, 0.5, milestones=[2, 5])
    a = torch.optim.SGD(groups(p1), lr=0.1, momentum=0.9)
    b = torch.optim.SGD(groups(p2), lr=0.1, momentum=0.9)
    sa = S.LRScheduler(a, factor, scale="relative")
    sb = torch.optim.lr_scheduler.LambdaLR(b, lambda t: factor(t))
    for t in range(8):
        for opt, ps, sch in ((a, p1, sa), (b, p2, sb)):
            opt.zero_grad()
            _loss(ps, t).backward()
            opt.step()
            sch.step()
        assert [g["lr"] for g in a.param_groups] == [g["lr"] for g in b.param_groups]
    assert all(torch.equal(x, y) for x, y in zip(p1, p2))


def test_timm_style_lr_scale_and_layer_id_groups():
    # timm's param_groups_layer_decay: one group per layer, lr_scale = decay ** (L - layer_id)
    params, decay, top = _params(3), 0.5, 2
    groups = [{"params": [p], "layer_id": i, "lr_scale": decay ** (top - i)} for i, p in enumerate(params)]
    opt = do.AdamW(groups, lr=1.0)   # the keys are kept in the groups, as torch keeps them
    assert [g["lr_scale"] for g in opt.param_groups] == [0.25, 0.5, 1.0]
    sch = S.LRScheduler(opt, S.cosine(0.1, total=10))
    for t in range(4):
        opt.zero_grad()
        _loss(params, t).backward()
        opt.step()
        sch.step()
        value = 0.1 * (1 + math.cos(math.pi * (t + 1) / 10)) / 2
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [0.25 * value, 0.5 * value, value], rel=1e-15)

    # layer_decay computes the same scales from layer_id alone
    groups2 = [{"params": [p], "layer_id": i} for i, p in enumerate(_params(3))]
    opt2 = do.AdamW(groups2, lr=1.0)
    sch2 = S.LRScheduler(opt2, S.cosine(0.1, total=10), layer_decay=decay)
    assert sch2.group_scales() == [0.25, 0.5, 1.0]
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.025, 0.05, 0.1], rel=1e-15)


def test_state_dict_is_plain_and_loads_weights_only():
    opt = torch.optim.SGD(_params(), lr=0.1)
    sch = S.LRScheduler(opt, S.warmup(S.cosine(0.1, total=5), steps=2))
    opt.step()
    sch.step()
    state = sch.state_dict()
    assert _plain(state)
    loaded = _roundtrip(state)
    assert loaded["last_epoch"] == 1 and loaded["base_lrs"] == [0.1]

    # the failure this class exists for: LambdaLR saves a callable object's __dict__,
    # here the warmup's inner Cosine, which weights-only loading refuses
    lam = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(_params(), lr=0.1),
                                            S.warmup(S.cosine(1.0, total=5), steps=2))
    with pytest.raises(Exception, match="Unsupported global"):
        _roundtrip(lam.state_dict())


def test_resume_from_a_weights_only_checkpoint_is_bitwise_exact():
    sched = lambda: S.warmup(S.cosine(3e-2, total=12, e_min=1e-3), steps=3)  # noqa: E731

    def build(ps):
        groups = [{"params": ps[:2], "lr_scale": 0.5}, {"params": ps[2:]}]
        opt = do.AdamW(groups, lr=1.0, weight_decay=0.1)
        return opt, S.LRScheduler(opt, sched())

    full = _params(seed=3)
    opt, sch = build(full)
    for t in range(15):
        opt.zero_grad()
        _loss(full, t).backward()
        opt.step()
        sch.step()

    part = _params(seed=3)
    opt, sch = build(part)
    for t in range(6):
        opt.zero_grad()
        _loss(part, t).backward()
        opt.step()
        sch.step()
    saved = _roundtrip({"opt": opt.state_dict(), "sched": sch.state_dict(),
                        "params": [p.detach().clone() for p in part]})
    resumed = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float64)) for _ in range(3)]
    with torch.no_grad():
        for p, s in zip(resumed, saved["params"]):
            p.copy_(s)
    opt, sch = build(resumed)
    opt.load_state_dict(saved["opt"])
    sch.load_state_dict(saved["sched"])
    for t in range(6, 15):
        opt.zero_grad()
        _loss(resumed, t).backward()
        opt.step()
        sch.step()
    assert all(torch.equal(a, b) for a, b in zip(full, resumed))
    assert sch.last_epoch == 15


def test_plateau_state_travels_in_the_state_dict():
    opt = torch.optim.SGD(_params(), lr=1.0)
    p = S.plateau(0.1, factor=0.5, patience=0)
    sch = S.LRScheduler(opt, p)
    for m in (1.0, 2.0, 3.0):
        p.step(m)
        opt.step()
        sch.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    p2 = S.plateau(0.1, factor=0.5, patience=0)
    sch2 = S.LRScheduler(torch.optim.SGD(_params(), lr=1.0), p2)
    sch2.load_state_dict(_roundtrip(sch.state_dict()))
    assert p2.current == pytest.approx(0.025) and p2.epochs == 3


def test_per_group_schedules_and_descend_trainer():
    model = torch.nn.Linear(2, 2)
    opt = do.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1)
    sch = S.LRScheduler(opt, [S.constant(0.1), S.linear_to(0.2, 0.0, tau=4)])
    t = Trainer(model, opt, schedulers=[sch], batch_size=4, progress=False)
    h = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=1)
    assert h.steps["lr"] == [0.1, 0.1]                 # the first group's lr at each step
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1])  # t = 2: 0.2 * (1 - 2/4)


@pytest.mark.parametrize("kwargs, match", [
    ({"schedule": [S.constant(0.1)] * 2}, "one per param group"),
    ({"schedule": 0.1, "scale": "rel"}, "`scale` must be one of"),
    ({"schedule": 0.1, "layer_decay": 0.0}, "`layer_decay` must be > 0"),
    ({"schedule": 0.1, "scale_key": 3}, "`scale_key` must be"),
    ({"schedule": "cosine"}, "`schedule` must be a schedule"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.raises((ValueError, TypeError), match=match):
        S.LRScheduler(opt, **kwargs)


def test_bad_group_scale_names_the_group():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr_scale": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match=r"`param_groups\[0\]\['lr_scale'\]` must be >= 0"):
        S.LRScheduler(opt, 0.1)
    opt = torch.optim.SGD([{"params": [w], "layer_id": 1.5}], lr=0.1)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['layer_id'\]"):
        S.LRScheduler(opt, 0.1, layer_decay=0.7)
