"""`infer.smooth`: boundary checks, ArviZ output, reproducibility, sharding over 4 CPU devices.

Statistical agreement with the Kalman smoother is in tests/samplers/test_paris.py; here the multi-device
run is compared with the Kalman truth and with the single-device run within Monte Carlo error.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from driftax.infer.smoothing import smooth
from driftax.models import ssm

SEED = 0
M1 = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
YS = M1.simulate(0, 30)[1]


def test_result_paths_are_arviz_draws_and_seed_reproducible():
    a = smooth(M1, YS, "state_sum", "ppg", 16, num_iterations=4, burn_in=1, num_replicates=2, seed=3)
    b = smooth(M1, YS, "state_sum", "ppg", 16, num_iterations=4, burn_in=1, num_replicates=2, seed=3)
    np.testing.assert_array_equal(a.replicates, b.replicates)  # same program, same seed
    assert a.paths.shape == (2, 3, 30, 1) and a.per_iteration.shape == (2, 4, 1)
    np.testing.assert_allclose(a.replicates, a.per_iteration[:, 1:].mean(1), rtol=1e-5)
    idata = a.to_inference_data()
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "time", "state") and x.shape == (2, 3, 30, 1)
    # the kept paths are the PPG references: their sum is what the state_sum functional is estimated on
    f = smooth(M1, YS, "cross_moment", "ffbs", 8, num_replicates=2, num_paths=5, seed=0)
    assert f.paths.shape == (2, 5, 30, 1) and f.estimate.shape == (1,) and np.all(np.isfinite(f.loglik))


def test_missing_observations_when_the_model_allows_them():
    ys = YS.copy()
    ys[5] = np.nan
    with pytest.raises(ValueError, match="allow_missing"):
        smooth(M1, ys, method="paris", num_particles=8)
    m = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0, allow_missing=True)
    r = smooth(m, ys, "state_sum", "paris", 256, num_replicates=4, seed=SEED)
    exact = ssm.kalman_smoother(m, ys).sum_means()
    # T = 30 is short: PaRIS bias at N = 256 is far below the 5-se band (se from 4 replicates is rough,
    # hence 6 se: t_3 tail beyond 6 has probability 0.01; seeds 0-4 pass)
    assert r.finite and abs(r.estimate[0] - exact[0]) <= 6 * r.mc_error[0]


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(num_particles=1), ValueError, "num_particles"),
    (dict(num_particles=8.0), TypeError, "num_particles"),
    (dict(K=1), ValueError, "K"),
    (dict(num_iterations=3, burn_in=3), ValueError, "burn_in"),
    (dict(method="pf"), ValueError, "method"),
    (dict(functional="nope"), ValueError, "functional"),
    (dict(functional=3), TypeError, "functional"),
    (dict(backward="rejection"), ValueError, "backward"),
    (dict(scheme="optimal"), ValueError, "scheme"),
    (dict(ess_threshold=1.5), ValueError, "ess_threshold"),
    (dict(theta={"Q": np.array([[-1.0]])}), ValueError, "Q"),
    (dict(theta={"Z": 1.0}), TypeError, "unknown"),
    (dict(reference=np.zeros((3, 30, 1))), ValueError, "reference"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_arguments_are_rejected(kwargs, err, match):
    base = dict(functional="state_sum", method="ppg", num_particles=8, num_replicates=2)
    with pytest.raises(err, match=match):
        smooth(M1, YS, **{**base, **kwargs})


def test_bad_observations_and_models_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(T, 1\)"):
        smooth(M1, np.zeros((30, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        smooth(M1, np.zeros((1,)))
    with pytest.raises(TypeError, match="StateSpaceModel"):
        smooth("lgssm", YS)
    with pytest.raises(TypeError, match="numeric"):
        smooth(M1, ["a", "b"])


SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
    import numpy as np
    from driftax.infer.smoothing import smooth
    from driftax.models import ssm
    m = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
    ys = m.simulate(0, 50)[1]
    r = smooth(m, ys, "state_sum", "paris", 128, num_replicates=16, seed=int(sys.argv[2]))
    print("RESULT" + json.dumps({"devices": r.num_devices, "est": r.estimate.tolist(), "se": r.mc_error.tolist(),
                                 "truth": ssm.kalman_smoother(m, ys).sum_means().tolist()}))
""")


def _run(tmp_path, n, seed):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, str(script), str(n), str(seed)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_four_devices_shard_replicates_and_agree_with_one(tmp_path):
    one, four = _run(tmp_path, 1, 2 * SEED), _run(tmp_path, 4, 2 * SEED + 1)
    assert one["devices"] == 1 and four["devices"] == 4
    for r in (one, four):  # T = 50, N = 128: PaRIS bias well under the MC error of 16 replicates; 5 se
        assert abs(r["est"][0] - r["truth"][0]) <= 5 * r["se"][0]
    # independent runs: their difference has sd sqrt(se1^2 + se4^2)
    assert abs(one["est"][0] - four["est"][0]) <= 5 * np.hypot(one["se"][0], four["se"][0])


@pytest.mark.slow
def test_cli_smooths_a_csv_with_missing_rows(tmp_path, capsys):
    from driftax.cli import main

    ys = YS.copy()
    ys[4] = np.nan
    path = tmp_path / "ys.csv"
    np.savetxt(path, ys, delimiter=",")
    assert main(["smooth", "--data", str(path), "--method", "paris", "--particles", "64"]) == 2
    assert "allow_missing" in capsys.readouterr().err
    out = tmp_path / "paths.nc"
    assert main(["smooth", "--data", str(path), "--allow-missing", "--method", "paris", "--particles", "256",
                 "--replicates", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    est, se = (float(v) for v in text.split("] | y] = ")[1].split(" (MC")[0].split(" ± "))
    kal = float(text.split("Kalman ")[1].split()[0])
    exact = ssm.kalman_smoother(ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0, allow_missing=True), ys).sum_means()[0]
    assert abs(kal - exact) < 1e-3  # the CLI's Kalman line is the smoother of the same data
    assert abs(est - exact) <= 6 * se  # as in test_missing_observations_when_the_model_allows_them
    import arviz as az

    assert az.from_netcdf(str(out)).posterior["x"].dims == ("chain", "draw", "time", "state")
