"""Caches correct by construction: user strategies that keep their state in extra modules, applied with hooks
on the decoder output, the encoder output and a decoder layer's cross-attention inputs, get with every cache on
exactly what they get with every cache off, and their decodes are counted as computed."""
import json
from pathlib import Path

import pytest
from helpers import run_suite

METHODS = Path(__file__).parent / "data" / "extra_module_methods.py"
STRATEGIES = ["decoder_output_shift", "decoder_output_shift_fast", "encoder_output_shift", "cross_attention_shift"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for label, extra in (("cached", []), ("uncached", ["--no-cache"])):
        d = tmp_path_factory.mktemp(label)
        r = run_suite("run", "--methods-from", str(METHODS), "--strategies", ",".join(STRATEGIES), "--profile",
                      "micro", "--out", str(d), "--no-progress", "--no-report", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        out[label] = d
    return out


def test_same_results_as_with_every_cache_off(runs):
    for name in ("results.jsonl", "predictions.jsonl"):
        assert (runs["cached"] / name).read_bytes() == (runs["uncached"] / name).read_bytes(), name
    uncached = json.loads((runs["uncached"] / "run.json").read_text())
    assert uncached["speed"]["encoder_cache"] == "off" and uncached["speed"]["decode_memo"] == "off"


def test_decodes_counted_as_computed_and_the_hooked_state_trained(runs):
    meta = json.loads((runs["cached"] / "run.json").read_text())
    by_name = {s["strategy"]: s for s in meta["strategy_runs"]}
    assert set(by_name) == set(STRATEGIES)
    for name, s in by_name.items():
        decodes = s["decodes"]
        # 4 passes x 6 sets, each a new state (the shift moves every experience): nothing to reuse
        assert decodes == {"computed": 24, "reused": 0, "not_shareable": 24}, (name, decodes)
        assert s["info"]["shift_norm"] > 0, name  # the hooked parameter got gradients and moved
    cache = meta["speed"]["encoder_cache"]
    assert cache["bypassed"] > 0  # encoder_output_shift: a hook on the encoder
    assert cache["cross_attention"]["bypassed"] > 0  # cross_attention_shift: a pre-hook on a decoder layer


def test_two_strategies_differing_only_in_learning_rate_decode_differently(runs):
    rows = [json.loads(line) for line in (runs["cached"] / "predictions.jsonl").read_text().splitlines()]
    hyps = {}
    for r in rows:
        if r["trained_through"] >= 0:
            hyps.setdefault(r["strategy"], {})[(r["trained_through"], r["eval_on"])] = r["hyps"]
    slow, fast = hyps["decoder_output_shift"], hyps["decoder_output_shift_fast"]
    assert slow.keys() == fast.keys() and len(slow) == 18
    assert any(slow[k] != fast[k] for k in slow)
