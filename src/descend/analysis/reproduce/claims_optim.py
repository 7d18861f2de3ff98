"""Claims about optimizers: L1 sparsity, momentum's terminal speed, Nesterov on an
ill-conditioned quadratic."""

from __future__ import annotations

import math

import torch

from descend.analysis.reproduce._common import ClaimResult, digits, flat, pick, plt, save


def l1_sparsity(size: str, out_dir) -> ClaimResult:
    """L1 gives sparse weights, L2 does not."""
    from descend.optim import SGD

    steps = pick(size, 100, 3000)
    alpha = 0.01
    d = digits()
    x, y = flat(d.train)
    rows, weights = [], {}
    configs = [("none", {}), ("L2 (weight_decay)", {"weight_decay": alpha}),
               ("L1 subgradient", {"l1": alpha}),
               ("L1 proximal", {"l1": alpha, "l1_mode": "proximal"})]
    for name, kw in configs:
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 10)
        opt = SGD(model.parameters(), lr=0.1, **kw)
        for _ in range(steps):  # full-batch gradient descent
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        w = model.weight.detach()
        weights[name] = w
        rows.append({"penalty": name, "exact zeros": f"{float((w == 0).float().mean()):.3f}",
                     "|w| < 1e-3": f"{float((w.abs() < 1e-3).float().mean()):.3f}",
                     "train acc": f"{float((model(x).argmax(1) == y).float().mean()):.3f}"})
    zero = {r["penalty"]: float(r["|w| < 1e-3"]) for r in rows}
    held = zero["L1 proximal"] >= zero["L2 (weight_decay)"] + 0.25 and zero["L1 subgradient"] > zero["L2 (weight_decay)"]
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.4))
    for name, w in weights.items():
        ax.hist(w.abs().clamp_min(1e-8).log10().flatten().tolist(), bins=40, histtype="step", label=name)
    ax.set_xlabel("log10 |w| (zeros at -8)")
    ax.set_ylabel("count")
    ax.legend(fontsize=7)
    fig_name = save(fig, out_dir, "l1_sparsity.png")
    return ClaimResult(
        "l1_sparsity",
        "L1 regularization gives a sparse solution (w_i = sign(w*_i) max(|w*_i| - a/H_ii, 0)), "
        "L2 only rescales the weights.",
        "notes 001 (L1 Norm Parameter Regularization)",
        f"digits, multinomial logistic regression 64 -> 10, full-batch GD lr 0.1, {steps} steps, "
        f"penalty strength a = {alpha} (L2 coupled weight decay; L1 by subgradient a sign(w), "
        f"or by the proximal soft-threshold step).",
        "fraction of weights with |w| < 1e-3: " + ", ".join(f"{k} {v:.3f}" for k, v in zero.items()) + ".",
        held, "L1 (proximal) has at least 25 points more near-zero weights than L2, and L1 "
        "(subgradient) more than L2.",
        rows, {fig_name: "distribution of log10 |w|"}, zero)


def momentum_terminal_speed(size: str, out_dir) -> ClaimResult:
    """With a constant gradient, momentum's step converges to lr |g| / (1 - a)."""
    from descend.optim import create

    steps = pick(size, 400, 3000)
    lr = 0.01
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |g| = 5
    rows, series = [], {}
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
        series[a] = speeds
        rows.append({"momentum a": a, "predicted lr|g|/(1-a)": expect,
                     "measured final step": speeds[-1], "relative error": abs(speeds[-1] - expect) / expect})
    worst = max(r["relative error"] for r in rows)
    tol = pick(size, 0.05, 1e-6)
    held = worst < tol
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    for a, s in series.items():
        ax.plot(s, label=f"a={a}")
        ax.axhline(lr * float(g.norm()) / (1 - a), color="gray", linestyle=":")
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
        f"f(w) = g.w with |g| = 5, the notes' momentum v <- a v - lr g, w <- w + v (float64), "
        f"lr {lr}, {steps} steps, a in (0.5, 0.9, 0.99).",
        "final step / predicted: " + ", ".join(f"a={r['momentum a']}: {r['measured final step']:.6g} / "
                                              f"{r['predicted lr|g|/(1-a)']:.6g}" for r in rows) + ".",
        held, f"relative error of the last step below {tol:g} for every a.",
        rows, {fig_name: "step size against steps, with the predicted terminal speed"},
        {"worst_relative_error": worst})


def _quadratic(n: int, kappa: float):
    h = torch.logspace(0, math.log10(kappa), n, dtype=torch.float64)
    return h, (lambda w: 0.5 * (h * w * w).sum())


def nesterov_quadratic(size: str, out_dir) -> ClaimResult:
    """Nesterov momentum beats classical momentum on an ill-conditioned quadratic."""
    from descend.optim import create

    n, kappa = 20, pick(size, 50.0, 1000.0)
    max_steps = pick(size, 400, 5000)
    h, f = _quadratic(n, kappa)
    lr = 1.0 / kappa  # 1 / L
    alphas = [0.5, 0.9, 0.95, 0.99]
    tol = 1e-8
    rows, curves = [], {}
    for a in alphas:
        for name in ("momentum_textbook", "nesterov_lookahead"):
            w = torch.ones(n, dtype=torch.float64, requires_grad=True)
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
                if reach is None and v < tol:
                    reach = t + 1
                    break
            curves[(name, a)] = losses
            rows.append({"method": name, "momentum a": a, "steps to f/f0 < 1e-8": reach,
                         "f/f0 at the end": f"{losses[-1]:.3g}"})

    def steps(name, a):
        r = next(r for r in rows if r["method"] == name and r["momentum a"] == a)
        return r["steps to f/f0 < 1e-8"] if r["steps to f/f0 < 1e-8"] is not None else math.inf

    best_m = min(steps("momentum_textbook", a) for a in alphas)
    best_n = min(steps("nesterov_lookahead", a) for a in alphas)
    wins = sum(steps("nesterov_lookahead", a) < steps("momentum_textbook", a) for a in alphas)
    held = best_n < best_m and wins >= len(alphas) - 1
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
        f"(condition number {kappa:g}), w0 = 1, lr = 1/L = {lr:g}, a in {alphas}; the notes' "
        f"forms of both methods; steps until f/f0 < 1e-8 (at most {max_steps}).",
        f"best over a: momentum {best_m} steps, Nesterov {best_n} steps; Nesterov faster for "
        f"{wins} of {len(alphas)} values of a.",
        held, "Nesterov's best is fewer steps than momentum's best, and Nesterov wins for all "
        "but at most one value of a.",
        rows, {fig_name: "f/f0 against steps (solid: Nesterov, dashed: momentum)"},
        {"best_momentum": best_m if math.isfinite(best_m) else None,
         "best_nesterov": best_n if math.isfinite(best_n) else None, "wins": wins})
