from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.optimize

from driftax import transport as tr
from driftax.transport import bures


def _gaussians(d, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    return rng.normal(size=d), X @ X.T / d + 0.3 * np.eye(d), rng.normal(size=d), Y @ Y.T / d + 0.3 * np.eye(d)


# --------------------------------------------------------------------------- a 60-digit reference for B^2
# Independent of the code under test: cyclic Jacobi eigenvalue iterations in Python's decimal arithmetic
# (60 significant digits) on the exact binary values of the inputs, then the trace formula, whose
# cancellation costs nothing at that precision for the values of B^2 (>= 1e-25) tested here.

def _jacobi(a):
    n = len(a)
    a = [row[:] for row in a]
    v = [[Decimal(int(i == j)) for j in range(n)] for i in range(n)]
    for _ in range(100):
        off = sum(a[i][j] ** 2 for i in range(n) for j in range(n) if i != j)
        if off <= Decimal(10) ** -110 * (sum(a[i][i] ** 2 for i in range(n)) + Decimal(10) ** -110):
            break
        for p in range(n):
            for q in range(p + 1, n):
                if a[p][q] == 0:
                    continue
                theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                t = (1 if theta >= 0 else -1) / (abs(theta) + (theta * theta + 1).sqrt())
                c = 1 / (t * t + 1).sqrt()
                s = t * c
                for k in range(n):
                    a[k][p], a[k][q] = c * a[k][p] - s * a[k][q], s * a[k][p] + c * a[k][q]
                for k in range(n):
                    a[p][k], a[q][k] = c * a[p][k] - s * a[q][k], s * a[p][k] + c * a[q][k]
                for k in range(n):
                    v[k][p], v[k][q] = c * v[k][p] - s * v[k][q], s * v[k][p] + c * v[k][q]
    return [a[i][i] for i in range(n)], v


def _bures2_reference(s1, s2) -> float:
    with localcontext() as ctx:
        ctx.prec = 60
        n = s1.shape[0]
        a = [[Decimal(float(s1[i, j])) for j in range(n)] for i in range(n)]
        b = [[Decimal(float(s2[i, j])) for j in range(n)] for i in range(n)]
        w, v = _jacobi(a)
        sq = [max(x, Decimal(0)).sqrt() for x in w]
        r = [[sum(v[i][k] * sq[k] * v[j][k] for k in range(n)) for j in range(n)] for i in range(n)]
        rb = [[sum(r[i][k] * b[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        c, _ = _jacobi([[sum(rb[i][k] * r[k][j] for k in range(n)) for j in range(n)] for i in range(n)])
        return float(sum(a[i][i] + b[i][i] for i in range(n)) - 2 * sum(max(x, Decimal(0)).sqrt() for x in c))


def _documented_bound(s1, s2, dtype) -> float:
    """The error bound on B^2 stated in the bures module docstring (smaller of map-form and trace-form bounds),
    evaluated here in float64 NumPy from the inputs (not from the code under test)."""
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    d, eps = s1.shape[0], float(np.finfo(dtype).eps)
    e1, e2 = np.linalg.eigvalsh(s1), np.linalg.eigvalsh(s2)
    l2 = (e1[-1] + e2[-1]) ** 2
    dc = 8 * d * eps * l2
    lc = np.linalg.cholesky(s1) if e1[0] > 0 else np.real(scipy.linalg.sqrtm(s1))
    p = np.sqrt(np.clip(np.linalg.eigvalsh(lc.T @ s2 @ lc), 0, None))  # eigenvalues of (S1^1/2 S2 S1^1/2)^1/2
    trace_bound = 8 * d * eps * (e1.sum() + e2.sum()) + 2 * np.sum(
        [min(dc / (2 * q), np.sqrt(dc)) if q > 0 else np.sqrt(dc) for q in p])
    if e1[0] <= 0 or e2[0] <= 0 or p.min() <= 0:
        return trace_bound
    base = e1 if e1[-1] / e1[0] <= e2[-1] / e2[0] else e2
    big_k = base[-1] / base[0] + l2 / (p.min() * base[0])
    return min(8 * d * eps * big_k * _bures2_reference(s1, s2), trace_bound)


def _nearby(d, kappa, offset, seed, dtype):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1 = (q * np.geomspace(1.0, 1.0 / kappa, d)) @ q.T
    e = rng.normal(size=(d, d))
    s2 = s1 + offset / kappa * (e + e.T) / 2
    s1, s2 = (((x + x.T) / 2).astype(dtype) for x in (s1, s2))
    return rng.normal(size=d).astype(dtype), s1, s2


@pytest.mark.parametrize("d", [1, 3, 6])
def test_w2_matches_pot_and_scipy_sqrtm(x64, d):
    m1, S1, m2, S2 = _gaussians(d, d)
    ref_pot = ot.gaussian.bures_wasserstein_distance(m1, m2, S1, S2)
    r1 = scipy.linalg.sqrtm(S1).real
    ref_scipy = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * scipy.linalg.sqrtm(r1 @ S2 @ r1).real))
    # Far-apart pairs (W2 ~ 1-3): POT and scipy use the trace formula, whose error here (module bound,
    # 8 d eps (tr S1 + tr S2) / W2^2) is below 1e-13 relative; scipy's Schur-based sqrtm adds ~1e-14.
    # 1e-10 relative is far above both and far below any formula error (a wrong term is O(1)).
    assert float(bures.w2(m1, S1, m2, S2)) == pytest.approx(float(ref_pot), rel=1e-10)
    assert float(bures.w2(m1, S1, m2, S2)) == pytest.approx(ref_scipy, rel=1e-10)
    # Equal Gaussians: the documented bound of the map form is 8 d eps K B^2 = 0 (the difference S2 - S1 is
    # exactly 0, so every term of the sum of squares is), on any machine; the trace formula gave ~1e-7 here.
    assert float(bures.w2(m1, S1, m1, S1)) == 0.0
    assert float(bures.w2(m1.astype(np.float32), S1.astype(np.float32), m1.astype(np.float32),
                          S1.astype(np.float32))) == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d,kappa", [(3, 1.0), (6, 30.0)])
def test_w2_nearby_gaussians_against_high_precision(x64, dtype, d, kappa):
    # The tolerance is the documented bound (module docstring) evaluated independently, against a 60-digit
    # reference on the exact binary inputs; the offsets go down to where float32 can still hold S2 != S1.
    offsets = [1e-1, 1e-4, 1e-8, 1e-12] if dtype == np.float64 else [1e-1, 1e-3, 1e-5]
    for i, offset in enumerate(offsets):
        m1, s1, s2 = _nearby(d, kappa, offset, seed=10 * d + i, dtype=dtype)
        m2 = (m1 + dtype(offset) * np.arange(1, d + 1, dtype=dtype)).astype(dtype)
        ref_b2 = _bures2_reference(s1, s2)
        with localcontext() as ctx:
            ctx.prec = 60
            ref_m = float(sum((Decimal(float(a)) - Decimal(float(b))) ** 2 for a, b in zip(m1, m2)))
        assert ref_b2 > 0
        got_b2 = float(bures.bures_squared(s1, s2))
        assert abs(got_b2 - ref_b2) <= _documented_bound(s1, s2, dtype), (offset, got_b2, ref_b2)
        eps = float(np.finfo(dtype).eps)
        got = float(bures.w2_squared(m1, s1, m2, s2))
        assert bures.w2_squared(m1, s1, m2, s2).dtype == dtype
        assert abs(got - ref_m - ref_b2) <= _documented_bound(s1, s2, dtype) + 2 * d * eps * ref_m
        # the point of the map form: relative accuracy at every offset (the trace formula loses it all
        # below offset ~ sqrt(eps)); with K <= 4 kappa^2 + kappa the bound is <= 8 d eps K relative
        assert abs(got_b2 - ref_b2) <= 8 * d * eps * (4 * kappa**2 + 6 * kappa) * ref_b2


def test_w2_commuting_closed_form(x64):
    # S2 = c S1 commutes with S1: B^2 = (1 - sqrt c)^2 tr S1 = ((c - 1) / (1 + sqrt c))^2 tr S1, evaluated
    # without cancellation (relative rounding ~4 eps). S1 has small-integer entries and c = 1 + 2^-k, so
    # c S1 is exact in float64 and the closed form is the truth for the very inputs.
    a = np.array([[2.0, 1, 0, -1], [0, 3, 1, 0], [1, 0, 2, 1], [0, -1, 1, 3]])
    s1 = a @ a.T
    m = np.array([1.0, -2.0, 0.5, 3.0])
    for k in (3, 20, 40):
        c = 1.0 + 2.0**-k
        s2 = c * s1
        assert np.array_equal(s2 / c, s1)
        exact = ((c - 1) / (1 + np.sqrt(c))) ** 2 * np.trace(s1)
        got = float(bures.bures_squared(s1, s2))
        assert abs(got - exact) <= _documented_bound(s1, s2, np.float64) + 4 * np.finfo(float).eps * exact
        assert float(bures.w2(m, s1, m, s2)) == pytest.approx(np.sqrt(exact), rel=1e-12)
    # the trace formula (old code) on the k = 40 pair: error ~ d eps tr S1 = 1e-13 for B^2 = 1e-24 * tr S1
    # would be off by a factor 1e10; the map form is within the bound above (relative ~1e-15).


def test_bures_rejects_non_psd_and_bad_values():
    z, eye = np.zeros(2), np.eye(2)
    with pytest.raises(ValueError, match="covariance s1 must be positive semi-definite"):
        bures.w2(z, -eye, z, eye)
    with pytest.raises(ValueError, match="covariance s2 must be positive semi-definite"):
        bures.w2_squared(z, eye, z, np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="covariance s2 must be symmetric"):
        bures.w2(z, eye, z, np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="covariance s1 must be finite"):
        bures.bures_squared(np.array([[np.nan, 0], [0, 1.0]]), eye)
    with pytest.raises(ValueError, match="mean m2 must be finite"):
        bures.w2(z, eye, np.array([0.0, np.inf]), eye)
    with pytest.raises(ValueError, match="covariance s must be positive semi-definite"):
        bures.sqrtm(-eye)
    with pytest.raises(ValueError, match="covariance s must be positive definite"):
        bures.inv_sqrtm(np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="covariance s1 must be positive definite"):
        bures.transport_map(np.diag([1.0, 0.0]), eye)
    with pytest.raises(ValueError, match="covariance s1 must be positive semi-definite"):
        bures.entropic_ot(z, -eye, z, eye, 1.0)
    with pytest.raises(ValueError, match="covariance s must be positive semi-definite"):
        bures.exp_map(z, -eye, z, eye)
    # PSD up to round-off is accepted: a rank-3 X X^T in 6-D has eigenvalues ~ -1e-16 |S| in float64
    x = np.random.default_rng(0).normal(size=(6, 3))
    s = x @ x.T
    assert np.isfinite(float(bures.w2(np.zeros(6), s, np.zeros(6), np.eye(6))))
    assert np.all(np.isfinite(np.asarray(bures.sqrtm(s))))
    # traced values cannot be checked: under jit only shapes are (the same numbers come out)
    assert float(jax.jit(bures.w2)(z, 2 * eye, z, eye)) == pytest.approx(float(bures.w2(z, 2 * eye, z, eye)),
                                                                         rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sqrtm_near_singular(x64, dtype):
    # S = Q diag(lam) Q^T with exact zeros and tiny eigenvalues. Truth: Q diag(sqrt lam) Q^T. The
    # eigendecomposition is exact for a matrix within 8 d eps |S| of S (backward stability; 8 the convention
    # of the module bound), the square root is operator monotone so |A^1/2 - B^1/2| <= |A - B|^1/2
    # (Bhatia, Matrix Analysis, X.1), hence the error bound sqrt(2 * 8 d eps |S|) + rounding of the
    # product (8 d eps |S|^1/2); and the residual |sqrtm(S)^2 - S| <= 2 * 8 d eps |S| (clipping a
    # negative round-off eigenvalue moves it by at most the backward error).
    d = 6
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.array([1.0, 0.3, 1e-4, 1e-10, 0.0, 0.0])
    s = ((q * lam) @ q.T).astype(dtype)
    eps = float(np.finfo(dtype).eps)
    nrm = float(np.linalg.norm(s.astype(np.float64), 2))
    r = np.asarray(bures.sqrtm(s), np.float64)
    assert r.dtype == np.float64 and np.all(np.isfinite(r))
    assert np.array_equal(r, r.T) and np.linalg.eigvalsh(r)[0] >= -8 * d * eps * np.sqrt(nrm)
    exact = (q * np.sqrt(lam)) @ q.T
    assert np.linalg.norm(r - exact, 2) <= np.sqrt(16 * d * eps * nrm) + 8 * d * eps * np.sqrt(nrm)
    assert np.linalg.norm(r @ r - s.astype(np.float64), 2) <= 16 * d * eps * nrm + 8 * d * eps * nrm


@pytest.mark.parametrize("dtype,kappa", [(np.float64, 1e10), (np.float32, 1e4)])
def test_inv_sqrtm_near_singular(x64, dtype, kappa):
    # Relative error of S^{-1/2} for condition number kappa: forming S rounds it by ~d eps |S|, which moves
    # lambda_min by a relative d eps kappa and lambda_min^{-1/2} by half that; eigenvectors of the well-
    # separated spectrum (ratio 100 between neighbours at most) move by eps |S| / gap <= eps kappa. Bound:
    # 8 d kappa eps (8: the convention of the module bound).
    d = 6
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.geomspace(1.0, 1.0 / kappa, d)
    s = ((q * lam) @ q.T).astype(dtype)
    s = (s + s.T) / 2
    got = np.asarray(bures.inv_sqrtm(s), np.float64)
    exact = (q / np.sqrt(lam)) @ q.T
    eps = float(np.finfo(dtype).eps)
    assert np.linalg.norm(got - exact, 2) <= 8 * d * kappa * eps * np.linalg.norm(exact, 2)


def _one_dimensional_samples_error(seed):
    m1, s1, m2, s2 = 0.3, 1.2, -0.5, 0.7
    n = 1_000_000
    rng = np.random.default_rng(seed)
    x = np.sort(m1 + s1 * rng.normal(size=n))
    y = np.sort(m2 + s2 * rng.normal(size=n))
    emp = np.mean((x - y) ** 2)
    exact = float(bures.w2_squared(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]])))
    assert exact == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)
    # CLT for the empirical W2^2 of two independent n-samples (del Barrio, Gonzalez-Sanz & Loubes 2024):
    # variance (Var f(X) + Var g(Y)) / n with the Kantorovich potentials; for 1-D Gaussians
    # f(m1 + s1 z) = 2 s1 (m1 - m2) z + s1 (s1 - s2) z^2 + const (and symmetrically g), so
    # Var = [4 (m1 - m2)^2 (s1^2 + s2^2) + 2 (s1 - s2)^2 (s1^2 + s2^2)] / n: sd 2.43e-3 here (the first
    # term dominates). Measured over 100 seeds: sd 2.15e-3, mean error -2.1e-4 +- 2.2e-4 (no visible bias).
    sd = np.sqrt((4 * (m1 - m2) ** 2 + 2 * (s1 - s2) ** 2) * (s1**2 + s2**2) / n)
    return emp - exact, sd


