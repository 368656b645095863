"""The minimum detectable difference (MDD) of a paired bootstrap comparison, and how the report and the claims
section use it (docs/metrics.md, "Intervals, paired differences and the minimum detectable difference")."""
import json

import numpy as np
import pytest

from cl_asr.report import write_report
from cl_asr.report.claims import NO_TEST, check_claims, load_claims
from cl_asr.report.stats import MDD_FACTOR, RESOLUTION, Difference
from test_claims_and_joint_metrics import summary
from test_reports import boot, preds, toy_run


def test_the_mdd_factor_is_z_of_the_test_plus_z_of_the_power():
    assert MDD_FACTOR == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    d = Difference("a", "b", "avg_error", -0.02, -0.05, 0.01, 0.2, se=0.01)
    assert d.mdd == pytest.approx(MDD_FACTOR * 0.01) and d.mdd_text() == "0.028"
    assert d.half_width == pytest.approx(0.03) and not d.narrower_than(0.03) and d.narrower_than(0.031)
    old = Difference("a", "b", "avg_error", 0.0, np.nan, np.nan, np.nan)  # no replicates: no MDD
    assert np.isnan(old.mdd) and old.mdd_text() == "–"


@pytest.mark.parametrize("n", [20, 80])
def test_mdd_from_a_bootstrap_whose_standard_error_is_known(n):
    """System x has edits e_i on set a's utterances and none on b, y none anywhere (10 reference tokens each):
    x - y in final average error is 0.5 x the drawn mean of e / 10, whose bootstrap SE is 0.05 sd(e) / sqrt(n)."""
    rng = np.random.default_rng(3)
    e = rng.integers(0, 8, n)
    rows = preds("x", 0, {1: {"a": e}}, n=n) + preds("y", 0, {}, n=n)
    b = boot(rows)
    d = b.compare("x", "y", "avg_error")
    se_known = 0.05 * np.std(e) / np.sqrt(n)  # multinomial draws of n: var of the drawn mean = popvar / n
    assert d.se == pytest.approx(se_known, rel=0.06)  # 2000 replicates: the SE itself is estimated to ~2%
    assert d.mdd == pytest.approx(MDD_FACTOR * se_known, rel=0.06)
    reps = b.replicates("x", "avg_error") - b.replicates("y", "avg_error")
    assert d.mdd == pytest.approx(MDD_FACTOR * np.std(reps[1:], ddof=1))  # exactly the replicates' SD
    assert b.compare("y", "x", "avg_error").mdd == pytest.approx(d.mdd)  # a property of the pair


def test_four_times_the_utterances_halve_the_mdd():
    e = np.random.default_rng(5).integers(0, 8, 20)
    small = boot(preds("x", 0, {1: {"a": e}}) + preds("y", 0, {})).compare("x", "y", "avg_error")
    e4 = np.tile(e, 4)  # the same utterances four times over: the same spread, 4 x n
    big = boot(preds("x", 0, {1: {"a": e4}}, n=80) + preds("y", 0, {}, n=80)).compare("x", "y", "avg_error")
    assert big.point == pytest.approx(small.point)
    assert big.mdd / small.mdd == pytest.approx(0.5, rel=0.08)


def _claims(s, compare=None):
    return {v.id: v for v in check_claims(s, load_claims(), compare)}


def test_a_claim_whose_difference_is_not_significant_is_not_decided():
    s = summary(spt_entire=0.30, spt_decoder=0.35, lapt=0.31, lora=0.2, spt4asr=0.25, fft=0.25)
    ns = Difference("spt_entire", "spt_decoder", "avg_error", -0.05, -0.11, 0.01, 0.13, se=0.03)
    got = _claims(s, lambda a, b, m: ns)
    v = got["entire_beats_decoder"]
    assert v.verdict == "held"  # the direction of the means
    assert v.decision.startswith("not decided at this test-set size")
    assert f"MDD {MDD_FACTOR * 0.03:.3f}" in v.decision and v.mdd == pytest.approx(MDD_FACTOR * 0.03)
    assert f"(±0.060) is wider than ±{RESOLUTION:g}" in v.decision
    narrow = Difference("a", "b", "avg_error", -0.01, -0.025, 0.005, 0.3, se=0.008)
    assert "is narrower than ±0.03" in _claims(s, lambda a, b, m: narrow)["entire_beats_decoder"].decision


