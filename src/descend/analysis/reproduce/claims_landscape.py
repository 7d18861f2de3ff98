"""Claims about the loss landscape: lottery tickets, mode connectivity, flat minima.
Each over at least 5 seeds at full size, decided on 95% intervals with a margin fixed in
advance."""

from __future__ import annotations

import torch

from descend.analysis.connectivity import barrier, path_losses, train_bezier
from descend.analysis.lottery import iterative_magnitude_pruning
from descend.analysis.reproduce._common import (ClaimResult, accuracy, build, digits, fit, flat, interval,
                                                mean_loss, pick, plt, ratio_ci, save, seeds, subset)
from descend.analysis.stats import mean_ci, paired_test
from descend.callbacks import Callback


class _AfterStep(Callback):
    """Re-apply the pruning masks after every optimizer step (``MaskGradients.after_step``)."""

    def __init__(self, masker):
        self.masker = masker

    def on_batch_end(self, trainer, logs):
        self.masker.after_step()


def _pt(r):
    return {"mean": r["diff"], "lo": r["lo"], "hi": r["hi"]}


def lottery_ticket(size: str, out_dir) -> ClaimResult:
    """Winning tickets: pruned subnetworks rewound to their initial weights match the dense
    network and train better than the same subnetworks re-initialized at random."""
    from descend.optim import Adam

    rounds = pick(size, 1, 6)
    epochs = pick(size, 1, 15)
    n_train = pick(size, 300, None)
    seed_list = seeds(size)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    per_round: dict[int, dict[str, list]] = {}
    rows = []
    for seed in seed_list:
        model = build("mlp", input_shape=(64,), num_classes=10, hidden=[300, 100], seed=seed)

        def train_fn(m, masker, seed=seed):
            fit(m, Adam(m.parameters(), lr=1.2e-3), train, epochs=epochs, batch_size=60, seed=seed,
                callbacks=[_AfterStep(masker)])

        res = iterative_magnitude_pruning(model, train_fn, lambda m: accuracy(m, test), rounds=rounds,
                                          rate=0.5, reinit_seed=100 + 10 * seed)
        for r in res:
            slot = per_round.setdefault(r["round"], {"sparsity": r["sparsity"], "ticket": [], "reinit": [],
                                                     "dense": []})
            slot["ticket"].append(r["ticket"])
            slot["reinit"].append(r["reinit"])
            slot["dense"].append(res[0]["ticket"])
            rows.append({"seed": seed, "round": r["round"], "sparsity": f"{r['sparsity']:.3f}",
                         "ticket (rewound) test acc": round(r["ticket"], 4),
                         "random re-init test acc": None if r["reinit"] is None else round(r["reinit"], 4)})
    margin = 0.01
    summary, matched = [], []
    for r, slot in sorted(per_round.items()):
        if r == 0:
            continue
        vs_dense = paired_test(slot["ticket"], slot["dense"])
        vs_reinit = paired_test(slot["ticket"], slot["reinit"])
        ok = (vs_dense["lo"] is not None and vs_dense["lo"] >= -margin and vs_reinit["lo"] is not None
              and vs_reinit["lo"] > 0)
        if ok and slot["sparsity"] >= 0.5:
            matched.append(slot["sparsity"])
        summary.append({"round": r, "sparsity": round(slot["sparsity"], 3),
                        "ticket": interval(mean_ci(slot["ticket"]), 100),
                        "reinit": interval(mean_ci(slot["reinit"]), 100),
                        "ticket - dense (points)": interval(_pt(vs_dense), 100),
                        "ticket - reinit (points)": interval(_pt(vs_reinit), 100),
                        "matches dense and beats reinit": ok})
    dense = mean_ci(per_round[0]["ticket"])
    held = bool(matched)
    last = summary[-1]
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    sp = [slot["sparsity"] for _, slot in sorted(per_round.items())]
    ax.plot(sp, [100 * mean_ci(s["ticket"])["mean"] for _, s in sorted(per_round.items())], marker="o",
            label="winning ticket (rewind to init)")
    ax.plot(sp[1:], [100 * mean_ci(s["reinit"])["mean"] for r, s in sorted(per_round.items()) if r > 0],
            marker="s", label="same mask, random re-init")
    ax.axhline(100 * dense["mean"], color="gray", linestyle=":", label="dense")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("test accuracy (%, mean over seeds)")
    ax.legend(fontsize=8)
    fig_name = save(fig, out_dir, "lottery_ticket.png")
    return ClaimResult(
        "lottery_ticket",
        "A dense network contains a sparse subnetwork (a winning ticket) that, trained in "
        "isolation from the original initialization, matches the full network; the same "
        "subnetwork re-initialized at random does worse.",
        "notes 004 (Lottery ticket hypothesis)",
        f"digits ({len(train[0])} images), descend.nn mlp 64-300-100-10 (LeNet-300-100 shape), Adam "
        f"lr 1.2e-3, batch 60, {epochs} epochs per round with the Trainer; "
        f"descend.analysis.lottery.iterative_magnitude_pruning: 50% of the remaining weights per "
        f"round (global), {rounds} rounds, rewinding to the initial weights; seeds {seed_list}.",
        f"dense {interval(dense, 100)}%; highest sparsity that matches the dense network (ticket - dense "
        f">= -{100 * margin:g} points at 95%) and beats the re-init: "
        f"{max(matched) if matched else 'none'}; at sparsity {last['sparsity']}: ticket {last['ticket']}%, "
        f"re-init {last['reinit']}%, ticket - dense {last['ticket - dense (points)']} points.",
        held, f"at some sparsity >= 50%, the 95% lower bound of (ticket - dense) is >= -{100 * margin:g} "
        "point (it matches the dense network) and that of (ticket - re-init) is > 0.",
        summary + rows, {fig_name: "test accuracy against sparsity"},
        {"dense": dense, "summary": summary, "matched_sparsities": matched}, seeds=seed_list,
        margin=f"matches dense within {100 * margin:g} point")


