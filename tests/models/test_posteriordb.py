"""posteriordb loaders against the reference draws and hand-written (scipy.stats) log-densities.

The check: for several reference draws θ_k (and the reference posterior mean), the target's
unconstrained log-density minus the log-Jacobian written here by hand must equal a scipy.stats
log-density of the Stan program up to one constant: the differences between draws agree.
Skips when the shared posteriordb folder is absent.
"""
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import unconstrain_fn
from scipy import stats

from driftax.models import gallery, posteriordb

ROOT = posteriordb.data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="shared/data/posteriordb not found")

SHAPES = {
    "eight_schools-eight_schools_noncentered": {"theta": (8,), "mu": (), "tau": ()},
    "arK-arK": {"alpha": (), "beta": (5,), "sigma": ()},
    "garch-garch11": {"mu": (), "alpha0": (), "alpha1": (), "beta1": ()},
    "gp_pois_regr-gp_pois_regr": {"rho": (), "alpha": (), "f": (11,)},
}


def _points(ref, n=4):
    """The reference posterior mean and n reference draws (chain k, draw 100 k)."""
    pts = [{k: v.mean(axis=(0, 1)) for k, v in ref.items()}]
    pts += [{k: v[i, 100 * i] for k, v in ref.items()} for i in range(n)]
    return pts


def _flattener(model, args):
    """Constrained latent dict -> the flat unconstrained vector, by NumPyro's own transforms
    (the ravel order of a dict is its sorted keys, as in from_numpyro)."""
    fn = jax.jit(lambda latent: ravel_pytree(unconstrain_fn(model, args, {}, latent))[0])
    return lambda latent: fn({k: jnp.asarray(v, jnp.result_type(float)) for k, v in latent.items()})


def _assert_equal_up_to_constant(model_lp, hand_lp, atol):
    model_lp, hand_lp = np.asarray(model_lp, np.float64), np.asarray(hand_lp, np.float64)
    diff = model_lp - hand_lp
    assert np.all(np.isfinite(diff))
    np.testing.assert_allclose(diff - diff[0], 0.0, atol=atol)
    # and the points differ enough for this to mean something
    assert np.ptp(hand_lp) > 10 * atol


def test_data_root_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIFTAX_POSTERIORDB", str(tmp_path))
    assert posteriordb.data_root() == tmp_path.resolve()
    monkeypatch.setenv("DRIFTAX_POSTERIORDB", str(tmp_path / "absent"))
    assert posteriordb.data_root() is None
    with pytest.raises(FileNotFoundError, match="DRIFTAX_POSTERIORDB"):
        posteriordb.load("eight_schools")


def test_bad_names_and_roots():
    with pytest.raises(ValueError, match="unknown posterior"):
        posteriordb.load_reference("nope")
    with pytest.raises(TypeError, match="name"):
        posteriordb.load(3)
    with pytest.raises(FileNotFoundError, match="root"):
        posteriordb.load("arK", root="/nonexistent/folder")
    with pytest.raises(TypeError, match="root"):
        posteriordb.load("arK", root=3)


def test_merge_multi_index_names():
    chains = [{"x[1,1]": [1.0, 2.0], "x[2,3]": [3.0, 4.0], "x[1,2]": [0.0, 0.0], "x[1,3]": [0.0, 0.0],
               "x[2,1]": [0.0, 0.0], "x[2,2]": [5.0, 6.0], "s": [7.0, 8.0]}] * 3
    out = posteriordb._merge_draws(chains)
    assert out["x"].shape == (3, 2, 2, 3) and out["s"].shape == (3, 2)
    assert out["x"][0, 1, 1, 2] == 4.0 and out["x"][2, 0, 1, 1] == 5.0
    with pytest.raises(ValueError, match="missing"):
        posteriordb._merge_draws([{"x[1]": [1.0], "x[3]": [2.0]}])


