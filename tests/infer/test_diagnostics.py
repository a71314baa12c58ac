"""to_inference_data and compare_to_reference on arrays whose answers are known by construction."""
import arviz as az
import numpy as np
import pytest

from driftax.infer import diagnostics


def test_to_inference_data_any_chain_draw_arrays():
    rng = np.random.default_rng(0)
    idata = diagnostics.to_inference_data(
        {"a": rng.normal(size=(3, 100)), "b": rng.normal(size=(3, 100, 2, 4))},
        {"lp": rng.normal(size=(3, 100)), "diverging": np.zeros((3, 100), bool)}, attrs={"method": "test"})
    assert idata.posterior["b"].shape == (3, 100, 2, 4)
    assert set(az.summary(idata).index) >= {"a", "b[0, 0]", "b[1, 3]"}
    assert idata.posterior.attrs["method"] == "test"
    # i.i.d. normal draws: bulk ESS near the draw count and R-hat near 1 (ArviZ, used as it is)
    assert float(diagnostics.ess(idata)["a"]) > 150 and float(diagnostics.rhat(idata)["a"]) < 1.05


def test_compare_to_reference_in_reference_sd_units():
    """Draws = reference shifted by 0.3 sd and scaled by 1.2: errors are 0.3 and 0.2 by construction."""
    rng = np.random.default_rng(1)
    ref = rng.normal(2.0, 3.0, size=(4, 5000, 2))
    r = ref.reshape(-1, 2)
    draws = (ref - r.mean(0)) * 1.2 + r.mean(0) + 0.3 * r.std(0, ddof=1)
    out = diagnostics.compare_to_reference({"theta": draws}, {"theta": ref, "other": ref})
    assert list(out) == ["theta"]
    np.testing.assert_allclose(out["theta"]["mean_error"], 0.3, atol=1e-10)
    np.testing.assert_allclose(out["theta"]["sd_error"], 0.2, atol=1e-10)
    assert "theta[1]" in diagnostics.format_comparison(out)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"posterior\['x'\] must have shape \(chain, draw"):
        diagnostics.to_inference_data({"x": np.zeros(5)})
    with pytest.raises(ValueError, match="same \\(chain, draw\\) shape"):
        diagnostics.to_inference_data({"x": np.zeros((2, 5)), "y": np.zeros((2, 6))})
    with pytest.raises(ValueError, match="no parameter in common"):
        diagnostics.compare_to_reference({"x": np.zeros((2, 5))}, {"y": np.zeros((2, 5))})


def test_verdict_names_each_problem_by_construction():
    """i.i.d. N(0,1) draws (4 x 1000: ESS ~ 4000, R-hat ~ 1.000; numpy's generator is the same on every
    machine): ok. Chains shifted apart by 1 sd:
    R-hat far above 1.01. 4 x 50 draws: bulk ESS ~ 200 < 400. One divergence: named."""
    rng = np.random.default_rng(0)
    ok = diagnostics.to_inference_data({"a": rng.normal(size=(4, 1000))}, {"diverging": np.zeros((4, 1000), bool)})
    assert diagnostics.verdict(ok).startswith("ok:")
    apart = diagnostics.to_inference_data({"a": rng.normal(size=(4, 1000)) + np.arange(4)[:, None]})
    assert "chains disagree" in diagnostics.verdict(apart)
    short = diagnostics.to_inference_data({"a": rng.normal(size=(4, 50))})
    assert "too few effective draws" in diagnostics.verdict(short)
    div = np.zeros((4, 1000), bool)
    div[1, 7] = True
    one = diagnostics.to_inference_data({"a": rng.normal(size=(4, 1000))}, {"diverging": div})
    assert "1 divergent transition:" in diagnostics.verdict(one)
