import math

import numpy as np
import pandas as pd
import pytest

from cl_asr.metrics.continual import continual_metrics, joint_metrics
from cl_asr.report.claims import check_claims, load_claims


def test_intransigence_compares_each_learned_experience_with_the_joint_model():
    new = np.array([[0.5, 0.6], [0.2, 0.6], [0.3, 0.25]])  # rows: before, after e0, after e1
    m = continual_metrics(new, joint_final=np.array([0.1, 0.2]))
    assert m.intransigence == pytest.approx(((0.2 - 0.1) + (0.25 - 0.2)) / 2)
    assert math.isnan(continual_metrics(new).intransigence)  # no joint model in the run: undefined
    with pytest.raises(ValueError, match="2 values"):
        continual_metrics(new, joint_final=np.array([0.1]))


def test_a_joint_model_has_final_error_but_no_sequential_metrics():
    new = np.array([[0.5, 0.6], [np.nan, np.nan], [0.1, 0.2]])
    base = np.array([[0.1], [np.nan], [0.3]])
    m = joint_metrics(new, base)
    assert m.avg_error == pytest.approx(0.15) and m.base_error_delta == pytest.approx(0.2)
    assert math.isnan(m.forgetting) and math.isnan(m.bwt) and math.isnan(m.learned_error)
    with pytest.raises(ValueError, match="first and last rows"):
        joint_metrics(np.array([[0.5, 0.6], [0.1, 0.1], [np.nan, 0.2]]))


def summary(scenario="languages", **avg):
    rows = [{"scenario": scenario, "strategy": s, "seed": 0, "avg_error": v,
             "base_error_delta": 0.0 if s != "fft" else 0.1} for s, v in avg.items()]
    return pd.DataFrame(rows)


def test_claims_are_held_not_held_or_not_tested_from_the_numbers():
    claims = {c["id"]: c for c in load_claims()}
    s = summary(spt_entire=0.30, spt_decoder=0.35, lapt=0.31, lora=0.2, spt4asr=0.2, fft=0.25, dpt=0.28,
                spt_input=0.4)
    got = {v.id: v for v in check_claims(s, list(claims.values()))}
    assert got["entire_beats_decoder"].verdict == "held"
    assert "spt_entire 0.300 vs spt_decoder 0.350" in got["entire_beats_decoder"].figures
    assert got["lapt_beats_entire"].verdict == "not held"
    assert got["lora_at_least_spt4asr"].verdict == "held"  # equal counts as at least as good
    assert got["dpt_strongest_single_variant"].verdict == "held"
    assert got["frozen_keep_base"].verdict == "held"
    assert got["fft_spt_beats_fft"].verdict == "not tested" and "fft_spt" in got["fft_spt_beats_fft"].figures

    s.loc[s.strategy == "lora", "base_error_delta"] = 0.01  # a frozen method that moved is named
    got = {v.id: v for v in check_claims(s, list(claims.values()))}
    assert got["frozen_keep_base"].verdict == "not held" and "lora +0.010" not in got["frozen_keep_base"].figures
    assert "not: lora 0.010" in got["frozen_keep_base"].figures


def test_claims_scoped_to_a_scenario_and_on_other_metrics():
    claims = list(load_claims())
    s = summary("text_domains", text_spt=0.28, zero_shot=0.31, fft=0.36, spt_entire=0.2, spt_decoder=0.3)
    s["avg_eer"] = [0.58, 0.66, 0.67, 0.9, 0.9]
    got = {v.id: v for v in check_claims(s, claims)}
    assert got["entire_beats_decoder"].verdict == "not tested" and "languages" in got["entire_beats_decoder"].figures
    assert got["text_spt_beats_zero_shot_eer"].verdict == "held"
    assert "avg_eer: text_spt 0.580 vs zero_shot 0.660" in got["text_spt_beats_zero_shot_eer"].figures
    assert got["text_spt_beats_empty_prompt_wer"].verdict == "held"
    got = {v.id: v for v in check_claims(s.drop(columns="avg_eer"), claims)}
    assert got["text_spt_beats_zero_shot_eer"].verdict == "not tested"


def test_malformed_claims_file_names_the_claim(tmp_path):
    from cl_asr.config import ConfigError

    bad = tmp_path / "references.yaml"
    bad.write_text("claims:\n  - id: x\n    text: t\n    source: s\n    kind: better\n    measure: avg_error\n    a: fft\n")
    with pytest.raises(ConfigError, match=r"claims\[0\] \(x\): missing \['b'\]"):
        load_claims(bad)
    bad.write_text("claims:\n  - id: y\n    kind: wins\n")
    with pytest.raises(ConfigError, match="kind 'wins' is not one of"):
        load_claims(bad)