def test_w2_one_dimensional_samples(x64):
    err, sd = _one_dimensional_samples_error(0)
    assert abs(err) <= 4.5 * sd      # 4.5 sd: two-sided false-alarm probability 7e-6


def _map_cost_monte_carlo_error(seed):
    m1, S1, m2, S2 = _gaussians(3, 7)
    T = np.asarray(bures.transport_map(S1, S2))
    n = 400_000
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(m1, S1, size=n)
    Y = m2 + (X - m1) @ T.T
    mc = np.mean(np.sum((X - Y) ** 2, axis=1))
    # X - Y = b + A z with b = m1 - m2, A = (I - T) S1^{1/2}, z ~ N(0, I): Var |b + A z|^2 =
    # 2 tr((A A^T)^2) + 4 b^T A A^T b exactly, so the sd of the mean is known (6.1e-3 here, W2^2 = 3.4)
    aat = (np.eye(3) - T) @ S1 @ (np.eye(3) - T)
    b = m1 - m2
    sd = np.sqrt((2 * np.trace(aat @ aat) + 4 * b @ aat @ b) / n)
    return mc - float(bures.w2_squared(m1, S1, m2, S2)), sd


def test_w2_is_the_cost_of_the_bures_map(x64):
    # Exact identities of the optimal (Brenier) map: T is the unique symmetric positive-definite matrix with
    # T S1 T = S2, and its cost E|X - TX|^2 = tr((T - I) S1 (T - I)) equals B^2 (checked against the
    # 60-digit reference). Rounding: T = S1^{-1/2} (S1^{1/2} S2 S1^{1/2})^{1/2} S1^{-1/2} carries a relative
    # error <= 8 d kappa eps per inverse square root (inv_sqrtm bound), so T S1 T is within
    # 4 * 8 d kappa eps |S2| of S2 (kappa = cond S1 = 5.4 here).
    m1, S1, m2, S2 = _gaussians(3, 7)
    d, eps = 3, np.finfo(float).eps
    kappa = np.linalg.cond(S1)
    T = np.asarray(bures.transport_map(S1, S2))
    assert np.array_equal(T, T.T)
    assert np.linalg.eigvalsh(T)[0] > 0
    assert np.linalg.norm(T @ S1 @ T - S2, 2) <= 4 * 8 * d * kappa * eps * np.linalg.norm(S2, 2)
    ref = _bures2_reference(S1, S2)
    cost = np.trace((T - np.eye(d)) @ S1 @ (T - np.eye(d)))
    assert cost == pytest.approx(ref, rel=4 * 8 * d * kappa * eps * np.linalg.norm(T, 2) ** 2 * np.trace(S1) / ref)
    # a transport that is not optimal must fail these checks: T' = S2^{1/2} S1^{-1/2} also pushes N(., S1)
    # to N(., S2) but is not symmetric and costs strictly more (by 0.014 here, 1e10 times the tolerance above)
    Tp = scipy.linalg.sqrtm(S2).real @ np.linalg.inv(scipy.linalg.sqrtm(S1).real)
    np.testing.assert_allclose(Tp @ S1 @ Tp.T, S2, atol=1e-12)
    assert np.abs(Tp - Tp.T).max() > 1e-3
    assert np.trace((Tp - np.eye(d)) @ S1 @ (Tp - np.eye(d)).T) > ref + 0.01
    # and on samples: the Monte Carlo cost of the map matches W2^2 within 4.5 of its exact sd
    err, sd = _map_cost_monte_carlo_error(1)
    assert abs(err) <= 4.5 * sd


