"""Claims about optimizers: L1 sparsity, momentum's terminal speed, Nesterov on an
ill-conditioned quadratic. Each over at least 5 seeds at full size (initial weights,
gradients or starting points), decided on 95% intervals with a margin fixed in advance."""

from __future__ import annotations

import math

import torch

from descend.analysis.reproduce._common import (ClaimResult, build, digits, flat, interval, pick, plt,
                                                ratio_ci, save, seeds)
from descend.analysis.stats import mean_ci, paired_test


def l1_sparsity(size: str, out_dir) -> ClaimResult:
    """L1 gives sparse weights, L2 does not."""
    from descend.optim import SGD

    steps = pick(size, 100, 3000)
    alpha = 0.01
    seed_list = seeds(size)
    d = digits()
    x, y = flat(d.train)
    configs = [("none", {}), ("L2 (weight_decay)", {"weight_decay": alpha}),
               ("L1 subgradient", {"l1": alpha}),
               ("L1 proximal", {"l1": alpha, "l1_mode": "proximal"})]
    rows, weights, near = [], {}, {name: [] for name, _ in configs}
    for seed in seed_list:
        for name, kw in configs:
            model = build("logistic", input_shape=(64,), num_classes=10, seed=seed)
            opt = SGD(model.parameters(), lr=0.1, **kw)
            for _ in range(steps):  # full-batch gradient descent
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            w = model[1].weight.detach()
            near[name].append(float((w.abs() < 1e-3).float().mean()))
            if seed == seed_list[0]:
                weights[name] = w
            rows.append({"seed": seed, "penalty": name, "exact zeros": f"{float((w == 0).float().mean()):.3f}",
                         "|w| < 1e-3": f"{near[name][-1]:.3f}",
                         "train acc": f"{float((model(x).argmax(1) == y).float().mean()):.3f}"})
    prox = paired_test(near["L1 proximal"], near["L2 (weight_decay)"])
    sub = paired_test(near["L1 subgradient"], near["L2 (weight_decay)"])
    margin = 0.25
    held = bool(prox["lo"] is not None and prox["lo"] >= margin and sub["lo"] is not None and sub["lo"] > 0)
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.4))
    for name, w in weights.items():
        ax.hist(w.abs().clamp_min(1e-8).log10().flatten().tolist(), bins=40, histtype="step", label=name)
    ax.set_xlabel("log10 |w| (zeros at -8)")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig_name = save(fig, out_dir, "l1_sparsity.png")

    def diff(r):
        return interval({"mean": r["diff"], "lo": r["lo"], "hi": r["hi"]})
    return ClaimResult(
        "l1_sparsity",
        "L1 regularization gives a sparse solution (w_i = sign(w*_i) max(|w*_i| - a/H_ii, 0)), "
        "L2 only rescales the weights.",
        "notes 001 (L1 Norm Parameter Regularization)",
        f"digits, multinomial logistic regression 64 -> 10 (descend.nn logistic), full-batch GD "
        f"(descend.optim.SGD) lr 0.1, {steps} steps, penalty strength a = {alpha} (L2 coupled weight "
        f"decay; L1 by subgradient a sign(w), or by the proximal soft-threshold step); seeds "
        f"{seed_list} (initial weights).",
        "fraction of weights with |w| < 1e-3 (mean [95% CI]): " + ", ".join(
            f"{k} {interval(mean_ci(v))}" for k, v in near.items())
        + f"; L1 proximal - L2: {diff(prox)}, L1 subgradient - L2: {diff(sub)} (paired).",
        held, f"the 95% lower bound of (L1 proximal - L2) near-zero fraction is >= {margin:g}, and that "
        "of (L1 subgradient - L2) is > 0.",
        rows, {fig_name: f"distribution of log10 |w| (seed {seed_list[0]})"},
        {"near_zero": {k: mean_ci(v) for k, v in near.items()}, "prox_minus_l2": prox, "sub_minus_l2": sub},
        seeds=seed_list, margin=f"{margin:g} more of the weights near zero")


