"""descend's optimizers under torch.compile: the automatic backend takes the reference
path inside a compiled step (plain tensor operations the compiler fuses), so a compiled
``opt.step`` is one graph (``fullgraph=True``) for every registry optimizer, and a
tensor learning rate that changes between steps compiles nothing again.

Graphs are counted with a counting compiler backend (a public ``torch.compile`` hook);
no graph is lowered, so these tests measure tracing, not kernels."""

import warnings

import pytest
import torch

import descend.optim as do

pytestmark = pytest.mark.slow


class Counter:
    """A torch.compile backend that counts the graphs it is given and runs them eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(8, 4, generator=g)),
            torch.nn.Parameter(torch.randn(4, generator=g))]


def _compiled_steps(make, steps=6, warm=0, fullgraph=False, tensor_lr=False):
    torch._dynamo.reset()
    params = _params()
    lr = torch.tensor(0.01) if tensor_lr else 0.01
    opt = make(params, lr)
    for _ in range(warm):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    counter = Counter()
    step = torch.compile(opt.step, backend=counter, fullgraph=fullgraph)
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(steps):
            for p in params:
                p.grad = torch.randn_like(p)
            step()
            graphs.append(counter.graphs)
            for g in opt.param_groups:
                if torch.is_tensor(g["lr"]):
                    g["lr"].fill_(float(g["lr"]) * 0.9)
                else:
                    g["lr"] *= 0.9
    return graphs, opt, params


def test_fullgraph_compiles_and_a_changing_tensor_learning_rate_compiles_nothing_again():
    # every registry optimizer: benchmarks/compile_check.py (too slow for the suite)
    graphs, opt, params = _compiled_steps(lambda p, lr: do.create("adam", p, lr=lr), warm=1,
                                          fullgraph=True, tensor_lr=True)
    assert graphs == [1] * 6
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01 * 0.9 ** 6)


def test_graph_breaks_are_no_more_than_torch_optims():
    ours, _, _ = _compiled_steps(lambda p, lr: do.Adam(p, lr=lr))
    theirs, _, _ = _compiled_steps(lambda p, lr: torch.optim.Adam(p, lr=lr))
    # graphs per step (a graph break splits a step in two): after the state exists
    assert ours[-1] - ours[-2] == 0 and theirs[-1] - theirs[-2] == 0
    assert ours[0] <= theirs[0]


def test_compiled_step_equals_the_eager_step():
    def run(compiled):
        torch.manual_seed(0)
        params = _params()
        opt = do.Adam(params, lr=torch.tensor(0.01))
        step = torch.compile(opt.step, backend=Counter(), fullgraph=True) if compiled else opt.step
        g = torch.Generator().manual_seed(1)
        for t in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            step()
            opt.param_groups[0]["lr"].fill_(0.01 * 0.9 ** (t + 1))
        return torch.cat([p.detach().reshape(-1) for p in params])

    torch._dynamo.reset()
    # inside torch.compile the scalars (bias corrections) are float32 tensors, in eager
    # Python floats: equal to float32 round-off
    torch.testing.assert_close(run(True), run(False), rtol=1e-5, atol=1e-6)
