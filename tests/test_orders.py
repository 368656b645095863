"""Stream orders (`--orders K`, `--orders "eo,ia,ga;ga,ia,eo"`, README "Stream orders"): the orders chosen, each
order a row of its own that really trains in its order, the decode memo keeping sets apart whatever their place
in a stream, run.json recording each row's order, and the report averaging every measure over orders."""
import json
import sys

import pandas as pd
import pytest

from cl_asr import orders
from cl_asr.cli import main

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--set", "n_train=2"]
EXPS = ["eo", "ia", "ga"]


def test_orders_are_the_scenarios_then_its_rotations_then_the_other_permutations():
    assert orders.generate(EXPS, 1) == [EXPS]
    assert orders.generate(EXPS, 3) == [["eo", "ia", "ga"], ["ia", "ga", "eo"], ["ga", "eo", "ia"]]
    six = orders.generate(EXPS, 6)
    assert len({tuple(o) for o in six}) == 6 and all(sorted(o) == sorted(EXPS) for o in six)
    with pytest.raises(ValueError, match="3 experiences .* have only 6 orders"):
        orders.generate(EXPS, 7)
    assert orders.parse("3") == 3 and orders.parse("eo,ia,ga; ga,ia,eo") == [EXPS, ["ga", "ia", "eo"]]
    with pytest.raises(ValueError, match="at least 1"):
        orders.parse("0")
    with pytest.raises(ValueError, match="'eo,ia' is not an order of the scenario's experiences eo, ia, ga"):
        orders.resolve([["eo", "ia"]], EXPS)
    with pytest.raises(ValueError, match="names the order eo,ia,ga twice"):
        orders.resolve([EXPS, EXPS], EXPS)


def test_row_names_carry_their_order_and_the_scenarios_order_keeps_the_plain_name():
    assert orders.row_name("lora", EXPS, EXPS) == "lora"
    assert orders.row_name("lora[rank=4]", ["ga", "ia", "eo"], EXPS) == "lora[rank=4]@ga>ia>eo"
    assert orders.split("lora[rank=4]@ga>ia>eo") == ("lora[rank=4]", ["ga", "ia", "eo"])
    assert orders.split("lora") == ("lora", None) and orders.split("x[s=a@b]") == ("x[s=a@b]", None)
    rows = orders.expand(["zero_shot", "lora@ga>ia>eo"], orders.generate(EXPS, 2), EXPS)
    assert rows == ["zero_shot", "zero_shot@ia>ga>eo", "lora@ga>ia>eo"]
    assert orders.expand(rows, orders.generate(EXPS, 2), EXPS) == rows  # expanding row names changes nothing


@pytest.fixture(scope="module")
def ordered_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("orders") / "run"
    args = [*MICRO, "--strategies", "zero_shot,spt_decoder", "--orders", "3", "--out", str(out)]
    assert main(args) == 0
    return out, args


ROWS = ["zero_shot", "zero_shot@ia>ga>eo", "zero_shot@ga>eo>ia",
        "spt_decoder", "spt_decoder@ia>ga>eo", "spt_decoder@ga>eo>ia"]


def test_each_order_is_a_row_that_trains_in_its_order(ordered_run):
    out, _ = ordered_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert list(dict.fromkeys(r["strategy"] for r in rows)) == ROWS
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["orders"] == {"zero_shot@ia>ga>eo": ["ia", "ga", "eo"],
                                        "zero_shot@ga>eo>ia": ["ga", "eo", "ia"],
                                        "spt_decoder@ia>ga>eo": ["ia", "ga", "eo"],
                                        "spt_decoder@ga>eo>ia": ["ga", "eo", "ia"]}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by = {(p["strategy"], p["trained_through"], p["eval_on"]): p for p in preds}
    # after its k-th experience a set-per-experience strategy routes exactly the sets it has learned, in its order
    for name, order in [("spt_decoder", EXPS), ("spt_decoder@ga>eo>ia", ["ga", "eo", "ia"])]:
        for step in range(3):
            for k, set_name in enumerate(order):
                routes = set(by[(name, step, set_name)]["routes"])
                assert routes == ({str(k)} if k <= step else {None}), (name, step, set_name, routes)
    # zero-shot decodes each set the same whatever its place in the stream (the decode memo keys sets by name)
    for (name, step, set_name), p in by.items():
        if name.startswith("zero_shot@"):
            assert p["hyps"] == by[("zero_shot", step, set_name)]["hyps"], (name, set_name)
            assert p["ids"] == by[("zero_shot", step, set_name)]["ids"]


def test_the_report_averages_each_measure_over_orders_and_keeps_each_orders_matrix(ordered_run):
    out, _ = ordered_run
    over = pd.read_csv(out / "summary_orders.csv")
    assert set(over.strategy) == {"zero_shot", "spt_decoder"} and set(over.n_orders) == {3}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.strategy) == ROWS
    for group in ("zero_shot", "spt_decoder"):
        mine = summary[summary.strategy.str.split("@").str[0] == group]
        row = over[(over.strategy == group) & (over.measure == "avg_error")].iloc[0]
        assert row.mean_over_orders == pytest.approx(mine.avg_error.mean())
        assert row.std_over_orders == pytest.approx(mine.avg_error.std(ddof=1))
        assert row["min"] == pytest.approx(mine.avg_error.min()) and row.ci_low <= row.mean_over_orders <= row.ci_high
    zero = over[(over.strategy == "zero_shot") & (over.measure == "avg_error")].iloc[0]
    assert zero.std_over_orders == pytest.approx(0.0)  # nothing trained: every order gives the same error
    report = (out / "report.md").read_text()
    assert "## Stream orders" in report
    head = report.index("### spt_decoder@ga>eo>ia")
    assert "| trained through | ga | eo | ia |" in report[head:head + 300]
    assert "| after ga |" in report[head:head + 1200]


def test_an_ordered_run_resumes_and_bad_orders_are_refused(ordered_run, capsys):
    out, args = ordered_run
    before = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*args, "--no-report"]) == 0
    assert "spt_decoder@ga>eo>ia (seed 0): already complete, skipped" in "".join(capsys.readouterr())
    assert (out / "results.jsonl").read_bytes() == before
    for spec, message in [("eo,ia", "--orders: 'eo,ia' is not an order of the scenario's experiences eo, ia, ga"),
                          ("7", "--orders 7: 3 experiences (eo, ia, ga) have only 6 orders"),
                          ("eo,ia,xx", "'eo,ia,xx' is not an order")]:
        assert main([*MICRO, "--strategies", "zero_shot", "--orders", spec, "--out", str(out.parent / "bad")]) == 2
        assert message in capsys.readouterr().err
        assert not (out.parent / "bad").exists()


def test_the_ray_executor_runs_each_order_as_a_job(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_variants import _FakeRay

    ray = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    out = tmp_path / "ray"
    assert main([*MICRO, "--executor", "ray", "--strategies", "zero_shot", "--orders", "eo,ia,ga;ga,ia,eo",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(ray.names) == 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["orders"] == {"zero_shot@ga>ia>eo": ["ga", "ia", "eo"]}
    assert set(pd.read_csv(out / "summary_orders.csv").strategy) == {"zero_shot"}
