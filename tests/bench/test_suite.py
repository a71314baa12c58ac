"""`driftax.bench.suite` end to end on a 1-d Gaussian (a registry kernel and a plug-in engine), its
outputs, and its input checks. Kept cheap: one compiled sampler (MALA without warm-up) and an SNS
program of the shape `test_score`'s POT comparison compiles (80 x 1 points, float64)."""
import json

import numpy as np
import pytest

from driftax.bench import suite
from driftax.cli import main
from driftax.models import gallery

N_REF = 10_000


@pytest.fixture(scope="module")
def tiny():
    """N(0, 1) in one dimension with 10,000 exact reference draws from NumPy (not from the code under test)."""
    target = gallery.gaussian(np.zeros(1), np.eye(1), name="gauss1")
    reference = {"x": np.random.default_rng(0).normal(size=(10, N_REF // 10, 1))}
    return target, reference


def _exact(target, chains, warmup, draws, seed):
    """A plug-in engine: 4 x 2,500 exact N(0, 1) draws as a flat (chain, draw, dim) array, no gradients."""
    return suite.Run(np.random.default_rng(seed + 7).normal(size=(4, 2500, 1)), None)


def test_suite_runs_end_to_end_and_writes_table_and_json(tiny, tmp_path):
    rows = suite.run_suite([("gauss1",) + tiny], ["mala", ("exact", _exact)], chains=2, warmup=0, draws=200,
                           ot_points=80)["rows"]
    assert [(r["target"], r["method"]) for r in rows] == [("gauss1", "mala"), ("gauss1", "exact")]
    mala, exact = rows
    # MALA evaluates one gradient a step (at the proposal): 2 chains x 200 steps
    assert mala["grad_evals"] == 2 * 200
    assert mala["ess_per_grad"] == pytest.approx(mala["ess_bulk_min"] / 400)
    assert mala["seconds"] > 0 and mala["compile_seconds"] >= 0 and mala["divergences"] == 0
    # the exact draws (4 x 2,500) against 10,000 exact reference draws: the mean difference has sd
    # sqrt(1/10^4 + 1/10^4) = 0.014 (0.1 is 7 sd), the sd ratio's error sd ~ sqrt(1/(2 10^4) x 2) = 0.01
    # (10 sd); i.i.d. chains give split R-hat - 1 = O(1/2,500): the row passes on any seed
    assert exact["passed"] and exact["mean_err"] < 4.5 * np.sqrt(2 / N_REF)
    assert exact["grad_evals"] is None and exact["ess_per_grad"] is None
    # Sinkhorn divergence of 80 exact draws to 80 reference draws (standardised): sampling noise only,
    # measured 0.03-0.12 over seeds 0-5; a shift by s sd gives about W_2^2 = s^2, so 0.5 is a 0.7 sd shift
    assert 0 <= exact["ot_distance"] < 0.5

    path = suite.write_json({"rows": rows}, tmp_path / "suite.json")
    back = json.loads(path.read_text())["rows"]
    for r in back:
        assert set(suite.ROW_KEYS) <= set(r)
    assert back[1]["ess_per_grad"] is None and back[0]["grad_evals"] == 400
    table = suite.markdown_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and table[0].startswith("| target | method |")
    assert table[2].startswith("| gauss1 | mala |") and table[3].endswith("| yes |")


def test_unknown_target_and_method_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown target name\(s\) \['nope'\]; known: gaussian, .*eight_schools"):
        suite.run_suite(["nope"], ["nuts"])
    with pytest.raises(ValueError, match=r"unknown method name\(s\) \['hmc'\]; known: .*nuts.*numpyro_nuts, "
                                         r"blackjax_nuts"):
        suite.run_suite(["banana"], ["nuts", "hmc"])
    with pytest.raises(TypeError, match=r"\(label, callable\) pair"):
        suite.run_suite(["banana"], [("x", 3)])
    # the CLI: one line on stderr, exit status 2, before anything compiles
    assert main(["bench", "samplers", "--targets", "nope", "--methods", "nuts"]) == 2


def test_reference_whose_sites_do_not_match_the_model_is_refused(tiny):
    target, reference = tiny
    with pytest.raises(ValueError, match=r"reference site\(s\) \['theta'\] are not sites of the model 'gauss1'; "
                                         r"its sites: \['x'\]"):
        suite.check_reference(target, {"theta": reference["x"]})
    with pytest.raises(ValueError, match=r"'x': \(2,\) vs the model's \(1,\)"):
        suite.run_suite([("gauss1", target, {"x": np.zeros((2, 10, 2))})], ["mala"])


def test_draws_with_another_number_of_parameters_than_the_reference_are_refused(tiny):
    target, reference = tiny

    def two(target, chains, warmup, draws, seed):
        return suite.Run(np.zeros((chains, draws, 2)), 1.0)

    with pytest.raises(ValueError, match="draws have 2 parameters per draw, the target 'gauss1' has 1"):
        suite.run_method(target, reference, ("two", two), draws=10)
    # draws given as sites: score names the site whose shape differs from the reference's
    with pytest.raises(ValueError, match=r"differ in the shape of site\(s\) 'x': \(2,\) vs \(1,\)"):
        suite.run_method(target, reference, ("two", lambda *a: suite.Run({"x": np.zeros((2, 10, 2))}, 1.0)))


def test_plain_bench_still_runs_the_scripts():
    from driftax.cli import build_parser
    from driftax.cli import bench

    args = build_parser().parse_args(["bench", "--full"])
    assert args.func is bench.run and args.full
    args = build_parser().parse_args(["bench", "samplers", "--targets", "arK", "--quick", "--json", "x.json"])
    assert args.func is bench.run_samplers and args.quick and args.targets == "arK"


def test_json_safe_turns_numpy_values_and_non_finite_floats_into_json():
    value = {"a": [np.float32(1.5), np.int64(3), np.bool_(True), float("nan")],
             "b": {"c": np.array([1.0, np.inf]), "d": (np.float64(-np.inf), "text", None)}}
    out = suite.json_safe(value)
    assert out == {"a": [1.5, 3, True, None], "b": {"c": [1.0, None], "d": [None, "text", None]}}
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # strict JSON: no NaN/Infinity tokens
    assert type(out["a"][1]) is int and type(out["a"][2]) is bool
