"""The report's answer on constructed cases: identical variants are not distinguishable, a large
difference is found; the answer leads the terminal output and report.html."""


from descend.experiments import recipe as recipes
from descend.experiments import runner, verdicts

BASE = {"name": "v", "data": {"name": "digits", "val_fraction": 0.2}, "model": {"name": "mlp", "hidden": [16]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "epochs": 2, "target_accuracy": 0.7,
        "monitors": False}


def _variants(recipe):
    return runner.run_all(recipes.load(recipe).runs())


def test_same_optimizer_twice_on_the_same_seeds_is_not_distinguishable():
    vs = _variants({**BASE, "seeds": [0, 1, 2], "variants": [{"name": "a"}, {"name": "b"}]})
    st = verdicts.analyse(vs)
    assert st["answer"][0].startswith("Not distinguishable: no difference in test accuracy between a and b")
    assert st["measures"]["final_test_acc"]["result"]["pairs"][0]["p"] == 1.0  # bit-identical runs


def test_same_optimizer_on_different_seeds_is_compared_unpaired_and_not_distinguishable():
    vs = _variants({**BASE, "variants": [{"name": "a", "seeds": [0, 1, 2, 3, 4]},
                                         {"name": "b", "seeds": [5, 6, 7, 8, 9]}]})
    res = verdicts.analyse(vs)["measures"]["final_test_acc"]["result"]
    assert res["pairs"][0]["method"] == "Welch t-test" and not res["separable"]


def test_a_large_difference_is_found_and_said_first():
    vs = _variants({**BASE, "seeds": [0, 1, 2], "epochs": 3,
                    "variants": [{"name": "adam", "optimizer": {"name": "adam", "lr": 0.01}},
                                 {"name": "tiny_lr", "optimizer": {"name": "sgd", "lr": 1.0e-4}}]})
    st = verdicts.analyse(vs)
    assert st["answer"][0].startswith("adam best: test accuracy")
    assert st["answer"][1].startswith("tiny_lr lower by") and "Holm-adjusted" in st["answer"][1]
    rows = st["measures"]["final_test_acc"]["result"]["rows"]
    assert [r["rank"] for r in rows] == [1, 2] and rows[1]["diff_hi"] < 0
    # tiny_lr never reaches 70%: counted at its budget, not dropped
    steps = st["measures"]["steps_to_target"]["result"]["rows"]
    slow = next(r for r in steps if r["variant"] == "tiny_lr")
    assert slow["mean"] == vs[1]["runs"][0]["steps_run"]


def test_single_seed_says_it_is_not_a_verdict():
    vs = _variants({**BASE, "seeds": [0], "epochs": 1, "variants": [{"name": "a"}, {"name": "b", "optimizer": {"name": "adam"}}]})
    assert verdicts.analyse(vs)["answer"][0].startswith("One seed per variant: no interval or test is possible")
