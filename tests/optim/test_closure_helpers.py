"""The helpers of the closure-driven optimizers: backward that keeps its graph and the
module calls of a closure, for the calling thread only."""

import threading

import pytest
import torch
from torch import nn

from descend.optim._closure import backward_keeps_graph, module_calls


def test_backward_keeps_graph_for_this_thread_only_and_is_restored():
    original = torch.autograd.backward
    w = torch.tensor([2.0], requires_grad=True)
    other = {}

    def elsewhere():
        v = torch.tensor([2.0], requires_grad=True)
        loss = (v ** 3).sum()
        loss.backward()
        other["graph"] = v.grad.grad_fn
        with pytest.raises(RuntimeError):     # the graph was freed as usual
            loss.backward()
        other["ok"] = True

    with backward_keeps_graph(create_graph=True):
        loss = (w ** 3).sum()
        loss.backward()
        loss.backward()                        # kept: a second pass works
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
    assert torch.autograd.backward is original
    assert w.grad.grad_fn is not None and other == {"graph": None, "ok": True}
    torch.testing.assert_close(torch.autograd.grad(w.grad.sum(), w)[0], torch.tensor([24.0]))


def test_module_calls_sees_depth_and_ignores_other_threads():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Linear(2, 1)))
    seen = []
    with module_calls(lambda m, i, o, d: seen.append((type(m).__name__, d))):
        t = threading.Thread(target=lambda: net(torch.zeros(1, 2)))
        t.start()
        t.join()
        assert seen == []
        net(torch.zeros(1, 2))
    assert seen == [("Linear", 1), ("ReLU", 2), ("Linear", 2), ("Sequential", 1), ("Sequential", 0)]
    net(torch.zeros(1, 2))                     # removed after the context
    assert len(seen) == 5
