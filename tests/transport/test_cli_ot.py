import argparse
import re

import numpy as np
import ot
import pytest

from driftax.cli import ot as cli_ot


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_ot.add_parser(sub)
    return parser.parse_args(["ot"] + argv)


def test_points_npy_sns_and_plan(tmp_path, capsys):
    # the point clouds of tests/transport/test_sns.py's PROBLEMS["points_sqeuclidean"] (conftest.point_clouds with
    # seed 20) at its epsilon: the solver compiled once serves both files
    rng = np.random.default_rng(20)
    x, y = rng.random((120, 2)), rng.random((120, 2))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    args = _parse([str(tmp_path / "x.npy"), str(tmp_path / "y.csv"), "--epsilon", "2e-3", "--method", "sns",
                   "--plan", str(tmp_path / "plan.npy")])
    assert args.func is cli_ot.run
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for word in ("transport cost", "marginal error", "iterations", "time", "Newton"):
        assert word in out
    P = np.load(tmp_path / "plan.npy")
    assert P.shape == (120, 120)
    np.testing.assert_allclose(P.sum(1), 1 / 120, atol=1e-9)
    exact = ot.emd2(np.full(120, 1 / 120), np.full(120, 1 / 120), ot.dist(x, y))
    assert 0 <= np.sum(P * ot.dist(x, y)) - exact <= 2e-3 * np.log(120)


