"""MALA and NUTS (the default) through infer.sample on targets that are not Gaussian, against exact draws (gallery) and
posteriordb's Stan reference draws. Every bound is a Monte Carlo error: ArviZ's ESS of our draws
for means, the delta method for standard deviations, and the measured null spread of the
Sinkhorn divergence between two exact samples."""
import json
import subprocess
import sys
import textwrap

import arviz as az
import jax
import numpy as np
import pytest

import driftax as dx
from driftax.models import gallery
from driftax.transport import sinkhorn_divergence

pytestmark = pytest.mark.slow

# Sinkhorn divergence (default epsilon) between two independent exact samples of 1000 points, mean
# over 30 pairs (seeds 1000-1029 vs 2000-2029): banana 0.202 (largest 2.0x the mean), gmm 0.043
# (largest 1.7x). Under the null it scales as 1/n. A moment-matched Gaussian sample scores 5.9-7.4x
# (banana) and 4.0-6.2x (gmm) the null mean, so 3x the null mean separates the two.
NULL_MEAN_1000 = {"banana": 0.202, "gmm": 0.043}
NUM_THINNED = 800


def _cases():
    return {
        "banana": gallery.banana(dim=2, b=0.03, sigma=5.0),  # Haario's "moderate" twist, narrower
        "funnel": gallery.neals_funnel(dim=5, scale=1.0),  # a mild funnel: MALA reaches its neck
        "gmm": gallery.gmm9(spacing=2.0, variance=0.5),  # nine overlapping modes
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_mala_matches_exact_draws(name):
    target = _cases()[name]
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=2000, num_warmup=1000, seed=0, progress=False)
    x = idata.posterior["x"].values.astype(np.float64)
    ess = az.ess(idata)["x"].values
    assert ess.min() > 100, ess  # 16k draws; measured 120-2400 over seeds 0-2 and 11-15 (the funnel's neck is slowest)
    flat = x.reshape(-1, target.dim)
    sd = np.sqrt(np.diag(target.cov))
    exact = np.asarray(target.sample(jax.random.key(100), 200_000), np.float64)
    # Means: MC sd is sd/sqrt(ESS). Standard deviations: by the delta method the estimate's sd is
    # sqrt(Var((x - mu)^2)) / (2 sd sqrt(ESS)), Var((x - mu)^2) from the 200k exact draws (so its
    # own error is < 1%). 4.5 MC sds over at most 10 checks: P(false failure) < 1e-4. Measured |z|
    # over seeds 0-2: at most 2.6 (means) and 2.9 (sds).
    assert np.all(np.abs(flat.mean(0) - target.mean) <= 4.5 * sd / np.sqrt(ess))
    var_sq = ((exact - target.mean) ** 2).var(0)
    assert np.all(np.abs(flat.std(0) - sd) <= 4.5 * np.sqrt(var_sq / (4 * sd**2 * ess)))
    if name in NULL_MEAN_1000:
        # Draws thinned to near-independence (at least 8 steps per effective draw) against an exact
        # sample of the same size.
        stride = int(np.ceil(x.shape[1] * x.shape[0] / ess.min()))
        thin = x[:, ::stride].reshape(-1, target.dim)
        thin = thin[np.random.default_rng(0).permutation(len(thin))[:NUM_THINNED]]
        n = len(thin)  # about min(ESS, 800)
        d = float(sinkhorn_divergence(thin, exact[:n]))
        assert d < 3 * NULL_MEAN_1000[name] * 1000 / n, (d, n)


@pytest.mark.parametrize("name", ["garch11"])
def test_mala_matches_posteriordb_reference(name):
    """Time-series posteriors against Stan's reference draws (10 chains x 1000, near independent).
    Mean error in units of reference sd: our MC sd is 1/sqrt(ESS) and the reference's 1/sqrt(10000);
    4.5 combined sds over the parameters (<= 7): P(false failure) < 1e-4. Measured over seeds 0-2:
    ESS 530-5900, |error| at most 2.5 of our MC sds. The AR coefficients and GARCH parameters are
    strongly correlated: with a diagonal metric MALA's ESS of arK's alpha was 36, so a dense one."""
    posteriordb = pytest.importorskip("driftax.models.posteriordb")
    if posteriordb.data_root() is None:
        pytest.skip("posteriordb reference folder not found")
    target, reference = posteriordb.load(name)
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=2000, num_warmup=2000, seed=0,
                            mass_matrix="dense", progress=False)
    cmp = dx.infer.compare_to_reference(idata, reference)
    ess = az.ess(idata)
    for site, c in cmp.items():
        e = np.asarray(ess[site].values, np.float64)
        assert e.min() > 200, (site, e)
        bound = 4.5 * np.sqrt(1 / e + 1 / 10_000)
        assert np.all(np.abs(np.asarray(c["mean_error"])) <= bound), dx.infer.diagnostics.format_comparison(cmp)


