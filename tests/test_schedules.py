"""Schedules against their formulas (written out here) and torch.optim.lr_scheduler."""

import math
import re

import pytest
import torch

from descend import schedules as S

T = 60  # steps compared in every trajectory test


def _torch_lrs(make_sched, steps=T, lr=0.1, momentum=0.0, **opt_kw):
    """Per-step LRs produced by a torch scheduler on a float64 SGD optimizer."""
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, **opt_kw)
    sch = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out


def _ours(s, steps=T):
    return [s(t) for t in range(steps)]


def _close(a, b, tol=1e-12):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert abs(x - y) <= tol * max(1.0, abs(y)), (t, x, y)


# ---- formulas from the notes, step by step -------------------------------------------

def test_inverse_time_formula():
    e0, k = 0.3, 0.05
    s = S.inverse_time(e0, k)
    for t in range(T):
        assert s(t) == pytest.approx(e0 / (1 + k * t), rel=1e-15)  # SNU: e = e0 / (1 + k t)


def test_exponential_formula():
    e0, k = 0.3, 0.05
    s = S.exponential(e0, k)
    for t in range(T):
        assert s(t) == pytest.approx(e0 * math.exp(-k * t), rel=1e-15)  # e = e0 exp(-k t)


def test_linear_to_formula():
    e0, e_tau, tau = 1.0, 0.01, 40
    s = S.linear_to(e0, e_tau, tau)
    for k in range(T):
        if k <= tau:
            a = k / tau  # CASIA: e_k = (1 - a) e0 + a e_tau, a = k / tau
            expected = (1 - a) * e0 + a * e_tau
        else:
            expected = e_tau
        assert s(k) == pytest.approx(expected, abs=1e-15)


def test_step_decay_formula():
    s = S.step_decay(0.1, gamma=0.5, step_size=7)
    m = S.step_decay(0.1, gamma=0.5, milestones=[5, 12, 30])
    for t in range(T):
        assert s(t) == 0.1 * 0.5 ** (t // 7)
        assert m(t) == 0.1 * 0.5 ** sum(t >= b for b in (5, 12, 30))


def test_warmup_formula_and_shift():
    then = S.exponential(0.2, 0.1)
    w = S.warmup(then, steps=10, start=0.02)
    for t in range(T):
        expected = 0.02 + (0.2 - 0.02) * t / 10 if t < 10 else 0.2 * math.exp(-0.1 * (t - 10))
        assert w(t) == pytest.approx(expected, rel=1e-14)


def test_cyclical_formula_all_modes():
    base, peak, h = 0.01, 0.1, 5
    for mode in ("triangular", "triangular2", "exp_range"):
        s = S.cyclical(base, peak, half_cycle=h, mode=mode, gamma=0.97)
        for t in range(T):
            cycle = math.floor(1 + t / (2 * h))  # Smith 2017, eqs. in section 3.1
            x = abs(t / h - 2 * cycle + 1)
            scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1),
                     "exp_range": 0.97 ** t}[mode]
            assert s(t) == pytest.approx(base + (peak - base) * max(0, 1 - x) * scale, abs=1e-15)
    tri = S.triangular(0.0, 1.0, half_cycle=2)
    assert _ours(tri, 9) == [0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0]


def test_cosine_formula_and_restarts():
    e0, e_min, total = 0.1, 0.001, 20
    s = S.cosine(e0, total, e_min=e_min)
    r = S.cosine(e0, total, e_min=e_min, restarts=True)
    for t in range(T):
        tt = min(t, total)
        assert s(t) == pytest.approx(e_min + (e0 - e_min) * (1 + math.cos(math.pi * tt / total)) / 2,
                                     abs=1e-15)
        tr = t % total
        assert r(t) == pytest.approx(e_min + (e0 - e_min) * (1 + math.cos(math.pi * tr / total)) / 2,
                                     abs=1e-15)


def test_momentum_ramp_as_in_note_003():
    lin = S.momentum_ramp(0.5, 0.9, steps=10)
    sw = S.momentum_ramp(0.5, 0.9, steps=10, mode="step")
    for t in range(30):
        assert lin(t) == pytest.approx(0.5 + 0.4 * min(t, 10) / 10, abs=1e-15)
        assert sw(t) == (0.5 if t < 10 else 0.9)


