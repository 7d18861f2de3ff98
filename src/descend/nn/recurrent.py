"""The GRU of the notes beside torch's: where the reset gate acts.

Notes 001 ("Review: Gated Recurrent Unit", after Cho et al., EMNLP 2014) write::

    r_t  = sigma(W_r h_{t-1} + U_r x_t)
    z_t  = sigma(W_z h_{t-1} + U_z x_t)
    h~_t = tanh(W (r_t * h_{t-1}) + U x_t)            # reset applied BEFORE the product with W
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

``torch.nn.GRU`` (and cuDNN) computes the candidate as ``tanh(W_in x + b_in + r * (W_hn h +
b_hn))``: the reset gate multiplies ``W h`` AFTER the product (Keras calls this
``reset_after=True``, its default since TF 2; ``reset_after=False`` is the notes' and Cho's
form). The two are different functions of the same weights (not a reparametrization).

The update gate's convention also differs: torch writes ``h_t = (1 - z) * n + z * h_{t-1}``,
the notes ``h_t = (1 - z) * h_{t-1} + z * h~``. That one is a reparametrization: since
``1 - sigma(a) = sigma(-a)``, the notes' ``z`` is torch's ``1 - z``, i.e. the notes'
``(W_z, U_z, bias)`` are torch's ``-(W_hz, W_iz, b_iz + b_hz)``. :class:`GRU` keeps torch's
parameter layout and update convention for both forms, so a checkpoint of
``torch.nn.GRU`` loads into it and ``reset_after=True`` gives torch's outputs exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from descend._validation import check_bool, fail


class GRU(nn.GRU):
    """``torch.nn.GRU`` with the notes' reset-before form as an option (``reset_after=False``).

    For each layer and direction, with torch's gate order ``(r, z, n)`` in
    ``weight_ih_l{k}`` (``W_i*``, 3H x I) and ``weight_hh_l{k}`` (``W_h*``, 3H x H)::

        r  = sigma(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigma(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))     # reset_after=True (torch, cuDNN)
        n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)     # reset_after=False (the notes)
        h' = (1 - z) * n + z * h

    Args: those of ``torch.nn.GRU`` (``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False``), plus ``reset_after=True``.
    ``reset_after=True`` calls torch's kernel unchanged; ``reset_after=False`` runs a loop
    over time steps in Python (autograd through it; slower, the price of the notes' form:
    ``r * h`` must be formed before the product, so the hidden products cannot be
    batched over time like the input products). Packed sequences and ``proj_size`` are
    supported only with ``reset_after=True``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> notes = GRU(3, 4, batch_first=True, reset_after=False)
        >>> ref = torch.nn.GRU(3, 4, batch_first=True); ref.load_state_dict(notes.state_dict())
        <All keys matched successfully>
        >>> x = torch.randn(2, 5, 3)
        >>> out, h = notes(x)
        >>> out.shape, h.shape, bool(torch.allclose(out, ref(x)[0]))     # another function
        (torch.Size([2, 5, 4]), torch.Size([1, 2, 4]), False)

    Reference: Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder";
    Keras ``GRU(reset_after=...)``.
    """

    def __init__(self, *args, reset_after: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_after = check_bool("reset_after", reset_after)
        if not reset_after and self.proj_size:
            fail("proj_size", "0 with reset_after=False", self.proj_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def forward(self, input, hx=None):  # noqa: A002 - torch's argument name
        if self.reset_after:
            return super().forward(input, hx)
        if isinstance(input, nn.utils.rnn.PackedSequence):
            fail("input", "a tensor (packed sequences need reset_after=True)", "PackedSequence", TypeError)
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)  # unbatched (T, I): one sequence
        if self.batch_first and batched:
            x = x.transpose(0, 1)  # (T, N, I)
        dirs = 2 if self.bidirectional else 1
        steps, n = x.shape[0], x.shape[1]
        if hx is None:
            hx = x.new_zeros(self.num_layers * dirs, n, self.hidden_size)
        elif not batched:
            hx = hx.unsqueeze(1)
        finals = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
                b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
                h = hx[layer * dirs + d]
                gi = F.linear(layer_in, w_ih, b_ih)  # (T, N, 3H): the input products, batched
                wr, wz, wn = w_hh.chunk(3, 0)
                br, bz, bn = b_hh.chunk(3) if b_hh is not None else (None, None, None)
                seq = []
                order = range(steps - 1, -1, -1) if d == 1 else range(steps)
                for t in order:
                    i_r, i_z, i_n = gi[t].chunk(3, 1)
                    r = torch.sigmoid(i_r + F.linear(h, wr, br))
                    z = torch.sigmoid(i_z + F.linear(h, wz, bz))
                    cand = torch.tanh(i_n + F.linear(r * h, wn, bn))
                    h = (1 - z) * cand + z * h
                    seq.append(h)
                if d == 1:
                    seq.reverse()
                outs.append(torch.stack(seq))
                finals.append(h)
            layer_in = torch.cat(outs, -1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out, h_n = layer_in, torch.stack(finals)
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, h_n


__all__ = ["GRU"]