@pytest.mark.parametrize("name", ["eight_schools", "arK", "garch11"])
def test_default_method_reaches_posteriordb_reference(name):
    """The default method (NUTS), 4 chains x 1000 warm-up + 2000 draws, against Stan's reference
    draws: every mean within 0.1 reference sd and every sd within 10 %, R-hat <= 1.01 (issue 11's
    bar). Error budget: bulk ESS was >= 1,800 for 1,000 draws a chain in a trial run (eight_schools,
    arK, garch11; 2,300-2,600 for the first two), so with 2,000 a chain the mean's MC sd is <= 0.017
    reference sd (0.1 is 5.9 of them) and the sd's relative MC sd 1/sqrt(2 ESS) <= 0.012 (10 % is
    8); R-hat was 1.000-1.010 with 1,000 draws a chain, and its spread shrinks with the draws."""
    posteriordb = pytest.importorskip("driftax.models.posteriordb")
    if posteriordb.data_root() is None:
        pytest.skip("posteriordb reference folder not found")
    target, reference = posteriordb.load(name)
    idata = dx.infer.sample(target, num_chains=4, num_samples=2000, num_warmup=1000, seed=0, progress=False)
    assert idata.attrs["method"] == "nuts"
    cmp = dx.infer.compare_to_reference(idata, reference)
    for site, c in cmp.items():
        assert np.all(np.abs(np.asarray(c["mean_error"])) <= 0.1), dx.infer.diagnostics.format_comparison(cmp)
        assert np.all(np.abs(np.asarray(c["sd_error"])) <= 0.1), dx.infer.diagnostics.format_comparison(cmp)
    rhat = az.rhat(idata, var_names=list(cmp))
    assert max(float(rhat[k].max()) for k in cmp) <= 1.01


GP_SCRIPT = textwrap.dedent("""
    import json, jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, arviz as az, driftax as dx
    from driftax.models import posteriordb
    target, reference = posteriordb.load("gp_pois_regr")
    idata = dx.infer.sample(target, num_chains=4, num_samples=2000, num_warmup=1000, seed=0, progress=False)
    cmp = dx.infer.compare_to_reference(idata, reference)
    rhat = az.rhat(idata, var_names=list(cmp))
    print("RESULT" + json.dumps({
        "method": idata.attrs["method"], "dtype": str(idata.posterior["alpha"].dtype),
        "mean_error": max(float(np.max(np.abs(c["mean_error"]))) for c in cmp.values()),
        "sd_error": max(float(np.max(np.abs(c["sd_error"]))) for c in cmp.values()),
        "rhat": max(float(rhat[k].max()) for k in cmp)}))
""")


def test_default_method_reaches_gp_pois_regr_in_float64():
    """The fourth posteriordb posterior the project tests, with issue 11's bar (0.1 reference sd,
    10 % in sd, R-hat <= 1.01), in a fresh interpreter: it needs float64 (in float32 its kernel's
    Cholesky fails and NUTS diverges), and jax_enable_x64 is process-wide. Error budget, from
    4 chains x 1,000 + 1,000 draws at seeds 0-4: bulk ESS 704-1,167, worst |mean error| 0.029-0.055,
    worst |sd error| 0.022-0.049, R-hat <= 1.005. With 2,000 draws a chain (here) the ESS is about
    1,400 or more, so the mean's MC sd is <= 0.027 reference sd (0.1 is 3.7 of them) and the sd's
    relative MC sd <= 0.019 (10 % is 5.3); R-hat's spread shrinks with the draws. About 1.5e6
    gradients, 40-50 s of CPU."""
    posteriordb = pytest.importorskip("driftax.models.posteriordb")
    if posteriordb.data_root() is None:
        pytest.skip("posteriordb reference folder not found")
    proc = subprocess.run([sys.executable, "-c", GP_SCRIPT], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    assert res["method"] == "nuts" and res["dtype"] == "float64", res
    assert res["mean_error"] <= 0.1 and res["sd_error"] <= 0.1 and res["rhat"] <= 1.01, res
