"""Claims about training networks: batch norm and LR, ReLU vs tanh, initialization
across depth, dropout, early stopping, and the MNIST-1D table (from the MNIST-1D paper,
not the notes).

Every claim runs the library's own code (``descend.nn.MODELS``, ``descend.init.apply``,
``descend.optim``, the ``Trainer`` and its callbacks) over at least 5 seeds at full
size, and decides by a criterion with a margin fixed before the run, on 95% intervals
(:mod:`descend.analysis.stats`)."""

from __future__ import annotations

import math

import torch

from descend.analysis.reproduce._common import (ClaimResult, accuracy, build, digits, first_reach, fit,
                                                flat, interval, mean_loss, pick, plt, ratio_ci, save,
                                                seeds, subset)
from descend.analysis.stats import mean_ci, paired_test
from descend.callbacks import Callback


def _sgd(model, lr, momentum=0.0):
    from descend.optim import SGD

    return SGD(model.parameters(), lr=lr, momentum=momentum)


def _adam(model, lr):
    from descend.optim import Adam

    return Adam(model.parameters(), lr=lr)


def batchnorm_lr(size: str, out_dir) -> ClaimResult:
    """Batch norm allows several times larger LR and reaches the target in fewer steps."""
    lrs = pick(size, [0.1, 1.0, 4.0], [0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0])
    epochs = pick(size, 2, 15)
    n_train = pick(size, 300, None)
    target = pick(size, 0.5, 0.95)
    seed_list = seeds(size)
    d = digits(val_fraction=0.25)
    train, val = subset(flat(d.train), n_train), flat(d.val)
    rows, curves, per_seed = [], {}, []
    for seed in seed_list:
        best = {}
        for bn in (False, True):
            ok_lrs, ok_steps = [], []
            for lr in lrs:
                model = build("mlp", input_shape=(64,), num_classes=10, hidden=[64, 64, 64],
                              norm="batch" if bn else None, init="he_normal", seed=seed)
                t = fit(model, _sgd(model, lr), train, val, epochs=epochs, batch_size=32, seed=seed)
                ep = t.history.epochs
                accs = [a if a is not None and math.isfinite(a) else 0.0 for a in ep["val_acc"]]
                reach = first_reach(accs, target, ep["step"])
                if reach is not None:
                    ok_lrs.append(lr)
                    ok_steps.append(reach)
                rows.append({"seed": seed, "batch norm": bn, "lr": lr, "final val acc": round(accs[-1], 4),
                             "steps to target": reach})
                if seed == seed_list[0]:
                    curves[(bn, lr)] = (ep["step"], accs)
            best[bn] = (max(ok_lrs) if ok_lrs else None, min(ok_steps) if ok_steps else None)
        (lr_p, st_p), (lr_b, st_b) = best[False], best[True]
        per_seed.append({"seed": seed, "largest lr plain": lr_p, "largest lr bn": lr_b,
                         "lr ratio": (lr_b / lr_p) if lr_p and lr_b else (math.inf if lr_b else None),
                         "fewest steps plain": st_p, "fewest steps bn": st_b,
                         # never reached: censored at the budget (a lower bound on the ratio)
                         "steps ratio": ((st_p if st_p is not None else epochs * -(-len(train[0]) // 32))
                                         / st_b) if st_b else None})
    lr_ci = ratio_ci([r["lr ratio"] for r in per_seed])
    st_ci = ratio_ci([r["steps ratio"] for r in per_seed])
    margin = 2.0
    held = bool(lr_ci["lo"] is not None and lr_ci["lo"] >= margin and st_ci["lo"] is not None and st_ci["lo"] > 1)
    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, bn in zip(axes, (False, True)):
        for lr in lrs:
            s, a = curves[(bn, lr)]
            ax.plot(s, [100 * x for x in a], marker=".", label=f"lr={lr:g}")
        ax.axhline(100 * target, color="gray", linestyle=":")
        ax.set_title("with batch norm" if bn else "without batch norm", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation accuracy (%)")
    fig_name = save(fig, out_dir, "batchnorm_lr.png")
    return ClaimResult(
        "batchnorm_lr",
        "Batch normalization allows a several times larger learning rate and reaches the "
        "target accuracy in fewer steps (BN-x5, BN-x30: 14x fewer steps on ImageNet).",
        "notes 000 (Evaluation of Batch Normalization), 003, 004",
        f"digits (8x8, {len(train[0])} training / {len(val[0])} validation images), "
        f"descend.nn mlp 64-64-64-64-10 ReLU with and without norm='batch', He init "
        f"(descend.init), plain SGD, batch 32, {epochs} epochs, learning rates {lrs}; target "
        f"{target:.0%} validation accuracy (checked at each epoch end); seeds {seed_list}.",
        f"largest LR reaching the target, BN / plain: {interval(lr_ci)} times (geometric mean "
        f"[95% CI] over {lr_ci['n']} seeds); fewest steps to the target, plain / BN: "
        f"{interval(st_ci)} times.",
        held, f"the 95% lower bound of BN's largest working LR over the plain network's is >= "
        f"{margin:g} ('several times'), and the lower bound of the plain/BN ratio of the fewest "
        "steps to the target is > 1.",
        per_seed + rows, {fig_name: f"validation accuracy against steps for every LR (seed {seed_list[0]})"},
        {"lr_ratio": lr_ci, "steps_ratio": st_ci, "per_seed": per_seed},
        seeds=seed_list, margin=f"LR ratio lower bound >= {margin:g}x")


class _Probe(Callback):
    """Accuracy on a fixed set every ``every`` steps (eval mode); stop once ``target`` is met."""

    def __init__(self, data, every: int, target: float):
        self.data, self.every, self.target = data, every, target
        self.steps, self.accs, self.reached = [], [], None

    def on_batch_end(self, trainer, logs):
        if trainer.global_step % self.every == 0:
            acc = accuracy(trainer.model, self.data)
            self.steps.append(trainer.global_step)
            self.accs.append(acc)
            if self.reached is None and acc >= self.target:
                self.reached = trainer.global_step
                trainer.stop_training = True


def relu_vs_tanh(size: str, out_dir) -> ClaimResult:
    """ReLU trains faster than tanh (AlexNet: 6x fewer iterations to 25% training error)."""
    from descend.data import load

    seed_list = seeds(size)
    epochs = pick(size, 1, 40)
    target = pick(size, 0.3, 0.75)
    lrs = pick(size, [0.03], [0.003, 0.01, 0.03, 0.1])
    d = load("mnist1d", val_fraction=0.1)
    train = subset(d.train.tensors, pick(size, 400, None))
    probe_set = subset(train, 1000, seed=1)
    batch = 100
    budget = epochs * -(-len(train[0]) // batch)
    rows, per_seed, curves = [], [], {}
    for seed in seed_list:
        best = {}
        for act, scheme in (("relu", "he_normal"), ("tanh", "xavier_uniform")):
            steps = []
            for lr in lrs:
                model = build("cnn", input_shape=(40,), num_classes=10, channels=(32, 32, 32, 32),
                              kernel_size=5, pool=None, activation=act, init=scheme, seed=seed)
                probe = _Probe(probe_set, every=5, target=target)
                fit(model, _sgd(model, lr, momentum=0.9), train, epochs=epochs, batch_size=batch, seed=seed,
                    callbacks=[probe])
                steps.append(probe.reached if probe.reached is not None else math.inf)
                rows.append({"seed": seed, "activation": act, "init": scheme, "lr": lr,
                             "steps to target train acc": probe.reached})
                if seed == seed_list[0]:
                    curves.setdefault(act, []).append((lr, probe.steps, probe.accs))
            best[act] = min(steps)
        # a run that never reached the target counts as the budget: a lower bound on its time
        relu, tanh = (min(best[a], budget) for a in ("relu", "tanh"))
        per_seed.append({"seed": seed, "relu steps (best lr)": best["relu"], "tanh steps (best lr)": best["tanh"],
                         "tanh / relu": tanh / relu})
    ci = ratio_ci([r["tanh / relu"] for r in per_seed])
    margin = 1.25
    held = bool(ci["lo"] is not None and ci["lo"] >= margin)
    p = plt()
    fig, ax = p.subplots(figsize=(6.5, 3.8))
    for act, cs in curves.items():
        for lr, s, a in cs:
            ax.plot(s, [100 * (1 - x) for x in a], color="C0" if act == "relu" else "C1",
                    alpha=0.4 + 0.6 * (lr == lrs[-1]), label=f"{act} lr={lr:g}")
    ax.axhline(100 * (1 - target), color="gray", linestyle=":")
    ax.set_xlabel("step")
    ax.set_ylabel("training error (%)")
    ax.legend(fontsize=6, ncol=2)
    fig_name = save(fig, out_dir, "relu_vs_tanh.png")
    return ClaimResult(
        "relu_vs_tanh",
        "ReLU networks train faster than tanh networks (a four-layer CNN reached 25% training "
        "error six times faster on CIFAR-10).",
        "notes 003 (Activation Function); Krizhevsky et al. 2012, Figure 1",
        f"MNIST-1D ({len(train[0])} training signals), the notes' experiment at small scale: a "
        f"four-layer CNN (descend.nn cnn, 4 x 32 channels, kernel 5), ReLU (He init) vs tanh "
        f"(Xavier init), SGD momentum 0.9, batch {batch}, learning rate chosen per activation and "
        f"seed as the fastest of {lrs} (as the paper chose each network's LR independently), at "
        f"most {epochs} epochs; target: {1 - target:.0%} training error on 1000 training "
        f"signals, checked every 5 steps; seeds {seed_list}.",
        f"steps to the target, tanh / ReLU: {interval(ci)} times (geometric mean [95% CI] over "
        f"{ci['n']} seeds), against 6x in the notes.",
        held, f"the 95% lower bound of the tanh/ReLU ratio of steps to the target is >= {margin:g} "
        "(ReLU at least 25% faster).",
        per_seed + rows, {fig_name: f"training error against steps, every LR (seed {seed_list[0]})"},
        {"speedup": ci, "per_seed": per_seed}, seeds=seed_list, margin=f"speedup lower bound >= {margin:g}x")


@torch.no_grad()
def init_depth(size: str, out_dir) -> ClaimResult:
    """Xavier (tanh) / He (ReLU) keep activation statistics across depth; naive init does not."""
    depths = pick(size, [4, 8], [5, 10, 20, 50])
    width = pick(size, 128, 512)
    n = pick(size, 256, 1024)
    seed_list = seeds(size)
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(1000))
    cases = [("tanh", "naive", "normal"), ("tanh", "xavier", "xavier_uniform"),
             ("relu", "naive", "normal"), ("relu", "he", "he_normal")]
    kept, rows, curves = {}, [], {}
    for act, label, scheme in cases:
        for depth in depths:
            ratios = []
            for seed in seed_list:
                model = build("mlp", input_shape=(width,), num_classes=10, hidden=[width] * depth,
                              activation=act, init=scheme, seed=seed,
                              init_kwargs={"std": 0.01} if scheme == "normal" else None)
                stds, h = [], x
                for block in list(model)[1:-1]:  # the hidden blocks: Linear -> activation
                    h = block(h)
                    stds.append(float(h.std()))
                ratios.append(stds[-1] / stds[0])
                if seed == seed_list[0] and depth == depths[-1]:
                    curves[(act, label)] = stds
            ci = mean_ci(ratios)
            geo = ratio_ci(ratios)
            kept[(act, label, depth)] = (ci, geo)
            rows.append({"activation": act, "init": label, "depth": depth,
                         "last / first std": interval(ci), "min over seeds": f"{min(ratios):.3g}",
                         "max over seeds": f"{max(ratios):.3g}"})
    lo_keep, hi_keep, collapse = 0.5, 2.0, 1e-3
    good = all(kept[(a, l, dp)][0]["lo"] is not None and lo_keep <= kept[(a, l, dp)][0]["lo"]
               and kept[(a, l, dp)][0]["hi"] <= hi_keep
               for a, l in (("tanh", "xavier"), ("relu", "he")) for dp in depths)
    bad = all(kept[(a, "naive", dp)][1]["hi"] is not None and kept[(a, "naive", dp)][1]["hi"] < collapse
              for a in ("tanh", "relu") for dp in depths if dp >= 10 or size == "tiny")
    held = bool(good and bad)
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    for (a, lbl), v in curves.items():
        ax.plot(range(1, len(v) + 1), v, marker="o", markersize=2, label=f"{a}, {lbl}")
    ax.set_yscale("log")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("std of activations")
    ax.legend(fontsize=8)
    fig_name = save(fig, out_dir, "init_depth.png")

    def show(a, l):
        return ", ".join(f"depth {dp}: {interval(kept[(a, l, dp)][0])}" for dp in depths)
    return ClaimResult(
        "init_depth",
        "Xavier initialization (tanh) and He initialization (ReLU) keep the activation "
        "statistics across depth, where naive small random init N(0, 0.01^2) makes them collapse.",
        "notes 000 (initialization), 002 (Xavier, He), 003, 004",
        f"descend.nn mlp, depths {depths} of width {width}, inputs N(0, 1) ({n} samples), "
        f"descend.init.apply 'normal' (std 0.01), 'xavier_uniform', 'he_normal', biases 0; std "
        f"of every hidden activation at initialization; seeds {seed_list} (initial weights).",
        f"last/first hidden-layer std (mean [95% CI]): tanh+Xavier {show('tanh', 'xavier')}; "
        f"ReLU+He {show('relu', 'he')}; naive inits below "
        f"{max(kept[(a, 'naive', dp)][1]['hi'] for a in ('tanh', 'relu') for dp in depths):.2g} at every depth.",
        held, f"at every depth the 95% interval of last/first std lies in [{lo_keep}, {hi_keep}] ('kept' "
        f"within a factor 2) for tanh+Xavier and ReLU+He, and the naive inits' upper bound is below "
        f"{collapse:g} ('collapse') from depth 10 on.",
        rows, {fig_name: f"std of activations against depth (depth {depths[-1]}, seed {seed_list[0]})"},
        {f"{a}_{l}_{dp}": ci for (a, l, dp), (ci, _) in kept.items()}, seeds=seed_list,
        margin="kept: within a factor 2 of the first layer; collapse: below 1e-3")


def dropout_gap(size: str, out_dir) -> ClaimResult:
    """Dropout narrows the generalization gap."""
    from descend.data import load

    n_train = pick(size, 300, None)
    epochs = pick(size, 3, 100)
    seed_list = seeds(size)
    d = load("mnist1d", val_fraction=0.1)
    train, test = subset(d.train.tensors, n_train), d.test.tensors
    rows, gaps = [], {0: [], 1: []}
    accs = {0: [], 1: []}
    for seed in seed_list:
        for drop in (0, 1):
            # the notes' keep probabilities: 0.8 for the inputs, 0.5 for hidden units
            kw = {"keep": [0.5, 0.5], "input_dropout": 0.2} if drop else {}
            model = build("mlp", input_shape=(40,), num_classes=10, hidden=[512, 512], seed=seed, **kw)
            fit(model, _adam(model, 1e-3), train, epochs=epochs, batch_size=100, seed=seed)
            tr, te = accuracy(model, train), accuracy(model, test)
            gaps[drop].append(tr - te)
            accs[drop].append(te)
            rows.append({"dropout": "keep 0.8 / 0.5" if drop else "none", "seed": seed,
                         "train acc": round(tr, 4), "test acc": round(te, 4), "gap": round(tr - te, 4),
                         "train loss": round(mean_loss(model, train), 4),
                         "test loss": round(mean_loss(model, test), 4)})
    red = paired_test(gaps[0], gaps[1])  # gap without - gap with dropout
    acc = paired_test(accs[1], accs[0])
    g0, g1 = mean_ci(gaps[0]), mean_ci(gaps[1])
    margin = 0.02
    held = bool(red["lo"] is not None and red["lo"] >= margin)
    p = plt()
    fig, ax = p.subplots(figsize=(5, 3.4))
    ax.bar(["no dropout", "dropout"], [100 * g0["mean"], 100 * g1["mean"]], color=["C1", "C0"],
           yerr=[[100 * (g0["mean"] - (g0["lo"] or g0["mean"])), 100 * (g1["mean"] - (g1["lo"] or g1["mean"]))],
                 [100 * ((g0["hi"] or g0["mean"]) - g0["mean"]), 100 * ((g1["hi"] or g1["mean"]) - g1["mean"])]],
           capsize=4)
    ax.set_ylabel("train acc - test acc (points, 95% CI)")
    fig_name = save(fig, out_dir, "dropout_gap.png")
    return ClaimResult(
        "dropout_gap",
        "Dropout regularizes: it narrows the gap between training and test performance.",
        "notes 001 (Dropout), 003",
        f"MNIST-1D, {len(train[0])} training / {len(test[0])} test signals, descend.nn mlp "
        f"40-512-512-10 ReLU, Adam lr 1e-3, batch 100, {epochs} epochs; dropout with the notes' "
        f"keep probabilities (0.8 inputs, 0.5 hidden; the builder's keep=) vs none; seeds {seed_list}.",
        f"train-test accuracy gap {interval(g0, 100)} points without dropout, {interval(g1, 100)} "
        f"with; narrowed by {interval({'mean': red['diff'], 'lo': red['lo'], 'hi': red['hi']}, 100)} "
        f"points (paired over seeds, p={red['p']:.2g}); test accuracy changed by "
        f"{interval({'mean': acc['diff'], 'lo': acc['lo'], 'hi': acc['hi']}, 100)} points.",
        held, f"the 95% lower bound of the paired gap reduction is >= {100 * margin:g} points.",
        rows, {fig_name: "generalization gap with 95% intervals over seeds"},
        {"gap_no_dropout": g0, "gap_dropout": g1, "reduction": red, "test_acc_change": acc},
        seeds=seed_list, margin=f"gap narrowed by >= {100 * margin:g} points")


class _LastWeights(Callback):
    """The test loss and accuracy of the last weights, taken before early stopping restores the best."""

    def __init__(self, test):
        self.test, self.loss, self.acc = test, None, None

    def on_fit_end(self, trainer):
        self.loss, self.acc = mean_loss(trainer.model, self.test), accuracy(trainer.model, self.test)


def early_stopping(size: str, out_dir) -> ClaimResult:
    """The epoch of lowest validation loss gives a better model than the last epoch."""
    from descend.train.early_stopping import EarlyStopping

    epochs = pick(size, 6, 100)
    n_train = pick(size, 300, 500)
    seed_list = seeds(size)
    d = digits(val_fraction=0.2)
    val, test = flat(d.val), flat(d.test)
    rows, curves = [], None
    last_l, best_l, best_ep = [], [], []
    for seed in seed_list:
        x, y = subset(flat(d.train), n_train, seed=seed)
        g = torch.Generator().manual_seed(seed)
        y = y.clone()
        noisy = torch.rand(len(y), generator=g) < 0.3  # 30% label noise invites overfitting
        y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=g)
        model = build("mlp", input_shape=(64,), num_classes=10, hidden=[256, 256], seed=seed)
        last = _LastWeights(test)
        # patience = the whole run: train every epoch, then restore the best (lowest val loss)
        es = EarlyStopping(monitor="val_loss", patience=epochs + 1, restore_best=True)
        t = fit(model, _adam(model, 1e-3), (x, y), val, epochs=epochs, batch_size=32, seed=seed,
                callbacks=[last, es])
        bl, ba = mean_loss(model, test), accuracy(model, test)
        last_l.append(last.loss)
        best_l.append(bl)
        best_ep.append(es.best_epoch)
        rows.append({"seed": seed, "best epoch": es.best_epoch, "test loss (best)": round(bl, 4),
                     "test loss (last)": round(last.loss, 4), "test acc (best)": round(ba, 4),
                     "test acc (last)": round(last.acc, 4)})
        if curves is None:
            curves = (t.history.epochs, es.best_epoch)
    diff = paired_test(last_l, best_l)  # last - best: > 0 when the best epoch is better
    margin = 0.05
    held = bool(diff["lo"] is not None and diff["lo"] >= margin and max(best_ep) < epochs)
    ep, be = curves
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    ax.plot(ep["epoch"], ep["train_loss"], label="train (noisy labels)")
    ax.plot(ep["epoch"], ep["val_loss"], label="validation")
    ax.axvline(be, color="gray", linestyle=":", label=f"best epoch {be}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig_name = save(fig, out_dir, "early_stopping.png")
    return ClaimResult(
        "early_stopping",
        "Validation loss falls then rises while training loss keeps falling; returning to "
        "the parameters of the epoch with the lowest validation loss gives a better model.",
        "notes 001 (Early Stopping), 003",
        f"digits, {n_train} training images with 30% of labels replaced at random (per seed), "
        f"descend.nn mlp 64-256-256-10, Adam lr 1e-3, batch 32, {epochs} epochs, validation split "
        f"20%; descend.train.EarlyStopping(restore_best=True) keeps the best epoch's weights; "
        f"seeds {seed_list}.",
        f"best epochs {best_ep} of {epochs}; test loss {interval(mean_ci(best_l))} at the best epoch vs "
        f"{interval(mean_ci(last_l))} at the end: lower by "
        f"{interval({'mean': diff['diff'], 'lo': diff['lo'], 'hi': diff['hi']})} nats (paired, "
        f"p={diff['p']:.2g}).",
        held, f"every best epoch comes before the last, and the 95% lower bound of the paired test-loss "
        f"reduction (last - best) is >= {margin:g} nats.",
        rows, {fig_name: f"training and validation loss with the best epoch (seed {seed_list[0]})"},
        {"best_epochs": best_ep, "epochs": epochs, "test_loss_best": best_l, "test_loss_last": last_l,
         "reduction": diff}, seeds=seed_list, margin=f"test loss lower by >= {margin:g} nats")


PAPER_MNIST1D = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91}


def mnist1d_table(size: str, out_dir) -> ClaimResult:
    """The MNIST-1D table: logistic < MLP < CNN, GRU close to CNN (from the MNIST-1D paper)."""
    from descend.data import load

    d = load("mnist1d", val_fraction=0.1)
    n_train = pick(size, 500, None)
    epochs = pick(size, 1, 50)
    seed_list = seeds(size)
    train, test = subset(d.train.tensors, n_train), d.test.tensors
    specs = {"logistic": dict(input_shape=(40,)), "mlp": dict(input_shape=(40,), hidden=(100, 100)),
             "cnn": dict(input_shape=(40,), channels=(25, 25, 25), pool=None),
             # the paper's GRU: bidirectional, hidden 6, all 40 x 12 states to the classifier
             "gru": dict(input_shape=(40, 1), hidden_size=6, bidirectional=True, readout="all")}
    rows, accs = [], {k: [] for k in specs}
    for seed in seed_list:
        for name, kw in specs.items():
            model = build(name, num_classes=10, seed=seed, **kw)
            shape = (-1, 40, 1) if name == "gru" else (-1, 40)
            tr = (train[0].reshape(shape), train[1])
            te = (test[0].reshape(shape), test[1])
            fit(model, _adam(model, 1e-2), tr, epochs=epochs, batch_size=100, seed=seed)
            accs[name].append(accuracy(model, te))
            rows.append({"model": name, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
                         "test acc": round(accs[name][-1], 4), "paper": PAPER_MNIST1D[name]})
    cis = {k: mean_ci(v) for k, v in accs.items()}
    diffs = {"mlp - logistic": paired_test(accs["mlp"], accs["logistic"]),
             "cnn - mlp": paired_test(accs["cnn"], accs["mlp"]),
             "gru - mlp": paired_test(accs["gru"], accs["mlp"])}
    margin = 0.02
    held = all(r["lo"] is not None and r["lo"] >= margin for r in diffs.values())
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.4))
    xs = range(len(specs))
    ax.bar([i - 0.2 for i in xs], [100 * cis[k]["mean"] for k in specs], width=0.4, label="measured (mean)",
           yerr=[100 * (cis[k]["hi"] - cis[k]["mean"]) if cis[k]["hi"] is not None else 0 for k in specs],
           capsize=3)
    ax.bar([i + 0.2 for i in xs], [100 * PAPER_MNIST1D[k] for k in specs], width=0.4, label="paper")
    ax.set_xticks(list(xs), list(specs))
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    fig_name = save(fig, out_dir, "mnist1d_table.png")
    return ClaimResult(
        "mnist1d_table",
        "On MNIST-1D the architectures rank logistic (32%) < MLP (68%) < GRU (91%) ~ CNN (94%): "
        "the spatial inductive bias matters.",
        "the MNIST-1D paper (Greydanus 2020, Table 1), not the notes: a benchmark the library "
        "bundles, used here to check its models",
        f"MNIST-1D, {len(train[0])} training / {len(test[0])} test signals, Adam lr 1e-2, batch 100, "
        f"{epochs} epochs; models of descend.nn.MODELS: CNN 3x25 channels kernel 3, MLP 100-100, "
        f"GRU as in the paper: bidirectional, hidden 6, all 40 hidden states to the classifier "
        f"(`readout='all'`); seeds {seed_list}.",
        "test accuracy (%, mean [95% CI]): " + ", ".join(f"{k} {interval(v, 100)}" for k, v in cis.items())
        + "; paired differences (points): " + ", ".join(
            f"{k} {interval({'mean': r['diff'], 'lo': r['lo'], 'hi': r['hi']}, 100)}" for k, r in diffs.items()) + ".",
        held, f"the 95% lower bounds of the paired differences MLP - logistic, CNN - MLP and GRU - MLP "
        f"are all >= {100 * margin:g} points.",
        rows, {fig_name: "test accuracy, measured (95% CI) and in the paper"},
        {"accuracy": cis, "differences": diffs}, seeds=seed_list, margin=f"each gap >= {100 * margin:g} points",
        origin="elsewhere")