@needs_data
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_reference_names_and_shapes(name):
    ref = posteriordb.load_reference(name)
    assert {k: v.shape[2:] for k, v in ref.items()} == SHAPES[name]
    assert all(v.shape[:2] == (10, 1000) for v in ref.values())
    # the merge keeps Stan's 1-based order: compare one entry to the raw JSON
    import zipfile
    with zipfile.ZipFile(ROOT / f"{name}.json.zip") as zf:
        raw = json.load(zf.open(zf.namelist()[0]))
    key = next(k for k in raw[3] if "[" in k) if any("[" in k for k in raw[3]) else next(iter(raw[3]))
    if "[" in key:
        base, idx = key.split("[")[0], int(key.split("[")[1].rstrip("]")) - 1
        last = sorted(k for k in raw[3] if k.startswith(base + "["))[-1]
        assert ref[base][3, 17, idx] == raw[3][key][17]
        n = max(int(k.split("[")[1].rstrip("]")) for k in raw[3] if k.startswith(base + "["))
        assert ref[base][3, 17, n - 1] == raw[3][f"{base}[{n}]"][17]
        del last


@needs_data
def test_eight_schools_target_and_logdensity():
    target, ref = posteriordb.load("eight_schools")
    assert target.dim == 10
    assert target.shapes == {"mu": (), "tau": (), "theta": (8,), "theta_trans": (8,)}
    data = posteriordb.load_data("eight_schools")
    y, sigma = np.array(data["y"], float), np.array(data["sigma"], float)
    flat = _flattener(posteriordb.eight_schools_noncentered, (8, y, sigma))
    logdensity = jax.jit(target.logdensity_fn)
    model_lp, hand_lp = [], []
    for p in _points(ref):
        mu, tau, theta = float(p["mu"]), float(p["tau"]), np.asarray(p["theta"])
        theta_trans = (theta - mu) / tau
        x = flat({"mu": mu, "tau": tau, "theta_trans": theta_trans})
        z = target.constrain(x)
        np.testing.assert_allclose(z["theta"], theta, rtol=1e-4, atol=1e-4)
        model_lp.append(float(logdensity(x)) - math.log(tau))  # exp transform: log|J| = log tau
        hand_lp.append(stats.norm.logpdf(theta_trans).sum() + stats.norm.logpdf(mu, 0, 5)
                       + stats.halfcauchy.logpdf(tau, scale=5) + stats.norm.logpdf(y, theta, sigma).sum())
    _assert_equal_up_to_constant(model_lp, hand_lp, atol=2e-3)


@needs_data
def test_arK_logdensity():
    target, ref = posteriordb.load("arK-arK")
    assert target.dim == 7
    data = posteriordb.load_data("arK")
    K, T, y = data["K"], data["T"], np.array(data["y"], float)
    flat = _flattener(posteriordb.arK, (K, T, y))
    logdensity = jax.jit(target.logdensity_fn)
    model_lp, hand_lp = [], []
    for p in _points(ref):
        alpha, beta, sigma = float(p["alpha"]), np.asarray(p["beta"]), float(p["sigma"])
        x = flat({"alpha": alpha, "beta": beta, "sigma": sigma})
        model_lp.append(float(logdensity(x)) - math.log(sigma))
        lp = stats.norm.logpdf(alpha, 0, 10) + stats.norm.logpdf(beta, 0, 10).sum()
        lp += stats.halfcauchy.logpdf(sigma, scale=2.5)
        for t in range(K, T):  # Stan's loop, 0-based
            mu = alpha + sum(beta[k] * y[t - k - 1] for k in range(K))
            lp += stats.norm.logpdf(y[t], mu, sigma)
        hand_lp.append(lp)
    _assert_equal_up_to_constant(model_lp, hand_lp, atol=5e-3)


