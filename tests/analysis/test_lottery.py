import copy

import pytest
import torch
import torch.nn.functional as F

from descend.analysis.lottery import (MaskGradients, apply_masks, iterative_magnitude_pruning,
                                      magnitude_masks, prunable, rewind, sparsity_of)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_masks_have_the_requested_sparsity_and_keep_the_largest(scope, sparsity):
    m = _mlp()
    w = prunable(m)
    masks = magnitude_masks(w, sparsity, scope=scope)
    total = sum(p.numel() for p in w.values())
    groups = [list(w)] if scope == "global" else [[n] for n in w]
    removed = sum(round(sparsity * sum(w[n].numel() for n in names)) for names in groups)
    assert sparsity_of(masks) == pytest.approx(removed / total)
    for names in groups:
        kept = torch.cat([w[n].detach().abs()[masks[n] == 1] for n in names])
        dropped = torch.cat([w[n].detach().abs()[masks[n] == 0] for n in names])
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


def test_pruning_is_nested_and_dead_weights_stay_dead():
    w = {"a": torch.randn(10, 10)}
    m1 = magnitude_masks(w, 0.5)
    w2 = {"a": torch.randn(10, 10)}  # weights changed by training
    m2 = magnitude_masks(w2, 0.75, masks=m1)
    assert torch.all(m2["a"] <= m1["a"])
    assert sparsity_of(m2) == pytest.approx(0.75)


def test_rewind_restores_saved_weights_exactly():
    m = _mlp()
    saved = copy.deepcopy(m.state_dict())
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    masks = magnitude_masks(prunable(m), 0.6)
    rewind(m, saved, masks)
    for n, p in m.named_parameters():
        expect = saved[n] * masks[n] if n in masks else saved[n]
        assert torch.equal(p.detach(), expect)


def test_mask_gradients_keep_pruned_weights_at_zero():
    m = _mlp()
    masks = magnitude_masks(prunable(m), 0.5)
    apply_masks(m, masks)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    with MaskGradients(m, masks) as masker:
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            for n, p in prunable(m).items():
                assert torch.all(p.grad[masks[n] == 0] == 0)
            opt.step()
            masker.after_step()
    for n, p in prunable(m).items():
        assert torch.all(p.detach()[masks[n] == 0] == 0)
    assert all(not p._backward_hooks for p in m.parameters())


def test_imp_rounds_sparsity_and_rewind_point():
    torch.manual_seed(0)
    m = _mlp()
    init = copy.deepcopy(m.state_dict())
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    starts = []

    def train(model, masker):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            masker.after_step()

    def acc(model):
        return float((model(x).argmax(1) == y).float().mean())

    res = iterative_magnitude_pruning(m, train, acc, rounds=3, rate=0.5)
    assert [r["sparsity"] for r in res] == pytest.approx([0.0, 0.5, 0.75, 0.875], abs=1e-2)
    # every ticket run starts from the initial weights times its mask (rewinding)
    ticket_starts = starts[0:1] + starts[1::2]
    for r, s in zip(res, ticket_starts):
        for n in init:
            expect = init[n] * r["masks"][n] if n in r["masks"] else init[n]
            assert torch.equal(s[n], expect)
    assert res[0]["reinit"] is None and all(r["reinit"] is not None for r in res[1:])


def test_validation():
    with pytest.raises(ValueError, match="`sparsity` must be >= 0 and < 1"):
        magnitude_masks({"a": torch.ones(2, 2)}, 1.0)
    with pytest.raises(ValueError, match="`rate` must be"):
        iterative_magnitude_pruning(_mlp(), lambda m, k: None, lambda m: 0.0, rate=0.0)


def test_imp_rewinds_to_early_weights_when_given():
    torch.manual_seed(0)
    m = _mlp()
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(3):  # a few early steps: the rewind point
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    early = copy.deepcopy(m.state_dict())
    torch.manual_seed(1)
    fresh = _mlp()
    starts = []

    def train(model, masker):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})

    res = iterative_magnitude_pruning(fresh, train, lambda mm: 0.0, rounds=2, rate=0.5,
                                      rewind_state=early, reinit_seed=None)
    for r, s in zip(res, starts):
        for n in early:
            expect = early[n] * r["masks"][n] if n in r["masks"] else early[n]
            assert torch.equal(s[n], expect)
    assert all(r["reinit"] is None for r in res)
