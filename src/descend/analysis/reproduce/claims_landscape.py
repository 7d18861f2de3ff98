"""Claims about the loss landscape: lottery tickets and mode connectivity."""

from __future__ import annotations

import torch

from descend.analysis.connectivity import barrier, path_losses, train_bezier
from descend.analysis.lottery import iterative_magnitude_pruning
from descend.analysis.reproduce._common import (ClaimResult, accuracy, digits, flat, mlp, pick, plt,
                                                save, subset)


def lottery_ticket(size: str, out_dir) -> ClaimResult:
    """Winning tickets: pruned subnetworks rewound to their initial weights train better
    than the same subnetworks re-initialized at random."""
    from descend.optim import Adam

    rounds = pick(size, 1, 6)
    epochs = pick(size, 1, 15)
    n_train = pick(size, 300, None)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    torch.manual_seed(0)
    model = mlp(64, [300, 100], 10)

    def train_fn(m, masker):
        opt = Adam(m.parameters(), lr=1.2e-3)
        gen = torch.Generator().manual_seed(0)
        x, y = train
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 60):
                idx = perm[i:i + 60]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
                opt.step()
                masker.after_step()

    res = iterative_magnitude_pruning(model, train_fn, lambda m: accuracy(m, test), rounds=rounds,
                                      rate=0.5, reinit_seed=100)
    rows = [{"round": r["round"], "sparsity": f"{r['sparsity']:.3f}", "ticket (rewound) test acc": round(r["ticket"], 4),
             "random re-init test acc": None if r["reinit"] is None else round(r["reinit"], 4)} for r in res]
    last = res[-1]
    dense = res[0]["ticket"]
    held = last["reinit"] is not None and last["ticket"] > last["reinit"]
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    sp = [r["sparsity"] for r in res]
    ax.plot(sp, [r["ticket"] for r in res], marker="o", label="winning ticket (rewind to init)")
    ax.plot(sp[1:], [r["reinit"] for r in res[1:]], marker="s", label="same mask, random re-init")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig_name = save(fig, out_dir, "lottery_ticket.png")
    return ClaimResult(
        "lottery_ticket",
        "A dense network contains a sparse subnetwork (a winning ticket) that, trained in "
        "isolation from the original initialization, matches the full network; the same "
        "subnetwork re-initialized at random does worse.",
        "notes 004 (Lottery ticket hypothesis)",
        f"digits ({len(train[0])} images), MLP 64-300-100-10 (LeNet-300-100 shape), Adam lr 1.2e-3, "
        f"batch 60, {epochs} epochs per round; iterative magnitude pruning of 50% of the remaining "
        f"weights per round (global), {rounds} rounds, rewinding to the initial weights.",
        f"at sparsity {last['sparsity']:.3f}: ticket {last['ticket']:.4f}, random re-init "
        f"{last['reinit']:.4f}; dense network {dense:.4f}.",
        held, "at the highest sparsity the rewound ticket's test accuracy exceeds the random re-init's.",
        rows, {fig_name: "test accuracy against sparsity"},
        {"dense": dense, "rounds": [{k: v for k, v in r.items() if k != "masks"} for r in res]})