@needs_data
def test_garch11_logdensity_flat_priors():
    target, ref = posteriordb.load("garch11")
    assert target.dim == 4
    data = posteriordb.load_data("garch11")
    T, y, sigma1 = data["T"], np.array(data["y"], float), float(data["sigma1"])
    flat = _flattener(posteriordb.garch11, (T, y, sigma1))
    logdensity = jax.jit(target.logdensity_fn)
    model_lp, hand_lp = [], []
    for p in _points(ref):
        mu, a0, a1, b1 = (float(p[k]) for k in ("mu", "alpha0", "alpha1", "beta1"))
        x = flat({"mu": mu, "alpha0": a0, "alpha1": a1, "beta1": b1})
        z = target.constrain(x)
        np.testing.assert_allclose([z["alpha1"], z["beta1"]], [a1, b1], rtol=1e-4)
        # log|J|: exp for alpha0; logistic onto (0,1) for alpha1; onto (0, 1-alpha1) for beta1
        jac = math.log(a0) + math.log(a1) + math.log1p(-a1) + math.log(b1) + math.log(1 - a1 - b1) - math.log(1 - a1)
        model_lp.append(float(logdensity(x)) - jac)
        sig = np.empty(T)
        sig[0] = sigma1
        for t in range(1, T):
            sig[t] = math.sqrt(a0 + a1 * (y[t - 1] - mu) ** 2 + b1 * sig[t - 1] ** 2)
        hand_lp.append(stats.norm.logpdf(y, mu, sig).sum())  # flat priors: no prior term
    _assert_equal_up_to_constant(model_lp, hand_lp, atol=5e-3)


@needs_data
def test_gp_pois_regr_logdensity_float64():
    """In a subprocess: gp_pois_regr needs jax_enable_x64, a process-wide switch."""
    code = textwrap.dedent("""
        import json, math, sys
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np
        from jax.flatten_util import ravel_pytree
        from numpyro.infer.util import unconstrain_fn
        from scipy import stats
        from driftax.models import posteriordb
        target, ref = posteriordb.load("gp_pois_regr")
        data = posteriordb.load_data("gp_pois_regr")
        N, x, k = data["N"], np.array(data["x"], float), np.array(data["k"])
        pts = [{kk: v.mean(axis=(0, 1)) for kk, v in ref.items()}]
        pts += [{kk: v[i, 100 * i] for kk, v in ref.items()} for i in range(4)]
        logdensity = jax.jit(target.logdensity_fn)
        unc = jax.jit(lambda latent: ravel_pytree(unconstrain_fn(posteriordb.gp_pois_regr, (N, x, k), {}, latent))[0])
        out = []
        for p in pts:
            rho, alpha, f = float(p["rho"]), float(p["alpha"]), np.asarray(p["f"])
            K = alpha ** 2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho ** 2) + 1e-10 * np.eye(N)
            f_tilde = np.linalg.solve(np.linalg.cholesky(K), f)
            flat = unc({"rho": jnp.asarray(rho), "alpha": jnp.asarray(alpha), "f_tilde": jnp.asarray(f_tilde)})
            assert np.allclose(target.constrain(flat)["f"], f, atol=1e-6)
            m = float(logdensity(flat)) - math.log(rho) - math.log(alpha)
            h = (stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.halfnorm.logpdf(alpha, scale=2)
                 + stats.norm.logpdf(f_tilde).sum() + stats.poisson.logpmf(k, np.exp(f)).sum())
            out.append([m, h])
        print(json.dumps({"out": out, "dtype": str(target.logdensity_fn(flat).dtype), "dim": target.dim}))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["dtype"] == "float64" and got["dim"] == 13
    arr = np.array(got["out"])
    _assert_equal_up_to_constant(arr[:, 0], arr[:, 1], atol=1e-6)


@needs_data
def test_gp_pois_regr_warns_without_x64(monkeypatch):
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on in this process")
    monkeypatch.setattr(posteriordb, "from_numpyro", lambda model, *a, **k: model)  # skip the build
    with pytest.warns(UserWarning, match="float64"):
        model, _ = posteriordb.load("gp_pois_regr")
    assert model is posteriordb.gp_pois_regr


@needs_data
def test_gallery_reaches_posteriordb(monkeypatch):
    monkeypatch.setattr(posteriordb, "from_numpyro", lambda model, *a, name=None: (model, a, name))
    model, args, name = gallery.get("arK")
    assert model is posteriordb.arK and name == "arK-arK" and args[:2] == (5, 200)