def momentum_terminal_speed(size: str, out_dir) -> ClaimResult:
    """With a constant gradient, momentum's step converges to lr |g| / (1 - a)."""
    from descend.optim import create

    steps = pick(size, 400, 3000)
    lr = 0.01
    seed_list = seeds(size)
    rows, series, errors = [], {}, []
    for seed in seed_list:
        # a random constant gradient per seed (direction and length)
        g = torch.randn(2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * (1 + seed)
        for a in (0.5, 0.9, 0.99):
            w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
            opt = create("momentum_textbook", [w], lr=lr, momentum=a)
            speeds = []
            for _ in range(steps):
                before = w.detach().clone()
                opt.zero_grad()
                (g * w).sum().backward()
                opt.step()
                speeds.append(float((w.detach() - before).norm()))
            expect = lr * float(g.norm()) / (1 - a)
            err = abs(speeds[-1] - expect) / expect
            errors.append(err)
            if seed == seed_list[0]:
                series[a] = (speeds, expect)
            rows.append({"seed": seed, "|g|": round(float(g.norm()), 4), "momentum a": a,
                         "predicted lr|g|/(1-a)": expect, "measured final step": speeds[-1], "relative error": err})
    worst = max(errors)
    tol = pick(size, 0.05, 1e-6)
    held = worst < tol
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    for a, (s, expect) in series.items():
        ax.plot(s, label=f"a={a}")
        ax.axhline(expect, color="gray", linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|w_{t+1} - w_t|")
    ax.legend()
    fig_name = save(fig, out_dir, "momentum_terminal_speed.png")
    return ClaimResult(
        "momentum_terminal_speed",
        "If momentum always sees the same gradient g, its step size tends to the terminal "
        "speed lr |g| / (1 - a): a = 0.9 multiplies the speed by 10.",
        "notes 001 (Momentum: Step Sizes)",
        f"f(w) = g.w with a random g per seed, the notes' momentum v <- a v - lr g, w <- w + v "
        f"(descend.optim 'momentum_textbook', float64), lr {lr}, {steps} steps, a in (0.5, 0.9, 0.99); "
        f"seeds {seed_list}. Deterministic arithmetic: the seeds vary g, the interval is the range.",
        f"relative error of the last step against lr|g|/(1-a): between {min(errors):.3g} and {worst:.3g} "
        f"over {len(errors)} (seed, a) pairs.",
        held, f"the largest relative error over every seed and a is below {tol:g}.",
        rows, {fig_name: f"step size against steps, with the predicted terminal speed (seed {seed_list[0]})"},
        {"worst_relative_error": worst, "errors": errors}, seeds=seed_list, margin=f"relative error < {tol:g}")


def _quadratic(n: int, kappa: float):
    h = torch.logspace(0, math.log10(kappa), n, dtype=torch.float64)
    return h, (lambda w: 0.5 * (h * w * w).sum())


def nesterov_quadratic(size: str, out_dir) -> ClaimResult:
    """Nesterov momentum beats classical momentum on an ill-conditioned quadratic."""
    from descend.optim import create

    n, kappa = 20, pick(size, 50.0, 1000.0)
    max_steps = pick(size, 400, 5000)
    seed_list = seeds(size)
    h, f = _quadratic(n, kappa)
    lr = 1.0 / kappa  # 1 / L
    alphas = [0.5, 0.9, 0.95, 0.99]
    tol = 1e-8
    rows, curves, steps_of = [], {}, {}
    for seed in seed_list:
        w0 = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        for a in alphas:
            for name in ("momentum_textbook", "nesterov_lookahead"):
                w = w0.clone().requires_grad_(True)
                f0 = float(f(w).detach())
                opt = create(name, [w], lr=lr, momentum=a)
                losses, reach = [], None

                def closure():
                    opt.zero_grad()
                    loss = f(w)
                    loss.backward()
                    return loss

                for t in range(max_steps):
                    opt.step(closure)
                    v = float(f(w).detach()) / f0
                    losses.append(v)
                    if v < tol:
                        reach = t + 1
                        break
                if seed == seed_list[0]:
                    curves[(name, a)] = losses
                # never reached: censored at the budget (a lower bound on its steps)
                steps_of[(seed, name, a)] = reach if reach is not None else max_steps
                rows.append({"seed": seed, "method": name, "momentum a": a, "steps to f/f0 < 1e-8": reach,
                             "f/f0 at the end": f"{losses[-1]:.3g}"})
    best_ratio = ratio_ci([min(steps_of[(s, "momentum_textbook", a)] for a in alphas)
                           / min(steps_of[(s, "nesterov_lookahead", a)] for a in alphas) for s in seed_list])
    per_a = {a: ratio_ci([steps_of[(s, "momentum_textbook", a)] / steps_of[(s, "nesterov_lookahead", a)]
                          for s in seed_list]) for a in alphas}
    wins = sum(1 for a in alphas if per_a[a]["lo"] is not None and per_a[a]["lo"] > 1)
    margin = 1.1
    held = bool(best_ratio["lo"] is not None and best_ratio["lo"] >= margin and wins >= len(alphas) - 1)
    p = plt()
    fig, ax = p.subplots(figsize=(6.5, 3.8))
    for (name, a), ls in curves.items():
        ax.plot(ls, color=f"C{alphas.index(a)}", linestyle="-" if name.startswith("nesterov") else "--",
                label=f"{'Nesterov' if name.startswith('nesterov') else 'momentum'} a={a}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("f / f0")
    ax.legend(fontsize=6, ncol=2)
    fig_name = save(fig, out_dir, "nesterov_quadratic.png")
    return ClaimResult(
        "nesterov_quadratic",
        "Nesterov's accelerated gradient (gradient at the look-ahead point w + a v) converges "
        "faster than classical momentum on an ill-conditioned problem.",
        "notes 000 (NAG), 002, 003 (Nesterov Momentum)",
        f"f(w) = 0.5 sum h_i w_i^2, {n} dimensions, curvatures log-spaced in [1, {kappa:g}] "
        f"(condition number {kappa:g}), w0 ~ N(0, I) per seed, lr = 1/L = {lr:g}, a in {alphas}; "
        f"the notes' forms of both methods (descend.optim 'momentum_textbook', 'nesterov_lookahead'); "
        f"steps until f/f0 < 1e-8 (at most {max_steps}); seeds {seed_list}.",
        f"best over a, momentum / Nesterov steps: {interval(best_ratio)} times (geometric mean [95% CI]); "
        f"per a: " + ", ".join(f"a={a}: {interval(r)}" for a, r in per_a.items())
        + f"; Nesterov faster (lower bound > 1) for {wins} of {len(alphas)} values of a.",
        held, f"the 95% lower bound of the best-over-a ratio momentum/Nesterov is >= {margin:g}, and "
        "Nesterov is faster (lower bound > 1) for all but at most one value of a.",
        rows, {fig_name: f"f/f0 against steps (solid: Nesterov, dashed: momentum; seed {seed_list[0]})"},
        {"best_ratio": best_ratio, "per_a": {str(a): r for a, r in per_a.items()}, "wins": wins},
        seeds=seed_list, margin=f"best-over-a ratio lower bound >= {margin:g}x")
