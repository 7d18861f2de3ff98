"""Lottery tickets: iterative magnitude pruning with rewinding.

Frankle & Carbin, "The Lottery Ticket Hypothesis", 2019 (rewinding to early weights:
Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", 2020).
One round of iterative magnitude pruning (IMP):

1. train the masked network ``m * w`` from the rewind point ``w_k`` (``k = 0``: the init);
2. among the surviving weights, remove the fraction ``p`` of smallest ``|w|``
   (globally over the pruned layers, or per layer);
3. reset the surviving weights to ``w_k`` (*rewinding*) and repeat.

After ``r`` rounds the sparsity is ``1 - (1 - p)^r``. The control is the same mask with
the weights drawn afresh (*random re-initialization*). Only weight matrices / kernels
(``dim >= 2``) are pruned; biases and normalization parameters are kept.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from descend._validation import check_choice, check_int, check_range


def prunable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters IMP prunes: those with ``dim >= 2``, by name.

    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> sorted(prunable(model))                       # the weight matrices, not the biases
    ['0.weight', '2.weight']
    """
    return {n: p for n, p in model.named_parameters() if p.dim() >= 2}


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, *,
                    masks: dict[str, torch.Tensor] | None = None,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Masks keeping the largest ``|w|`` so that a fraction ``sparsity`` is zero.

    Weights already masked out stay out. ``scope="global"`` ranks all weights together;
    ``"layer"`` prunes each tensor to ``sparsity``. Exactly ``round(sparsity * n)``
    entries are removed (ties broken by position).

    Args:
        weights: ``name -> tensor``.
        sparsity: the target fraction of zeros in ``[0, 1)``, overall.
        masks: current masks (default: all ones).
        scope: ``"global"`` (default) or ``"layer"``.

    Example:
        >>> m = magnitude_masks({"w": torch.tensor([[0.1, -3.0], [2.0, 0.5]])}, 0.5)
        >>> m["w"]
        tensor([[0., 1.],
                [1., 0.]])
    """
    check_range("sparsity", sparsity, ge=0, lt=1)
    check_choice("scope", scope, ["global", "layer"])
    if masks is None:
        masks = {n: torch.ones_like(w) for n, w in weights.items()}
    groups = [list(weights)] if scope == "global" else [[n] for n in weights]
    out = {}
    for names in groups:
        scores = torch.cat([(weights[n].detach().abs() * masks[n]).reshape(-1) for n in names])
        alive = torch.cat([masks[n].reshape(-1) for n in names]).bool()
        total = scores.numel()
        k = int(round(sparsity * total))  # entries to remove in total
        k = max(k, int((~alive).sum()))
        keep = torch.ones(total, dtype=torch.bool)
        if k > 0:
            # dead entries first (score -1), then smallest magnitudes
            order = torch.argsort(torch.where(alive, scores, torch.full_like(scores, -1.0)),
                                  stable=True)
            keep[order[:k]] = False
        i = 0
        for n in names:
            numel = weights[n].numel()
            out[n] = keep[i:i + numel].view_as(weights[n]).to(weights[n].dtype)
            i += numel
    return out


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of zeros over all masks.

    >>> sparsity_of({"a": torch.tensor([1.0, 0.0, 0.0, 1.0]), "b": torch.zeros(4)})
    0.75
    """
    total = sum(m.numel() for m in masks.values())
    return float(sum((m == 0).sum() for m in masks.values())) / max(total, 1)


