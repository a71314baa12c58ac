"""from_numpyro against NumPyro's own log_density plus an independently computed log-Jacobian."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density, unconstrain_fn

import driftax as dx
from driftax.models import Target, from_numpyro

Y = np.array([1.2, -0.3, 2.5])


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    p = numpyro.sample("p", dist.Beta(2.0, 3.0))
    theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([3]).to_event(1))
    numpyro.deterministic("s", mu + tau)
    numpyro.sample("y", dist.Normal(theta, 1.0 + p).to_event(1), obs=y)


@pytest.fixture(scope="module")
def target():
    return from_numpyro(model, Y)


def test_shapes_and_names(target):
    assert isinstance(target, Target)
    assert target.dim == 6
    assert target.shapes == {"mu": (), "p": (), "s": (), "tau": (), "theta": (3,)}


def test_logdensity_equals_numpyro_plus_jacobian(target):
    def per_point(x):  # NumPyro's own functions at one flat point; jitted and vmapped below
        z = target.constrain(x)
        latent = {k: z[k] for k in ("mu", "tau", "p", "theta")}
        u = unconstrain_fn(model, (Y,), {}, latent)
        joint, _ = log_density(model, (Y,), {}, latent)
        jac_numpyro = (biject_to(dist.HalfCauchy(5.0).support).log_abs_det_jacobian(u["tau"], z["tau"])
                       + biject_to(dist.Beta(2.0, 3.0).support).log_abs_det_jacobian(u["p"], z["p"]))
        return z, ravel_pytree(u)[0], joint, jac_numpyro, target.logdensity_fn(x)

    xs = jax.random.normal(jax.random.key(3), (4, target.dim)) * 1.5
    # one program for the four points: evaluated eagerly, each NumPyro call compiled op by op
    z, u_flat, joint, jac_numpyro, lp = jax.tree.map(np.asarray, jax.jit(jax.vmap(per_point))(xs))
    # the flat vector is NumPyro's unconstrained values, raveled: the round trip holds
    np.testing.assert_allclose(u_flat, xs, rtol=1e-4, atol=1e-4)
    # log-Jacobian written by hand: exp for tau (log tau), sigmoid for p (log p + log(1-p))
    tau, p = z["tau"].astype(np.float64), z["p"].astype(np.float64)
    jac_hand = np.log(tau) + np.log(p) + np.log1p(-p)
    # and through NumPyro's transforms, site by site
    np.testing.assert_allclose(jac_numpyro, jac_hand, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lp, joint + jac_hand, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(z["s"], z["mu"] + z["tau"], rtol=1e-6)


def _hand_logdensity(x):
    """The model's unconstrained log-density written out with scipy, in float64: ravel order
    (mu, p, tau, theta) as NumPyro's dict order, tau = exp(u), p = sigmoid(u), plus log-Jacobians."""
    from scipy import stats
    from scipy.special import expit

    mu, up, ut, theta = x[0], x[1], x[2], x[3:6]
    p, tau = expit(up), np.exp(ut)
    return (stats.norm.logpdf(mu, 0, 5) + stats.beta.logpdf(p, 2, 3) + stats.halfcauchy.logpdf(tau, scale=5)
            + stats.norm.logpdf(theta, mu, tau).sum() + stats.norm.logpdf(Y, theta, 1 + p).sum()
            + ut + np.log(p) + np.log1p(-p))


def test_jit_vmap_grad(target):
    """Under jit and vmap, values equal a hand-written scipy log-density and gradients equal its
    central differences. Float32 values: relative rounding ~1e-6 of terms up to ~30, so rtol 1e-5 +
    atol 1e-3; differences with step 1e-5 in float64 err by ~h^2 times the third derivative (~1e-9)
    plus 1e-11 rounding, against float32 gradients (rtol 1e-4 + atol 1e-3)."""
    xs = jax.random.normal(jax.random.key(0), (5, target.dim))
    lp = jax.jit(jax.vmap(target.logdensity_fn))(xs)
    g = jax.jit(jax.vmap(jax.grad(target.logdensity_fn)))(xs)
    assert lp.shape == (5,) and g.shape == xs.shape
    xs64 = np.asarray(xs, np.float64)
    np.testing.assert_allclose(lp, [_hand_logdensity(x) for x in xs64], rtol=1e-5, atol=1e-3)
    h = 1e-5
    eye = np.eye(target.dim)
    fd = np.array([[(_hand_logdensity(x + h * e) - _hand_logdensity(x - h * e)) / (2 * h) for e in eye] for x in xs64])
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-3)


def test_discrete_latent_site_is_named():
    def mixed():
        numpyro.sample("c", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'c'"):
        from_numpyro(mixed)


def test_rejects_non_models():
    def observed_only():
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=1.0)

    with pytest.raises(ValueError, match="no latent"):
        from_numpyro(observed_only)
    with pytest.raises(TypeError, match="model"):
        from_numpyro(42)


def test_improper_prior_and_dependent_support_are_handled():
    """ImproperUniform priors build (the check draws from the init strategy, not the prior), and a
    support that depends on another site, b in (0, 1 - a), constrains with this draw's a: the exact
    map is b = (1 - a) * sigmoid(u_b) with a = sigmoid(u_a)."""
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def model():
        a = numpyro.sample("a", dist.Uniform(0.0, 1.0))
        numpyro.sample("b", dist.ImproperUniform(constraints.interval(0.0, 1.0 - a), (), ()))
        numpyro.sample("c", dist.ImproperUniform(constraints.positive, (), ()))

    target = from_numpyro(model)
    for u in (jnp.array([0.3, -1.2, 0.5]), jnp.array([-2.0, 2.0, -0.1])):
        out = target.constrain(u)
        names = sorted(out)  # ravel_pytree orders sites by name: a, b, c
        assert names == ["a", "b", "c"]
        a = jax.nn.sigmoid(u[0])
        np.testing.assert_allclose(out["a"], a, rtol=1e-6)
        np.testing.assert_allclose(out["b"], (1 - a) * jax.nn.sigmoid(u[1]), rtol=1e-5)
        np.testing.assert_allclose(out["c"], jnp.exp(u[2]), rtol=1e-6)


