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
    out = tmp_path / "run.nc"
    code = main(["sample", "--target", "correlated_gaussian", "--chains", "4", "--draws", "500",
                 "--warmup", "300", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "r_hat" in printed and "mean err (sd)" in printed
    idata = az.from_netcdf(str(out))
    assert idata.posterior["x"].shape[:2] == (4, 500)
    assert np.isfinite(idata.sample_stats["lp"].values).all()


def test_bad_input_is_one_line_error(capsys):
    assert main(["sample", "--target", "correlated_gaussian", "--chains", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "num_chains must be >= 1" in err and "Traceback" not in err
    assert main(["sample", "--target", "no_such_target"]) == 2
    assert "unknown target name 'no_such_target'" in capsys.readouterr().err


def test_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "driftax", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "driftax" in proc.stdout
