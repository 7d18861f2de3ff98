"""K-FAC against dense Kronecker algebra: (A (x) G)^-1 vec(grad) for linear and
convolutional layers, factors by explicit loops, running averages, the inverse schedule,
KL clipping and the elementwise fallback."""

import math

import pytest
import torch
from torch import nn

import descend.optim as do
from descend.optim.kfac import kfac_factors

DT = torch.float64


def closure_for(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss
    return closure


def batch_grads(model, x, y, layer):
    """The layer's input, the gradient of the mean loss at its output, and the gradients."""
    seen = {}
    model.zero_grad()
    h1 = layer.register_forward_hook(lambda m, i, o: seen.update(a=i[0].detach(), out=o))
    out = model(x)
    h1.remove()
    seen["out"].retain_grad()
    nn.functional.mse_loss(out, y).backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    model.zero_grad()
    return seen["a"], seen["out"].grad, grads


def damped(a, g, lam, pi_damping=True):
    pi = math.sqrt((a.trace() / a.shape[0]) / (g.trace() / g.shape[0])) if pi_damping else 1.0
    return (a + pi * math.sqrt(lam) * torch.eye(a.shape[0], dtype=DT),
            g + math.sqrt(lam) / pi * torch.eye(g.shape[0], dtype=DT))


def dense_direction(a_d, g_d, grad_w, grad_b):
    """((A (x) G))^-1 vec([grad W, grad b]) with column-major vec, back to matrices."""
    v = grad_w.reshape(grad_w.shape[0], -1)
    if grad_b is not None:
        v = torch.cat([v, grad_b[:, None]], dim=1)
    u = torch.linalg.solve(torch.kron(a_d, g_d), v.T.reshape(-1)).reshape(v.shape[1], v.shape[0]).T
    if grad_b is None:
        return u.reshape(grad_w.shape), None
    return u[:, :-1].reshape(grad_w.shape), u[:, -1]


@pytest.mark.parametrize("bias,pi_damping", [(True, True), (False, True), (True, False)])
def test_linear_layer_direction_is_the_dense_kronecker_solve(bias, pi_damping):
    torch.manual_seed(0)
    lin = nn.Linear(4, 3, bias=bias).to(DT)
    x, y = torch.randn(10, 4, dtype=DT), torch.randn(10, 3, dtype=DT)
    a_in, g_out, grads = batch_grads(lin, x, y, lin)
    # the factors, written out: A = mean of [a, 1][a, 1]^T, G = m sum g g^T
    abar = torch.cat([a_in, torch.ones(10, 1, dtype=DT)], 1) if bias else a_in
    a_f, g_f = abar.T @ abar / 10, 10 * g_out.T @ g_out
    a_d, g_d = damped(a_f, g_f, 0.01, pi_damping)
    uw, ub = dense_direction(a_d, g_d, grads[0], grads[1] if bias else None)
    w0 = [p.detach().clone() for p in lin.parameters()]
    lr = 0.3
    opt = do.KFAC(lin.parameters(), lr=lr, momentum=0.0, damping=0.01, pi_damping=pi_damping,
                  kl_clip=None)
    opt.step(closure_for(opt, lin, x, y))
    torch.testing.assert_close((w0[0] - lin.weight.detach()) / lr, uw, rtol=1e-10, atol=1e-12)
    if bias:
        torch.testing.assert_close((w0[1] - lin.bias.detach()) / lr, ub, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(opt.state[lin.weight]["kfac_A"], a_f, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state[lin.weight]["kfac_G"], g_f, rtol=1e-12, atol=1e-14)


def conv_factors_by_loops(conv, a_in, g_out):
    """KFC's factors by explicit loops over examples and output positions (1-D and 2-D)."""
    two_d = a_in.dim() == 4
    if not two_d:
        a_in, g_out = a_in.unsqueeze(2), g_out.unsqueeze(2)
    kh, kw = (conv.kernel_size if two_d else (1, conv.kernel_size[0]))
    sh, sw = (conv.stride if two_d else (1, conv.stride[0]))
    ph, pw = (conv.padding if two_d else (0, conv.padding[0]))
    x = nn.functional.pad(a_in, (pw, pw, ph, ph))
    m, _, oh, ow = g_out.shape
    rows_a, rows_g = [], []
    for n in range(m):
        for i in range(oh):
            for j in range(ow):
                patch = x[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(-1)
                rows_a.append(torch.cat([patch, torch.ones(1, dtype=DT)]))
                rows_g.append(g_out[n, :, i, j])
    a_rows, g_rows = torch.stack(rows_a), torch.stack(rows_g)
    return a_rows.T @ a_rows / len(rows_a), m * g_rows.T @ g_rows


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_layer_factors_and_direction(dims):
    torch.manual_seed(1)
    conv = (nn.Conv1d(2, 3, 3, stride=2, padding=1) if dims == 1 else
            nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(1, 0))).to(DT)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten())
    x = torch.randn(5, 2, *(7,) * dims, dtype=DT)
    y = torch.randn(model(x).shape, dtype=DT)
    a_in, g_out, grads = batch_grads(model, x, y, conv)
    a_f, g_f = conv_factors_by_loops(conv, a_in, g_out)
    got_a, got_g = kfac_factors(conv, a_in, g_out, with_bias=True)
    torch.testing.assert_close(got_a, a_f, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_g, g_f, rtol=1e-12, atol=1e-14)
    uw, ub = dense_direction(*damped(a_f, g_f, 0.1), grads[0], grads[1])
    w0 = [p.detach().clone() for p in conv.parameters()]
    opt = do.KFAC(model.parameters(), lr=1.0, momentum=0.0, damping=0.1, kl_clip=None)
    opt.step(closure_for(opt, model, x, y))
    torch.testing.assert_close(w0[0] - conv.weight.detach(), uw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w0[1] - conv.bias.detach(), ub, rtol=1e-10, atol=1e-12)


def test_same_padding_and_dilation_match_the_loops():
    torch.manual_seed(2)
    conv = nn.Conv1d(2, 2, 3, padding="same", dilation=2).to(DT)
    x = torch.randn(3, 2, 6, dtype=DT)
    out = conv(x)
    g = torch.randn_like(out)
    a, _ = kfac_factors(conv, x, g, with_bias=False)
    xp = nn.functional.pad(x, (2, 2))
    rows = [xp[n, :, t:t + 5:2].reshape(-1) for n in range(3) for t in range(6)]
    r = torch.stack(rows)
    torch.testing.assert_close(a, r.T @ r / len(rows), rtol=1e-12, atol=1e-14)


def test_running_averages_inverse_schedule_momentum_and_weight_decay():
    """A_t = d A_{t-1} + (1 - d) A_batch (A_1 = A_batch); inverses at steps 1, 3, 5 for
    inverse_every=2; u + wd w; b <- m b + u; w <- w - lr b."""
    torch.manual_seed(3)
    lin = nn.Linear(3, 2).to(DT)
    xs = [torch.randn(8, 3, dtype=DT) for _ in range(4)]
    ys = [torch.randn(8, 2, dtype=DT) for _ in range(4)]
    d, lam, lr, m, wd = 0.8, 0.05, 0.1, 0.9, 0.01
    opt = do.KFAC(lin.parameters(), lr=lr, momentum=m, damping=lam, stat_decay=d,
                  inverse_every=2, weight_decay=wd, kl_clip=None)
    a_run = g_run = inv = None
    bufs = None
    for k, (x, y) in enumerate(zip(xs, ys), start=1):
        a_in, g_out, (gw, gb) = batch_grads(lin, x, y, lin)
        abar = torch.cat([a_in, torch.ones(8, 1, dtype=DT)], 1)
        a_b, g_b = abar.T @ abar / 8, 8 * g_out.T @ g_out
        a_run = a_b if a_run is None else d * a_run + (1 - d) * a_b
        g_run = g_b if g_run is None else d * g_run + (1 - d) * g_b
        if k % 2 == 1:
            inv = [torch.linalg.inv(t) for t in damped(a_run, g_run, lam)]
        v = torch.cat([gw, gb[:, None]], 1)
        u = inv[1] @ v @ inv[0]
        us = [u[:, :3] + wd * lin.weight.detach(), u[:, 3] + wd * lin.bias.detach()]
        bufs = us if bufs is None else [m * b + u for b, u in zip(bufs, us)]
        want = [lin.weight.detach() - lr * bufs[0], lin.bias.detach() - lr * bufs[1]]
        opt.step(closure_for(opt, lin, x, y))
        torch.testing.assert_close(lin.weight.detach(), want[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lin.bias.detach(), want[1], rtol=1e-10, atol=1e-12)


def test_kl_clip_scales_the_preconditioned_step():
    """nu = min(1, sqrt(kl_clip / (lr^2 sum U.V)))."""
    torch.manual_seed(4)
    lin = nn.Linear(3, 2).to(DT)
    x, y = torch.randn(8, 3, dtype=DT), 10 * torch.randn(8, 2, dtype=DT)
    w0 = [p.detach().clone() for p in lin.parameters()]
    free = do.KFAC(lin.parameters(), lr=0.5, momentum=0.0, kl_clip=None)
    free.step(closure_for(free, lin, x, y))
    u = [(a - p.detach()) / 0.5 for a, p in zip(w0, lin.parameters())]
    with torch.no_grad():
        for p, a in zip(lin.parameters(), w0):
            p.copy_(a)
    _, _, grads = batch_grads(lin, x, y, lin)
    vg = sum(float((ui * gi).sum()) for ui, gi in zip(u, grads)) * 0.25
    nu = min(1.0, math.sqrt(1e-3 / vg))
    assert nu < 1
    clipped = do.KFAC(lin.parameters(), lr=0.5, momentum=0.0, kl_clip=1e-3)
    clipped.step(closure_for(clipped, lin, x, y))
    for a, p, ui in zip(w0, lin.parameters(), u):
        torch.testing.assert_close(p.detach(), a - 0.5 * nu * ui, rtol=1e-10, atol=1e-12)


def test_other_parameters_fall_back_to_momentum_sgd():
    """A LayerNorm, an embedding and a grouped convolution step exactly as torch's SGD."""
    torch.manual_seed(5)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.norm = nn.LayerNorm(4)
            self.conv = nn.Conv1d(4, 4, 3, groups=2, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, idx):
            h = self.conv(self.norm(self.emb(idx)).transpose(1, 2)).mean(2)
            return self.head(h)

    def make():
        torch.manual_seed(5)
        return Net().to(DT)
    idx = torch.randint(0, 5, (6, 7))
    y = torch.randn(6, 2, dtype=DT)
    a, b = make(), make()

    def groups(net):   # the K-FAC layer (head) does not move, so the gradients stay equal
        return [{"params": [p for n, p in net.named_parameters() if not n.startswith("head")]},
                {"params": list(net.head.parameters()), "lr": 0.0}]
    kfac = do.KFAC(groups(a), lr=0.1, momentum=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD(groups(b), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        kfac.step(closure_for(kfac, a, idx, y))
        sgd.zero_grad()
        nn.functional.mse_loss(b(idx), y).backward()
        sgd.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    assert "kfac_A" in kfac.state[a.head.weight] and "kfac_A" not in kfac.state[a.conv.weight]


def test_model_hooks_equal_closure_hooks_and_step_without_closure():
    torch.manual_seed(6)
    make = lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(DT)  # noqa: E731
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(9, 3, dtype=DT), torch.randn(9, 2, dtype=DT)
    oa = do.KFAC(a.parameters(), lr=0.2, inverse_every=1)
    ob = do.KFAC(b.parameters(), lr=0.2, inverse_every=1, model=b)
    for _ in range(3):
        oa.step(closure_for(oa, a, x, y))
        ob.zero_grad()
        nn.functional.mse_loss(b(x), y).backward()
        with torch.no_grad():
            b(x)                      # a forward without backward is not used
        ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="`closure` must be given, or the optimizer built with model="):
        oa.step()


def test_arguments_are_checked():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match=r"^`damping` must be > 0. Received: damping=0.0$"):
        do.KFAC(p, damping=0.0)
    with pytest.raises(ValueError, match=r"^`stat_decay` must be >= 0 and < 1. Received: stat_decay=1.0$"):
        do.KFAC(p, stat_decay=1.0)
    with pytest.raises(ValueError, match=r"^`inverse_every` must be an integer >= 1"):
        do.KFAC(p, inverse_every=0)
    with pytest.raises(TypeError, match=r"^`model` must be an nn.Module or None"):
        do.KFAC(p, model="net")