def mode_connectivity(size: str, out_dir) -> ClaimResult:
    """Two minima are joined by a simple curve of low loss, though the straight line
    between them crosses a barrier."""
    from descend.optim import Adam

    epochs = pick(size, 3, 40)
    curve_steps = pick(size, 100, 3000)
    n_train = pick(size, 300, None)
    seed_list = seeds(size)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    loss = torch.nn.functional.cross_entropy
    rows, lines, curves_ = [], [], []
    plot = None
    for seed in seed_list:
        ends = []
        for k in (1, 2):
            s = 2 * seed + k
            m = build("mlp", input_shape=(64,), num_classes=10, hidden=[32, 32], seed=s)
            fit(m, Adam(m.parameters(), lr=3e-3), train, epochs=epochs, batch_size=32, seed=s)
            ends.append(m)
        model = build("mlp", input_shape=(64,), num_classes=10, hidden=[32, 32], seed=0)
        curve = train_bezier(model, loss, train, ends[0], ends[1], steps=curve_steps, lr=3e-3,
                             batch_size=64, seed=seed)
        ts, line_l, bent_l = path_losses(model, loss, train, curve, points=21)
        _, line_t, bent_t = path_losses(model, loss, test, curve, points=21)
        b_line, b_curve = barrier(line_l), barrier(bent_l)
        lines.append(b_line)
        curves_.append(b_curve)
        rows.append({"seed": seed, "endpoints": f"seeds {2 * seed + 1}, {2 * seed + 2}",
                     "line train barrier": round(b_line, 4), "curve train barrier": round(b_curve, 4),
                     "line test barrier": round(barrier(line_t), 4), "curve test barrier": round(barrier(bent_t), 4)})
        if plot is None:
            plot = (ts, line_l, bent_l, line_t, bent_t)
    cl, cc = mean_ci(lines), mean_ci(curves_)
    frac = mean_ci([c / b if b > 0 else None for c, b in zip(curves_, lines)])
    held = bool(cc["hi"] is not None and cc["hi"] < 0.1 and frac["hi"] is not None and frac["hi"] < 0.25)
    ts, line_l, bent_l, line_t, bent_t = plot
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    ax.plot(ts, line_l, label="straight line (train)")
    ax.plot(ts, bent_l, label="Bezier curve (train)")
    ax.plot(ts, line_t, linestyle="--", label="straight line (test)")
    ax.plot(ts, bent_t, linestyle="--", label="Bezier curve (test)")
    ax.set_xlabel("t")
    ax.set_ylabel("cross-entropy")
    ax.legend(fontsize=7)
    fig_name = save(fig, out_dir, "mode_connectivity.png")
    return ClaimResult(
        "mode_connectivity",
        "The minima found from different initializations are connected by simple curves "
        "along which the loss stays nearly constant (while the straight line crosses a barrier).",
        "notes 004 (Mode connectivity)",
        f"digits ({len(train[0])} images), pairs of descend.nn mlp 64-32-32-10 trained from seeds "
        f"2s+1 and 2s+2, Adam lr 3e-3, {epochs} epochs; quadratic Bezier bend trained {curve_steps} "
        f"steps (descend.analysis.connectivity.train_bezier, Adam lr 3e-3, t ~ U(0, 1)); barrier = "
        f"max_t L(t) - linear interpolation of the end losses; s in {seed_list}.",
        f"train-loss barrier {interval(cl)} nats on the straight line, {interval(cc)} on the curve; "
        f"curve / line {interval(frac)} (mean [95% CI]).",
        held, "the 95% upper bound of the curve's barrier is below 0.1 nats and that of the "
        "curve/line ratio below 0.25.",
        rows, {fig_name: f"loss along the straight line and the trained curve (pair {seed_list[0]})"},
        {"barrier_line": cl, "barrier_curve": cc, "ratio": frac}, seeds=seed_list,
        margin="curve barrier < 0.1 nats and < 1/4 of the line's")