def test_plate_names_become_arviz_dims():
    """Sites inside plate("school", 8) get the dim 'school' in the InferenceData; event dims keep ArviZ's names."""
    import numpyro
    import numpyro.distributions as dist

    import driftax as dx

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        numpyro.sample("w", dist.Normal(0, 1).expand([2]).to_event(1))
        with numpyro.plate("school", 8):
            t = numpyro.sample("t", dist.Normal(0, 1))
            theta = numpyro.deterministic("theta", mu + t)
            numpyro.sample("y", dist.Normal(theta, 10.0), obs=y)
        with numpyro.plate("group", 3):  # event dim of size 3 too: the plate must name the batch axis
            numpyro.sample("v", dist.MultivariateNormal(jnp.zeros(3), jnp.eye(3)))

    target = from_numpyro(model, jnp.zeros(8))
    assert target.dims == {"t": ("school",), "theta": ("school",), "v": ("group", "v_dim_1")}
    idata = dx.infer.sample(target, "mala", num_chains=2, num_samples=10, num_warmup=0, progress=False)
    assert idata.posterior["theta"].dims == ("chain", "draw", "school")
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim_0")


def _subsampled_regression(n=20, batch=5):
    def model(X, y):
        b = numpyro.sample("b", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        with numpyro.plate("N", X.shape[0], subsample_size=batch) as idx:
            numpyro.sample("obs", dist.Normal(X[idx] @ b, s), obs=y[idx])
    rng = np.random.default_rng(0)
    return model, jnp.asarray(rng.normal(size=(n, 3))), jnp.asarray(rng.normal(size=n))


def test_a_subsampled_data_plate_gives_the_full_posterior_and_its_minibatch_form():
    """Against a hand-written log-density (scipy-free: the closed Gaussian/half-normal formulas):
    the target is the posterior on all 20 data, the per-datum term is the datum's Gaussian
    log-likelihood, and the minibatch gradients of one epoch (4 disjoint batches of 5) average to
    the full gradient (exactly, up to float32 rounding of sums of 20 terms, ~1e-6 relative)."""
    model, X, y = _subsampled_regression()
    target = dx.models.from_numpyro(model, X, y)
    lik = target.data_likelihood
    assert lik is not None and lik.size == 20 and target.dim == 4
    x = jnp.asarray([0.1, -0.2, 0.3, 0.4])
    b, log_s = np.asarray(x[:3], np.float64), 0.4
    s = np.exp(log_s)
    Xn, yn = np.asarray(X, np.float64), np.asarray(y, np.float64)
    normal = lambda v, m, sd: -0.5 * ((v - m) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
    loglik = normal(yn, Xn @ b, s)
    hand = normal(b, 0, 1).sum() + (np.log(2) + normal(s, 0, 1)) + log_s + loglik.sum()  # HalfNormal + log-Jacobian
    perm = jnp.asarray(np.random.default_rng(1).permutation(20).reshape(4, 5))

    def checks(x, batches):  # one program (eagerly, every model pass compiles op by op)
        return (target.logdensity_fn(x), lik.logdensity(x), lik.loglik_fn(x, 3),
                jax.vmap(lambda b: jax.grad(lik.minibatch)(x, b))(batches), jax.grad(target.logdensity_fn)(x))

    lp, lp_lik, ll3, batch_grads, grad = jax.jit(checks)(x, perm)
    np.testing.assert_allclose(lp, hand, rtol=1e-5)
    np.testing.assert_allclose(lp_lik, hand, rtol=1e-5)
    np.testing.assert_allclose(ll3, loglik[3], rtol=1e-4)
    np.testing.assert_allclose(np.mean(batch_grads, 0), grad, rtol=1e-5, atol=1e-5)
    idata = dx.infer.sample(target, "sgld", num_chains=2, num_warmup=0, num_samples=20, step_size=1e-3,
                            seed=0, progress=False)  # SGLD runs on it through the loop
    assert np.all(np.isfinite(idata.posterior["b"].values))


def test_local_latents_in_the_data_plate_are_not_data():
    def model(y):
        with numpyro.plate("N", y.shape[0], subsample_size=2) as idx:
            z = numpyro.sample("z", dist.Normal(0, 1))
            numpyro.sample("obs", dist.Normal(z, 1), obs=y[idx])
    target = dx.models.from_numpyro(model, jnp.zeros(6))
    assert target.dim == 6 and target.data_likelihood is None


def test_param_sites_are_fixed_at_their_values():
    """A model with a ``numpyro.param`` site is built eagerly, as NumPyro's initialize_model does
    (the param is fixed at its value in the trace): log p(x) = log N(x | 1.5, 1), x the only latent."""
    def model():
        c = numpyro.param("c", 1.5)
        numpyro.sample("x", dist.Normal(c, 1.0))

    target = from_numpyro(model)
    assert target.dim == 1 and target.shapes == {"x": ()}
    xs = jnp.array([[0.3], [-2.0]])
    hand = -0.5 * (np.array([0.3, -2.0]) - 1.5) ** 2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(jax.jit(jax.vmap(target.logdensity_fn))(xs), hand, rtol=1e-6)