def test_geodesic_constant_speed_and_exp_log(x64):
    m1, S1, m2, S2 = _gaussians(3, 3)
    w = float(bures.w2(m1, S1, m2, S2))
    ma, Sa = bures.geodesic(m1, S1, m2, S2, 0.25)
    mb, Sb = bures.geodesic(m1, S1, m2, S2, 0.75)
    assert float(bures.w2(ma, Sa, mb, Sb)) == pytest.approx(0.5 * w, rel=1e-8)
    m0, S0 = bures.geodesic(m1, S1, m2, S2, 0.0)
    m_1, S_1 = bures.geodesic(m1, S1, m2, S2, 1.0)
    np.testing.assert_allclose(S0, S1, atol=1e-10)
    np.testing.assert_allclose(S_1, S2, atol=1e-10)
    v, V = bures.log_map(m1, S1, m2, S2)
    me, Se = bures.exp_map(m1, S1, v, V)
    np.testing.assert_allclose(me, m2, atol=1e-12)
    np.testing.assert_allclose(Se, S2, atol=1e-10)


def _entropic_by_optimisation(m1, S1, m2, S2, eps):
    # independent route: minimise E|x-y|^2 + eps KL over Gaussian couplings with cross-covariance K;
    # KL(pi | mu x nu) = -1/2 log det(I - S2^{-1} K^T S1^{-1} K)
    d = len(m1)

    def obj(k):
        K = k.reshape(d, d)
        M = np.eye(d) - np.linalg.solve(S2, K.T @ np.linalg.solve(S1, K))
        s, ld = np.linalg.slogdet(M)
        return 1e10 if s <= 0 else np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * K) - 0.5 * eps * ld

    res = scipy.optimize.minimize(obj, np.zeros(d * d), method="Nelder-Mead",
                                  options=dict(xatol=1e-12, fatol=1e-14, maxiter=40_000))
    return res.fun


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_entropic_closed_form_matches_optimisation(x64, eps):
    m1, S1, m2, S2 = _gaussians(2, 11)
    assert float(bures.entropic_ot(m1, S1, m2, S2, eps)) == pytest.approx(
        _entropic_by_optimisation(m1, S1, m2, S2, eps), rel=1e-7)


