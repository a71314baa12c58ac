"""infer.train_bridge: training, sampling, persistence, sharding, metrics and bad input."""
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftax.infer.bridges import BridgeSamples, TrainedBridge, bridge_metrics, load_bridge, train_bridge
from driftax.samplers.diffusion import init_control, make_config
from driftax.models import gallery
from driftax.models.base import Target

LOG2PI = math.log(2 * math.pi)
SMALL = dict(width=16, num_layers=1)


def two_modes_1d(centre=2.5, sd=0.5):
    """½ N(-c, sd²) + ½ N(c, sd²), normalised (log Z = 0)."""
    def lp(x):
        z = (x[0] - jnp.array([-centre, centre])) / sd
        return jax.scipy.special.logsumexp(-0.5 * z ** 2) - math.log(2) - math.log(sd) - 0.5 * LOG2PI
    return Target(lp, 1, name="two_modes", log_Z=0.0)


TWO_MODES = two_modes_1d()  # one function object: the compiled training chunk is reused across tests
N_DRAWS = 4000  # every draw from the trained fixture has this size: one compiled sampling program


@pytest.fixture(scope="module")
def trained():
    return train_bridge(TWO_MODES, "dis", "lv", num_steps=150, batch_size=128, num_time_steps=25,
                        learning_rate=1e-2, seed=0, progress=False, **SMALL)


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_finds_both_modes(trained):
    """DIS-LV on a 1-d two-mode target (modes ±2.5, sd 0.5), 150 steps: the mean LV loss of the last 30
    steps is below 0.4 x that of the first 30 (measured 0.20-0.28 over training seeds 0..5), each mode
    holds 40-60 % of 4000 draws (measured 48.3-53.6 %: binomial sd 0.008 plus the sampler's own
    imbalance, so the band is > 2.5x the largest deviation seen), and |log Ẑ| < 0.25 (measured 0.006-0.039
    over seeds 0..5 at ESS 0.04-0.07; 0.25 is over 3 MC sds √((1/ESS - 1)/N) at the lowest ESS)."""
    assert trained.converged and trained.skipped_updates == 0
    h = trained.loss_history
    assert h[-30:].mean() < 0.4 * h[:30].mean()
    out = trained.sample(N_DRAWS, seed=1)
    share = np.mean(out.samples[:, 0] > 0)
    assert 0.4 < share < 0.6
    assert abs(out.log_Z) < 0.25


def test_sample_reproducible_and_to_inference_data(trained):
    a, b = trained.sample(N_DRAWS, seed=5), trained.sample(N_DRAWS, seed=5)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-6)
    assert a.samples.shape == (N_DRAWS, 1) and a.log_weights.shape == (N_DRAWS,)
    c = trained.sample(N_DRAWS, seed=6)
    assert not np.allclose(a.samples, c.samples)
    idata = trained.to_inference_data(N_DRAWS, seed=1)
    assert idata.posterior["x"].shape == (1, N_DRAWS, 1)
    assert idata.sample_stats["log_weight"].shape == (1, N_DRAWS)
    assert idata.attrs["method"] == "dis" and 0 < idata.attrs["ess"] <= 1