def test_histograms_csv_sinkhorn(tmp_path, capsys):
    t = np.linspace(0, 1, 50)
    h1, h2 = np.exp(-((t - 0.3) / 0.1) ** 2), 2 * np.exp(-((t - 0.6) / 0.1) ** 2)
    np.savetxt(tmp_path / "h1.csv", h1[None], delimiter=",")
    np.save(tmp_path / "h2.npy", h2)
    args = _parse([str(tmp_path / "h1.csv"), str(tmp_path / "h2.npy"), "--epsilon", "1e-2", "--method",
                   "sinkhorn", "--cost", "l1", "--tol", "1e-10", "--plan", str(tmp_path / "P.npy")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "histograms on a 50 grid" in out
    # truth from outside the code under test: POT's log-domain Sinkhorn on the same problem, built here
    # (unit-mass histograms, grid coordinates normalised to [0, 1], L1 ground cost)
    a, b = h1 / h1.sum(), h2 / h2.sum()
    C = np.abs(t[:, None] - t[None, :])
    P_pot = ot.bregman.sinkhorn_log(a, b, C, 1e-2, numItermax=100_000, stopThr=1e-14)
    P = np.load(tmp_path / "P.npy")
    # both plans have an L1 marginal error <= 1e-10 (ours by --tol, POT's measured 2e-15); the plan moves by that
    # error times the conditioning of the linearised marginal map, measured 1.0 on this problem (|P - P_pot|_1 =
    # 1.13e-12 at our error 1.13e-12); 10x that for a solve stopping anywhere below 1e-10
    assert np.abs(P - P_pot).sum() <= 1e-9
    cost = float(re.search(r"transport cost <C,P> +([-+0-9.e]+)", out).group(1))
    # printed with 10 significant digits: relative 5e-10, plus the plan error times max C = 1
    assert abs(cost - np.sum(C * P_pot)) <= 5e-10 * cost + 1e-9
    # and close to the exact W1 = int |F_a - F_b| dt (1-D, L1 cost): within eps * log(n) (entropy bound)
    w1 = np.sum(np.abs(np.cumsum(a) - np.cumsum(b))[:-1] * np.diff(t))
    assert abs(w1 - ot.emd2(a, b, C)) <= 1e-12
    assert 0 <= cost - w1 <= 1e-2 * np.log(50)


def test_bad_inputs(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(5))
    np.save(tmp_path / "b.npy", -np.ones(5))
    np.save(tmp_path / "c.npy", np.ones(6))
    with pytest.raises(ValueError, match="TARGET histogram has negative entries"):
        cli_ot.run(_parse([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]))
    with pytest.raises(ValueError, match="same grid"):
        cli_ot.run(_parse([str(tmp_path / "a.npy"), str(tmp_path / "c.npy")]))
    with pytest.raises(FileNotFoundError):
        cli_ot.run(_parse([str(tmp_path / "nope.npy"), str(tmp_path / "c.npy")]))
    with pytest.raises(ValueError, match="epsilon must be positive"):
        cli_ot.run(_parse([str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "--epsilon", "0"]))
    (tmp_path / "x.txt2").write_text("1,2")
    with pytest.raises(ValueError, match=".npy or .csv"):
        cli_ot.run(_parse([str(tmp_path / "x.txt2"), str(tmp_path / "a.npy")]))


@pytest.mark.slow
def test_demo(tmp_path):
    # (64 points per side instead of the shipped 300: a padded size of the other tests, whose compiled programs it
    # shares; `driftax demo` runs the shipped size)
    table = cli_ot.demo(tmp_path, n=64)
    assert "sns" in table and "sinkhorn" in table
    assert (tmp_path / "ot_plan.png").stat().st_size > 1000


def test_documented_l1_histogram_example_converges(tmp_path, capsys):
    # `driftax ot img1.csv img2.csv --kind histogram --cost l1 --epsilon ...` (module docstring) on two 8x8 images,
    # the L1 grid problem of tests/transport/test_sns.py (its compiled programs; the benchmark runs 28x28 digits):
    # the L1 ground cost (non-unique OT) stalls a Newton stage started at epsilon itself
    from driftax.cli import main
    from tests.transport.test_sns import _l1_grid_problem

    a, b, _, eps = _l1_grid_problem(size=8)
    np.savetxt(tmp_path / "img1.csv", a.reshape(8, 8), delimiter=",")
    np.savetxt(tmp_path / "img2.csv", b.reshape(8, 8), delimiter=",")
    argv = ["ot", str(tmp_path / "img1.csv"), str(tmp_path / "img2.csv"), "--kind", "histogram", "--cost", "l1",
            "--epsilon", repr(eps), "--plan", str(tmp_path / "P.npy")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converged              True" in out
    # the default SNS restarts a stalled Newton stage through an epsilon continuation: low hundreds at most
    # (58 measured, where Sinkhorn takes 6,510 sweeps)
    its = int(re.search(r"iterations +(\d+)", out).group(1))
    assert its <= 300
    a = np.loadtxt(tmp_path / "img1.csv", delimiter=",").ravel()
    b = np.loadtxt(tmp_path / "img2.csv", delimiter=",").ravel()
    a, b = a / a.sum(), b / b.sum()
    P = np.load(tmp_path / "P.npy")
    assert np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum() <= 1e-8


def test_warm_start_and_max_iter_reach_sns(tmp_path, monkeypatch):
    # an explicit --warm-start (and --max-iter) reaches the solver as given (a second 28x28 solve compiled new
    # programs only to show this; the solver's handling of warm_start is tested in tests/transport/test_sns.py)
    import driftax.transport as tr_pkg

    seen = {}

    def fake_sns(a, b, C, eps, tol, max_iter=None, options=None):
        seen.update(max_iter=max_iter, options=options, tol=tol, eps=eps)
        raise RuntimeError("stop")

    monkeypatch.setattr(tr_pkg, "sns", fake_sns)
    np.save(tmp_path / "h.npy", np.ones(5))
    with pytest.raises(RuntimeError, match="stop"):
        cli_ot.run(_parse([str(tmp_path / "h.npy"), str(tmp_path / "h.npy"), "--warm-start", "300",
                           "--max-iter", "17", "--epsilon", "0.25", "--tol", "1e-7"]))
    assert seen["options"].warm_start == 300 and seen["max_iter"] == 17
    assert seen["eps"] == 0.25 and seen["tol"] == 1e-7