def test_join_and_sequence_restart_the_clock():
    a, b, c = S.constant(1.0), S.linear_to(1.0, 0.0, 4), S.exponential(0.5, 0.1)
    j = S.join([a, b, c], boundaries=[3, 10])
    q = S.sequence([a, b, c], steps=[3, 7])
    for t in range(T):
        if t < 3:
            e = 1.0
        elif t < 10:
            e = max(0.0, 1.0 - (t - 3) / 4)
        else:
            e = 0.5 * math.exp(-0.1 * (t - 10))
        assert j(t) == pytest.approx(e, abs=1e-15)
        assert q(t) == j(t)


def test_schedules_are_pure_and_repr():
    s = S.warmup(S.cosine(0.1, 50), steps=5)
    first = _ours(s)
    assert _ours(s) == first
    assert repr(s) == ("Warmup(then=Cosine(e0=0.1, total=50, e_min=0.0, restarts=False), "
                       "steps=5, start=0.0)")


def test_registry_and_create_from_spec():
    assert {"constant", "inverse_time", "exponential", "linear_to", "step_decay", "warmup",
            "cyclical", "triangular", "cosine", "join", "sequence", "momentum_ramp",
            "plateau"} <= set(S.SCHEDULES.names())
    s = S.create({"name": "warmup", "steps": 4,
                  "then": {"name": "cosine", "e0": 0.1, "total": 10}})
    assert s(2) == pytest.approx(0.05) and s(4) == pytest.approx(0.1) and s(14) == 0.0
    assert S.create(0.3)(100) == 0.3
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        S.create({"name": "cosin", "e0": 1.0, "total": 3})
    with pytest.raises(TypeError, match="unexpected keyword"):
        S.create({"name": "cosine", "e0": 1.0, "total": 3, "bogus": 1})


# ---- against torch.optim.lr_scheduler ------------------------------------------------

def test_exponential_matches_exponential_lr():
    gamma = 0.93
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma))
    _close(_ours(S.exponential(0.1, k=-math.log(gamma))), ref)


def test_step_decay_matches_step_lr_and_multistep_lr():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3))
    _close(_ours(S.step_decay(0.1, 0.3, step_size=7)), ref)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [5, 12, 30], gamma=0.3))
    _close(_ours(S.step_decay(0.1, 0.3, milestones=[5, 12, 30])), ref)


def test_cosine_matches_cosine_annealing_lr_within_total():
    total = T - 1
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total,
                                                                          eta_min=0.001))
    _close(_ours(S.cosine(0.1, total, e_min=0.001)), ref)


def test_cosine_restarts_match_warm_restarts():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=13, eta_min=0.002))
    _close(_ours(S.cosine(0.1, 13, e_min=0.002, restarts=True)), ref)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_matches_cyclic_lr(mode):
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=6, mode=mode, gamma=0.98,
        cycle_momentum=False))
    _close(_ours(S.cyclical(0.01, 0.1, half_cycle=6, mode=mode, gamma=0.98)), ref)


def test_linear_to_matches_linear_lr():
    # LinearLR scales a base LR of 0.1 from 1.0x to 0.01x over 40 steps.
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(
        o, start_factor=1.0, end_factor=0.01, total_iters=40))
    _close(_ours(S.linear_to(0.1, 0.001, tau=40)), ref)


def test_warmup_matches_linear_lr_then_constant():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(
        o, start_factor=0.25, end_factor=1.0, total_iters=8))
    _close(_ours(S.warmup(S.constant(0.1), steps=8, start=0.025)), ref)


@pytest.mark.parametrize("delta_mode,mode,cooldown", [("abs", "min", 0), ("rel", "min", 2),
                                                        ("abs", "max", 1)])
def test_plateau_matches_reduce_lr_on_plateau(delta_mode, mode, cooldown):
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(80, generator=g, dtype=torch.float64)
    sign = 1.0 if mode == "min" else -1.0
    # a metric that improves, then stalls with small wiggles, then improves a little
    metrics = [sign * (1.0 / (1 + min(i, 25)) + 0.02 * float(noise[i]) - 0.001 * max(0, i - 60))
               for i in range(80)]
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=3, threshold=0.01, threshold_mode=delta_mode,
        cooldown=cooldown, min_lr=0.01)
    ours = S.plateau(0.5, factor=0.5, patience=3, min_delta=0.01, delta_mode=delta_mode,
                     mode=mode, cooldown=cooldown, min_value=0.01)
    reductions = 0
    for m in metrics:
        ref.step(m)
        v = ours.step(m)
        assert v == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        assert ours(1234) == v
        reductions += v < 0.5
    assert reductions > 0  # the trajectory does exercise reductions


