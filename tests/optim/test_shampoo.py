"""Shampoo against dense matrix roots (SciPy's fractional_matrix_power), Kronecker
products for tensors, its grafting and fallback against torch's AdaGrad and Adam."""

import numpy as np
import pytest
import torch
from scipy.linalg import fractional_matrix_power

import descend.optim as do

DT = torch.float64


def root(h, power):
    return torch.from_numpy(np.real(fractional_matrix_power(h.numpy(), power)))


def grads(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=DT) for _ in range(steps)]


def apply(opt, w, gs):
    out = []
    for g in gs:
        w.grad = g.clone()
        opt.step()
        out.append(w.detach().clone())
    return out


def test_matrix_update_is_the_dense_l_quarter_g_r_quarter():
    """L = eps I + sum G G^T, R = eps I + sum G^T G, w <- w - lr L^-1/4 G R^-1/4."""
    gs = grads((4, 3), 5)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=DT))
    w_ref = w.detach().clone()
    eps, lr = 1e-3, 0.1
    got = apply(do.Shampoo([w], lr=lr, eps=eps, graft="none"), w, gs)
    L, R = eps * torch.eye(4, dtype=DT), eps * torch.eye(3, dtype=DT)
    for g, w_got in zip(gs, got):
        L, R = L + g @ g.T, R + g.T @ g
        w_ref = w_ref - lr * root(L, -0.25) @ g @ root(R, -0.25)
        torch.testing.assert_close(w_got, w_ref, rtol=1e-10, atol=1e-12)


