"""Losses by name: ``LOSSES.create(name, **kwargs) -> module(outputs, targets) -> scalar``.

``cross_entropy``, ``mse``, ``huber`` / ``smooth_l1`` (note 003), ``label_smoothing``
(note 001's target ``[1-e, e/(K-1), ..., e/(K-1)]``; ``style="torch"`` for torch's
``(1-e) onehot + e/K``), ``disturb_label`` (note 003; Xie et al., CVPR 2016). Regression
losses given class indices compare the outputs with one-hot targets, so any of them can
train a classifier. All reduce by the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from descend._registry import Registry
from descend._validation import check_choice, check_int, check_no_unknown, check_range, fail

LOSSES = Registry("loss")

_INT = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def one_hot_like(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targets as a float tensor shaped like ``outputs``: class indices become one-hot rows.

    >>> one_hot_like(torch.zeros(2, 3), torch.tensor([2, 0]))
    tensor([[0., 0., 1.],
            [1., 0., 0.]])
    """
    if targets.dtype in _INT:
        if outputs.dim() != 2 or targets.shape != outputs.shape[:1]:
            fail("targets", f"class indices of shape ({outputs.shape[0]},) for outputs of shape (N, K)",
                 tuple(targets.shape))
        return F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
    if targets.shape != outputs.shape:
        fail("targets", f"of the outputs' shape {tuple(outputs.shape)}", tuple(targets.shape))
    return targets.to(outputs.dtype)


def smoothed_targets(targets: torch.Tensor, num_classes: int, epsilon: float, style: str = "notes") -> torch.Tensor:
    """Label-smoothed target distributions for class indices ``targets``.

    notes: ``1 - e`` on the true class, ``e / (K-1)`` on each other class (note 001).
    torch: ``(1 - e) onehot + e / K``: ``1 - e + e/K`` on the true class, ``e/K`` elsewhere
    (``torch.nn.CrossEntropyLoss(label_smoothing=e)``). The notes' form with ``e`` equals
    torch's with ``e K / (K-1)``.

    >>> smoothed_targets(torch.tensor([0]), 3, 0.2)
    tensor([[0.8000, 0.1000, 0.1000]])
    """
    check_int("num_classes", num_classes, ge=2)
    check_range("epsilon", epsilon, ge=0, le=1)
    check_choice("style", style, ["notes", "torch"])
    onehot = F.one_hot(targets.long(), num_classes).float()
    if style == "notes":
        return onehot * (1.0 - epsilon) + (1.0 - onehot) * (epsilon / (num_classes - 1))
    return onehot * (1.0 - epsilon) + epsilon / num_classes


class LabelSmoothingLoss(nn.Module):
    """Cross-entropy against smoothed targets: ``-sum_k q_k log softmax(z)_k``, averaged over the batch.

    ``q`` from :func:`smoothed_targets` (``style="notes"``: ``[1-e, e/(K-1), ...]``;
    ``style="torch"``: torch's ``e/K`` form). Smoothing keeps the softmax from chasing
    probabilities of exactly 0 and 1 with ever larger weights (note 001; Szegedy et al. 2016).

    Args: ``epsilon=0.1``, ``style="notes"``.

    >>> loss = LabelSmoothingLoss(0.1)
    >>> float(loss(torch.zeros(2, 5), torch.tensor([0, 1]))) == float(torch.log(torch.tensor(5.0)))
    True
    """

    def __init__(self, epsilon: float = 0.1, style: str = "notes"):
        super().__init__()
        self.epsilon = float(check_range("epsilon", epsilon, ge=0, le=1))
        self.style = check_choice("style", style, ["notes", "torch"])

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.dim() != 2 or targets.dtype not in _INT:
            fail("targets", "class indices for outputs of shape (N, K)", tuple(targets.shape))
        q = smoothed_targets(targets, outputs.shape[1], self.epsilon, self.style).to(outputs.dtype)
        return -(q * F.log_softmax(outputs, dim=1)).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, style={self.style!r}"


