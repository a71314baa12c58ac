"""`driftax.bench.score` against hand computations on fixed arrays, ArviZ's own calls, and POT."""
import arviz as az
import numpy as np
import ot
import pytest

from driftax.bench import score


def _fixed(seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"a": shift + scale * rng.normal(size=(4, 250)), "b": rng.normal(size=(4, 250, 2)) * [1.0, 3.0]}


def test_moments_ess_rhat_and_costs_equal_hand_computations():
    ref = _fixed(0)
    draws = _fixed(1, shift=0.3, scale=1.2)
    draws["unused"] = np.zeros((4, 250))
    out = score(draws, ref, grad_evals=2000.0, seconds=4.0, ot_points=None)
    x = np.concatenate([draws["a"][..., None], draws["b"]], -1).reshape(-1, 3)
    r = np.concatenate([ref["a"][..., None], ref["b"]], -1).reshape(-1, 3)
    assert out["mean_err"] == pytest.approx(np.max(np.abs(x.mean(0) - r.mean(0)) / r.std(0)), rel=1e-12)
    assert out["sd_err"] == pytest.approx(np.max(np.abs(x.std(0) / r.std(0) - 1)), rel=1e-12)
    idata = az.from_dict(posterior={"a": draws["a"], "b": draws["b"]})
    assert out["ess_bulk_min"] == pytest.approx(float(az.ess(idata, method="bulk").to_array().min()), rel=1e-9)
    assert out["ess_tail_min"] == pytest.approx(float(az.ess(idata, method="tail").to_array().min()), rel=1e-9)
    assert out["rhat_max"] == pytest.approx(float(az.rhat(idata).to_array().max()), rel=1e-9)
    assert out["ess_per_grad"] == pytest.approx(out["ess_bulk_min"] / 2000.0)
    assert out["ess_per_second"] == pytest.approx(out["ess_bulk_min"] / 4.0)
    assert out["khat"] is None and out["divergences"] is None and out["ot_distance"] is None


def test_weighted_draws_use_weighted_moments_importance_ess_and_psis_khat():
    ref = _fixed(0)
    draws = _fixed(2, shift=0.5)
    lw = -0.5 * draws["a"] ** 2 + 0.5 * (draws["a"] - 0.5) ** 2  # reweights N(0.5, 1) towards N(0, 1) in a
    out = score(draws, ref, log_weights=lw, ot_points=None)
    w = np.exp(lw - lw.max()).reshape(-1)
    w /= w.sum()
    a = draws["a"].reshape(-1)
    r = ref["a"].reshape(-1)
    assert out["ess_bulk_min"] == pytest.approx(1 / np.sum(w**2), rel=1e-12)
    assert np.abs(w @ a - r.mean()) / r.std() <= out["mean_err"] + 1e-12
    assert out["khat"] == pytest.approx(float(az.psislw(lw.reshape(-1).copy())[1]), rel=1e-9)
    assert out["rhat_max"] is None


def _pot_divergence(x, y, eps):
    """Debiased entropic OT with POT's log-domain Sinkhorn: OT_eps = <P, C> + eps KL(P | a b')."""
    def ot_eps(u, v):
        a, b = np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v))
        c = ot.dist(u, v)
        # 300 inner sweeps per epsilon stage (POT's default 100 stops short: 20,000 outer steps, 1.8 s CPU);
        # the plan's marginals are checked below either way
        p = ot.sinkhorn(a, b, c, eps, method="sinkhorn_epsilon_scaling", numItermax=20_000, numInnerItermax=300,
                        stopThr=1e-13, warn=False)
        # POT's plan meets its marginals to 1e-6 in L1; a plan off by delta changes <P, C> + eps KL by
        # O(delta (max C + eps |log P|)) <= 1e-4 here, against divergences of O(0.1): rel 1e-3 below
        assert np.abs(p.sum(1) - a).sum() < 1e-6 and np.abs(p.sum(0) - b).sum() < 1e-6
        nz = p > 0
        return float(np.sum(p * c) + eps * np.sum(p[nz] * np.log(p[nz] / np.outer(a, b)[nz])))
    return ot_eps(x, y) - 0.5 * ot_eps(x, x) - 0.5 * ot_eps(y, y)


def test_ot_distance_is_zero_for_identical_sets_grows_with_a_shift_and_matches_pot():
    # 80 points, as test_suite's end-to-end run scores with (80 x 1, float64), so that the two share one
    # compiled SNS program
    ref = {"a": np.random.default_rng(3).normal(size=(2, 40))}
    same = score(ref, ref, ot_points=80)["ot_distance"]
    assert abs(same) < 1e-8  # S_eps(x, x) = 0 up to float64 rounding of the dual values
    d = [score({"a": ref["a"] + s}, ref, ot_points=80)["ot_distance"] for s in (0.25, 0.5, 1.0)]
    assert 0 < d[0] < d[1] < d[2]
    # the same 80 standardised points through POT (all of them: ot_points >= 80 keeps every draw)
    r = ref["a"].reshape(-1, 1)
    z = (r - r.mean()) / r.std()
    zs = z + 0.5 / r.std()
    eps = 0.05 * float(np.mean(ot.dist(zs, z)))
    assert d[1] == pytest.approx(_pot_divergence(zs, z, eps), rel=1e-3)


@pytest.mark.parametrize("draws, ref, match", [
    ({"a": np.zeros((2, 10))}, {"b": np.ones((2, 10))}, "lack the reference's site"),
    ({"a": np.zeros((2, 10, 3))}, {"a": np.random.default_rng(0).normal(size=(2, 10, 2))}, "differ in the shape"),
    ({"a": np.zeros(10)}, {"a": np.ones((2, 10))}, "shape \\(chain, draw, ...\\)"),
    ({"a": np.full((2, 10), np.nan)}, {"a": np.random.default_rng(0).normal(size=(2, 10))}, "non-finite"),
    ({"a": np.zeros((2, 10))}, {"a": np.ones((2, 10))}, "zero or non-finite sd"),
])
def test_bad_input_is_named(draws, ref, match):
    with pytest.raises(ValueError, match=match):
        score(draws, ref)


def test_bad_costs_and_weights_are_named():
    ref = _fixed(0)
    with pytest.raises(ValueError, match="grad_evals must be a positive number"):
        score(ref, ref, grad_evals=-1)
    with pytest.raises(ValueError, match="log_weights must have the draws' \\(chain, draw\\) shape"):
        score(ref, ref, log_weights=np.zeros(5))
    with pytest.raises(TypeError, match="InferenceData or a dict"):
        score([1, 2], ref)
