"""Sharding: 4 CPU devices in one process, and 2 processes joined by jax.distributed on 127.0.0.1.
NUTS's pooled warm-up on 4 devices equals the one on 1 device for the same draws.

Each run happens in a fresh interpreter (device count and distributed state are fixed at start-up).
Ground truth: the 6-d Gaussian N(m, diag(s^2)); runs agree with it and with each other within
Monte Carlo error.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys
    n_local, pid, nproc, port, chains, nuts = (int(a) for a in sys.argv[1:7])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_local}"
    import jax
    if nproc > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    import numpy as np, jax.numpy as jnp, arviz as az, driftax as dx
    m = jnp.arange(6.0) - 2.5
    s = jnp.linspace(0.5, 2.0, 6)
    target = dx.models.Target(lambda x: -0.5 * jnp.sum(((x - m) / s) ** 2), 6)
    idata = dx.infer.sample(target, "mala", num_chains=chains, num_samples=2000, num_warmup=600, seed=1, progress=False)
    x = idata.posterior["x"].values
    again = dx.infer.sample(target, "mala", num_chains=chains, num_samples=2000, num_warmup=600, seed=1, progress=False)
    avg = dx.infer.sample(target, "ula", num_chains=chains, num_samples=300, num_warmup=0, step_size=0.05,
                          seed=2, progress=False, average="polyak")
    stored = avg.posterior["x"].values.astype(np.float64)
    pooled_mean, pooled_var = dx.infer.diagnostics.pooled_averages(avg)["x"]
    extra = {}
    if nuts:
        # NUTS end to end, and its pooled warm-up on fixed draws: the same 8 chains' positions and
        # acceptance rates fed to the adaptation sharded over this process's devices
        from jax.sharding import PartitionSpec as P
        from driftax._sharding import batch_mesh
        from driftax.infer import adaptation
        nuts_idata = dx.infer.sample(target, "nuts", num_chains=chains, num_samples=500, num_warmup=300,
                                     seed=3, progress=False)
        rng = np.random.default_rng(0)
        xs = jnp.asarray(np.asarray(m) + np.asarray(s) * rng.normal(size=(300, chains, 6)), jnp.float32)
        accs = jnp.asarray(rng.uniform(0.5, 1.0, size=(300, chains)), jnp.float32)
        stage, end = (jnp.asarray(a) for a in adaptation.schedule(300, 300))
        for dense in (False, True):
            ad_init, ad_update, ad_final = adaptation.window_adaptation(
                0.8, 6, "dense" if dense else "diag", axis_name="chain")
            def run(xs, accs):
                def body(ad, inp):
                    return ad_update(ad, *inp), None
                ad0 = ad_init(0.5, jnp.eye(6) if dense else jnp.ones(6))
                ad, _ = jax.lax.scan(body, ad0, (stage, end, xs, accs))
                return ad_final(ad)
            mesh = batch_mesh(chains, "chain")
            step, imm = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(P(None, "chain"), P(None, "chain")),
                                              out_specs=P(), check_vma=False))(xs, accs)
            extra["pooled_dense" if dense else "pooled_diag"] = [float(step), np.asarray(imm).ravel().tolist()]
        nx = nuts_idata.posterior["x"].values
        extra.update(nuts_mean=nx.reshape(-1, 6).mean(0).tolist(), nuts_sd=nx.reshape(-1, 6).std(0).tolist(),
                     nuts_ess=az.ess(nuts_idata)["x"].values.tolist(),
                     nuts_ess_sq=[float(az.ess((nx[..., j] - float(m[j])) ** 2)) for j in range(6)],
                     nuts_divergent=int(nuts_idata.sample_stats.diverging.sum()))
    print("RESULT" + json.dumps({**extra,
        "repeat_equal": bool(np.array_equal(x, again.posterior["x"].values)),
        "avg_mean_err": float(np.abs(pooled_mean - stored.reshape(-1, 6).mean(0)).max()),
        "avg_var_err": float(np.abs(pooled_var - stored.reshape(-1, 6).var(0)).max()),
        "devices": idata.attrs["num_devices"], "global_devices": jax.device_count(),
        "mean": x.reshape(-1, 6).mean(0).tolist(), "sd": x.reshape(-1, 6).std(0).tolist(),
        "ess": az.ess(idata)["x"].values.tolist(), "first": x[:, 0, 0].tolist(), "last": x[:, -1].tolist(), "chains": x.shape[0],
    }))
""")

M = np.arange(6.0) - 2.5
S = np.linspace(0.5, 2.0, 6)