def test_save_load_roundtrip_and_configuration_mismatch(trained, tmp_path):
    path = trained.save(tmp_path / "bridge.eqx")
    again = load_bridge(path, trained.target)
    assert again.config == trained.config
    for a, b in zip(jax.tree.leaves(trained.control), jax.tree.leaves(again.control)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    same = trained.load_control(path)
    np.testing.assert_allclose(same.sample(N_DRAWS, 3).samples, trained.sample(N_DRAWS, 3).samples, rtol=1e-6)
    cfg = make_config("dis", 1, num_time_steps=24, **SMALL)  # same network, another time grid
    other = TrainedBridge(cfg, init_control(cfg, jax.random.key(0)), TWO_MODES)
    with pytest.raises(ValueError, match="another configuration"):
        other.load_control(path)
    with pytest.raises(ValueError, match="dimension"):
        load_bridge(path, gallery.gmm9())
    (tmp_path / "junk.eqx").write_bytes(b"not a bridge")
    with pytest.raises(ValueError, match="not a driftax bridge"):
        load_bridge(tmp_path / "junk.eqx", trained.target)
    # files of format version 1: those written before the DIS/score-network change (no "integrator" in
    # the configuration) are refused with the versions named; later ones have today's layout and load
    line, _, blob = path.read_bytes().partition(b"\n")
    header = json.loads(line)
    header["format"] = "driftax-bridge-1"
    (tmp_path / "v1.eqx").write_bytes(json.dumps(header).encode() + b"\n" + blob)
    assert load_bridge(tmp_path / "v1.eqx", trained.target).config == trained.config
    del header["config"]["integrator"]
    (tmp_path / "old.eqx").write_bytes(json.dumps(header).encode() + b"\n" + blob)
    for load in (lambda p: load_bridge(p, trained.target), trained.load_control):
        with pytest.raises(ValueError, match="format 'driftax-bridge-1' by an older driftax.*reads 'driftax-bridge-3'"):
            load(tmp_path / "old.eqx")
    # format 2 (before DIS's noising SDE followed prior_scale): loads, except a DIS control with prior sd ≠ 1
    header["format"], header["config"]["integrator"] = "driftax-bridge-2", trained.config.integrator
    (tmp_path / "v2.eqx").write_bytes(json.dumps(header).encode() + b"\n" + blob)
    assert load_bridge(tmp_path / "v2.eqx", trained.target).config == trained.config
    header["config"]["prior_scale"] = 3.0
    (tmp_path / "v2s.eqx").write_bytes(json.dumps(header).encode() + b"\n" + blob)
    with pytest.raises(ValueError, match="prior_scale 3.0 saved in format 'driftax-bridge-2'"):
        load_bridge(tmp_path / "v2s.eqx", trained.target)
    (tmp_path / "cut.eqx").write_bytes(line + b"\n" + blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="do not fit"):
        load_bridge(tmp_path / "cut.eqx", trained.target)


def test_bad_input():
    t = TWO_MODES
    with pytest.raises(ValueError, match="batch_size"):
        train_bridge(t, "dis", "lv", num_steps=2, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="num_time_steps"):
        train_bridge(t, "dis", "lv", num_steps=2, num_time_steps=0, progress=False)
    with pytest.raises(ValueError, match="loss"):
        train_bridge(t, "dis", "fisher", num_steps=2, progress=False)
    with pytest.raises(ValueError, match="method"):
        train_bridge(t, "cmcd", "lv", num_steps=2, progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        train_bridge(t, "dis", "lv", num_steps=0, progress=False)
    with pytest.raises(TypeError, match="seed"):
        train_bridge(t, "dis", "lv", num_steps=2, seed=1.5, progress=False)
    with pytest.raises(ValueError, match="ema_decay"):
        train_bridge(t, "dis", "lv", num_steps=2, ema_decay=1.0, progress=False)


def _half_normal_callback(x):
    """log ρ = -x²/2 on x > 0 and -inf on x ≤ 0, through a NumPy callback JAX cannot differentiate."""
    def f(v):
        v = np.asarray(v)[..., 0]
        return np.where(v > 0, -0.5 * v * v, -np.inf).astype(np.float32)

    return jax.pure_callback(f, jax.ShapeDtypeStruct((), jnp.float32), x, vmap_method="expand_dims")


@pytest.fixture(scope="module")
def no_score_half_normal():
    """A target without gradients whose log-density is -inf on half the line: one short score-free DIS-LV
    run (one compiled training program) serves both bad-input tests below."""
    t = Target(_half_normal_callback, 1)
    return t, train_bridge(t, "dis", "lv", num_steps=3, batch_size=64, num_time_steps=5, learning_rate=1e-6,
                           parameterisation="no_score", progress=False, **SMALL)


def test_target_without_gradient_errors_or_runs_without_score(no_score_half_normal):
    t, b = no_score_half_normal
    with pytest.raises(ValueError, match="gradient"):
        train_bridge(t, "dis", "lv", num_steps=2, batch_size=8, num_time_steps=3, progress=False, **SMALL)
    with pytest.raises(ValueError, match="gradient"):
        train_bridge(t, "pis", "kl", num_steps=2, batch_size=8, num_time_steps=3, parameterisation="plain",
                     progress=False, **SMALL)
    assert b.config.parameterisation == "plain"
    assert b.converged and np.all(np.isfinite(b.loss_history))


def test_non_finite_log_density_paths_dropped_and_counted(no_score_half_normal):
    """ρ = -inf for x ≤ 0 (a half-normal): training stays finite, no update is skipped, and sampling
    counts the dropped paths (about half of them under the nearly untrained, score-free DIS sampler,
    whose law is symmetric: 5 binomial sds)."""
    _, b = no_score_half_normal
    assert b.converged and b.skipped_updates == 0
    out = b.sample(2000, seed=0)
    assert abs(out.num_dropped / 2000 - 0.5) < 5 * math.sqrt(0.25 / 2000)
    assert np.all(np.isneginf(out.log_weights[out.samples[:, 0] <= 0]))


def test_metrics_on_exact_draws():
    """Exact GMM-9 draws with log weights 0 (log Ẑ = 0 = log Z): |Δlog Z| = 0, ESS = 1, all 9 modes, std
    error within sampling error (sd of a sample sd ≈ sd/√(2n), n = 3000: 5 % is > 3 sds), and the
    Sinkhorn distance to a second exact sample far below that of a sample missing 8 modes. Both distances
    on 256 draws (one shape, one compiled solver; the centre cell holds ~333 of the 3000 draws): the
    ratio measured 6.7-9.9 over draw keys 1..6 (9.4 at 500 draws), so > 4 has margin; a sample in one mode
    of nine costs ~28 against ~3-4 for an exact one."""
    t = gallery.gmm9()
    x = np.asarray(t.sample(jax.random.key(1), 3000))
    grid = np.array([-5.0, 0.0, 5.0])
    modes = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(9, 2)
    good = bridge_metrics(BridgeSamples(x, np.zeros(3000), 0.0, 0.0, 1.0, 0), t, modes=modes, num_reference=256)
    assert good["dlogz"] == 0 and good["ess"] == 1 and good["modes"] == 9 and good["std_error"] < 0.05
    centre = x[np.all(np.abs(x) < 2.5, axis=1)]
    assert len(centre) >= 256
    bad = bridge_metrics(BridgeSamples(centre, np.zeros(len(centre)), 0.0, 0.0, 1.0, 0), t, modes=modes,
                         num_reference=256)
    assert bad["modes"] == 1 and bad["sinkhorn"] > 4 * good["sinkhorn"]


SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax
    sys.path.insert(0, sys.argv[1])
    from test_bridges import _sharded_run
    print("RESULT" + json.dumps(_sharded_run(sys.argv[2])))
""")


CLI_TRAINING = dict(num_steps=3, batch_size=32, num_time_steps=4, parameterisation="plain")  # `driftax bridge`'s
# defaults otherwise (DIS, LV, width 64, 2 layers, learning rate 5e-3, chunks of min(50, steps)): the CLI test
# trains this program again, and the session's persistent compilation cache serves it to whichever runs second


def _sharded_run(saved):
    """Train a small score-free sampler (3 steps: no second-order autodiff, so compilation stays short in
    both processes) and sample from the control saved at ``saved`` (the module's trained DIS sampler)."""
    import jax
    b = train_bridge(gallery.gmm9(), "dis", "lv", seed=3, progress=False, **CLI_TRAINING)
    s = load_bridge(saved, TWO_MODES).sample(N_DRAWS, seed=1)
    return {"devices": jax.device_count(), "loss": b.loss_history.tolist(), "x": s.samples[:, 0].tolist(),
            "log_Z": s.log_Z}


@pytest.mark.slow
def test_four_devices_follow_the_single_device_run(trained, tmp_path):
    """The batch is sharded over 4 CPU devices (a fresh interpreter) and compared with this process's
    1-device runs: data-parallel training (the loss of each of 3 steps) and sharded sampling (4000 draws
    of the trained fixture's saved control; this process has compiled that sampling program already). The random stream does not depend on the device count (partitionable threefry), so
    both see the same noise and differ only by the order of float32 reductions (relative rounding
    ~1e-7 per reduction, carried through 3 Adam steps; measured ≤ 3e-7 over the first 10 steps of the
    fixture's run). Tolerance 1e-3 relative: far above rounding, far below what a wrong cross-device
    reduction gives (a per-device variance or mean changes the loss and the draws at order 1)."""
    if jax.device_count() != 1:
        pytest.skip("the reference run needs a single-device process")
    saved = trained.save(tmp_path / "bridge.eqx")
    script = tmp_path / "w.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, str(script), os.path.dirname(__file__), str(saved)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    one = _sharded_run(saved)
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-3)
    np.testing.assert_allclose(four["x"], one["x"], rtol=1e-3, atol=1e-3)
    assert abs(four["log_Z"] - one["log_Z"]) < 1e-3


def test_cli_trains_saves_loads_and_samples(tmp_path, capsys):
    from driftax.cli import main

    ctl, out = tmp_path / "c.eqx", tmp_path / "x.npy"
    # the training run of _sharded_run (CLI_TRAINING; compiled once per session), and 40 draws after
    # training and after loading: one sampling program (the persistent compilation cache serves the loaded
    # bridge's, whose target is a fresh closure of the same mixture)
    c = CLI_TRAINING
    rc = main(["bridge", "--target", "gmm9", "--steps", str(c["num_steps"]), "--batch", str(c["batch_size"]),
               "--time-steps", str(c["num_time_steps"]), "--samples", "40", "--save", str(ctl), "--no-progress",
               "--no-score"])
    assert rc == 0 and ctl.exists()
    rc = main(["bridge", "--target", "gmm9", "--load", str(ctl), "--samples", "40", "--out", str(out)])
    assert rc == 0
    assert np.load(out).shape == (40, 2) and np.load(tmp_path / "x.logw.npy").shape == (40,)
    assert "log Z estimate" in capsys.readouterr().out
    assert main(["bridge", "--target", "gaussian", "--dim", "3", "--load", str(ctl)]) == 2  # wrong dimension
    assert main(["bridge", "--target", "gmm9", "--batch", "1", "--steps", "2"]) == 2  # LV needs 2 paths
