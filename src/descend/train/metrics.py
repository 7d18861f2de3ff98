"""Metrics for :class:`descend.train.Trainer`: per-batch sums that average exactly.

A metric is a function ``metric(outputs, targets) -> 0-d tensor`` that returns the
*sum* over the batch (not the mean), so that an epoch's value is
``sum of batch sums / number of examples`` whatever the batch sizes — the last,
smaller batch of an epoch counts with its true weight. Sums stay on the device as
tensors; they are read back once per epoch, never once per step.
"""

from __future__ import annotations

import torch

from descend._registry import Registry
from descend._validation import check_int

METRICS = Registry("metric")


@METRICS.register("accuracy")
def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of examples whose arg-max class equals the target.

    ``correct = sum_i [argmax_c outputs[i, c] == targets[i]]``; divide by the number
    of examples for the accuracy. For a single output column (binary logits) the
    prediction is ``outputs[:, 0] > 0``.

    Args:
        outputs: ``(N, C)`` scores (logits or probabilities).
        targets: ``(N,)`` integer class labels.

    Example:
        >>> accuracy(torch.tensor([[2., 1.], [0., 3.], [1., 0.]]), torch.tensor([0, 1, 1]))
        tensor(2)
    """
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        pred = (outputs[:, 0] > 0).long()
    else:
        pred = outputs.argmax(dim=-1)
    return (pred == targets).sum()


@METRICS.register("top_k_accuracy")
def top_k_accuracy(outputs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Number of examples whose target is among the ``k`` highest scores.

    Args:
        outputs: ``(N, C)`` scores.
        targets: ``(N,)`` integer labels.
        k: how many top classes count (default 5, clipped to ``C``).

    Example:
        >>> top_k_accuracy(torch.tensor([[3., 2., 1.], [3., 2., 1.]]), torch.tensor([1, 2]), k=2)
        tensor(1)
    """
    check_int("k", k, ge=1)
    k = min(k, outputs.shape[-1])
    top = outputs.topk(k, dim=-1).indices
    return (top == targets.unsqueeze(-1)).any(dim=-1).sum()


class Mean:
    """A running mean of per-batch sums, kept as a device tensor until read.

    Example:
        >>> m = Mean()
        >>> m.add(torch.tensor(3.0), 4); m.add(torch.tensor(1.0), 2)
        >>> m.value()
        0.6666666666666666
    """

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, batch_sum: torch.Tensor, n: int) -> None:
        s = batch_sum.detach()
        self.total = s if self.total is None else self.total + s
        self.count += n

    def value(self) -> float:
        """The mean (one host read); NaN when nothing was added."""
        if self.total is None or self.count == 0:
            return float("nan")
        return float(self.total) / self.count
