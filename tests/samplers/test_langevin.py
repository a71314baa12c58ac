"""MALA kernel: the Metropolis-Hastings ratio against the textbook formula, BlackJAX interop, divergences."""
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from driftax.samplers import langevin, mala


def _gaussian(dim, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    prec = a @ a.T / dim + np.eye(dim)
    mean = rng.normal(size=dim)
    prec_j, mean_j = jnp.asarray(prec, jnp.float32), jnp.asarray(mean, jnp.float32)
    return (lambda x: -0.5 * (x - mean_j) @ prec_j @ (x - mean_j)), mean, np.linalg.inv(prec)


@pytest.mark.parametrize("kind", ["identity", "diag", "dense"])
def test_acceptance_equals_textbook_hastings_ratio(kind):
    """The kernel's alpha must equal p(x')q(x|x') / p(x)q(x'|x) computed with explicit Gaussian
    proposal densities q(.|x) = N(x + h A grad, 2 h A) (scipy), not the cancelled form in the code.
    Both branches run: the acceptance uniform u = Phi(z_last) is set just below alpha (must accept)
    or just above it (must reject) from the reference alpha, with a step large enough (h = 0.6) that
    alpha < 1 on most trials."""
    dim, h = 5, 0.6
    logp, _, _ = _gaussian(dim)
    rng = np.random.default_rng(1)
    b = rng.normal(size=(dim, dim))
    imm = {"identity": None, "diag": rng.uniform(0.5, 2.0, dim), "dense": b @ b.T / dim + np.eye(dim)}[kind]
    a = np.eye(dim) if imm is None else (np.diag(imm) if np.ndim(imm) == 1 else imm)
    root = np.linalg.cholesky(a)
    grad = jax.grad(logp)
    outcomes = []
    with jax.enable_x64(True):
        for trial in range(24):
            x = rng.normal(size=dim)
            xi = rng.normal(size=dim)
            mean_fwd = x + h * a @ np.asarray(grad(jnp.asarray(x)))
            xp = mean_fwd + np.sqrt(2 * h) * root @ xi
            q_fwd = stats.multivariate_normal(mean_fwd, 2 * h * a).logpdf(xp)
            q_bwd = stats.multivariate_normal(xp + h * a @ np.asarray(grad(jnp.asarray(xp))), 2 * h * a).logpdf(x)
            alpha = min(1.0, float(np.exp(float(logp(jnp.asarray(xp)) - logp(jnp.asarray(x))) + q_bwd - q_fwd)))
            if not 1e-12 < alpha < 0.9:  # u must fit 10% above alpha and below 1
                continue
            u = alpha * (0.9 if trial % 2 else 1.1)
            must_accept = u < alpha
            noise = jnp.asarray(np.append(xi, stats.norm.ppf(u)))
            state = langevin.init(jnp.asarray(x), logp)
            new, info = langevin.step(state, noise, logp, h, None if imm is None else jnp.asarray(imm))
            np.testing.assert_allclose(float(info.acceptance_rate), alpha, rtol=1e-9, atol=1e-12)
            assert bool(info.is_accepted) == must_accept
            np.testing.assert_allclose(np.asarray(new.position), xp if must_accept else x, rtol=1e-12)
            outcomes.append(must_accept)
    assert outcomes.count(True) >= 3 and outcomes.count(False) >= 3, outcomes


def test_runs_inside_blackjax_loop_and_accepts_blackjax_state():
    """Interchangeable with BlackJAX: our SamplingAlgorithm in blackjax's loop, blackjax's state in our kernel.
    Ground truth: the 1-d N(0, 1) target; 20k draws with autocorrelation time < 5 give an MC sd of the
    mean below sqrt(5/20000) = 0.016, so 0.07 is > 4 sd."""
    logp = lambda x: -0.5 * jnp.sum(x**2)
    alg = mala(logp, 0.8)
    _, draws = blackjax.util.run_inference_algorithm(
        jax.random.key(0), alg, 20_000, initial_position=jnp.zeros(1), transform=lambda s, i: s.position)
    assert abs(float(draws.mean())) < 0.07 and abs(float(draws.std()) - 1) < 0.07
    bj_state = blackjax.mala.init(jnp.zeros(1), logp)
    new, info = langevin.build_kernel()(jax.random.key(1), bj_state, logp, 0.8)
    assert new.position.shape == (1,) and 0 <= float(info.acceptance_rate) <= 1


def test_pytree_positions():
    """A pytree position takes exactly the step its flattened vector takes on the same noise."""
    logp_tree = lambda p: -0.5 * (jnp.sum(p["a"] ** 2 * jnp.arange(1.0, 4.0)) + 3.0 * p["b"] ** 2)
    logp_flat = lambda x: -0.5 * (jnp.sum(x[:3] ** 2 * jnp.arange(1.0, 4.0)) + 3.0 * x[3] ** 2)
    tree = {"a": jnp.array([1.0, -0.5, 0.25]), "b": jnp.array(0.5)}
    flat = jnp.concatenate([tree["a"], tree["b"][None]])
    kernel = langevin.build_kernel()
    step_tree = jax.jit(lambda k, s: kernel(k, s, logp_tree, 0.5))  # compiled once each: 20 steps
    step_flat = jax.jit(lambda k, s: kernel(k, s, logp_flat, 0.5))
    s_tree, s_flat = langevin.init(tree, logp_tree), langevin.init(flat, logp_flat)
    for k in jax.random.split(jax.random.key(0), 20):
        s_tree, i_tree = step_tree(k, s_tree)
        s_flat, i_flat = step_flat(k, s_flat)
        assert bool(i_tree.is_accepted) == bool(i_flat.is_accepted)
        np.testing.assert_allclose(s_tree.position["a"], s_flat.position[:3], rtol=1e-6)
        np.testing.assert_allclose(s_tree.position["b"], s_flat.position[3], rtol=1e-6)
        np.testing.assert_allclose(s_tree.logdensity, s_flat.logdensity, rtol=1e-6)
    assert s_tree.position["a"].shape == (3,) and s_tree.position["b"].shape == ()


def test_nan_region_is_rejected_and_flagged():
    """A log-density that is NaN for x > 1: proposals there are rejected, counted as divergent, never kept."""
    logp = lambda x: jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))
    kernel = langevin.build_kernel()
    state = langevin.init(jnp.zeros(2), logp)

    def body(s, k):
        s, info = kernel(k, s, logp, 1.0)
        return s, (s.position, info.diverging)

    _, (xs, div) = jax.lax.scan(body, state, jax.random.split(jax.random.key(0), 2000))
    assert np.all(np.isfinite(xs)) and np.all(np.asarray(xs)[:, 0] <= 1.0)
    assert int(div.sum()) > 50


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_step_size(bad):
    with pytest.raises(ValueError, match="step_size"):
        mala(lambda x: -jnp.sum(x**2), bad)


def test_builds_and_steps_inside_jit():
    """Like blackjax.mala, the algorithm can be built inside a jitted function (step size traced or not)."""
    logp = lambda x: -0.5 * jnp.sum(x**2)

    @jax.jit
    def one(key, x, h):
        a, b = mala(logp, 0.1), mala(logp, h)
        return a.step(key, a.init(x))[0].position, b.step(key, b.init(x))[0].position

    xa, xb = one(jax.random.key(0), jnp.ones(3), 0.1)
    np.testing.assert_allclose(xa, xb)


@pytest.mark.parametrize("imm, match", [
    (np.array([1.0, -1.0]), "finite and positive"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
    (np.ones((2, 3)), "vector .* or a matrix"),
])
def test_bad_inverse_mass_matrix(imm, match):
    with pytest.raises(ValueError, match=match):
        mala(lambda x: -jnp.sum(x**2), 0.1, imm)
