"""The network trainer: a small perceptron learning a 2-D toy set, one step at a time.

The model is ``descend.nn.MODELS.create("mlp", input_shape=(2,), num_classes=K, ...)``
initialized by ``descend.init`` (:func:`descend.playground.library.initialize`); the
data come from ``descend.data``'s toy2d sets, the optimizer from ``descend.optim``.

One *step* draws a minibatch of ``batch_size`` training points (a shuffled pass over
the set, from the run's own ``torch.Generator``), computes

    L = CE(f(x_B), y_B) + l1 * sum_W |W| + l2 * sum_W W^2

(``W`` ranges over the (effective) weight matrices of the Linear layers, biases and
norm parameters are not penalised; ``l2`` here multiplies ``W^2`` directly, so its gradient
is ``2 l2 W``), back-propagates, by ``optimizer.step(closure)`` (the closure does the
three; methods such as L-BFGS or SAM evaluate it more than once per step, and the step
is judged by, and shows the activations of, its first evaluation).

After each request the trainer reports, in eval mode, the mean cross-entropy and the
accuracy on the train and test sets (without the penalty), the ``K`` class
probabilities on a grid (the decision boundary) and per-layer statistics of the last
step: mean and standard deviation of the output of each hidden layer's activation (for
a residual block, the activation after the sum), and of each Linear layer's weight
gradient together with its norm (for a weight-normalized layer, the gradient of its
direction ``v``; for a spectral-normalized one, of the stored weight).

A step whose loss or gradients are not finite stops the run: the parameters of the
last good step are kept and ``stopped`` says what happened.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from descend.init.rules import NORM_TYPES
from descend.nn import GaussianNoise, ResidualBlock, ScalarBias
from descend.playground import library

# Modules of a hidden block of the mlp that are not its activation.
_NOT_ACTIVATION = (nn.Linear, nn.Dropout, GaussianNoise, ScalarBias, *NORM_TYPES)

# The global torch RNG (dropout masks, initialisation) is shared by every thread: each
# run keeps its own RNG state and swaps it in under this lock, so runs in parallel
# give the same numbers as runs alone.
_GLOBAL_RNG = threading.Lock()


class TrainerRun:
    """One training run with everything needed to replay it: config, data, model, state.

    Args:
        config: validated settings (see :func:`descend.playground.api.trainer_config`).

    Example:
        >>> cfg = dict(dataset="xor", classes=2, n=40, noise=0.1, test_fraction=0.5, seed=0,
        ...            hidden=[4], activation="tanh", init="xavier_uniform", norm="none",
        ...            residual=False, dropout=0.0, l1=0.0, l2=0.0, optimizer="sgd",
        ...            hyper={"lr": 0.1}, batch_size=10, grid=8)
        >>> r = TrainerRun(cfg); _ = r.step(3); r.steps
        3
    """

    def __init__(self, config: dict[str, Any]):
        self.config = dict(config)
        c = self.config
        self.x_train, self.y_train, self.x_test, self.y_test = library.make_dataset(
            c["dataset"], n=c["n"], noise=c["noise"], classes=c["classes"],
            test_fraction=c["test_fraction"], seed=c["seed"])
        with _GLOBAL_RNG:
            saved = torch.get_rng_state()
            try:
                torch.manual_seed(c["seed"])
                self.model = library.build_mlp(c["hidden"], c["activation"], c["norm"],
                                               c["dropout"], classes=c["classes"],
                                               residual=c["residual"])
                self._rng_state = torch.get_rng_state()
            finally:
                torch.set_rng_state(saved)
        try:
            library.initialize(self.model, c["init"], batch=self.x_train,
                               generator=torch.Generator().manual_seed(c["seed"]))
        except (ValueError, TypeError) as e:
            raise type(e)(f"init {c['init']!r}: {e}") from e
        try:  # after the init: Fixup adds parameters
            self.optimizer = library.create_optimizer(c["optimizer"], self.model.parameters(),
                                                      dict(c["hyper"]))
        except (ValueError, TypeError) as e:
            raise type(e)(f"optimizer {c['optimizer']!r}: {e}") from e
        self._batches = torch.Generator().manual_seed(c["seed"])
        self._order: list[int] = []
        self.steps = 0
        self.history: list[dict[str, Any]] = []
        self.stats: dict[str, list] = {"activations": [], "gradients": []}
        self.stopped: str | None = None
        self._record()
        if not math.isfinite(self.history[0]["train_loss"]):  # e.g. zero weights under weight norm
            self.stopped = "the loss is not finite at step 0: try another initialization"

    # ---------------------------------------------------------------- training

    def _next_batch(self):
        bs = min(self.config["batch_size"], len(self.x_train))
        if len(self._order) < bs:
            self._order = torch.randperm(len(self.x_train), generator=self._batches).tolist()
        idx, self._order = self._order[:bs], self._order[bs:]
        return self.x_train[idx], self.y_train[idx]

    def _penalty(self) -> torch.Tensor:
        l1, l2 = self.config["l1"], self.config["l2"]
        total = torch.zeros(())
        for m in self.model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight  # the effective weight, through a weight/spectral norm
                if l1:
                    total = total + l1 * w.abs().sum()
                if l2:
                    total = total + l2 * w.pow(2).sum()
        return total

    def step(self, n: int) -> dict[str, Any]:
        """Train ``n`` more steps (fewer if the run stops); return :meth:`state`."""
        if self.stopped is None:
            with _GLOBAL_RNG:
                saved = torch.get_rng_state()
                torch.set_rng_state(self._rng_state)
                try:
                    self._train(n)
                finally:
                    self._rng_state = torch.get_rng_state()
                    torch.set_rng_state(saved)
            self._record()
        return self.state()

    def _train(self, n: int) -> None:
        acts: list[tuple[str, torch.Tensor]] = []
        hooks = [m.register_forward_hook(lambda mod, i, o, name=name: acts.append((name, o.detach())))
                 for name, m in self._activation_modules()]
        try:
            self.model.train()
            for _ in range(n):
                acts.clear()
                xb, yb = self._next_batch()
                before = [p.detach().clone() for p in self.model.parameters()]
                first: dict[str, Any] = {}

                def closure():
                    self.optimizer.zero_grad()
                    loss = F.cross_entropy(self.model(xb), yb) + self._penalty()
                    loss.backward()
                    if not first:  # what the step is judged (and its activations shown) by
                        first.update(value=float(loss.detach()), acts=len(acts),
                                     grads_ok=all(p.grad is None or torch.isfinite(p.grad).all()
                                                  for p in self.model.parameters()))
                    return loss

                # step(closure): second-order methods, K-FAC and SAM evaluate it themselves
                self.optimizer.step(closure)
                del acts[first["acts"]:]
                value, grads_ok = first["value"], first["grads_ok"]
                if not math.isfinite(value) or not grads_ok:
                    with torch.no_grad():
                        for p, b in zip(self.model.parameters(), before):
                            p.copy_(b)
                    self.stopped = (f"diverged at step {self.steps + 1}: " +
                                    (f"the loss is {value}" if not math.isfinite(value)
                                     else "a gradient is not finite"))
                    return
                if not all(torch.isfinite(p).all() for p in self.model.parameters()):
                    with torch.no_grad():
                        for p, b in zip(self.model.parameters(), before):
                            p.copy_(b)
                    self.stopped = (f"diverged at step {self.steps + 1}: the parameters "
                                    f"became non-finite (kept those of step {self.steps})")
                    return
                self.steps += 1
                self.stats = self._layer_stats(acts)
        finally:
            for h in hooks:
                h.remove()

    # ---------------------------------------------------------------- reporting

    def _activation_modules(self) -> list[tuple[str, nn.Module]]:
        """The activation of each hidden layer of the mlp, by qualified name.

        The mlp is ``Sequential(Flatten, [noise], [dropout], block..., head)``; a plain
        block is ``Sequential(Linear, [norm], activation, [dropout])``, a residual one a
        ``ResidualBlock`` whose ``post`` is the activation after the sum.
        """
        out = []
        for name, block in self.model.named_children():
            if isinstance(block, ResidualBlock):
                out.append((f"{name}.post", block.post))
            elif isinstance(block, nn.Sequential):
                out += [(f"{name}.{n}", m) for n, m in block.named_children()
                        if not isinstance(m, _NOT_ACTIVATION)]
        return out

    @staticmethod
    def _weight_leaf(m: nn.Module) -> torch.Tensor:
        """The trained tensor behind ``m.weight``: itself, or the parametrization's original."""
        if not parametrize.is_parametrized(m, "weight"):
            return m.weight
        orig = m.parametrizations.weight
        return orig.original1 if hasattr(orig, "original1") else orig.original  # weight norm: v

    def _layer_stats(self, acts) -> dict[str, list]:
        out = {"activations": [], "gradients": []}
        kinds = {name: type(m).__name__ for name, m in self._activation_modules()}
        for name, a in acts:
            out["activations"].append({"layer": name, "module": kinds[name], "mean": float(a.mean()),
                                       "std": float(a.std(unbiased=False))})
        for name, m in self.model.named_modules():
            g = self._weight_leaf(m).grad if isinstance(m, nn.Linear) else None
            if g is not None:
                out["gradients"].append({"layer": name, "module": type(m).__name__, "mean": float(g.mean()),
                                         "std": float(g.std(unbiased=False)),
                                         "norm": float(g.norm())})
        return out

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model in eval mode on ``(x, y)``."""
        self.model.eval()
        logits = self.model(x)
        loss = float(F.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
        return loss, acc

    def _record(self) -> None:
        tr_loss, tr_acc = self.evaluate(self.x_train, self.y_train)
        te_loss, te_acc = self.evaluate(self.x_test, self.y_test)
        self.history.append({"step": self.steps, "train_loss": tr_loss, "test_loss": te_loss,
                             "train_acc": tr_acc, "test_acc": te_acc})

    def bounds(self) -> list[float]:
        b = float(torch.cat([self.x_train, self.x_test]).abs().max()) * 1.1
        return [-b, b, -b, b]

    @torch.no_grad()
    def boundary(self) -> list[float]:
        """Class probabilities on a ``grid x grid`` lattice over :meth:`bounds`.

        Flat, point by point (row by row in y, then x), ``K`` probabilities per point.
        """
        n = self.config["grid"]
        xmin, xmax, ymin, ymax = self.bounds()
        ys, xs = torch.linspace(ymin, ymax, n), torch.linspace(xmin, xmax, n)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        self.model.eval()
        p = torch.softmax(self.model(torch.stack([xx.flatten(), yy.flatten()], 1)), 1)
        return [round(v, 5) for v in p.flatten().tolist()]

    def state(self) -> dict[str, Any]:
        """Everything the page draws: history, boundary grid, layer stats, stop reason."""
        return {"steps": self.steps, "history": self.history, "boundary": self.boundary(),
                "grid": self.config["grid"], "classes": self.config["classes"],
                "bounds": self.bounds(), "stats": self.stats,
                "stopped": self.stopped}

    def data(self) -> dict[str, Any]:
        """The points (sent once, when the run is created)."""
        return {"train": {"x": self.x_train.tolist(), "y": self.y_train.tolist()},
                "test": {"x": self.x_test.tolist(), "y": self.y_test.tolist()}}
