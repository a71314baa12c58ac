"""posteriordb loaders against the reference draws and hand-written (scipy.stats) log-densities.

The check: for several reference draws θ_k (and the reference posterior mean), the target's
unconstrained log-density minus the log-Jacobian written here by hand must equal a scipy.stats
log-density of the Stan program up to one constant: the differences between draws agree.
Skips when the shared posteriordb folder is absent.
"""
import json
import math
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
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
    "arma-arma11": {"mu": (), "phi": (), "theta": (), "sigma": ()},
    "diamonds-diamonds": {"b": (24,), "Intercept": (), "sigma": ()},
    "earnings-logearn_interaction": {"beta": (4,), "sigma": ()},
    "hmm_example-hmm_example": {"theta1": (2,), "theta2": (2,), "mu": (2,)},
    "kidiq-kidscore_interaction": {"beta": (4,), "sigma": ()},
    "low_dim_gauss_mix-low_dim_gauss_mix": {"mu": (2,), "sigma": (2,), "theta": ()},
    "mesquite-logmesquite_logvash": {"beta": (6,), "sigma": ()},
    "nes1996-nes": {"beta": (9,), "sigma": ()},
    "sblrc-blr": {"beta": (5,), "sigma": ()},
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


def test_missing_name_lists_found_posteriors_and_folder(tmp_path):
    """An unknown name, a posterior present but not transcribed, and a transcribed posterior whose
    files are absent: each message names the folder looked in and the posteriors found there."""
    (tmp_path / "foo-bar.posterior.json").write_text("{}")
    (tmp_path / "arK-arK.posterior.json").write_text("{}")
    with pytest.raises(ValueError, match="unknown posterior") as err:
        posteriordb.load("nope", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "arK-arK, foo-bar" in str(err.value)
    assert "sblrc-blr" in str(err.value)  # the transcribed ones too
    with pytest.raises(ValueError, match="no NumPyro transcription") as err:
        posteriordb.load_reference("foo-bar", root=tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="arK-arK.json.zip") as err:
        posteriordb.load_reference("arK", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "arK-arK, foo-bar" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_arK.json.zip"):
        posteriordb.load_data("arK", root=tmp_path)


@needs_data
def test_missing_name_in_shared_folder_lists_all_thirteen():
    with pytest.raises(ValueError, match="unknown posterior") as err:
        posteriordb.load("eight_school")
    msg = str(err.value)
    assert str(ROOT) in msg
    found = msg.split("found in ")[1].split("; transcribed")[0]
    assert found.split(": ")[1].split(", ") == sorted(SHAPES)  # the 13 posteriors of the folder


# --------------------------------------------------------------------------------------------
# a clone of the posterior database in its own layout
# --------------------------------------------------------------------------------------------
ES = "eight_schools-eight_schools_noncentered"
EPS32 = float(np.finfo(np.float32).eps)


def _clone(dest, names=(ES,), extra_records=()):
    """A folder in the layout of a clone of github.com/stan-dev/posteriordb
    (``posterior_database/posteriors/NAME.json``, ``.../data/data/DATA.json.zip``,
    ``.../reference_posteriors/draws/draws/NAME.json.zip``) holding the shared folder's files of
    ``names`` under the clone's file names, and bare records for ``extra_records``. Returns the
    clone's root."""
    db = dest / "posterior_database"
    draws = db / "reference_posteriors" / "draws" / "draws"
    for sub in (db / "posteriors", db / "data" / "data", draws):
        sub.mkdir(parents=True)
    for name in names:
        record = json.loads((ROOT / f"{name}.posterior.json").read_text())
        (db / "posteriors" / f"{name}.json").write_text(json.dumps(record))
        shutil.copy(ROOT / f"data_{record['data_name']}.json.zip", db / "data" / "data" / f"{record['data_name']}.json.zip")
        shutil.copy(ROOT / f"{name}.json.zip", draws / f"{record['reference_posterior_name']}.json.zip")
    for name in extra_records:
        (db / "posteriors" / f"{name}.json").write_text(json.dumps({"name": name, "data_name": name}))
    return dest


@needs_data
def test_clone_layout_loads_the_same_posterior_as_the_shared_folder(tmp_path, monkeypatch):
    """The shared folder (flat) and a clone-shaped folder, given as the clone's root through
    $DRIFTAX_POSTERIORDB and as its posterior_database folder through root=, give the same data,
    reference draws, sites and log-density."""
    root = _clone(tmp_path / "posteriordb")
    assert posteriordb.layout(ROOT) == posteriordb.Layout("flat", ROOT)
    assert posteriordb.layout(root) == posteriordb.Layout("clone", root / "posterior_database")
    assert posteriordb.layout(root / "posterior_database") == posteriordb.layout(root)
    flat_target, flat_ref = posteriordb.load(ES)
    flat_data = posteriordb.load_data(ES)
    monkeypatch.setenv("DRIFTAX_POSTERIORDB", str(root))
    assert posteriordb.data_root() == root.resolve()
    loads = [posteriordb.load("eight_schools"), posteriordb.load(ES, root=root / "posterior_database")]
    assert posteriordb.load_data("eight_schools") == flat_data
    for target, ref in loads:
        assert (target.name, target.dim, target.shapes, target.dims) == (
            flat_target.name, flat_target.dim, flat_target.shapes, flat_target.dims)
        assert sorted(ref) == sorted(flat_ref)
        for k in ref:
            np.testing.assert_array_equal(ref[k], flat_ref[k])
    targets = [flat_target] + [t for t, _ in loads]
    xs = jax.random.normal(jax.random.key(0), (5, flat_target.dim))
    lp = np.asarray(jax.jit(jax.vmap(lambda x: jnp.stack([t.logdensity_fn(x) for t in targets])))(xs), np.float64)
    # The same float32 operations on equal data in one program. Were XLA to sum the 19 terms
    # (8 theta_trans, mu, tau, 8 y, log|J| = log tau) in another order in one copy, the copies would
    # differ by at most 18 eps32 Σ|terms|; every term but log tau = x[1] is a negative
    # log-density here (the densities are below 1), so Σ|terms| <= |lp| + 2|x[1]|.
    tol = 18 * EPS32 * (np.abs(lp[:, 0]) + 2 * np.abs(np.asarray(xs[:, 1])))
    assert np.all(np.abs(lp[:, 1:] - lp[:, :1]) <= tol[:, None])


@needs_data
def test_clone_layout_bad_input(tmp_path):
    root = _clone(tmp_path / "clone", extra_records=("foo-bar",))
    db = root / "posterior_database"
    # a missing name: the message lists the posteriors found and the folder looked in
    with pytest.raises(ValueError, match="unknown posterior") as err:
        posteriordb.load("nope", root=root)
    assert str(db) in str(err.value) and f"found in posteriordb clone {str(db)!r}: {ES}, foo-bar;" in str(err.value)
    with pytest.raises(ValueError, match="no NumPyro transcription"):
        posteriordb.load("foo-bar", root=root)
    # transcribed, but not in this clone
    with pytest.raises(FileNotFoundError, match=r"posteriors/arK-arK\.json is not in posteriordb clone") as err:
        posteriordb.load("arK", root=root)
    assert f"found there: {ES}, foo-bar" in str(err.value)
    # a record without reference draws (null in the database), and a data file that is absent
    (db / "posteriors" / "arK-arK.json").write_text(json.dumps({"data_name": "arK", "reference_posterior_name": None}))
    with pytest.raises(ValueError, match="arK-arK.*no reference draws.*reference_posterior_name: null"):
        posteriordb.load_reference("arK", root=root)
    with pytest.raises(FileNotFoundError, match=r"data/data/arK\.json\.zip is not in posteriordb clone"):
        posteriordb.load_data("arK", root=db)
    # a folder in neither layout
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a posterior database")
    for call in (posteriordb.layout, lambda r: posteriordb.load("eight_schools", root=r)):
        with pytest.raises(ValueError, match="neither posteriordb layout") as err:
            call(other)
        assert str(other) in str(err.value) and "posterior_database/posteriors" in str(err.value)


@needs_data
def test_reference_draws_that_do_not_match_the_model(tmp_path):
    """Reference parameters that are not sites of the model, or have other shapes, are named."""
    root = _clone(tmp_path / "clone")
    path = root / "posterior_database" / "reference_posteriors" / "draws" / "draws" / f"{ES}.json.zip"
    with zipfile.ZipFile(path) as zf:
        chains = [{k: v[:5] for k, v in c.items()} for c in json.load(zf.open(zf.namelist()[0]))[:2]]

    def write(chs):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{ES}.json", json.dumps(chs))

    write([{("sigma_tau" if k == "tau" else k): v for k, v in c.items()} for c in chains])
    with pytest.raises(ValueError, match=r"name \['sigma_tau'\], which are not sites of the model") as err:
        posteriordb.load(ES, root=root)
    assert "'theta_trans'" in str(err.value)  # and it lists the model's sites
    write([{k: v for k, v in c.items() if k != "theta[8]"} for c in chains])
    with pytest.raises(ValueError, match=r"theta: reference \(7,\), model \(8,\)"):
        posteriordb.load(ES, root=root)
    write(chains)  # the draws themselves load
    assert posteriordb.load(ES, root=root)[1]["theta"].shape == (2, 5, 8)


@needs_data
def test_every_shared_posterior_is_transcribed():
    """Each posterior of the shared folder (its NAME.posterior.json) has a model, its record's
    parameter dimensions are the reference draws', and its Stan program is in stan/."""
    found = sorted(f.name[: -len(".posterior.json")] for f in ROOT.glob("*.posterior.json"))
    assert found == sorted(posteriordb.POSTERIORS) == sorted(SHAPES)
    for name in found:
        record = json.loads((ROOT / f"{name}.posterior.json").read_text())
        dims = {k: math.prod(v) for k, v in SHAPES[name].items()}
        assert record["dimensions"] == dims, name
        assert (ROOT / "stan" / f"{record['model_name']}.stan").is_file(), name
        assert posteriordb.POSTERIORS[name][0].__name__ == record["model_name"], name
        assert posteriordb.POSTERIORS[name][1] == f"data_{record['data_name']}.json.zip", name


def test_new_models_reject_bad_data():
    with pytest.raises(ValueError, match="K must be 2"):
        posteriordb.hmm_example(3, 3, np.zeros(3))
    with pytest.raises(ValueError, match="N must be at least 1"):
        posteriordb.hmm_example(0, 2, np.zeros(0))
    with pytest.raises(ValueError, match="y must have shape"):
        posteriordb.arma11(5, np.zeros(4))
    with pytest.raises(ValueError, match="T must be at least 1"):
        posteriordb.arma11(0, np.zeros(0))
    with pytest.raises(ValueError, match="X must have shape"):
        posteriordb.diamonds(3, np.zeros(3), 4, np.zeros((3, 3)), 0)
    with pytest.raises(ValueError, match="X must have shape"):
        posteriordb.blr(3, 2, np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="event_dim"):
        posteriordb.flat(constraints.simplex)  # a simplex needs its length


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
    constrain = jax.jit(target.constrain)
    model_lp, hand_lp = [], []
    for p in _points(ref):
        mu, tau, theta = float(p["mu"]), float(p["tau"]), np.asarray(p["theta"])
        theta_trans = (theta - mu) / tau
        x = flat({"mu": mu, "tau": tau, "theta_trans": theta_trans})
        z = constrain(x)
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
    logdensity, constrain = jax.jit(target.logdensity_fn), jax.jit(target.constrain)
    model_lp, hand_lp = [], []
    for p in _points(ref):
        mu, a0, a1, b1 = (float(p[k]) for k in ("mu", "alpha0", "alpha1", "beta1"))
        x = flat({"mu": mu, "alpha0": a0, "alpha1": a1, "beta1": b1})
        z = constrain(x)
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
    """In float64 (jax.enable_x64 as a context, scoped to the block: the kernel matrix is singular
    in float32). The unconstrained points come from the reference f through f_tilde = L^-1 f."""
    data = posteriordb.load_data("gp_pois_regr")
    N, x, k = data["N"], np.array(data["x"], float), np.array(data["k"])
    with jax.enable_x64(True):
        target, ref = posteriordb.load("gp_pois_regr")
        assert target.dim == 13
        unc = jax.jit(jax.vmap(lambda latent: ravel_pytree(
            unconstrain_fn(posteriordb.gp_pois_regr, (N, x, k), {}, latent))[0]))
        pts, f_tildes = _points(ref), []
        for p in pts:
            rho, alpha = float(p["rho"]), float(p["alpha"])
            K = alpha ** 2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho ** 2) + 1e-10 * np.eye(N)
            f_tildes.append(np.linalg.solve(np.linalg.cholesky(K), np.asarray(p["f"])))
        latent = {"rho": jnp.asarray([p["rho"] for p in pts]), "alpha": jnp.asarray([p["alpha"] for p in pts]),
                  "f_tilde": jnp.asarray(np.stack(f_tildes))}
        us = unc(latent)
        model_lp = np.asarray(jax.jit(jax.vmap(target.logdensity_fn))(us))
        fs = np.asarray(jax.jit(jax.vmap(target.constrain))(us)["f"])
    assert model_lp.dtype == np.float64
    model_lp, hand_lp = list(model_lp), []
    for i, (p, f_tilde) in enumerate(zip(pts, f_tildes)):
        rho, alpha, f = float(p["rho"]), float(p["alpha"]), np.asarray(p["f"])
        np.testing.assert_allclose(fs[i], f, atol=1e-6)
        model_lp[i] -= math.log(rho) + math.log(alpha)  # exp transforms: log|J| = log rho + log alpha
        hand_lp.append(stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.halfnorm.logpdf(alpha, scale=2)
                       + stats.norm.logpdf(f_tilde).sum() + stats.poisson.logpmf(k, np.exp(f)).sum())
    _assert_equal_up_to_constant(model_lp, hand_lp, atol=1e-6)


@needs_data
def test_gp_pois_regr_warns_without_x64():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on in this process")
    with pytest.warns(UserWarning, match="float64"):
        target, _ = posteriordb.load("gp_pois_regr")  # builds (traced, never run) and warns
    assert target.name == "gp_pois_regr-gp_pois_regr" and target.dim == 13


@needs_data
def test_gallery_reaches_posteriordb(monkeypatch):
    real, calls = posteriordb.from_numpyro, []

    def recording(model, *args, **kwargs):
        calls.append((model, args))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(posteriordb, "from_numpyro", recording)
    target = gallery.get("arK")
    (model, args), = calls
    assert model is posteriordb.arK and args[:2] == (5, 200)
    assert target.name == "arK-arK" and target.dim == 7


# --------------------------------------------------------------------------------------------
# the nine posteriors added with their Stan programs (shared/data/posteriordb/stan/)
# --------------------------------------------------------------------------------------------
# Each test below: the target from `posteriordb.load` (site names and shapes against the reference
# draws), then at the reference mean, four reference draws and three random points three
# reference sds from the mean (in the unconstrained coordinates), its unconstrained log-density
# minus a hand-written log-Jacobian equals a hand-written scipy log-density of the Stan program,
# up to one constant. The unconstrained points are built here by hand from NumPyro's bijections
# (identity; log; logit; ordered: (x_1, log(x_2 - x_1)); positive_ordered: the ordered map of
# log x; the 2-simplex: logit p_1) and `constrain` must give the constrained points back. The
# comparison runs in float64 (jax.enable_x64 as a context: it is scoped to the block), so that
# the tolerance is float64 rounding, not float32's.

EPS64 = np.finfo(np.float64).eps


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _random_points(ref, to_u, from_u, seed, n=3):
    """n points at 3 reference sds (per unconstrained coordinate) from the mean, constrained by
    ``from_u`` (a hand-written inverse of ``to_u``)."""
    u = np.stack([to_u({k: v[c, d] for k, v in ref.items()}) for c in range(10) for d in range(0, 1000, 50)])
    rng = np.random.default_rng(seed)
    return [from_u(u.mean(0) + 3.0 * u.std(0) * rng.choice([-1.0, 1.0], u.shape[1]) * rng.uniform(0.5, 1.0, u.shape[1]))
            for _ in range(n)]


def _check_logdensity(name, shapes, to_u, from_u, hand, seed=0):
    """The test described above. ``to_u(point) -> u`` (the flat unconstrained vector in the
    target's ravel order: sorted site names), ``from_u`` its inverse, ``hand(point) ->
    (log-density, log|J| at u, Σ|terms|)``. Returns the number of points checked."""
    with jax.enable_x64(True):
        target, ref = posteriordb.load(name)
        # constrained site names and shapes: the Stan parameters (and transformed parameters)
        assert target.shapes == shapes
        assert all(shapes[k] == v.shape[2:] for k, v in ref.items())
        pts = _points(ref) + _random_points(ref, to_u, from_u, seed)
        us = np.stack([to_u(p) for p in pts])
        assert us.shape == (len(pts), target.dim)
        model_lp = np.asarray(jax.jit(jax.vmap(target.logdensity_fn))(jnp.asarray(us)))
        assert model_lp.dtype == np.float64
        zs = jax.tree.map(np.asarray, jax.jit(jax.vmap(target.constrain))(jnp.asarray(us)))
        hand_lp, scale = [], 0.0
        for i, (p, u, m) in enumerate(zip(pts, us, model_lp)):
            for k in p:  # NumPyro's bijections give the points back
                np.testing.assert_allclose(zs[k][i], p[k], rtol=1e-9, atol=1e-9)
            lp, logjac, terms = hand(p)
            hand_lp.append(lp + logjac)
            scale = max(scale, terms)
    # float64 rounding: the model's sums (pairwise, n <= 5,000 terms) err by <= ~15 eps Σ|terms|,
    # and a residual y - μ computed from terms up to 1e3 x |y - μ| (the regressions' data and
    # coefficients) inflates that by <= 1e3 for the squared residual: 1e5 eps Σ|terms| bounds both
    _assert_equal_up_to_constant(model_lp, np.array(hand_lp), atol=1e5 * EPS64 * scale)
    return len(pts)


def _sumabs(*terms):
    return float(sum(np.sum(np.abs(t)) for t in terms))


@needs_data
def test_arma11_logdensity():
    data = posteriordb.load_data("arma11")
    T, y = data["T"], np.array(data["y"], float)
    names = ("mu", "phi", "sigma", "theta")  # ravel order

    def to_u(p):
        return np.array([p["mu"], p["phi"], np.log(p["sigma"]), p["theta"]])

    def from_u(u):
        return {"mu": u[0], "phi": u[1], "sigma": np.exp(u[2]), "theta": u[3]}

    def hand(p):
        mu, phi, theta, sigma = (float(p[k]) for k in ("mu", "phi", "theta", "sigma"))
        err = np.empty(T)
        err[0] = y[0] - (mu + phi * mu)  # Stan: nu[1] = mu + phi * mu
        for t in range(1, T):
            err[t] = y[t] - (mu + phi * y[t - 1] + theta * err[t - 1])
        terms = [stats.norm.logpdf(mu, 0, 10), stats.norm.logpdf(phi, 0, 2), stats.norm.logpdf(theta, 0, 2),
                 stats.halfcauchy.logpdf(sigma, scale=2.5), stats.norm.logpdf(err, 0, sigma)]
        return sum(np.sum(t) for t in terms), math.log(sigma), _sumabs(*terms)

    shapes = {k: () for k in names}
    assert _check_logdensity("arma-arma11", shapes, to_u, from_u, hand) == 8


def _regression_case(beta_name="beta"):
    """``to_u``/``from_u`` for ``(vector beta, real<lower=0> sigma)``: ravel order beta, sigma."""
    def to_u(p):
        return np.concatenate([np.asarray(p[beta_name], float), [math.log(p["sigma"])]])

    def from_u(u):
        return {beta_name: u[:-1], "sigma": math.exp(u[-1])}
    return to_u, from_u


@needs_data
def test_kidscore_interaction_logdensity():
    data = posteriordb.load_data("kidscore_interaction")
    kid, iq, hs = (np.array(data[k], float) for k in ("kid_score", "mom_iq", "mom_hs"))
    to_u, from_u = _regression_case()

    def hand(p):
        b, sigma = np.asarray(p["beta"]), float(p["sigma"])
        mean = b[0] + b[1] * hs + b[2] * iq + b[3] * (hs * iq)
        terms = [stats.halfcauchy.logpdf(sigma, scale=2.5), stats.norm.logpdf(kid, mean, sigma)]  # beta flat
        return sum(np.sum(t) for t in terms), math.log(sigma), _sumabs(*terms)

    _check_logdensity("kidiq-kidscore_interaction", {"beta": (4,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_logearn_interaction_logdensity():
    data = posteriordb.load_data("logearn_interaction")
    earn, height, male = (np.array(data[k], float) for k in ("earn", "height", "male"))
    to_u, from_u = _regression_case()

    def hand(p):
        b, sigma = np.asarray(p["beta"]), float(p["sigma"])
        mean = b[0] + b[1] * height + b[2] * male + b[3] * height * male
        terms = [stats.norm.logpdf(np.log(earn), mean, sigma)]  # beta and sigma flat
        return np.sum(terms[0]), math.log(sigma), _sumabs(*terms)

    _check_logdensity("earnings-logearn_interaction", {"beta": (4,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_logmesquite_logvash_logdensity():
    data = posteriordb.load_data("logmesquite_logvash")
    w, d1, d2, ch, th, g = (np.array(data[k], float) for k in
                            ("weight", "diam1", "diam2", "canopy_height", "total_height", "group"))
    to_u, from_u = _regression_case()

    def hand(p):
        b, sigma = np.asarray(p["beta"]), float(p["sigma"])
        mean = (b[0] + b[1] * np.log(d1 * d2 * ch) + b[2] * np.log(d1 * d2) + b[3] * np.log(d1 / d2)
                + b[4] * np.log(th) + b[5] * g)
        terms = [stats.norm.logpdf(np.log(w), mean, sigma)]  # beta and sigma flat
        return np.sum(terms[0]), math.log(sigma), _sumabs(*terms)

    _check_logdensity("mesquite-logmesquite_logvash", {"beta": (6,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_nes_logdensity():
    data = posteriordb.load_data("nes")
    cols = ("real_ideo", "race_adj", "educ1", "gender", "income")
    party = np.array(data["partyid7"], float)
    ideo, race, educ, gender, income = (np.array(data[k], float) for k in cols)
    age = np.array(data["age_discrete"])
    to_u, from_u = _regression_case()

    def hand(p):
        b, sigma = np.asarray(p["beta"]), float(p["sigma"])
        mean = np.empty(len(party))
        for n in range(len(party)):  # Stan's transformed-data loop, then the linear predictor
            mean[n] = (b[0] + b[1] * ideo[n] + b[2] * race[n] + b[3] * (age[n] == 2) + b[4] * (age[n] == 3)
                       + b[5] * (age[n] == 4) + b[6] * educ[n] + b[7] * gender[n] + b[8] * income[n])
        terms = [stats.norm.logpdf(party, mean, sigma)]  # beta and sigma flat
        return np.sum(terms[0]), math.log(sigma), _sumabs(*terms)

    _check_logdensity("nes1996-nes", {"beta": (9,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_blr_logdensity():
    data = posteriordb.load_data("blr")
    X, y = np.array(data["X"], float), np.array(data["y"], float)
    to_u, from_u = _regression_case()

    def hand(p):
        b, sigma = np.asarray(p["beta"]), float(p["sigma"])
        terms = [stats.norm.logpdf(b, 0, 10), stats.norm.logpdf(sigma, 0, 10), stats.norm.logpdf(y, X @ b, sigma)]
        return sum(np.sum(t) for t in terms), math.log(sigma), _sumabs(*terms)

    _check_logdensity("sblrc-blr", {"beta": (5,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_diamonds_logdensity():
    data = posteriordb.load_data("diamonds")
    X, Y, K = np.array(data["X"], float), np.array(data["Y"], float), data["K"]
    assert data["prior_only"] == 0
    Xc = np.empty((X.shape[0], K - 1))
    for i in range(1, K):  # Stan's transformed data: centred columns without the intercept
        Xc[:, i - 1] = X[:, i] - X[:, i].mean()

    def to_u(p):  # ravel order: Intercept, b, sigma (sorted names, upper case first)
        return np.concatenate([[p["Intercept"]], np.asarray(p["b"], float), [math.log(p["sigma"])]])

    def from_u(u):
        return {"Intercept": u[0], "b": u[1:-1], "sigma": math.exp(u[-1])}

    def hand(p):
        b, a, sigma = np.asarray(p["b"]), float(p["Intercept"]), float(p["sigma"])
        terms = [stats.norm.logpdf(b, 0, 1), stats.t.logpdf(a, 3, 8, 10),
                 stats.t.logpdf(sigma, 3, 0, 10) - stats.t.logsf(0, 3, 0, 10),
                 stats.norm.logpdf(Y, a + Xc @ b, sigma)]
        return sum(np.sum(t) for t in terms), math.log(sigma), _sumabs(*terms)

    _check_logdensity("diamonds-diamonds", {"Intercept": (), "b": (24,), "sigma": ()}, to_u, from_u, hand)


@needs_data
def test_low_dim_gauss_mix_logdensity():
    y = np.array(posteriordb.load_data("low_dim_gauss_mix")["y"], float)

    def to_u(p):  # ravel order mu (ordered), sigma (positive), theta (0, 1)
        mu, sigma = np.asarray(p["mu"], float), np.asarray(p["sigma"], float)
        return np.array([mu[0], math.log(mu[1] - mu[0]), *np.log(sigma), _logit(float(p["theta"]))])

    def from_u(u):
        return {"mu": np.array([u[0], u[0] + math.exp(u[1])]), "sigma": np.exp(u[2:4]),
                "theta": 1.0 / (1.0 + math.exp(-u[4]))}

    def hand(p):
        mu, sigma, theta = np.asarray(p["mu"]), np.asarray(p["sigma"]), float(p["theta"])
        # Stan's log_mix(theta, lp1, lp2) = log(theta exp(lp1) + (1 - theta) exp(lp2)), per datum
        lik = np.logaddexp(math.log(theta) + stats.norm.logpdf(y, mu[0], sigma[0]),
                           math.log1p(-theta) + stats.norm.logpdf(y, mu[1], sigma[1]))
        terms = [stats.halfnorm.logpdf(sigma, scale=2), stats.norm.logpdf(mu, 0, 2),
                 stats.beta.logpdf(theta, 5, 5), lik]
        logjac = math.log(mu[1] - mu[0]) + np.log(sigma).sum() + math.log(theta) + math.log1p(-theta)
        return sum(np.sum(t) for t in terms), logjac, _sumabs(*terms)

    _check_logdensity("low_dim_gauss_mix-low_dim_gauss_mix", {"mu": (2,), "sigma": (2,), "theta": ()},
                      to_u, from_u, hand)


@needs_data
def test_hmm_example_logdensity():
    data = posteriordb.load_data("hmm_example")
    N, K, y = data["N"], data["K"], np.array(data["y"], float)

    def to_u(p):  # ravel order mu (positive_ordered), theta1, theta2 (2-simplices)
        lmu = np.log(np.asarray(p["mu"], float))
        return np.array([lmu[0], math.log(lmu[1] - lmu[0]), _logit(float(p["theta1"][0])),
                         _logit(float(p["theta2"][0]))])

    def from_u(u):
        p1, p2 = (1.0 / (1.0 + math.exp(-v)) for v in u[2:])
        return {"mu": np.exp([u[0], u[0] + math.exp(u[1])]), "theta1": np.array([p1, 1 - p1]),
                "theta2": np.array([p2, 1 - p2])}

    def hand(p):
        mu, theta = np.asarray(p["mu"]), np.stack([np.asarray(p["theta1"]), np.asarray(p["theta2"])])
        gamma = np.empty((N, K))
        for k in range(K):  # Stan's forward algorithm, loop for loop
            gamma[0, k] = stats.norm.logpdf(y[0], mu[k], 1)
        for t in range(1, N):
            for k in range(K):
                acc = [gamma[t - 1, j] + math.log(theta[j, k]) + stats.norm.logpdf(y[t], mu[k], 1) for j in range(K)]
                gamma[t, k] = np.logaddexp(acc[0], acc[1])
        terms = [stats.norm.logpdf(mu[0], 3, 1), stats.norm.logpdf(mu[1], 10, 1), np.logaddexp(*gamma[N - 1])]
        # log|J|: exp of the ordered map (log mu_1 + log mu_2 + log(log mu_2 - log mu_1)); the 2-simplex
        # (p, 1 - p) = (sigmoid u, 1 - sigmoid u): log p + log(1 - p) for each row
        logjac = np.log(mu).sum() + math.log(math.log(mu[1]) - math.log(mu[0])) + np.log(theta).sum()
        return sum(np.sum(t) for t in terms), logjac, _sumabs(*terms)

    shapes = {"mu": (2,), "theta1": (2,), "theta2": (2,), "theta": (2, 2)}
    _check_logdensity("hmm_example-hmm_example", shapes, to_u, from_u, hand)
