"""The GRU in both forms, each against its formula written out step by step, in float64."""

import pytest
import torch

from descend.nn import GRU, MODELS


def sigma(a):
    return 1 / (1 + torch.exp(-a))


def notes_gru(x, h, Wr, Ur, Wz, Uz, W, U, br, bz, b):
    """Notes 001: r = s(W_r h + U_r x), z = s(W_z h + U_z x), h~ = tanh(W (r * h) + U x),
    h_t = (1 - z) h + z h~ (with biases br, bz, b added inside, as every implementation has)."""
    outs = []
    for t in range(x.shape[0]):
        r = sigma(h @ Wr.T + x[t] @ Ur.T + br)
        z = sigma(h @ Wz.T + x[t] @ Uz.T + bz)
        cand = torch.tanh((r * h) @ W.T + x[t] @ U.T + b)
        h = (1 - z) * h + z * cand
        outs.append(h)
    return torch.stack(outs), h


def torch_gru(x, h, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.GRU's documented formula: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h."""
    Wir, Wiz, Win = w_ih.chunk(3)
    Whr, Whz, Whn = w_hh.chunk(3)
    bir, biz, bin_ = b_ih.chunk(3)
    bhr, bhz, bhn = b_hh.chunk(3)
    outs = []
    for t in range(x.shape[0]):
        r = sigma(x[t] @ Wir.T + bir + h @ Whr.T + bhr)
        z = sigma(x[t] @ Wiz.T + biz + h @ Whz.T + bhz)
        n = torch.tanh(x[t] @ Win.T + bin_ + r * (h @ Whn.T + bhn))
        h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs), h


def _setup(reset_after, **kw):
    torch.manual_seed(0)
    g = GRU(3, 5, reset_after=reset_after, **kw).double()
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.7)  # larger than the default init: the two forms differ more
    return g


def test_notes_form_matches_the_notes_formula_to_1e_12():
    g = _setup(False)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 5, dtype=torch.float64)
    out, hn = g(x, h0)
    w_ih, w_hh, b_ih, b_hh = g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0
    Wir, Wiz, Win = w_ih.chunk(3)
    Whr, Whz, Whn = w_hh.chunk(3)
    bir, biz, bin_ = b_ih.chunk(3)
    bhr, bhz, bhn = b_hh.chunk(3)
    # the notes' z is torch's 1 - z: its weights are the negated update-gate weights
    ref, ref_h = notes_gru(x, h0[0], Whr, Wir, -Whz, -Wiz, Whn, Win, bir + bhr, -(biz + bhz), bin_ + bhn)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0) and torch.allclose(hn[0], ref_h, atol=1e-12, rtol=0)


def test_torch_form_matches_torch_formula_and_module_to_1e_12():
    g = _setup(True)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, hn = g(x)
    ref, _ = torch_gru(x, torch.zeros(2, 5, dtype=torch.float64), g.weight_ih_l0, g.weight_hh_l0,
                       g.bias_ih_l0, g.bias_hh_l0)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    plain = torch.nn.GRU(3, 5).double()
    plain.load_state_dict(g.state_dict())
    assert torch.equal(plain(x)[0], out)


def test_the_two_forms_differ():
    a, b = _setup(True), _setup(False)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    assert (a(x)[0] - b(x)[0]).abs().max() > 1e-2


def test_layers_directions_batch_first_unbatched_and_gradients():
    g = _setup(False, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    out, hn = g(x)
    assert out.shape == (2, 4, 10) and hn.shape == (4, 2, 5)
    # reverse direction: the last output of the backward pass is at position 0
    one = _setup(False, bidirectional=True)
    seq = torch.randn(4, 1, 3, dtype=torch.float64)
    o, h = one(seq)
    assert torch.allclose(o[0, 0, 5:], h[1, 0]) and torch.allclose(o[-1, 0, :5], h[0, 0])
    # unbatched input gives the batched result without the batch axis
    ub, ubh = one(seq[:, 0])
    assert torch.allclose(ub, o[:, 0]) and torch.allclose(ubh, h[:, 0])
    # autograd through the loop
    small = _setup(False)
    xx = torch.randn(3, 1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: small(t)[0], (xx,))


def test_model_builder_option_and_errors():
    m = MODELS.create("gru", input_shape=(40,), num_classes=10, hidden_size=6, reset_after=False)
    assert isinstance(m.rnn, GRU) and not m.rnn.reset_after and m(torch.zeros(2, 40)).shape == (2, 10)
    assert type(MODELS.create("gru", input_shape=(40,), num_classes=10).rnn) is torch.nn.GRU
    with pytest.raises(TypeError, match="reset_after"):
        MODELS.create("lstm", input_shape=(40,), num_classes=10, reset_after=False)
    with pytest.raises(TypeError, match="`reset_after` must be"):
        GRU(2, 3, reset_after="no")
    with pytest.raises(TypeError, match="packed sequences need reset_after=True"):
        GRU(2, 3, reset_after=False)(torch.nn.utils.rnn.pack_sequence([torch.zeros(2, 2)]))
