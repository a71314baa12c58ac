"""The driftax command: help lists every command, sample writes a netCDF that ArviZ opens, errors are one line."""
import subprocess
import sys

import arviz as az
import numpy as np

from driftax.cli import main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "sample", "ot", "bench"):
        assert command in out


def test_sample_writes_netcdf_and_compares_to_exact_draws(tmp_path, capsys):
    """The file holds the run: draws whose means match the target's (gallery ground truth, zero
    mean, known covariance) within 4.5 MC sds (sd / sqrt(ESS), ESS by ArviZ; 10 coordinates:
    P(false failure) < 1e-4), and lp equal to the log-density at those draws (float32 rounding of a
    10-term quadratic form: rtol 1e-5 + 1e-4)."""
    from driftax.models import gallery

    out = tmp_path / "run.nc"
    code = main(["sample", "--target", "correlated_gaussian", "--chains", "4", "--draws", "500",
                 "--warmup", "300", "--out", str(out), "--no-progress", "--plots", str(tmp_path / "plots")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "mean err (sd)" in printed
    assert "gradient evaluations" in printed and ("ok:" in printed or "check:" in printed)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"trace.png", "rank.png", "energy.png"}  # nuts
    idata = az.from_netcdf(str(out))
    target = gallery.get("correlated_gaussian")
    x = idata.posterior["x"].values.astype(np.float64)
    assert x.shape == (4, 500, target.dim)
    ess = az.ess(idata)["x"].values
    sd = np.sqrt(np.diag(target.cov))
    assert ess.min() > 50  # 2000 draws of a correlated 10-d Gaussian after 300 warm-up steps: 86-300 here
    assert np.all(np.abs(x.reshape(-1, target.dim).mean(0) - target.mean) <= 4.5 * sd / np.sqrt(ess))
    prec = np.linalg.inv(target.cov)
    d = x - target.mean
    ref = -0.5 * np.einsum("cdi,ij,cdj->cd", d, prec, d) - 0.5 * np.linalg.slogdet(2 * np.pi * target.cov)[1]
    np.testing.assert_allclose(idata.sample_stats["lp"].values, ref, rtol=1e-5, atol=1e-4)


def test_bad_input_is_one_line_error(capsys):
    assert main(["sample", "--target", "correlated_gaussian", "--chains", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "num_chains must be >= 1" in err and "Traceback" not in err
    assert main(["sample", "--target", "no_such_target"]) == 2
    assert "unknown target name 'no_such_target'" in capsys.readouterr().err


def test_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "driftax", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "driftax" in proc.stdout


def test_sample_with_averages(tmp_path, capsys):
    """--average polyak with ULA: the printed and saved averages are the chains' means over every
    sampling step, equal (thinning 1) to the mean of the saved draws up to float32 rounding."""
    out = tmp_path / "avg.nc"
    assert main(["sample", "--target", "correlated_gaussian", "--method", "ula", "--step-size", "0.05",
                 "--chains", "2", "--draws", "300", "--warmup", "100", "--average", "polyak",
                 "--out", str(out), "--no-progress"]) == 0
    assert "polyak averages" in capsys.readouterr().out
    idata = az.from_netcdf(str(out))
    np.testing.assert_allclose(idata.averages["x"].values, idata.posterior["x"].values.mean(1), atol=1e-5)
