"""Issue 14: one keyword vocabulary for the solvers (old names keep working with a warning), and batched solves
(vmap, sharded) that equal single solves."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from driftax import transport as tr
from tests.transport.conftest import plan_np, point_clouds
from tests.transport.test_sns import PROBLEMS, _l1_grid_problem


def test_shared_keywords_work_for_both_solvers():
    # (10 x 8: the padded size of test_validation.py's problem, whose SNS warm start and budget programs it shares;
    # Sinkhorn takes 100 of the 200 sweeps allowed, SNS's default cap of Newton steps)
    a, b, C = point_clouds(10, 8, weights=True, seed=40)
    f0, g0 = np.zeros(10), np.zeros(8)
    for solver in (tr.sinkhorn, tr.sns):
        res = solver(a, b, C, 0.02, tol=1e-9, max_iter=200, norm="l2", init=(f0, g0), dtype=np.float64,
                     history_every=2)
        assert bool(res.converged) and res.f.dtype == np.float64
        P = plan_np(res)  # the reported error is the l2 one, recomputed independently
        err = np.sqrt(((P.sum(1) - a) ** 2).sum()) + np.sqrt(((P.sum(0) - b) ** 2).sum())
        assert abs(err - float(res.marginal_error)) <= 1e-14


def test_sns_history_every_keeps_every_kth_entry():
    # (the problem of test_sns.py: the full solve is compiled there, the strided one differs in assembly only)
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    full = tr.sns(a, b, C, eps, tol=1e-10)
    strided = tr.sns(a, b, C, eps, tol=1e-10, history_every=3)
    h, h3 = np.asarray(full.errors), np.asarray(strided.errors)
    assert h3.shape == (-(-h.shape[0] // 3),)
    for t in range(h3.shape[0]):
        block = h[3 * t:3 * t + 3]
        valid = block[block >= 0]
        assert h3[t] == (valid[-1] if valid.size else -1.0)
    assert int(strided.iterations) == int(full.iterations)


def test_old_sns_keywords_warn_and_still_work():
    # (the solve of test_sns.py::test_sns_history_and_counts: compiled once for the three spellings)
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    new = tr.sns(a, b, C, eps, tol=1e-10, max_iter=200, options=tr.SNSOptions(warm_start=20))
    with pytest.warns(FutureWarning, match=r"max_iter"):
        old = tr.sns(a, b, C, eps, tol=1e-10, max_newton=200, options=tr.SNSOptions(warm_start=20))
    assert int(old.iterations) == int(new.iterations)
    np.testing.assert_array_equal(np.asarray(old.f), np.asarray(new.f))
    with pytest.warns(FutureWarning, match=r"options=SNSOptions\(warm_start=\.\.\.\)"):
        old = tr.sns(a, b, C, eps, tol=1e-10, max_iter=200, warm_start=20)
    np.testing.assert_array_equal(np.asarray(old.f), np.asarray(new.f))
    with pytest.raises(TypeError, match="both max_iter and its old name max_newton"):
        tr.sns(a, b, C, eps, max_iter=5, max_newton=5)


def test_unknown_keywords_name_the_accepted_ones():
    a, b, C = point_clouds(10, 10, seed=43)
    with pytest.raises(TypeError, match=r"'bogus'; accepted keywords: tol, max_iter, norm, init, dtype, "
                                        r"history_every, options.*warm_start, continuation"):
        tr.sns(a, b, C, 0.1, bogus=1)
    with pytest.raises(TypeError, match=r"'warm_start'.*accepted keywords: tol, max_iter, norm, init, dtype, "
                                        r"history_every, epsilon_scaling"):
        tr.sinkhorn(a, b, C, 0.1, warm_start=5)
    with pytest.raises(TypeError, match="options must be an SNSOptions"):
        tr.sns(a, b, C, 0.1, options=dict(warm_start=5))
    with pytest.raises(TypeError, match="warm_start must be an integer"):
        tr.SNSOptions(warm_start=2.5)


def _mixed_batch():
    """Problems of mixed difficulty on 64 points: point clouds at eps 1e-2 and 1e-3, random assignment, and an
    8x8 L1 grid (non-unique OT) at eps 1/1200, whose Newton stage stalls and is restarted through the
    continuation."""
    n = 64
    a1, b1, C1 = point_clouds(n, n, seed=44)
    rng = np.random.default_rng(45)
    ga, gb, gC, geps = _l1_grid_problem(size=8, seed=3)
    A = np.stack([a1, a1, a1, ga])
    Bm = np.stack([b1, b1, b1, gb])
    C = np.stack([C1, C1, rng.random((n, n)), gC])
    eps = np.array([1e-2, 1e-3, 1 / 200, geps])
    return A, Bm, C, eps


@pytest.mark.slow
def test_sns_batch_equals_single_solves():
    A, Bm, C, eps = _mixed_batch()
    batched = tr.sns_batch(A, Bm, C, eps, tol=1e-10)
    # the grid problem stalled and was restarted through the continuation: its history holds 1 + 4 stages
    assert batched.errors.shape == (4, 5 + 5 * 200)
    assert int(batched.iterations[3]) > int(batched.iterations[0])
    for i in range(C.shape[0]):
        # the single-problem truth: each problem solved alone by Sinkhorn (the program of
        # test_sinkhorn_batch_equals_single_solves, compiled once for all four), independent of SNS and of batching
        single = tr.sinkhorn(A[i], Bm[i], C[i], eps[i], tol=1e-10)
        bi = jax.tree.map(lambda t: t[i], batched)
        assert bool(single.converged) and bool(bi.converged), i
        # both converged to 1e-10: the same optimum, dual values to 1e-9 relative (issue 14), plans to 1e-9 in L1
        # (the plan moves by the marginal error times a conditioning measured below 10 on these problems)
        assert abs(float(bi.reg_cost) - float(single.reg_cost)) <= 1e-9 * abs(float(single.reg_cost))
        assert np.abs(plan_np(bi) - plan_np(single)).sum() <= 1e-9


def test_sinkhorn_batch_equals_single_solves():
    A, Bm, C, eps = _mixed_batch()
    batched = tr.sinkhorn_batch(A[:3], Bm[:3], C[:3], eps[:3], tol=1e-9, history_every=1)
    for i in range(3):
        single = tr.sinkhorn(A[i], Bm[i], C[i], eps[i], tol=1e-9)
        # the same iterates (the rare branches run per problem inside the batch): same count, rounding only
        assert int(batched.iterations[i]) == int(single.iterations)
        np.testing.assert_allclose(batched.f[i], single.f, rtol=0, atol=1e-12 * np.abs(np.asarray(single.f)).max())
        assert bool(batched.converged[i])


def test_batch_validation_names_the_problem():
    A, Bm, C, eps = _mixed_batch()
    bad = A.copy()
    bad[2, 5] = -1.0
    with pytest.raises(ValueError, match=r"^problem 2: a must be non-negative"):
        tr.sns_batch(bad, Bm, C, eps)
    with pytest.raises(ValueError, match=r"epsilon must be a scalar or of shape \(4,\)"):
        tr.sinkhorn_batch(A, Bm, C, eps[:2])
    with pytest.raises(ValueError, match=r"cost must be a \(B, n, m\) stack"):
        tr.sns_batch(A, Bm, C[0], 0.1)


@pytest.mark.slow
def test_batch_sharded_over_four_cpu_devices_equals_one_device():
    # the problem axis placed over a 4-device mesh (driftax._sharding) gives the one-device solutions (the truth:
    # POT's log-domain Sinkhorn, solved far below the tolerance, in the same process: no second compile).
    # sns_batch only: its stages go through the same map_problems/shard_batch path as sinkhorn_batch
    code = """