@torch.no_grad()
def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place: ``w <- m * w``.

    >>> layer = torch.nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(3.0)
    >>> apply_masks(layer, {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
    >>> layer.weight.tolist()
    [[3.0, 0.0], [0.0, 3.0]]
    """
    params = dict(model.named_parameters())
    for n, m in masks.items():
        params[n].mul_(m)


@torch.no_grad()
def rewind(model: torch.nn.Module, state: dict[str, torch.Tensor],
           masks: dict[str, torch.Tensor] | None = None) -> None:
    """Load the saved ``state`` (weights and buffers) and re-apply ``masks``.

    >>> layer = torch.nn.Linear(2, 2, bias=False)
    >>> start = {k: v.clone() for k, v in layer.state_dict().items()}
    >>> with torch.no_grad():
    ...     _ = layer.weight.add_(1.0)                 # "training"
    >>> mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> rewind(layer, start, {"weight": mask})
    >>> torch.equal(layer.weight, start["weight"] * mask)
    True
    """
    model.load_state_dict(state)
    if masks is not None:
        apply_masks(model, masks)


class MaskGradients:
    """Keep pruned weights at zero while training: zero their gradients (hooks) and
    re-apply the masks after every optimizer step via :meth:`after_step`.

    A context manager; the hooks are removed on exit.

    Example:
        >>> layer = torch.nn.Linear(2, 1, bias=False)
        >>> mask = {"weight": torch.tensor([[1.0, 0.0]])}
        >>> apply_masks(layer, mask)
        >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        >>> with MaskGradients(layer, mask) as masker:
        ...     for _ in range(3):
        ...         opt.zero_grad(); layer(torch.ones(1, 2)).sum().backward(); opt.step()
        ...         masker.after_step()
        >>> float(layer.weight.detach()[0, 1])       # the pruned weight stayed at zero
        0.0
    """

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        self.model, self.masks, self.handles = model, masks, []

    def __enter__(self):
        params = dict(self.model.named_parameters())
        for n, m in self.masks.items():
            self.handles.append(params[n].register_hook(lambda g, m=m: g * m))
        return self

    def after_step(self) -> None:
        apply_masks(self.model, self.masks)

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


def iterative_magnitude_pruning(model: torch.nn.Module,
                                train: Callable[[torch.nn.Module, MaskGradients], None],
                                evaluate: Callable[[torch.nn.Module], float], *,
                                rounds: int = 3, rate: float = 0.5, rewind_state=None,
                                scope: str = "global", reinit_seed: int | None = 1):
    """Iterative magnitude pruning with rewinding, and the random re-init control.

    Args:
        model: the network at the rewind point (its initial weights, unless
            ``rewind_state`` is given: e.g. the weights after a few steps).
        train: ``train(model, masker)`` trains in place; it must call
            ``masker.after_step()`` after each optimizer step.
        evaluate: ``evaluate(model) -> metric`` (e.g. test accuracy).
        rounds: pruning rounds (default 3).
        rate: fraction of the surviving weights removed per round (default 0.5).
        rewind_state: state dict to rewind to (default: ``model``'s state on entry).
        scope: ``"global"`` or ``"layer"`` ranking.
        reinit_seed: seed of the random re-initialization control (``None``: skip it).

    Returns:
        a list of dicts, one per round including round 0 (dense):
        ``{"round", "sparsity", "ticket", "reinit", "masks"}``; ``ticket``/``reinit`` are
        the metric after training from the rewound / re-initialized weights.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> def train(m, masker):
        ...     opt = torch.optim.SGD(m.parameters(), lr=0.5)
        ...     for _ in range(20):
        ...         opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
        ...         masker.after_step()
        >>> def accuracy(m):
        ...     return float((m(x).argmax(1) == y).float().mean())
        >>> res = iterative_magnitude_pruning(model, train, accuracy, rounds=2, rate=0.5)
        >>> [(r["round"], r["sparsity"]) for r in res]             # half the survivors go per round
        [(0, 0.0), (1, 0.5), (2, 0.75)]
        >>> [r["ticket"] for r in res]                              # a quarter of the weights suffice here
        [1.0, 1.0, 1.0]
    """
    check_int("rounds", rounds, ge=0)
    check_range("rate", rate, gt=0, lt=1)
    check_choice("scope", scope, ["global", "layer"])
    state = copy.deepcopy(rewind_state if rewind_state is not None else model.state_dict())
    masks = {n: torch.ones_like(p) for n, p in prunable(model).items()}
    results = []
    for r in range(rounds + 1):
        rewind(model, state, masks)
        with MaskGradients(model, masks) as masker:
            train(model, masker)
        ticket = evaluate(model)
        reinit = None
        if reinit_seed is not None and r > 0:
            other = copy.deepcopy(model)
            torch.manual_seed(reinit_seed + r)
            for mod in other.modules():
                if mod is not other and hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
            apply_masks(other, masks)
            with MaskGradients(other, masks) as masker:
                train(other, masker)
            reinit = evaluate(other)
        results.append({"round": r, "sparsity": sparsity_of(masks), "ticket": ticket,
                        "reinit": reinit, "masks": {n: m.clone() for n, m in masks.items()}})
        if r < rounds:
            target = 1 - (1 - rate) ** (r + 1)
            masks = magnitude_masks(prunable(model), target, masks=masks, scope=scope)
    rewind(model, state, masks)
    return results


__all__ = ["prunable", "magnitude_masks", "sparsity_of", "apply_masks", "rewind",
           "MaskGradients", "iterative_magnitude_pruning"]
