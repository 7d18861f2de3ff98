"""The chain's per-element math with torch's operations, on cache-sized tiles.

The reference path makes one pass over memory per operation on whole tensors. This
backend evaluates the same program (:mod:`descend.optim.elementwise`) on tiles of the
flattened parameters, gradients and state (``TILE_BYTES`` per tensor slice; small
tensors packed whole into one tile), one tile after the other, so that the passes of one
tile stay in the CPU's cache. It runs the same operations on the same numbers as the
reference path, so its results equal the reference's bitwise. Tensors that cannot be
read flat (a strided parameter, a gradient with other strides) run whole.
"""

from __future__ import annotations

from torch import Tensor

from descend.optim.backends.generated import evaluate_elements, prepare, split

__all__ = ["TILE_BYTES", "tiles", "run"]

#: Bytes of one tensor's slice in a tile.
TILE_BYTES = 1 << 22


def flat(t: Tensor) -> Tensor:
    """``t`` as a 1-D view in storage order (``t`` is dense)."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def tiles(sizes: list[int], tile_elems: int) -> list[list[tuple[int, int, int]]]:
    """Tiles as lists of (index in ``sizes``, start, stop) on the flattened tensors.

    >>> tiles([10, 3, 2], 4)
    [[(0, 0, 4)], [(0, 4, 8)], [(0, 8, 10)], [(1, 0, 3)], [(2, 0, 2)]]
    """
    out, cur, size = [], [], 0
    for i, n in enumerate(sizes):
        if n >= tile_elems:
            out.extend([(i, a, min(n, a + tile_elems))] for a in range(0, n, tile_elems))
            continue
        if size + n > tile_elems and cur:
            out.append(cur)
            cur, size = [], 0
        cur.append((i, 0, n))
        size += n
    if cur:
        out.append(cur)
    return out


def run(opt, group: dict, params: list[Tensor], grads: list[Tensor], state: list[dict]) -> None:
    """One step of ``opt.transform`` on ``group``, tile by tile (same math, same state)."""
    step = prepare(opt, group, params, grads, state)
    ok, rest = split(step)
    if rest:
        evaluate_elements(step, rest)
    if not ok:
        return
    elems = max(1, TILE_BYTES // params[0].element_size())
    for tile in tiles([params[i].numel() for i in ok], elems):
        ranges = {ok[j]: (a, b) for j, a, b in tile}
        evaluate_elements(step, [ok[j] for j, _, _ in tile],
                          lambda t, i: flat(t)[ranges[i][0]:ranges[i][1]])
