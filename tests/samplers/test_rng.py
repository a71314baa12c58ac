"""samplers.rng.normal: the distribution, independence across blocks and devices, the documented
tail cut, and reproducibility. Truths: the standard normal (scipy), and the sampling distributions
of the statistics under independence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from driftax.samplers import rng

N = 1 << 20  # 1M normals per check


def _stream(seed, n=N, d=0):
    """The stream the sampling loop gives device ``d`` for seed ``seed`` (infer/run.py's layout)."""
    key = jax.random.fold_in(jax.random.split(jax.random.key(seed))[1], d)
    return rng.state_from_key(key)


@pytest.mark.parametrize("seed", [0, 1])
def test_standard_normal_distribution(seed):
    """KS against N(0, 1) at level 1e-3: with 1M draws it detects any CDF error above 1.95/sqrt(N) =
    0.0019 (for instance a 1% error in the variance moves the CDF by 0.0024 at |z| = 1). Moments:
    each within 4.5 of its standard error under normality (mean 1/sqrt(N), variance sqrt(2/N),
    skewness sqrt(6/N), excess kurtosis sqrt(24/N)); the tail cut (below) moves them by < 1e-6."""
    _, z = jax.jit(lambda s: rng.normal(s, (N,)))(_stream(seed))
    z = np.asarray(z, np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 4.5 / np.sqrt(N)
    assert abs(z.var() - 1) < 4.5 * np.sqrt(2 / N)
    assert abs(stats.skew(z)) < 4.5 * np.sqrt(6 / N)
    assert abs(stats.kurtosis(z)) < 4.5 * np.sqrt(24 / N)


def test_blocks_and_devices_are_independent():
    """Successive blocks of one stream, and the streams of four devices, are uncorrelated: under
    independence each sample correlation of N pairs is ~ N(0, 1/N); 4.5/sqrt(N) over 8 pairs fails
    with probability 5e-5. Lag-1 correlation inside a block is checked the same way."""
    s = _stream(3)
    s, a = rng.normal(s, (N,))
    s, b = rng.normal(s, (N,))
    devices = [np.asarray(rng.normal(_stream(3, d=d), (N,))[1]) for d in range(4)]
    pairs = [(a, b), (a[:-1], a[1:])] + [(devices[i], devices[j]) for i in range(4) for j in range(i + 1, 4)]
    for u, v in pairs:
        assert abs(np.corrcoef(np.asarray(u), np.asarray(v))[0, 1]) < 4.5 / np.sqrt(N)
    # block shape does not matter to the distribution: a (chains, steps) block is N(0, 1) per column
    _, blk = rng.normal(_stream(4), (1024, 64))
    col_means = np.asarray(blk).mean(0)
    assert stats.kstest(col_means * np.sqrt(1024), "norm").pvalue > 1e-3


def test_documented_tail_cut():
    """The uniform lies in [-1 + 2^-24, 1 - 2^-22]: every draw lies in [z_lo, z_hi] computed here with
    scipy in float64 (float32 erfinv adds < 1e-5), and the cut probabilities are those documented."""
    z_lo = np.sqrt(2) * special.erfinv(-1 + 2.0**-24)
    z_hi = np.sqrt(2) * special.erfinv(1 - 2.0**-22)
    assert z_lo == pytest.approx(-5.42, abs=0.005) and z_hi == pytest.approx(5.17, abs=0.005)
    assert stats.norm.cdf(z_lo) == pytest.approx(3e-8, rel=0.01) and stats.norm.sf(z_hi) == pytest.approx(1.2e-7, rel=0.01)
    _, z = jax.jit(lambda s: rng.normal(s, (8 * N,)))(_stream(5))
    assert float(z.min()) >= z_lo - 1e-5 and float(z.max()) <= z_hi + 1e-5


def test_same_state_same_stream_and_dtype():
    s = _stream(6)
    s1, a = rng.normal(s, (4, 5))
    s2, b = rng.normal(s, (4, 5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s)
    _, c = rng.normal(_stream(7), (4, 5))
    assert not np.allclose(a, c)
    with jax.enable_x64(True):
        _, d = rng.normal(s, (4, 5), jnp.float64)
        assert d.dtype == jnp.float64
        # float64 output is the float32 draw widened (documented: 23-bit uniforms in either dtype)
        np.testing.assert_array_equal(np.asarray(d), np.asarray(a, np.float64))