def test_plateau_state_dict_resumes_exactly():
    a = S.plateau(1.0, factor=0.5, patience=1, cooldown=1)
    ms = [3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.5, 1.5, 1.5, 1.5]
    for m in ms[:5]:
        a.step(m)
    b = S.plateau(1.0, factor=0.5, patience=1, cooldown=1)
    b.load_state_dict(a.state_dict())
    assert [a.step(m) for m in ms[5:]] == [b.step(m) for m in ms[5:]]


def test_plateau_as_callback_reads_monitor():
    p = S.plateau(1.0, factor=0.5, patience=0, monitor="val_acc", mode="max")
    p.on_epoch_end(None, {"val_acc": 0.5})
    p.on_epoch_end(None, {"val_acc": 0.4})
    assert p(0) == 0.5
    with pytest.raises(KeyError, match="val_acc"):
        p.on_epoch_end(None, {"val_loss": 1.0})


# ---- Scheduler on real optimizers -----------------------------------------------------

def test_scheduler_drives_sgd_like_torch_lambda_lr():
    """Same trajectory as torch's LambdaLR with the same function, parameters in float64."""
    s = S.warmup(S.inverse_time(0.2, 0.1), steps=5)

    def run(use_ours):
        torch.manual_seed(0)
        w = torch.randn(5, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.2, momentum=0.9)
        sch = (S.Scheduler(opt, {"lr": s}) if use_ours else
               torch.optim.lr_scheduler.LambdaLR(opt, lambda t: s(t) / 0.2))
        for _ in range(30):
            opt.zero_grad()
            (torch.arange(1.0, 6.0, dtype=torch.float64) * (w - 1.0) ** 2).sum().backward()
            opt.step()
            sch.step()
        assert torch.isfinite(w).all()
        return w.detach()

    torch.testing.assert_close(run(True), run(False), rtol=0, atol=1e-14)


def test_scheduler_momentum_sets_betas_for_adam_and_momentum_for_sgd():
    p = [torch.zeros(1, requires_grad=True)]
    adam = torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.99))
    sch = S.Scheduler(adam, {"momentum": S.momentum_ramp(0.5, 0.9, steps=4)})
    assert adam.param_groups[0]["betas"] == (0.5, 0.99)
    sch.step()
    sch.step()
    assert adam.param_groups[0]["betas"][0] == pytest.approx(0.7)
    assert sch.last_values == {"momentum": [pytest.approx(0.7)]}
    sgd = torch.optim.SGD(p, lr=0.1, momentum=0.1)
    S.Scheduler(sgd, {"momentum": 0.5})
    assert sgd.param_groups[0]["momentum"] == 0.5


def test_scheduler_relative_scale_keeps_group_ratios():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.1)
    sch = S.Scheduler(opt, {"lr": S.exponential(1.0, k=math.log(2))}, scale="relative")
    for _ in range(3):
        sch.step()
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1 / 8), pytest.approx(0.01 / 8)]


def test_scheduler_tensor_lr_updated_in_place():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=torch.tensor(0.01))
    lr_tensor = opt.param_groups[0]["lr"]
    sch = S.Scheduler(opt, {"lr": S.step_decay(0.01, 0.1, step_size=1)})
    sch.step()
    assert opt.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.001)


def test_scheduler_state_dict_round_trip():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    sch = S.Scheduler(opt, {"lr": S.cosine(0.1, 20)}, unit="epoch")
    for _ in range(7):
        sch.step()
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sch2 = S.Scheduler(opt2, {"lr": S.cosine(0.1, 20)}, unit="epoch")
    opt2.load_state_dict(opt.state_dict())  # the optimizer carries the values set so far
    sch2.load_state_dict(sch.state_dict())
    assert sch2.t == 7 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    sch.step()
    sch2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_batch_size_at_grows():
    grow = S.step_decay(16, gamma=2, step_size=3)
    assert [S.batch_size_at(grow, e) for e in range(10)] == [16, 16, 16, 32, 32, 32, 64, 64, 64, 128]
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        S.batch_size_at(S.constant(0.2), 0)


# ---- validation: one message shape ---------------------------------------------------