def mode_connectivity(size: str, out_dir) -> ClaimResult:
    """Two minima are joined by a simple curve of low loss, though the straight line
    between them crosses a barrier."""
    from descend.optim import Adam

    epochs = pick(size, 3, 40)
    curve_steps = pick(size, 100, 3000)
    n_train = pick(size, 400, None)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    ends = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = mlp(64, [32, 32], 10)
        from descend.analysis.reproduce._common import fit

        fit(m, Adam(m.parameters(), lr=3e-3), train, epochs=epochs, batch_size=32, seed=seed)
        ends.append(m)
    model = mlp(64, [32, 32], 10)
    loss = torch.nn.functional.cross_entropy

    curve = train_bezier(model, loss, train, ends[0], ends[1], steps=curve_steps, lr=3e-3,
                         batch_size=64, seed=0)
    ts, line_l, bent_l = path_losses(model, loss, train, curve, points=21)
    _, line_t, bent_t = path_losses(model, loss, test, curve, points=21)
    b_line, b_curve = barrier(line_l), barrier(bent_l)
    held = b_curve < 0.25 * b_line and b_curve < 0.1
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
    rows = [{"path": "straight line", "train barrier": round(b_line, 4), "max train loss": round(float(line_l.max()), 4),
             "test barrier": round(barrier(line_t), 4)},
            {"path": "Bezier curve", "train barrier": round(b_curve, 4), "max train loss": round(float(bent_l.max()), 4),
             "test barrier": round(barrier(bent_t), 4)}]
    return ClaimResult(
        "mode_connectivity",
        "The minima found from different initializations are connected by simple curves "
        "along which the loss stays nearly constant (while the straight line crosses a barrier).",
        "notes 004 (Mode connectivity)",
        f"digits ({len(train[0])} images), two MLPs 64-32-32-10 from seeds 1 and 2, Adam lr 3e-3, "
        f"{epochs} epochs; quadratic Bezier bend trained {curve_steps} steps (Adam lr 3e-3, "
        f"t ~ U(0, 1)); barrier = max_t L(t) - linear interpolation of the end losses.",
        f"train-loss barrier {b_line:.4f} on the straight line, {b_curve:.4f} on the curve.",
        held, "the curve's barrier is below a quarter of the line's and below 0.1 nats.",
        rows, {fig_name: "loss along the straight line and the trained curve"},
        {"barrier_line": b_line, "barrier_curve": b_curve,
         "line_train": line_l.tolist(), "curve_train": bent_l.tolist()})


def flat_minima(size: str, out_dir) -> ClaimResult:
    """Small-batch training finds flatter minima (smaller Hessian eigenvalues) that
    generalize better than the sharp minima of large-batch training."""
    from descend.analysis.hessian import sharpness
    from descend.analysis.landscape import filter_normalized_direction, get_vector, loss_along_line
    from descend.analysis.reproduce._common import fit, mean_loss
    from descend.optim import Adam

    n_train = pick(size, 300, None)
    d = digits()
    train, test = subset(flat(d.train), n_train), flat(d.test)
    n = len(train[0])
    budgets = {"small batch (16)": (16, pick(size, 2, 40)), f"large batch ({n})": (n, pick(size, 20, 1500))}
    loss = torch.nn.functional.cross_entropy
    rows, lines, numbers = [], {}, {}
    for label, (bs, epochs) in budgets.items():
        torch.manual_seed(0)
        model = mlp(64, [64, 64], 10)
        fit(model, Adam(model.parameters(), lr=1e-3), train, epochs=epochs, batch_size=bs)
        model.eval()
        s = sharpness(model, loss, train, k=1, steps=pick(size, 10, 30), samples=pick(size, 5, 30))
        direction = filter_normalized_direction(model, seed=0)
        w = get_vector(model)
        alphas, ls = loss_along_line(model, loss, train, w - direction, w + direction, points=pick(size, 5, 41))
        lines[label] = (alphas * 2 - 1, ls)
        row = {"training": label, "epochs": epochs, "steps": epochs * -(-n // bs),
               "train loss": round(mean_loss(model, train), 4), "train acc": round(accuracy(model, train), 4),
               "test acc": round(accuracy(model, test), 4), "top Hessian eigenvalue": round(s["top_eigenvalues"][0], 3),
               "Hessian trace": round(s["trace"], 2)}
        rows.append(row)
        numbers[label] = row
    small, large = rows
    held = small["top Hessian eigenvalue"] < large["top Hessian eigenvalue"] and small["test acc"] > large["test acc"]
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
        f"digits ({n} images), MLP 64-64-64-10, Adam lr 1e-3: batch 16 for {budgets['small batch (16)'][1]} epochs "
        f"vs the full batch for {budgets[f'large batch ({n})'][1]} epochs; sharpness on the training "
        f"loss: top Hessian eigenvalue (Lanczos) and trace (Hutchinson); 1-D loss along one "
        f"filter-normalized direction (Li et al. 2018).",
        f"top eigenvalue {small['top Hessian eigenvalue']} (small batch) vs {large['top Hessian eigenvalue']} "
        f"(large batch); test acc {small['test acc']} vs {large['test acc']}.",
        held, "the small-batch minimum has the smaller top eigenvalue and the higher test accuracy.",
        rows, {fig_name: "training loss along a filter-normalized direction through each minimum"},
        numbers)
