import math

import pytest
import torch

from descend.analysis.hessian import HessianOperator, hessian_trace, lanczos, model_loss, top_eigenvalues


def _quadratic(spectrum, seed=0):
    """0.5 w^T A w with A = Q diag(spectrum) Q^T, Q a random orthogonal matrix."""
    n = len(spectrum)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ Q.T
    w = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    return A, w, (lambda: 0.5 * w @ A @ w)


def test_hvp_equals_matrix_product():
    A, w, f = _quadratic([4.0, 1.0, 0.5, -2.0])
    v = torch.randn(4, dtype=torch.float64)
    assert torch.allclose(HessianOperator(f, [w]).matvec([v])[0], A @ v, atol=1e-12)


def test_power_iteration_finds_known_spectrum():
    spectrum = [10.0, 5.0, 2.0, 1.0, 0.5, 0.1]
    _, w, f = _quadratic(spectrum)
    vals, vecs = top_eigenvalues(f, [w], k=3, iters=500, tol=1e-12)
    assert vals == pytest.approx([10.0, 5.0, 2.0], rel=1e-6)
    # eigenvectors are orthonormal
    V = torch.stack([v[0] for v in vecs])
    assert torch.allclose(V @ V.T, torch.eye(3, dtype=torch.float64), atol=1e-5)


def test_power_iteration_returns_largest_magnitude():
    _, w, f = _quadratic([3.0, -7.0, 1.0])
    vals, _ = top_eigenvalues(f, [w], k=1, iters=500, tol=1e-12)
    assert vals[0] == pytest.approx(-7.0, rel=1e-6)


def test_lanczos_matches_eigvalsh_and_torch_reference():
    spectrum = [9.0, 4.0, 3.0, 1.0, -0.5, -6.0]
    A, w, f = _quadratic(spectrum, seed=3)
    ref = torch.linalg.eigvalsh(A).flip(0)
    assert lanczos(f, [w], steps=6, k=6) == pytest.approx(ref.tolist(), abs=1e-9)
    assert lanczos(f, [w], steps=6, k=2, which="smallest") == pytest.approx([-6.0, -0.5], abs=1e-9)


def test_hutchinson_exact_on_diagonal_and_within_variance_bound():
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    d = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    assert hessian_trace(lambda: 0.5 * (d * w * w).sum(), [w], samples=3) == pytest.approx(15.0)
    A, w, f = _quadratic([10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    n = 200
    est = hessian_trace(f, [w], samples=n, seed=1)
    off = (A**2).sum() - (torch.diagonal(A) ** 2).sum()
    sigma = math.sqrt(2 * float(off) / n)
    assert abs(est - float(torch.trace(A))) < 4 * sigma


def test_on_a_network_matches_full_hessian():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    closure = model_loss(model, torch.nn.functional.mse_loss, (x, y))
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def f(v):
        out, i = {}, 0
        for (name, p) in model.named_parameters():
            out[name] = v[i:i + p.numel()].view_as(p)
            i += p.numel()
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, out, (x,)), y)

    H = torch.autograd.functional.hessian(f, flat)
    ref = torch.linalg.eigvalsh(H)
    assert lanczos(closure, params, steps=H.shape[0], k=1)[0] == pytest.approx(float(ref[-1]), rel=1e-8)
    assert hessian_trace(closure, params, samples=400) == pytest.approx(float(torch.trace(H)), abs=0.2 * float(H.abs().sum()) ** 0.5 + 0.5)


def test_validation():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="`k` must be <= the number of parameters"):
        top_eigenvalues(lambda: (w * w).sum(), [w], k=3)
    with pytest.raises(ValueError, match="`which` must be one of"):
        lanczos(lambda: (w * w).sum(), [w], which="middle")
    with pytest.raises(ValueError, match="requires grad"):
        HessianOperator(lambda: w.sum(), [torch.zeros(2)])