def test_entropic_tends_to_w2(x64):
    m1, S1, m2, S2 = _gaussians(3, 5)
    w2 = float(bures.w2_squared(m1, S1, m2, S2))
    gaps = [float(bures.entropic_ot(m1, S1, m2, S2, e)) - w2 for e in (1e-2, 1e-4, 1e-6)]
    assert abs(gaps[2]) < abs(gaps[1]) < abs(gaps[0])
    assert abs(gaps[2]) < 1e-4


def _entropic_sample_error(first_seed):
    m1, S1, m2, S2 = _gaussians(2, 11)
    eps = 1.0
    exact = float(bures.entropic_ot(m1, S1, m2, S2, eps))
    ests, var = [], []
    n = 1500
    for seed in range(first_seed, first_seed + 4):
        rng = np.random.default_rng(seed)
        x = rng.multivariate_normal(m1, S1, size=n)
        y = rng.multivariate_normal(m2, S2, size=n)
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
        res = tr.sinkhorn(None, None, C, eps, tol=1e-9)
        assert bool(res.converged)
        ests.append(float(res.reg_cost) + eps * np.log(n * n))
        var.append(np.var(np.asarray(res.f)) + np.var(np.asarray(res.g)))
    # CLT for entropic OT between empirical measures (Mena & Weed 2019; del Barrio, Gonzalez-Sanz, Loubes &
    # Niles-Weed 2023): sqrt(n) (OT_eps(mu_n, nu_n) - OT_eps(mu, nu)) -> N(0, Var_mu f + Var_nu g), f, g the
    # entropic potentials, estimated here by the Sinkhorn potentials of each replicate: sd of the mean of 4
    # replicates = sqrt(mean(Var f + Var g) / (4 n)) ~ 0.058 for this pair (value 5.64). Measured over 24
    # seeds at n = 1500: sd 0.094 per replicate (0.047 for the mean of 4, the formula is conservative) and a
    # mean error of -0.027 +- 0.019 (the O(1/n) bias), allowed for by 0.065 = |mean| + 2 SE.
    sd = np.sqrt(np.mean(var) / (4 * n))
    return np.mean(ests) - exact, sd


def test_entropic_closed_form_vs_sinkhorn_on_samples():
    # Sample estimate: OT_eps between empirical measures of n draws (KL relative to the product of the
    # empirical marginals: reg_cost + eps log(n m) for uniform weights).
    err, sd = _entropic_sample_error(100)
    assert abs(err) <= 4.5 * sd + 0.065


def test_bad_shapes():
    with pytest.raises(ValueError, match="covariance s1 must have shape"):
        bures.w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="dimensions differ"):
        bures.w2(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="epsilon must be positive"):
        bures.entropic_ot(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), 0.0)


def test_vmap_w2(x64):
    m = jnp.zeros((4, 2))
    S = jnp.stack([jnp.eye(2) * (i + 1.0) for i in range(4)])
    out = jax.vmap(bures.w2_squared)(m, S, m, jnp.stack([jnp.eye(2)] * 4))
    np.testing.assert_allclose(out, [2 * (np.sqrt(i + 1.0) - 1) ** 2 for i in range(4)], rtol=1e-10)