def disturb_labels(targets: torch.Tensor, num_classes: int, alpha: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DisturbLabel: with probability ``alpha`` each label is replaced by a uniform draw from all ``C`` classes.

    The draw ignores the true label (it can return it), so a label stays correct with
    probability ``1 - alpha + alpha/C`` and becomes each other class with ``alpha/C``
    (note 003; Xie et al., "DisturbLabel", CVPR 2016). Draws on ``generator``'s device
    (CPU by default) and returns labels on the targets' device.

    >>> disturb_labels(torch.tensor([1, 2]), 3, 0.0).tolist()
    [1, 2]
    """
    check_int("num_classes", num_classes, ge=2)
    check_range("alpha", alpha, ge=0, le=1)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    n = targets.shape[0]
    disturb = torch.rand(n, generator=generator, device=gen_device) < alpha
    random = torch.randint(0, num_classes, (n,), generator=generator, device=gen_device)
    out = torch.where(disturb, random, targets.to(gen_device).long())
    return out.to(targets.device)


class DisturbLabelLoss(nn.Module):
    """Cross-entropy on labels disturbed by :func:`disturb_labels` at train time only.

    Disturbs when the module is in training mode (``.train()`` / ``.eval()``) *and*
    gradients are enabled: a loss evaluated under ``torch.no_grad()`` (validation) is the
    plain cross-entropy even if nobody switched the loss module to eval. The noise is
    drawn from its own generator seeded with ``seed`` (or the ``generator`` given), so a
    run is reproducible and independent of the model's random draws.

    Args: ``alpha=0.1`` (0..1), ``seed=0``, ``generator=None`` (overrides ``seed``).

    >>> loss = DisturbLabelLoss(alpha=0.2, seed=0)
    >>> loss(torch.zeros(4, 10, requires_grad=True), torch.tensor([1, 2, 3, 4])).shape
    torch.Size([])
    """

    def __init__(self, alpha: float = 0.1, seed: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        self.alpha = float(check_range("alpha", alpha, ge=0, le=1))
        check_int("seed", seed, ge=0)
        if generator is not None and not isinstance(generator, torch.Generator):
            fail("generator", "a torch.Generator", generator, TypeError)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.dim() != 2 or targets.dtype not in _INT:
            fail("targets", "class indices for outputs of shape (N, K)", tuple(targets.shape))
        if self.training and torch.is_grad_enabled() and self.alpha > 0:
            targets = disturb_labels(targets, outputs.shape[1], self.alpha, self.generator)
        return F.cross_entropy(outputs, targets)

    def get_extra_state(self):
        """The generator's state, in ``state_dict()``: a checkpoint resumes the same draws."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class RegressionLoss(nn.Module):
    """MSE / Huber / smooth L1 on real targets, or on one-hot targets when given class indices.

    With ``d = x - y`` (mean over all entries):
    ``mse``: ``d^2``; ``huber``: ``d^2/2`` if ``|d| <= delta`` else ``delta (|d| - delta/2)``;
    ``smooth_l1``: ``d^2/(2 beta)`` if ``|d| < beta`` else ``|d| - beta/2``. For
    ``delta = beta = 1`` (the defaults) both are note 003's smooth L1 / Huber loss
    ``0.5 d^2`` if ``|d| < 1`` else ``|d| - 0.5``. Computed by torch's functional losses.

    >>> RegressionLoss("mse")(torch.zeros(1, 2), torch.tensor([1]))
    tensor(0.5000)
    """

    def __init__(self, kind: str = "mse", delta: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.kind = check_choice("kind", kind, ["mse", "huber", "smooth_l1"])
        self.delta = float(check_range("delta", delta, gt=0))
        self.beta = float(check_range("beta", beta, gt=0))

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = one_hot_like(outputs, targets)
        if self.kind == "mse":
            return F.mse_loss(outputs, y)
        if self.kind == "huber":
            return F.huber_loss(outputs, y, delta=self.delta)
        return F.smooth_l1_loss(outputs, y, beta=self.beta)

    def extra_repr(self) -> str:
        return {"mse": "'mse'", "huber": f"'huber', delta={self.delta}", "smooth_l1": f"'smooth_l1', beta={self.beta}"}[
            self.kind]


@LOSSES.register("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0, **unknown) -> nn.Module:
    """Softmax cross-entropy ``-log softmax(z)_y`` (torch's ``CrossEntropyLoss``; its ``label_smoothing`` uses e/K).

    >>> loss = cross_entropy()
    >>> round(float(loss(torch.zeros(2, 4), torch.tensor([0, 3]))), 4)  # log 4
    1.3863
    """
    check_no_unknown("cross_entropy", unknown)
    return nn.CrossEntropyLoss(label_smoothing=float(check_range("label_smoothing", label_smoothing, ge=0, le=1)))


@LOSSES.register("mse")
def mse(**unknown) -> nn.Module:
    """Mean squared error (x - y)^2; class indices become one-hot targets.

    >>> loss = mse()
    >>> float(loss(torch.tensor([[0.5, 0.5]]), torch.tensor([1])))  # one-hot [0, 1]: (0.25 + 0.25) / 2
    0.25
    """
    check_no_unknown("mse", unknown)
    return RegressionLoss("mse")


@LOSSES.register("huber")
def huber(delta: float = 1.0, **unknown) -> nn.Module:
    """Huber loss with threshold delta (delta=1: note 003's smooth L1).

    >>> loss = huber(delta=1.0)
    >>> float(loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0])))  # (0.125 + 2.5) / 2
    1.3125
    """
    check_no_unknown("huber", unknown)
    return RegressionLoss("huber", delta=delta)


@LOSSES.register("smooth_l1")
def smooth_l1(beta: float = 1.0, **unknown) -> nn.Module:
    """Smooth L1 loss with threshold beta (beta=1: note 003's formula).

    >>> loss = smooth_l1(beta=1.0)
    >>> float(loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0])))  # (0.125 + 2.5) / 2
    1.3125
    """
    check_no_unknown("smooth_l1", unknown)
    return RegressionLoss("smooth_l1", beta=beta)


@LOSSES.register("label_smoothing")
def label_smoothing(epsilon: float = 0.1, style: str = "notes", **unknown) -> nn.Module:
    """Cross-entropy with smoothed targets [1-e, e/(K-1), ...] (style="torch": e/K).

    >>> loss = label_smoothing(epsilon=0.2)
    >>> round(float(loss(torch.zeros(1, 3), torch.tensor([0]))), 4)  # uniform outputs: log 3
    1.0986
    """
    check_no_unknown("label_smoothing", unknown)
    return LabelSmoothingLoss(epsilon, style)


@LOSSES.register("disturb_label")
def disturb_label(alpha: float = 0.1, seed: int = 0, **unknown) -> nn.Module:
    """DisturbLabel: each training label replaced w.p. alpha by a uniform random class.

    >>> loss = disturb_label(alpha=0.0)
    >>> round(float(loss(torch.zeros(2, 3), torch.tensor([0, 2]))), 4)  # alpha=0: plain cross-entropy
    1.0986
    """
    check_no_unknown("disturb_label", unknown)
    return DisturbLabelLoss(alpha, seed)