class _StopAtLoss(Callback):
    """Stop as soon as the loss on the whole training set is at most ``level`` (checked every
    ``every`` steps), so that minima are compared at the same training loss."""

    def __init__(self, data, level: float, every: int):
        self.data, self.level, self.every, self.reached = data, level, every, None

    def on_batch_end(self, trainer, logs):
        if trainer.global_step % self.every == 0 and self.reached is None:
            if mean_loss(trainer.model, self.data) <= self.level:
                self.reached = trainer.global_step
                trainer.stop_training = True


def flat_minima(size: str, out_dir) -> ClaimResult:
    """Small-batch training finds flatter minima (smaller Hessian eigenvalues) that
    generalize better than the sharp minima of large-batch training (compared at the same
    training loss)."""
    from descend.analysis.hessian import sharpness
    from descend.analysis.landscape import filter_normalized_direction, get_vector, loss_along_line
    from descend.optim import Adam

    n_train = pick(size, 300, None)
    level = pick(size, 1.0, 0.02)
    seed_list = seeds(size)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    n = len(train[0])
    budgets = {"small batch (16)": (16, pick(size, 2, 100)), f"large batch ({n})": (n, pick(size, 50, 4000))}
    loss = torch.nn.functional.cross_entropy
    rows, lines = [], {}
    eig = {k: [] for k in budgets}
    acc = {k: [] for k in budgets}
    for seed in seed_list:
        for label, (bs, epochs) in budgets.items():
            model = build("mlp", input_shape=(64,), num_classes=10, hidden=[64, 64], seed=seed)
            per_epoch = -(-n // bs)
            stop = _StopAtLoss(train, level, every=max(1, per_epoch // 10))
            fit(model, Adam(model.parameters(), lr=1e-3), train, epochs=epochs, batch_size=bs, seed=seed,
                callbacks=[stop])
            model.eval()
            s = sharpness(model, loss, train, k=1, steps=pick(size, 10, 30), samples=pick(size, 5, 30))
            eig[label].append(s["top_eigenvalues"][0])
            acc[label].append(accuracy(model, test))
            if seed == seed_list[0]:
                direction = filter_normalized_direction(model, seed=0)
                w = get_vector(model)
                alphas, ls = loss_along_line(model, loss, train, w - direction, w + direction,
                                             points=pick(size, 5, 41))
                lines[label] = (alphas * 2 - 1, ls)
            rows.append({"seed": seed, "training": label, "steps": stop.reached,
                         "train loss": round(mean_loss(model, train), 4), "test acc": round(acc[label][-1], 4),
                         "top Hessian eigenvalue": round(eig[label][-1], 3), "Hessian trace": round(s["trace"], 2)})
    small, large = budgets
    ratio = ratio_ci([a / b for a, b in zip(eig[small], eig[large])])
    dacc = paired_test(acc[small], acc[large])
    margin = 0.8
    held = bool(ratio["hi"] is not None and ratio["hi"] < margin and dacc["lo"] is not None and dacc["lo"] > 0)
    reached = [r["steps"] is not None for r in rows]
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    for label, (a, ls) in lines.items():
        ax.plot(a.tolist(), ls.tolist(), label=label)
    ax.set_xlabel("step along a filter-normalized random direction")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig_name = save(fig, out_dir, "flat_minima.png")
    return ClaimResult(
        "flat_minima",
        "Wide (flat) minima generalize better than sharp ones; small-batch SGD tends to find "
        "flatter minima than large-batch training.",
        "notes 004 (wide vs sharp minima); Keskar et al. 2017",
        f"digits ({n} images), descend.nn mlp 64-64-64-10, Adam lr 1e-3, batch 16 vs the full batch, "
        f"each trained until its loss on the whole training set first falls to {level:g} (checked ten "
        f"times per epoch; {sum(reached)} of {len(reached)} runs got there), so both minima are "
        f"compared at the same training loss; sharpness on the training loss: top Hessian eigenvalue "
        f"(Lanczos) and trace (Hutchinson); 1-D loss along one filter-normalized direction (Li et al. "
        f"2018); seeds {seed_list}.",
        f"top eigenvalue, small / large batch: {interval(ratio)} times (geometric mean [95% CI]); "
        f"test accuracy small - large: {interval(_pt(dacc), 100)} points (paired).",
        held, f"the 95% upper bound of the small/large eigenvalue ratio is below {margin:g} (at least 20% "
        "flatter) and the 95% lower bound of the test-accuracy difference is > 0.",
        rows, {fig_name: f"training loss along a filter-normalized direction through each minimum (seed {seed_list[0]})"},
        {"eigenvalue_ratio": ratio, "test_acc_diff": dacc, "eigenvalues": eig, "test_acc": acc},
        seeds=seed_list, margin=f"eigenvalue ratio < {margin:g}")