import os, sys, types
# the transport engine alone (it stands alone by design): a bare driftax package instead of driftax/__init__.py,
# which imports every engine (about 5 s of CPU in a fresh process)
pkg = types.ModuleType("driftax")
pkg.__path__ = [os.path.abspath("driftax")]
sys.modules["driftax"] = pkg
import numpy as np, jax, ot
from driftax import transport as tr
assert "driftax.infer" not in sys.modules and "driftax.samplers" not in sys.modules
from tests.transport.conftest import point_clouds
assert jax.device_count() == 4
probs = [point_clouds(32, 32, seed=s) for s in range(4)]
A = np.stack([p[0] for p in probs]); B = np.stack([p[1] for p in probs]); C = np.stack([p[2] for p in probs])
r4 = tr.sns_batch(A, B, C, 5e-3, tol=1e-10)
assert len(r4.f.sharding.device_set) == 4, r4.f.sharding
assert np.all(np.asarray(r4.converged))
# POT's primal objective <C, P> + eps sum P log P at its plan equals the dual value D at the optimum. Ours is at L1
# marginal error <= 1e-10: D is concave with gradient (a - P1, b - P^T1), so 0 <= D* - D <= tol |z - z*|_inf <=
# tol max C (uniform weights; the potentials' oscillation); POT's plan at marginal error ~1e-13 moves its objective
# by that error times max |f| + |g| (< 2 max C): both within 2 tol max C of the optimum (measured |difference|
# <= 3e-16)
for i in range(4):
    P = ot.bregman.sinkhorn_log(A[i], B[i], C[i], 5e-3, numItermax=100_000, stopThr=1e-13)
    ref = float(np.sum(C[i] * P) + 5e-3 * np.sum(P * np.log(P)))
    assert abs(float(r4.reg_cost[i]) - ref) <= 2 * 1e-10 * C[i].max(), (i, float(r4.reg_cost[i]), ref)
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