def test_significant_claims_are_held_or_not_held_and_exact_ones_exact():
    s = summary(spt_entire=0.30, spt_decoder=0.35, lapt=0.31, lora=0.2, spt4asr=0.25, fft=0.25)

    def compare(a, b, m):  # the difference a - b, significant either way: its sign is that of the means
        va, vb = (s.set_index("strategy")[m][x] for x in (a, b))
        return Difference(a, b, m, va - vb, va - vb - 0.01, va - vb + 0.01, 0.001, se=0.005)

    got = _claims(s, compare)
    assert got["entire_beats_decoder"].decision == "held (significant)"
    assert got["lapt_beats_entire"].verdict == "not held"
    assert got["lapt_beats_entire"].decision == "not held (significant)"
    assert got["frozen_keep_base"].decision == "held (exact)" and np.isnan(got["frozen_keep_base"].mdd)
    assert got["fft_spt_beats_fft"].decision == ""  # not tested: nothing to decide
    # no per-utterance counts (old runs): no test, said so
    old = _claims(s)
    assert old["entire_beats_decoder"].decision == NO_TEST and np.isnan(old["entire_beats_decoder"].mdd)


def test_best_among_not_held_is_decided_against_the_strategy_that_is_best():
    s = summary(dpt=0.30, respt=0.28, spt_entire=0.32, spt_decoder=0.35)
    asked = []

    def compare(a, b, m):
        asked.append((a, b))
        return Difference(a, b, m, 0.02, 0.005, 0.035, 0.01, se=0.008)  # a significantly worse than b

    v = _claims(s, compare)["dpt_strongest_single_variant"]
    assert v.verdict == "not held" and v.decision == "not held (significant)"
    assert ("dpt", "respt") in asked and "dpt minus respt +0.020" in v.figures


# -- the report --------------------------------------------------------------------------------------------
NOISY = [int(x) for x in np.random.default_rng(0).integers(0, 6, 20)]
LORA = {-1: {"a": 8, "b": 8, "z": 1}, 0: {"a": NOISY, "b": 8, "z": 1}, 1: {"a": NOISY, "b": NOISY, "z": 1}}
ONE_MORE = [NOISY[0] + 1, *NOISY[1:]]  # one more error on one utterance: a tiny difference, not significant
SPT4ASR = {-1: {"a": 8, "b": 8, "z": 1}, 0: {"a": ONE_MORE, "b": 8, "z": 1}, 1: {"a": ONE_MORE, "b": NOISY, "z": 1}}


def test_the_report_gives_the_mdd_and_says_a_non_significant_claim_is_not_decided(tmp_path):
    toy_run(tmp_path / "run", [("lora", False, LORA), ("spt4asr", False, SPT4ASR)])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "**MDD** (minimum detectable difference) = (z₀.₉₇₅ + z₀.₈₀) × SE = 2.80 × SE" in md  # defined once
    assert md.count("**MDD** (minimum detectable difference)") == 1
    summary_header = next(line for line in md.splitlines() if line.startswith("| strategy | seeds |"))
    assert "| vs best ↓ | MDD vs best |" in summary_header
    ranking = md.split("## Is the ranking real? Paired differences")[1].split("\n## ")[0]
    assert "| strategy | next better | difference in avg_error | p | significant | MDD | interval ± |" in ranking
    assert "Over the 1 pairs the minimum detectable difference" in ranking
    claims = md.split("## The papers' claims on this run")[1].split("\n## ")[0]
    assert "| claim | verdict | decision | significance | MDD | figures | source |" in claims
    row = next(line for line in claims.splitlines() if line.startswith("| LoRA is at least as good as SPT4ASR"))
    assert "| held | not decided at this test-set size: not significant, MDD 0.0" in row
    assert "narrower than ±0.03" in row


def test_a_run_without_per_utterance_counts_says_it_has_no_mdd(tmp_path):
    run = tmp_path / "run"
    toy_run(run, [("lora", False, LORA), ("spt4asr", False, SPT4ASR)])
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for r in rows:  # as predictions.jsonl was before per-utterance counts were recorded
        del r["edits"], r["ref_tokens"]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run)
    md = (run / "report.md").read_text()
    assert "No intervals, significance tests or minimum detectable differences (MDD) in this report" in md
    assert "MDD vs best" not in md and "## Is the ranking real?" not in md
    row = next(line for line in md.splitlines() if line.startswith("| LoRA is at least as good as SPT4ASR"))
    assert NO_TEST in row
