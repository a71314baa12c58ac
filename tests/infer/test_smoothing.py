"""`infer.smooth`: boundary checks, ArviZ output, reproducibility, sharding over 4 CPU devices.

Statistical agreement with the Kalman smoother is in tests/samplers/test_paris.py; here the multi-device
run is compared with the Kalman truth and with the single-device run within Monte Carlo error.
The built-in CLI models are used (one object per name, so one compiled PaRIS program serves the
missing-data test, the single-device half of the sharding test and the CLI test).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from driftax.cli.smooth import build_model
from driftax.infer.smoothing import smooth
from driftax.models import ssm

SEED = 0
M0 = build_model("lgssm")  # x_t = 0.9 x_{t-1} + N(0, 0.5), y_t = x_t + N(0, 1), x_0 ~ N(0, 1)
MM = build_model("lgssm", allow_missing=True)  # NaN rows unobserved; the object tests/samplers/test_paris.py uses
M1 = MM
YS = MM.simulate(0, 100)[1]  # the data of tests/samplers/test_paris.py's 1-d Kalman tests
# the PaRIS run shared by three tests below and the 1-d PaRIS Kalman test (same model object and sizes:
# one compiled program)
PARIS = dict(functional="moments", method="paris", num_particles=256, num_replicates=16)


@pytest.mark.filterwarnings("ignore:More chains")  # ArviZ: 16 replicate chains of 4 kept paths is intended
def test_result_paths_are_arviz_draws_and_seed_reproducible():
    # the model object and sizes of the 1-d Kalman tests in tests/samplers/test_paris.py: in one process
    # these runs reuse their compiled PPG and FFBS programs
    ys = M1.simulate(0, 100)[1]
    kw = dict(num_particles=64, num_iterations=5, burn_in=1, num_replicates=16, seed=3)
    a = smooth(M1, ys, "moments", "ppg", **kw)
    b = smooth(M1, ys, "moments", "ppg", **kw)
    np.testing.assert_array_equal(a.replicates, b.replicates)  # same program, same seed
    assert a.paths.shape == (16, 4, 100, 1) and a.per_iteration.shape == (16, 5, 2)
    np.testing.assert_allclose(a.replicates, a.per_iteration[:, 1:].mean(1), rtol=1e-5)
    idata = a.to_inference_data()
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "time", "state") and x.shape == (16, 4, 100, 1)
    # FFBS keeps N paths by default; the kept paths are what its estimate averages over
    f = smooth(M1, ys, "moments", "ffbs", 128, num_replicates=16, seed=0)
    assert f.paths.shape == (16, 128, 100, 1) and f.estimate.shape == (2,) and np.all(np.isfinite(f.loglik))
    np.testing.assert_allclose(f.replicates[:, 0], f.paths[..., 0].sum(-1).mean(1), rtol=1e-4)


def test_missing_observations_when_the_model_allows_them():
    ys = YS.copy()
    ys[5] = np.nan
    with pytest.raises(ValueError, match="allow_missing"):
        smooth(M0, ys, method="paris", num_particles=8)
    r = smooth(MM, ys, **PARIS, seed=SEED)
    exact = ssm.kalman_smoother(MM, ys).sum_means()
    # PaRIS's bias on Σx at N = 256, T = 100 is far below the Monte Carlo error (+0.01 ± 0.11 over 200
    # replicates, benchmarks/RESULTS.md, against an se of about 0.4 here); se from 16 replicates,
    # 5 se: t_15 tail beyond 5 has probability 1.6e-4
    assert r.finite and abs(r.estimate[0] - exact[0]) <= 5 * r.mc_error[0]


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
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import numpy as np
    from driftax.cli.smooth import build_model
    from driftax.infer.smoothing import smooth
    ys = np.load(sys.argv[1])
    r = smooth(build_model("lgssm", allow_missing=True), ys, **json.loads(sys.argv[2]), seed=int(sys.argv[3]))
    print("RESULT" + json.dumps({"devices": r.num_devices, "est": r.estimate.tolist(), "se": r.mc_error.tolist()}))
""")


@pytest.mark.slow
def test_four_devices_shard_replicates_and_agree_with_one(tmp_path):
    """16 replicates over 4 CPU devices (a fresh process: the device count is fixed at start-up) against
    the same run on this process's single device (its program is the one the other PaRIS tests here use)."""
    import jax

    if jax.device_count() != 1:
        pytest.skip("the single-device half needs a test process with one device")
    one = smooth(MM, YS, **PARIS, seed=2 * SEED)
    np.save(tmp_path / "ys.npy", YS)
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "ys.npy"), json.dumps(PARIS), str(2 * SEED + 1)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    four = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    assert one.num_devices == 1 and four["devices"] == 4
    truth = ssm.kalman_smoother(MM, YS).sum_means()[0]
    # T = 100, N = 256: PaRIS bias far under the MC error of 16 replicates; 5 se (t_15 tail 1.6e-4)
    for est, se in ((one.estimate[0], one.mc_error[0]), (four["est"][0], four["se"][0])):
        assert abs(est - truth) <= 5 * se
    # independent runs: their difference has sd sqrt(se1^2 + se4^2)
    assert abs(one.estimate[0] - four["est"][0]) <= 5 * np.hypot(one.mc_error[0], four["se"][0])


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
    # the same sizes as PARIS: the CLI's model is MM, so this reuses the compiled program
    assert main(["smooth", "--data", str(path), "--allow-missing", "--method", "paris", "--particles", "256",
                 "--replicates", "16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    est, se = (float(v) for v in text.split("] | y] = ")[1].split(" (MC")[0].split(" ± "))
    kal = float(text.split("Kalman ")[1].split()[0])
    exact = ssm.kalman_smoother(ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0, allow_missing=True), ys).sum_means()[0]
    assert abs(kal - exact) < 1e-3  # the CLI's Kalman line is the smoother of the same data
    assert abs(est - exact) <= 5 * se  # as in test_missing_observations_when_the_model_allows_them
    import arviz as az

    assert az.from_netcdf(str(out)).posterior["x"].dims == ("chain", "draw", "time", "state")
