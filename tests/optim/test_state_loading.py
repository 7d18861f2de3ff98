"""Loading optimizer state: everything is checked before anything changes, no path ever
runs on state that does not fit the parameters, and a resumed run equals the
uninterrupted one bitwise on every backend."""

import copy
import io

import pytest
import torch

import descend.optim as do
import state_fuzz


def _params(seed=0, dtype=torch.float32):
    return state_fuzz._params(seed, dtype)


def _step(opt, params, t):
    state_fuzz._step(opt, params, t)


def _trained(name="adam", backend="auto", steps=2, **kw):
    params = _params()
    opt = do.create(name, params, backend=backend, **kw)
    for t in range(steps):
        _step(opt, params, t)
    return opt, params


def _saved(opt):
    return state_fuzz.canonical(opt.state_dict())


def test_parameters_in_another_order_are_refused_naming_the_parameter_and_both_shapes():
    opt, params = _trained()
    other = do.Adam(list(reversed(params)), lr=0.1)
    with pytest.raises(ValueError, match=r"^`state` of parameter 0 must have 'exp_avg' shaped "
                       r"like the parameter, \(\)\. Received: 'exp_avg' of shape \(100, 100\)$"):
        other.load_state_dict(opt.state_dict())
    assert not other.state  # nothing was loaded


def test_the_parameter_is_named_when_the_groups_carry_names():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 4))
    opt = do.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    sd["state"][2]["momentum_buffer"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"parameter 2 \('1.weight'\) must have 'momentum_buffer'"
                       r" shaped like the parameter, \(4, 2\)\. Received: 'momentum_buffer' of "
                       r"shape \(2, 3\)"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
     r"`param_groups` must be 1 group\(s\) of sizes \[4\] \(this optimizer's\)\. "
     r"Received: param_groups='2 group\(s\) of sizes \[4, 4\]'"),
    (lambda sd: sd["param_groups"][0]["params"].pop(),
     r"Received: param_groups='1 group\(s\) of sizes \[3\]'"),
    (lambda sd: sd["state"].__setitem__(9, {}), r"`state` must be keyed by the indices of the 4"),
    (lambda sd: sd["state"][0].__setitem__("bogus", torch.zeros(1)),
     r"must have names among .*Received: 'bogus'"),
    (lambda sd: sd["state"][0].pop("exp_avg_sq"), r"must have 'exp_avg_sq' \(kept under the"),
    (lambda sd: sd["state"][1].__setitem__("exp_avg", 0.5),
     r"parameter 1 must have 'exp_avg' as a tensor shaped like the parameter, \(4, 3\)\. "
     r"Received: 'exp_avg'=float"),
    (lambda sd: sd["state"][1].__setitem__("exp_avg", torch.zeros(4, 3, dtype=torch.complex64)),
     r"'exp_avg' of a real floating dtype"),
    (lambda sd: sd["state"][1].__setitem__("step", torch.tensor([1.0, 2.0])),
     r"'step' as a real number \(a 0-d tensor\)\. Received: 'step' of shape \(2,\)"),
    (lambda sd: sd["state"][1].__setitem__("step", torch.tensor(float("nan"))),
     r"'step' as a count >= 0\. Received: 'step'=nan"),
    (lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0), r"^`lr` must be >= 0"),
    (lambda sd: sd["param_groups"][0].__setitem__("backend", "fast"), r"Received: backend='fast'"),
])
def test_each_mismatch_is_refused_and_nothing_changes(change, message):
    opt, params = _trained()
    before = _saved(opt)
    sd = copy.deepcopy(opt.state_dict())   # torch's state_dict shares the state's dicts
    change(sd)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    assert _saved(opt) == before
    _step(opt, params, 2)   # and it still steps


def test_state_follows_torchs_dtype_and_device_policy_and_the_parameters_memory_layout():
    opt, params = _trained()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].double()                # cast back
    sd["state"][0]["exp_avg_sq"] = sd["state"][0]["exp_avg_sq"].t().contiguous().t()  # strided
    sd["state"][1]["exp_avg_sq"] = sd["state"][1]["exp_avg"]                       # aliased
    sd["state"][2]["step"] = 2                                                      # a number
    fresh = do.Adam(params, lr=0.1)
    fresh.load_state_dict(sd)
    s0, s1 = fresh.state[params[0]], fresh.state[params[1]]
    assert s0["exp_avg"].dtype == torch.float32
    assert s0["exp_avg_sq"].stride() == params[0].stride()
    assert s1["exp_avg_sq"].data_ptr() != s1["exp_avg"].data_ptr()
    assert torch.is_tensor(fresh.state[params[2]]["step"])
    _step(fresh, params, 2)


def test_a_torch_checkpoint_with_momentum_buffer_none_loads():
    params = _params()
    t = torch.optim.SGD(params, lr=0.1)
    _step(t, params, 0)
    opt = do.SGD(params, lr=0.1)
    opt.load_state_dict(t.state_dict())
    _step(opt, params, 1)


@pytest.mark.slow
def test_fuzzed_states_never_crash_and_refusals_change_nothing():
    summary = state_fuzz.run(n=120, seed=1, seconds=float("inf"))   # a fixed count, not a time
    assert summary["crashes"] == 0, summary
    assert summary["changed_by_refusal"] == 0, summary["log"]
    assert summary["raised_at_step"] == 0, summary["log"]
    assert summary["refused_other_error"] == 0, summary["log"]
    assert summary["refused"] > 0 and summary["accepted"] > 0 and summary["cases"] >= 100


@pytest.mark.parametrize("name,kw,backend", state_fuzz.combos(),
                         ids=[f"{n}-{b}" for n, _, b in state_fuzz.combos()])
def test_resume_through_a_saved_state_dict_is_bitwise(name, kw, backend):
    def run(split=None):
        params = _params(3)
        opt = do.create(name, params, backend=backend, **kw)
        paths = []
        for t in range(8):
            if t == split:
                buf = io.BytesIO()
                torch.save(opt.state_dict(), buf)
                buf.seek(0)
                opt = do.create(name, params, backend=backend, lr=123.0)
                opt.load_state_dict(torch.load(buf))
            _step(opt, params, t)
            paths.append(opt.last_backend)
        return torch.cat([p.detach().reshape(-1) for p in params]), paths

    ref, ref_paths = run()
    got, paths = run(split=4)
    assert paths == ref_paths
    assert torch.equal(got, ref)