def _run(tmp_path, n_local, pid=0, nproc=1, port=0, chains=8, nuts=False):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = [str(a) for a in (n_local, pid, nproc, port, chains, int(nuts))]
    return subprocess.Popen([sys.executable, str(script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def _check_against_truth(res):
    """|mean - m| <= 4.5 s / sqrt(ESS) per coordinate: 6 coordinates, P(false failure) < 1e-4.
    The sd of the sample sd is about s / sqrt(2 ESS_sq), ESS_sq that of (x - m)^2: for MALA about the
    ESS of x; for NUTS far below it (NUTS's ESS of a Gaussian's mean exceeds the draws, antithetically,
    its ESS of the square does not), so NUTS's runs report it."""
    ess = np.asarray(res["ess"])
    ess_sq = np.asarray(res.get("ess_sq", ess))
    assert ess.min() > 500
    assert np.all(np.abs(np.asarray(res["mean"]) - M) <= 4.5 * S / np.sqrt(ess))
    assert np.all(np.abs(np.asarray(res["sd"]) - S) <= 4.5 * S / np.sqrt(2 * ess_sq))


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return _result(_run(tmp_path_factory.mktemp("one"), 1, nuts=True))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    return _result(_run(tmp_path_factory.mktemp("four"), 4, nuts=True))


def test_pooled_nuts_warm_up_on_four_devices_equals_one_device(one_device, four_devices):
    """The same 300 steps of 8 chains' positions and acceptance rates, adapted with the chains on 1
    device and spread over 4: every statistic is a psum over devices, so the step size and the
    metric (diag and dense) agree but for float32 summation order (rtol 1e-5; a metric computed
    from one device's 2 chains instead of all 8 would differ by tens of percent). NUTS end to end on
    4 devices reaches the Gaussian within Monte Carlo error."""
    for key in ("pooled_diag", "pooled_dense"):
        (step1, imm1), (step4, imm4) = one_device[key], four_devices[key]
        np.testing.assert_allclose(step4, step1, rtol=1e-5)
        np.testing.assert_allclose(imm4, imm1, rtol=1e-5, atol=1e-6)
    diag = np.asarray(one_device["pooled_diag"][1])
    # Stan's windows of this warm-up end with 8 chains x 100 draws of N(m, s^2): the metric is s^2
    # within 5 sds of a variance from 800 independent draws (sqrt(2/800) = 5 %), shrunk by n/(n+5)
    assert np.all(np.abs(diag / S**2 - 1) < 5 * np.sqrt(2 / 800)), diag / S**2
    for res in (one_device, four_devices):
        assert res["nuts_divergent"] == 0
        _check_against_truth({"ess": res["nuts_ess"], "ess_sq": res["nuts_ess_sq"], "mean": res["nuts_mean"],
                              "sd": res["nuts_sd"]})


def test_four_devices_shard_chains_and_agree_with_one_device(four_devices, one_device):
    four = four_devices
    assert one_device["devices"] == 1 and four["devices"] == 4
    _check_against_truth(one_device)
    _check_against_truth(four)
    # same seed, same devices: the same draws (one program, run twice in one process)
    assert one_device["repeat_equal"] and four["repeat_equal"]
    _check_averages(one_device)
    _check_averages(four)
    # every device draws its own noise: no two of the 8 chains coincide
    assert len({tuple(c) for c in four["last"]}) == 8
    # the two runs are independent estimates: their difference has sd s * sqrt(1/ESS_1 + 1/ESS_4)
    ess1, ess4 = np.asarray(one_device["ess"]), np.asarray(four["ess"])
    diff = np.abs(np.asarray(one_device["mean"]) - np.asarray(four["mean"]))
    assert np.all(diff <= 4.5 * S * np.sqrt(1 / ess1 + 1 / ess4))


def _check_averages(res):
    """In-loop averages pooled over chains and devices (Chan's rule) equal the mean and variance of the
    stored draws (thinning 1, every step counted): float32 running means of 300 values of size <= 5,
    so ~1e-5 (1e-4 on the variance, whose scale is <= 4)."""
    assert res["avg_mean_err"] < 1e-4 and res["avg_var_err"] < 1e-3, res


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_join_with_jax_distributed(tmp_path):
    """Two hosts of 2 CPU devices each (gloo collectives over 127.0.0.1), 6 chains: 3 per host do not
    split over 2 local devices, so each host runs its 3 on one device (2 of the 4 global devices),
    and both processes return the same full set of 6 chains."""
    port = _free_port()
    procs = [_run(tmp_path, 2, pid, 2, port, chains=6) for pid in range(2)]
    r0, r1 = (_result(p) for p in procs)
    assert r0["global_devices"] == 4 and r0["devices"] == 2 and r0["chains"] == 6
    assert r0["first"] == r1["first"] and r0["mean"] == r1["mean"]
    assert r0["repeat_equal"] and r1["repeat_equal"]
    _check_averages(r0)
    # distinct hosts run distinct chains: the 6 chains (3 per host) are 6 different chains
    assert len({tuple(c) for c in r0["last"]}) == 6
    _check_against_truth(r0)
