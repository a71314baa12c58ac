"""float64 sampling (jax_enable_x64 is process-wide, so each check runs in a fresh interpreter)."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, jax.numpy as jnp, arviz as az, driftax as dx
    out = {}
    for mm in ("diag", "dense", None):
        # N(1e8 + m, I): float32 cannot even represent the moves of a 1e-2 step around 1e8
        t = dx.models.Target(lambda x: -0.5 * jnp.sum((x - 1e8) ** 2), 3)
        idata = dx.infer.sample(t, "mala", num_chains=4, num_samples=1000, num_warmup=300, seed=0, progress=False,
                                init=np.full(3, 1e8), mass_matrix=mm)
        x = idata.posterior["x"].values
        out[str(mm)] = {"dtype": str(x.dtype), "mean": float((x - 1e8).mean()), "sd": float(x.std()),
                        "ess": float(az.ess(idata)["x"].values.min())}
    print("RESULT" + json.dumps(out))
""")


def test_float64_sampling_with_every_metric():
    """Under x64 the chain, the warm-up state and the draws are float64. Target N(1e8, I): with a
    float32 position every proposal would round back to 1e8 (spacing 8). MC bounds from ESS, 4.5 sd."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    for mm, r in res.items():
        assert r["dtype"] == "float64", mm
        assert r["ess"] > 300, (mm, r)
        assert abs(r["mean"]) < 4.5 / (3 * r["ess"]) ** 0.5, (mm, r)
        assert abs(r["sd"] - 1) < 4.5 / (2 * r["ess"]) ** 0.5, (mm, r)