@pytest.mark.parametrize("call,exc,msg", [
    (lambda: S.inverse_time(0.1, k=-1), ValueError, "`k` must be >= 0. Received: k=-1"),
    (lambda: S.exponential("a", 0.1), TypeError, "`e0` must be a real number. Received: e0='a'"),
    (lambda: S.linear_to(1.0, 0.1, tau=0), ValueError, "`tau` must be an integer >= 1"),
    (lambda: S.step_decay(1.0, 0.5), ValueError, "`step_size` must be given, or else `milestones`"),
    (lambda: S.step_decay(1.0, 0.5, milestones=[5, 3]), ValueError, "`milestones` must be strictly"),
    (lambda: S.step_decay(1.0, 0.0, step_size=2), ValueError, "`gamma` must be > 0"),
    (lambda: S.warmup("x", steps=3), TypeError, "`then` must be a schedule"),
    (lambda: S.warmup(0.1, steps=0), ValueError, "`steps` must be an integer >= 1"),
    (lambda: S.cyclical(0.1, 1.0, 4, mode="tri"), ValueError, "`mode` must be one of"),
    (lambda: S.cosine(0.1, 10, restarts=1), TypeError, "`restarts` must be a bool"),
    (lambda: S.join([0.1, 0.2], boundaries=[]), ValueError, "`boundaries` must be a list of len"),
    (lambda: S.momentum_ramp(start=1.0), ValueError, "`start` must be >= 0 and < 1"),
    (lambda: S.plateau(0.1, factor=1.0), ValueError, "`factor` must be > 0 and < 1"),
    (lambda: S.constant(0.1)(-1), ValueError, "`t` must be an integer >= 0. Received: t=-1"),
    (lambda: S.constant(0.1)(1.5), TypeError, "`t` must be an integer step count"),
    (lambda: S.Scheduler(object(), {"lr": 0.1}), TypeError, "`optimizer` must be"),
    (lambda: S.Scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                         {"betas": 0.1}), ValueError, "param group 0 lacks"),
    (lambda: S.Scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                         {"lr": 0.1}, scale="rel"), ValueError, "`scale` must be one of"),
    (lambda: S.constant(0.1, foo=1), TypeError, "foo"),
])
def test_validation_messages(call, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call()


def test_docstring_examples_run():
    import doctest
    res = doctest.testmod(S, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 15 and res.failed == 0


def test_scheduler_drives_descend_optim_like_torch_optim():
    """The same schedules on descend.optim.Adam and torch.optim.Adam give the same weights."""
    from descend import optim as dopt

    def run(cls):
        torch.manual_seed(0)
        w = torch.randn(4, dtype=torch.float64, requires_grad=True)
        opt = cls([w], lr=0.05, betas=(0.9, 0.999))
        sch = S.Scheduler(opt, {"lr": S.warmup(S.cosine(0.05, 20), steps=5),
                                "momentum": S.momentum_ramp(0.5, 0.9, steps=10)})
        for _ in range(25):
            opt.zero_grad()
            ((w - 2.0) ** 2).sum().backward()
            opt.step()
            sch.step()
        assert opt.param_groups[0]["betas"][0] == pytest.approx(0.9)
        return w.detach()

    torch.testing.assert_close(run(dopt.Adam), run(torch.optim.Adam), rtol=0, atol=1e-12)


def test_scheduler_state_dict_carries_plateau_state():
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    p = S.plateau(1.0, factor=0.5, patience=0)
    sch = S.Scheduler(opt, {"lr": p}, unit="epoch")
    for m in (1.0, 2.0):
        p.step(m)
        sch.step()
    assert opt.param_groups[0]["lr"] == 0.5
    p2 = S.plateau(1.0, factor=0.5, patience=0)
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sch2 = S.Scheduler(opt2, {"lr": p2}, unit="epoch")
    opt2.load_state_dict(opt.state_dict())
    sch2.load_state_dict(sch.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.5 and p2.best == 1.0 and sch2.t == 2


def test_scheduler_load_state_dict_keeps_the_restored_lr():
    # A plateau decides a lower value at an epoch's end; a per-step Scheduler applies it
    # only at its next step. A checkpoint taken in between restores the optimizer's LR
    # as it was: loading the Scheduler must not apply the new value early.
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    p = S.plateau(1.0, factor=0.5, patience=0)
    sch = S.Scheduler(opt, {"lr": p})
    sch.step()
    p.step(1.0)
    p.step(2.0)  # plateau: 0.5 from the next scheduler step on
    assert p.current == 0.5 and opt.param_groups[0]["lr"] == 1.0
    p2 = S.plateau(1.0, factor=0.5, patience=0)
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sch2 = S.Scheduler(opt2, {"lr": p2})
    opt2.load_state_dict(opt.state_dict())
    opt2.param_groups[0]["lr"] = 0.75  # a value only the optimizer's state knows
    sch2.load_state_dict(sch.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.75 and p2.current == 0.5 and sch2.t == 1
    sch2.step()
    assert opt2.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="`state` must be a state of 1 param groups"):
        sch2.load_state_dict({**sch.state_dict(), "initial": [{}, {}]})


# ------------------------------------------------------------------ value ranges (issue 12)

def _opt(**kw):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.5, **kw)


@pytest.mark.parametrize("key, schedule, reaches", [
    ("lr", -1, "-1"),
    ("lr", {"name": "cosine", "e0": -0.1, "total": 10}, "-0.1"),
    ("lr", {"name": "linear_to", "e0": 0.1, "e_tau": -0.1, "tau": 100}, "-0.1"),
    ("lr", {"name": "warmup", "steps": 5, "start": -0.01, "then": 0.1}, "-0.01"),
    ("lr", {"name": "join", "schedules": [0.1, -0.2], "boundaries": [5]}, "-0.2"),
    ("lr", {"name": "cyclical", "base": -0.1, "peak": 0.1, "half_cycle": 3}, "-0.1"),
    ("lr", {"name": "step_decay", "e0": -0.1, "gamma": 2, "step_size": 3}, "-inf"),
    ("momentum", 1.5, "1.5"),
    ("momentum", {"name": "linear_to", "e0": 0.5, "e_tau": 1.2, "tau": 10}, "1.2"),
    ("weight_decay", -1e-4, "-0.0001"),
])
def test_scheduler_refuses_values_outside_the_range_before_the_first_step(key, schedule, reaches):
    opt = _opt(weight_decay=0.0)
    with pytest.raises(ValueError, match=rf"`{key}` must be >= 0.* at every step\. Received: {key}=.*"
                                         rf"which reaches {re.escape(reaches)}$"):
        S.Scheduler(opt, {key: S.create(schedule)})
    assert opt.param_groups[0]["lr"] == 0.1  # nothing was applied


def test_scheduler_checks_every_applied_value_too():
    opt = _opt()
    sch = S.Scheduler(opt, {"lr": lambda t: 0.1 - 0.05 * t})  # a plain callable: no bounds known
    sch.step()
    sch.step()
    with pytest.raises(ValueError, match=r"`lr` must be >= 0. Received: lr=-0.05.* at t=3\)"):
        sch.step()
    with pytest.raises(ValueError, match="non-finite"):
        S.Scheduler(_opt(), {"lr": lambda t: float("nan")})


def test_relative_scale_checks_the_products():
    opt = _opt()
    with pytest.raises(ValueError, match="`momentum` must be >= 0 and <= 1 at every step"):
        S.Scheduler(opt, {"momentum": S.constant(3.0)}, scale="relative")  # 0.5 * 3 = 1.5
    S.Scheduler(opt, {"momentum": S.constant(1.5)}, scale="relative")    # 0.75: fine


def test_keys_without_a_known_range_only_need_finite_values():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    opt.param_groups[0]["custom"] = 1.0
    S.Scheduler(opt, {"custom": -5.0})
    assert opt.param_groups[0]["custom"] == -5.0


@pytest.mark.parametrize("spec", [
    {"name": "constant", "value": 0.3},
    {"name": "inverse_time", "e0": 0.1, "k": 0.5},
    {"name": "inverse_time", "e0": -0.1, "k": 0.5},
    {"name": "exponential", "e0": 0.2, "k": 0.01},
    {"name": "linear_to", "e0": 0.1, "e_tau": 0.3, "tau": 40},
    {"name": "step_decay", "e0": 0.4, "gamma": 0.5, "milestones": [5, 20]},
    {"name": "step_decay", "e0": 0.4, "gamma": 1.5, "step_size": 10},
    {"name": "warmup", "steps": 10, "start": 0.05, "then": {"name": "cosine", "e0": 0.1, "total": 50, "e_min": 0.01}},
    {"name": "cyclical", "base": 0.2, "peak": 0.05, "half_cycle": 7, "mode": "triangular2"},
    {"name": "cosine", "e0": 0.1, "total": 30, "restarts": True},
    {"name": "join", "schedules": [0.1, {"name": "linear_to", "e0": 0.1, "e_tau": 0.0, "tau": 9}], "boundaries": [4]},
    {"name": "momentum_ramp", "start": 0.5, "end": 0.9, "steps": 12},
    {"name": "plateau", "e0": 0.1, "factor": 0.5, "min_value": 0.01},
])
def test_bounds_contain_every_value(spec):
    s = S.create(spec)
    lo, hi = s.bounds()
    values = [s(t) for t in range(400)]
    if spec["name"] == "plateau":
        values = [s.step(m) for m in [1.0] + [2.0] * 200]
    assert lo - 1e-12 <= min(values) and max(values) <= hi + 1e-12
