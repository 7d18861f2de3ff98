"""FSDP2 (``fully_shard``: parameters become DTensors) with descend's torch-API
optimizers, 2 processes on CPU with gloo, against ``torch.optim`` doing the same."""

import os
import socket

import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

# (class name, keyword arguments, descend's backend)
RUNS = [("SGD", dict(lr=1e-2, momentum=0.9), "auto"), ("SGD", dict(lr=1e-2), "reference"),
        ("Adagrad", dict(lr=1e-2), "auto"), ("RMSprop", dict(lr=1e-2, momentum=0.5), "auto"),
        ("Adadelta", dict(lr=1.0), "auto"), ("Adam", dict(lr=1e-2), "auto"),
        ("AdamW", dict(lr=1e-2, weight_decay=0.1), "auto"),
        ("AdamW", dict(lr=1e-2, weight_decay=0.1), "reference")]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _worker(rank, world, port):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard

    import descend.optim as do
    try:
        for name, kwargs, backend in RUNS:
            weights, picked = [], None
            for optim in (do, torch.optim):
                net = _model()
                for layer in net:
                    if isinstance(layer, torch.nn.Linear):
                        fully_shard(layer)
                fully_shard(net)
                kw = dict(kwargs, backend=backend) if optim is do else kwargs
                opt = getattr(optim, name)(net.parameters(), **kw)
                g = torch.Generator().manual_seed(rank)   # each process its own data
                for _ in range(3):
                    opt.zero_grad()
                    net(torch.randn(8, 8, generator=g)).pow(2).mean().backward()
                    opt.step()
                if optim is do:
                    picked = opt.last_backend
                weights.append(torch.cat([p.full_tensor().detach().flatten()
                                          for p in net.parameters()]))
            gap = float((weights[0] - weights[1]).abs().max())
            assert gap < 1e-6, (name, backend, gap)
            assert picked == ("foreach" if backend == "auto" else "reference"), (name, picked)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_torch_api_optimizers_equal_torch_optim():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port), nprocs=2)


def test_generated_kernels_are_refused_for_dtensor_parameters(monkeypatch):
    import descend.optim as do
    from descend.optim import backends
    w = torch.nn.Parameter(torch.zeros(3))
    opt = do.SGD([w], lr=0.1, momentum=0.9)
    group = opt.param_groups[0]
    monkeypatch.setattr(backends, "is_dtensor", lambda p: True)
    assert backends.choose(opt.transform, group, [w]) == ("foreach", "")
    assert backends.choose(opt.transform, {**group, "clip_value": 1.0}, [w]) == ("reference", "")
    assert backends.choose(opt.transform, {**group, "backend": "kernel"}, [w])[0] == ""
    assert backends.choose(opt.transform, {**group, "backend": "fused"}, [w])[0] == ""


def _chain_names():
    import descend.optim as do
    names = []
    for name in do.OPTIMIZERS.names():
        opt = do.create(name, [torch.nn.Parameter(torch.zeros(2))], lr=0.01)
        if hasattr(opt, "transform"):   # the chains (the others keep whole-matrix state)
            names.append(name)
    return names


def _registry_worker(rank, world, port, names):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard

    import descend.optim as do
    try:
        for name in names:
            kw = {"lr": 1.0} if name == "adadelta" else {"lr": 1e-2}
            data = [torch.randn(8, 8, generator=torch.Generator().manual_seed(r)) for r in range(world)]
            runs = []
            for sharded in (True, False):
                net = _model()
                if sharded:
                    for layer in net:
                        if isinstance(layer, torch.nn.Linear):
                            fully_shard(layer)
                    fully_shard(net)
                opt = do.create(name, net.parameters(), **kw)
                for _ in range(3):
                    def closure():
                        opt.zero_grad()
                        if sharded:   # each process its own batch; FSDP averages the gradients
                            loss = net(data[rank]).pow(2).mean()
                        else:         # the same average on one unsharded model
                            loss = sum(net(x).pow(2).mean() for x in data) / world
                        loss.backward()
                        return loss
                    opt.step(closure)
                runs.append(torch.cat([(p.full_tensor() if sharded else p).detach().flatten()
                                       for p in net.parameters()]))
            gap = float((runs[0] - runs[1]).abs().max())
            assert gap < 1e-5, (name, gap)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_every_registry_chain_equals_the_unsharded_run():
    # descend-only options (textbook momentum, look-ahead Nesterov, RMSprop with Nesterov...)
    # have no torch.optim twin: the reference is the same optimizer on the unsharded model
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_registry_worker, args=(2, port, _chain_names()), nprocs=2)


def _zero_worker(rank, world, port, names):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    import descend.optim as do
    torch_api = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adadelta": "Adadelta",
                 "adam": "Adam", "adamw": "AdamW"}
    try:
        for name in names:
            kw = {"lr": 1.0} if name == "adadelta" else {"lr": 1e-2}
            runs = []
            # ZeRO with descend's; then torch's twin under ZeRO, or descend's without ZeRO
            for how in ("zero", "twin"):
                net = torch.nn.parallel.DistributedDataParallel(_model())
                if how == "zero":
                    opt = ZeroRedundancyOptimizer(
                        net.parameters(), optimizer_class=lambda p, **k: do.create(name, p, **k), **kw)
                elif name in torch_api:
                    opt = ZeroRedundancyOptimizer(net.parameters(),
                                                  optimizer_class=getattr(torch.optim, torch_api[name]), **kw)
                else:
                    opt = do.create(name, net.parameters(), **kw)
                g = torch.Generator().manual_seed(rank)
                for _ in range(3):
                    x = torch.randn(8, 8, generator=g)

                    def closure():
                        opt.zero_grad()
                        loss = net(x).pow(2).mean()
                        loss.backward()
                        return loss
                    opt.step(closure)
                runs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
            gap = float((runs[0] - runs[1]).abs().max())
            assert gap < 1e-5, (name, gap)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_zero_redundancy_with_every_registry_chain():
    # torch's six against torch.optim under ZeRO; descend-only chains against themselves without ZeRO
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # look-ahead Nesterov is left out: it shifts the parameters to w + mu v before the
    # closure, and under ZeRO each process shifts only its own shard (docs/integrations/fsdp.md)
    names = [n for n in _chain_names() if n != "nesterov_lookahead"]
    mp.spawn(_zero_worker, args=(2, port, names), nprocs=2)