def test_tensor_update_is_the_kronecker_product_of_the_roots():
    """Order-3 tensor: vec(G x1 P1 x2 P2 x3 P3) = (P3 (x) P2 (x) P1) vec(G) (column-major),
    P_i = (eps I + sum G_(i) G_(i)^T)^(-1/6)."""
    shape = (3, 2, 4)
    gs = grads(shape, 3, seed=1)
    w = torch.nn.Parameter(torch.zeros(shape, dtype=DT))
    eps = 1e-2
    got = apply(do.Shampoo([w], lr=1.0, eps=eps, graft="none"), w, gs)
    hs = [eps * torch.eye(n, dtype=DT) for n in shape]
    total = torch.zeros(shape, dtype=DT)
    for g, w_got in zip(gs, got):
        for i in range(3):
            gi = g.movedim(i, 0).reshape(shape[i], -1)
            hs[i] = hs[i] + gi @ gi.T
        ps = [root(h, -1 / 6) for h in hs]
        vec = torch.from_numpy(g.numpy().reshape(-1, order="F"))
        d = torch.kron(torch.kron(ps[2], ps[1]), ps[0]) @ vec
        total = total - torch.from_numpy(d.numpy().reshape(shape, order="F"))
        torch.testing.assert_close(w_got, total, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("graft", ["adagrad", "adam", "sgd"])
def test_grafting_takes_the_direction_of_shampoo_and_the_norm_of_the_graft(graft):
    gs = grads((3, 5), 4, seed=2)
    w = torch.nn.Parameter(torch.randn(3, 5, dtype=DT))
    w0 = w.detach().clone()
    eps, lr, ge = 1e-4, 0.05, 1e-8
    got = apply(do.Shampoo([w], lr=lr, eps=eps, graft=graft, graft_eps=ge), w, gs)
    L, R = eps * torch.eye(3, dtype=DT), eps * torch.eye(5, dtype=DT)
    acc, m, v = torch.zeros(3, 5, dtype=DT), torch.zeros(3, 5, dtype=DT), torch.zeros(3, 5, dtype=DT)
    for t, (g, w_got) in enumerate(zip(gs, got), start=1):
        L, R = L + g @ g.T, R + g.T @ g
        d = root(L, -0.25) @ g @ root(R, -0.25)
        if graft == "adagrad":
            acc = acc + g * g
            e = g / (acc.sqrt() + ge)
        elif graft == "adam":
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            e = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + ge)
        else:
            e = g
        w0 = w0 - lr * d * e.norm() / d.norm()
        torch.testing.assert_close(w_got, w0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("graft,reference", [
    ("adagrad", lambda p, lr: torch.optim.Adagrad(p, lr=lr, eps=1e-10)),
    ("adam", lambda p, lr: torch.optim.Adam(p, lr=lr, eps=1e-10)),
    ("sgd", lambda p, lr: torch.optim.SGD(p, lr=lr)),
])
def test_vectors_fall_back_to_the_graft_method_as_torch_has_it(graft, reference):
    gs = grads((6,), 8, seed=3)
    a = torch.nn.Parameter(torch.randn(6, dtype=DT))
    b = torch.nn.Parameter(a.detach().clone())
    got = apply(do.Shampoo([a], lr=0.1, graft=graft, graft_eps=1e-10), a, gs)
    want = apply(reference([b], 0.1), b, gs)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_update_interval_keeps_the_roots_between_refreshes():
    gs = grads((3, 3), 5, seed=4)
    w = torch.nn.Parameter(torch.zeros(3, 3, dtype=DT))
    got = apply(do.Shampoo([w], lr=1.0, eps=1e-3, graft="none", update_interval=3), w, gs)
    L = R = 1e-3 * torch.eye(3, dtype=DT)
    total = torch.zeros(3, 3, dtype=DT)
    for k, (g, w_got) in enumerate(zip(gs, got)):
        L, R = L + g @ g.T, R + g.T @ g
        if k % 3 == 0:                       # steps 1 and 4
            pl, pr = root(L, -0.25), root(R, -0.25)
        total = total - pl @ g @ pr
        torch.testing.assert_close(w_got, total, rtol=1e-10, atol=1e-12)


def test_oversized_dimensions_are_left_unpreconditioned_and_beta2_averages():
    """max_preconditioner_dim=4 on a 3 x 6 matrix: only L (power -1/4 of order 2);
    beta2 < 1: H <- beta2 H + (1 - beta2) G G^T, root of (H + eps I)."""
    gs = grads((3, 6), 3, seed=5)
    w = torch.nn.Parameter(torch.zeros(3, 6, dtype=DT))
    opt = do.Shampoo([w], lr=1.0, eps=1e-3, graft="none", beta2=0.9, max_preconditioner_dim=4)
    got = apply(opt, w, gs)
    h = torch.zeros(3, 3, dtype=DT)
    total = torch.zeros(3, 6, dtype=DT)
    for g, w_got in zip(gs, got):
        h = 0.9 * h + 0.1 * g @ g.T
        total = total - root(h + 1e-3 * torch.eye(3, dtype=DT), -0.25) @ g
        torch.testing.assert_close(w_got, total, rtol=1e-10, atol=1e-12)
    assert "shampoo_H0" in opt.state[w] and "shampoo_H1" not in opt.state[w]


def test_momentum_and_weight_decay_on_the_grafted_direction():
    gs = grads((2, 3), 3, seed=6)
    w = torch.nn.Parameter(torch.randn(2, 3, dtype=DT))
    ref = w.detach().clone()
    got = apply(do.Shampoo([w], lr=0.1, momentum=0.5, weight_decay=0.01, graft="sgd", eps=1e-3), w, gs)
    L, R, buf = 1e-3 * torch.eye(2, dtype=DT), 1e-3 * torch.eye(3, dtype=DT), None
    for g, w_got in zip(gs, got):
        L, R = L + g @ g.T, R + g.T @ g
        d = root(L, -0.25) @ g @ root(R, -0.25)
        d = d * g.norm() / d.norm() + 0.01 * ref
        buf = d if buf is None else 0.5 * buf + d
        ref = ref - 0.1 * buf
        torch.testing.assert_close(w_got, ref, rtol=1e-10, atol=1e-12)


def test_arguments_are_checked():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match=r"^`graft` must be one of 'adagrad', 'adam', 'sgd', 'none'. "
                                         r"Received: graft='rmsprop'$"):
        do.Shampoo(p, graft="rmsprop")
    with pytest.raises(ValueError, match=r"^`update_interval` must be an integer >= 1"):
        do.Shampoo(p, update_interval=0)
    with pytest.raises(ValueError, match=r"^`beta2` must be > 0 and <= 1. Received: beta2=0.0$"):
        do.Shampoo(p, beta2=0.0)
