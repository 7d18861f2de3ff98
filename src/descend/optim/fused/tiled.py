"""The reference chain, run tile by tile so that its passes over memory hit the cache.

The reference path runs each transform on whole tensors: an RMSprop step makes about
a dozen passes over the parameters, the gradients and the state, each from main
memory. When every transform of a chain is elementwise, the same transforms give the
same numbers on slices of the tensors. This backend cuts the flattened parameters,
gradients, workspace and state into tiles of about ``TILE_BYTES`` per tensor (small
tensors are packed whole into one tile) and runs the chain's transforms on one tile
after the other: the passes of one tile stay in the CPU's cache, so main memory is
read and written about once per step. The math is the chain's own code.

It needs: every transform in :data:`ELEMENTWISE` (or marked ``elementwise = True``),
no option that couples coordinates or draws random numbers (``clip_norm``,
``grad_noise``, ``weight_decay_exclude`` with a decay), and the state already made by
one reference step with the same options (state is created lazily by the transforms).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from descend.optim.adaptive import (
    scale_by_adadelta, scale_by_adagrad, scale_by_adam, scale_by_inverse_time, scale_by_rms,
)
from descend.optim.core import Chain
from descend.optim.decay import add_decoupled_weight_decay, add_l1, add_weight_decay, prox_l1
from descend.optim.gradient import add_noise, clip_by_global_norm, clip_by_value, flip_sign
from descend.optim.momentum import momentum_step, scale_by_lr

__all__ = ["ELEMENTWISE", "TILE_BYTES", "tiled_config", "structure", "run"]

#: Transforms that act coordinate by coordinate (given the options checked below).
ELEMENTWISE = (flip_sign, clip_by_value, clip_by_global_norm, add_noise, add_weight_decay,
               add_l1, scale_by_adagrad, scale_by_inverse_time, scale_by_rms, scale_by_adadelta,
               scale_by_adam, scale_by_lr, momentum_step, add_decoupled_weight_decay, prox_l1)

#: Bytes of one tensor's slice in a tile (about six such slices are live at once).
TILE_BYTES = 1 << 22


def tiled_config(transform: Chain, group: Mapping[str, Any]) -> str | None:
    """Why the chain cannot run tile by tile under ``group``, or None when it can.

    >>> import torch
    >>> from descend.optim import Adam
    >>> opt = Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> tiled_config(opt.transform, g), tiled_config(opt.transform, {**g, "clip_norm": 1.0})
    (None, 'clip_norm couples all coordinates')
    """
    for t in transform.transforms:
        if not (isinstance(t, ELEMENTWISE) or getattr(t, "elementwise", False)):
            return f"{type(t).__name__} is not elementwise"
    if group.get("clip_norm") is not None:
        return "clip_norm couples all coordinates"
    if group.get("grad_noise", 0.0) > 0:
        return "grad_noise draws random numbers per tensor"
    if (group.get("weight_decay", 0.0) or group.get("l1", 0.0)) and \
            group.get("weight_decay_exclude", "none") != "none":
        return "weight_decay_exclude depends on the tensors' shapes"
    return None


def structure(group: Mapping[str, Any]) -> tuple:
    """The options of ``group`` that decide which state exists (numbers: zero or not).

    >>> structure({"params": [], "lr": 0.1, "momentum": 0.0, "nesterov": False, "backend": "auto"})
    (('lr', True), ('momentum', False), ('nesterov', False), ('backend', 'auto'))
    """
    out = []
    for k, v in group.items():
        if k in ("params", "param_names"):
            continue
        if isinstance(v, (bool, str)) or v is None:
            out.append((k, v))
        elif isinstance(v, (int, float)):
            out.append((k, v != 0))
    return tuple(out)


def _tiles(params: list[Tensor], sliceable: list[bool],
           tile_elems: int) -> list[list[tuple[int, int, int]]]:
    """Tiles as lists of (parameter index, start, stop) on the flattened tensors.

    A tensor is cut into slices only when it and its gradient, workspace and state are
    all contiguous; otherwise it goes whole into a tile (elementwise ops need no view).
    """
    tiles, cur, size = [], [], 0
    for i, p in enumerate(params):
        n = p.numel()
        if n >= tile_elems and sliceable[i]:
            for a in range(0, n, tile_elems):
                tiles.append([(i, a, min(n, a + tile_elems))])
            continue
        if size + n > tile_elems and cur:
            tiles.append(cur)
            cur, size = [], 0
        cur.append((i, 0, n))
        size += n
    if cur:
        tiles.append(cur)
    return tiles


def _flat(t: Tensor, a: int, b: int, n: int) -> Tensor:
    return t if (a == 0 and b == n) else t.view(-1)[a:b]


class _Plan:
    """Slices of the parameters, workspace and state, per tile, built once for a set of
    tensors. Gradients are sliced at every step (``zero_grad(set_to_none=True)`` gives new
    gradient tensors each backward); the plan keeps the tensors it was built from, so
    that their ids (its key) cannot be taken by other tensors while it is in use."""

    def __init__(self, params, work, state, tile_elems):
        self.refs = (list(params), list(work), [list(st.values()) for st in state])
        self.tiles = []
        sliceable = [contiguous([p, w] + [v for v in st.values() if torch.is_tensor(v)])
                     for p, w, st in zip(params, work, state)]
        for tile in _tiles(params, sliceable, tile_elems):
            entries, ps, ws, sts = [], [], [], []
            for i, a, b in tile:
                n = params[i].numel()
                entries.append((i, a, b, n))
                ps.append(_flat(params[i], a, b, n))
                ws.append(_flat(work[i], a, b, n))
                sts.append({k: (_flat(v, a, b, n) if torch.is_tensor(v) and v.dim() > 0 else v)
                            for k, v in state[i].items()})
            self.tiles.append((entries, ps, ws, sts))


def _key(params, work, state) -> tuple:
    ids = [id(t) for t in params] + [id(t) for t in work]
    for st in state:
        ids.extend(id(v) for v in st.values())
    return tuple(ids)


def cached_plan(opt, attr: str, group: dict, params, work, state, build) -> tuple[Any, bool]:
    """The plan of ``group`` kept on ``opt`` under ``attr``; ``build()`` makes a new one when
    the group's parameters, workspace or state tensors are not those it was made for.
    Returns ``(plan, rebuilt)``."""
    cache = opt.__dict__.setdefault(attr, {})
    key = _key(params, work, state)
    entry = cache.get(id(group))
    if entry is not None and entry[0] == key:
        return entry[1], False
    cache[id(group)] = (key, build())
    return cache[id(group)][1], True


def contiguous(tensors) -> bool:
    """True when every tensor is contiguous (its flat view is its memory)."""
    return all(t.is_contiguous() for t in tensors)


def flat_grad(g: Tensor) -> Tensor:
    """``g`` as a 1-D view (a contiguous copy first when it is not contiguous)."""
    return (g if g.is_contiguous() else g.contiguous()).view(-1)


def _grad_slice(g: Tensor, a: int, b: int, n: int) -> Tensor:
    return g if (a == 0 and b == n) else flat_grad(g)[a:b]


def chain_step(chain: Chain, group: dict, ps, ws, sts, grads) -> None:
    """The chain's own transforms on views: ``ws <- grads``, transform, ``ps += updates``."""
    torch._foreach_copy_(ws, grads)
    updates = ws
    for t in chain.transforms:
        updates = t.update(updates, sts, ps, group)
    torch._foreach_add_(ps, updates)


def run(opt, group: dict, params: list[Tensor], grads: list[Tensor], state: list[dict]) -> None:
    """One step of ``opt.transform`` on ``group``, tile by tile (same math, same state)."""
    chain: Chain = opt.transform
    work = opt._workspace(params, grads, copy=False)
    elems = max(1, TILE_BYTES // params[0].element_size())
    plan, _ = cached_plan(opt, "_descend_tiles", group, params, work, state,
                          lambda: _Plan(params, work, state, elems))
    if chain.uses_step(group):
        for st in state:
            st["step"].add_(1)
    for entries, ps, ws, sts in plan.tiles:
        chain_step(chain, group, ps, ws, sts,
                   [_grad_slice(grads[i], a, b, n) for i, a, b, n in entries])
