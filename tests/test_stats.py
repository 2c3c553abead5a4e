"""Paired statistics: the sign test, the paired bootstrap of per-context differences, the power estimate, and
the comparisons of every two conditions that results.json and the report share."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seal.engine.stats import (contexts_needed, mean_ci95, null_difference_sd, paired_difference, sign_test,
                               variance_components)
from seal.experiment.results import paired_comparisons


def test_sign_test_exact_values():
    assert sign_test(8, 0) == pytest.approx(2 / 256)
    assert sign_test(0, 8) == pytest.approx(2 / 256)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(6, 5) == 1.0                       # the two tails overlap: capped at 1


scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=30)


@settings(max_examples=50, deadline=None)
@given(scores, st.data())
def test_swapping_the_conditions_mirrors_the_difference(a, data):
    b = data.draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=len(a), max_size=len(a)))
    ab, ba = paired_difference(a, b), paired_difference(b, a)
    assert ab["difference"] == pytest.approx(-ba["difference"], abs=1e-12)
    assert ab["ci95"] == pytest.approx([-ba["ci95"][1], -ba["ci95"][0]], abs=1e-12)
    assert (ab["wins"], ab["losses"], ab["ties"]) == (ba["losses"], ba["wins"], ba["ties"])
    assert ab["sign_test_p"] == ba["sign_test_p"]
    assert ab["ci95"][0] <= ab["difference"] + 1e-12 and ab["difference"] <= ab["ci95"][1] + 1e-12


def test_pairing_removes_the_spread_between_contexts():
    """A condition 10 points better on every context, over contexts that range from 0 to 0.9: unpaired, the
    two intervals overlap; paired, the difference is exactly 10 points, every context a win."""
    b = [i / 10 for i in range(10)]
    a = [x + 0.1 for x in b]
    _, ci_a = mean_ci95(a)
    _, ci_b = mean_ci95(b)
    assert ci_a[0] < ci_b[1]                             # unpaired: no difference to be seen
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(0.1) and d["ci95"] == pytest.approx([0.1, 0.1])
    assert (d["wins"], d["losses"], d["ties"]) == (10, 0, 0) and d["sign_test_p"] < 0.01
    assert d["sd"] == pytest.approx(0.0, abs=1e-12)


def test_contexts_needed_matches_the_normal_formula_and_grows_with_the_spread():
    z = 1.959964 + 0.841621
    assert contexts_needed(0.2) == math.ceil((z * 0.2 / 0.05) ** 2) == 126
    assert contexts_needed(0.4) > contexts_needed(0.2) > contexts_needed(0.1)
    assert contexts_needed(0.2, delta=0.10) < contexts_needed(0.2)
    assert contexts_needed(0.0) == 1


def test_comparisons_pair_only_the_shared_contexts_in_the_run_order():
    scores = {"base": {"c1": 0.0, "c2": 0.5, "c3": 1.0, "u": 1.0},
              "passage": {"c1": 1.0, "c2": 0.5, "u": 0.0},
              "empty": {}}
    pairs = paired_comparisons(scores, ["c3", "c2", "c1", "u"], {"c1": 2, "c2": 4, "c3": 8, "u": 1}, {"u"})
    (p,) = pairs                                         # "empty" shares no context with anything
    assert (p["condition"], p["versus"]) == ("passage", "base")
    assert p["n_contexts"] == 2 and p["n_questions"] == 6          # c1 and c2; c3 unshared, u unscored
    assert p["difference"] == pytest.approx(0.5) and (p["wins"], p["losses"], p["ties"]) == (1, 0, 1)


def test_variance_components_recover_known_spreads_and_predict_the_null_difference():
    rng = np.random.default_rng(3)
    n, k, reps = 4000, 4, 3
    ctx = rng.normal(0, 0.20, (n, 1, 1))
    edit = rng.normal(0, 0.10, (n, k, 1))
    grid = 0.3 + ctx + edit + rng.normal(0, 0.05, (n, k, reps))
    c = variance_components(grid)
    assert (c["contexts"], c["self_edits"], c["seeds"]) == (n, k, reps)
    assert abs(c["between_contexts"] - 0.20) < 0.01
    assert abs(c["between_self_edits"] - 0.10) < 0.005 and abs(c["between_seeds"] - 0.05) < 0.002
    # two halves of the same policy: the measured sd of their per-context difference is the predicted one
    d = grid[:, :2].mean(axis=(1, 2)) - grid[:, 2:].mean(axis=(1, 2))
    assert abs(d.std(ddof=1) - null_difference_sd(c, 2, reps)) < 0.005
    assert null_difference_sd(c, 9, reps) < null_difference_sd(c, 3, reps) < null_difference_sd(c, 3, 1)
    # one seed per self-edit: the seed noise stays inside the self-edits' spread
    one = variance_components(grid[:, :, :1])
    assert one["between_seeds"] is None and abs(one["between_self_edits"] - np.hypot(0.10, 0.05)) < 0.005
