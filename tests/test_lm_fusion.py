"""Shallow fusion with an experience's n-gram LM (cl_asr/cl/lm_fusion.py), usable with any strategy as the
variant `[lm_weight=W]`: the LM's probabilities by hand, the fused scores, a micro run where only the
experiences' test sets after training change, and run.json of runs without fusion unchanged."""
import json
import math

import pytest
import torch

from cl_asr.cl.lm_fusion import DISCOUNT, NGramLM, ShallowFusion, train_lm
from cl_asr.cli import main
from helpers import strategy_rows
from cl_asr.config import config_record
from cl_asr.methods import method_config
from cl_asr.tune import search_space

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--no-report", "--set", "n_train=2"]


def test_interpolated_absolute_discounting_by_hand():
    lm = NGramLM([[1, 2, 3], [1, 2, 4]], order=3, vocab_size=10, eos=9)
    # unigrams: 1:2 2:2 3:1 4:1 eos:2 of 8, five types; the freed mass goes to the uniform 1/10
    p1 = lambda w, c: max(c - DISCOUNT, 0) / 8 + DISCOUNT * 5 / 8 / 10  # noqa: E731
    assert float(lm.distribution([])[0]) == pytest.approx(p1(0, 0))
    assert float(lm.distribution([])[1]) == pytest.approx(p1(1, 2))
    # bigram context (2,): 3 and 4 once each of 2; trigram (1, 2) the same
    p2 = lambda w, c: max(c - DISCOUNT, 0) / 2 + DISCOUNT * 2 / 2 * p1(w, {1: 2, 2: 2, 3: 1, 4: 1, 9: 2}.get(w, 0))  # noqa: E731
    p3_of_3 = (1 - DISCOUNT) / 2 + DISCOUNT * 2 / 2 * p2(3, 1)
    assert float(lm.distribution([1, 2])[3]) == pytest.approx(p3_of_3)
    assert float(lm.distribution([7, 1, 2])[3]) == pytest.approx(p3_of_3)  # only the last order-1 tokens count
    for history in ([], [1], [1, 2], [5, 5], [2, 3]):
        assert float(lm.distribution(history).sum()) == pytest.approx(1.0)
    assert lm.log_prob([1, 2, 3]) > lm.log_prob([3, 2, 1])


def test_the_digest_follows_the_sentences_and_settings():
    a = NGramLM([[1, 2, 3]], 3, 10, 9)
    assert a.digest == NGramLM([[1, 2, 3]], 3, 10, 9).digest
    assert len({a.digest, NGramLM([[1, 2, 4]], 3, 10, 9).digest, NGramLM([[1, 2, 3]], 2, 10, 9).digest}) == 3


def test_fusion_adds_the_weighted_lm_log_probability_after_the_last_special_token():
    lm = NGramLM([[1, 2, 3]] * 5, order=2, vocab_size=10, eos=9)
    scores = torch.zeros(2, 12)  # two rows, 12 ids: 0-8 text, 9 = eos, 10-11 specials (forced prefix)
    input_ids = torch.tensor([[10, 11, 2], [10, 2, 11]])  # row 0's text so far is [2]; row 1's is empty
    fused = ShallowFusion(lm, weight=0.5)(input_ids, scores)
    base = torch.log_softmax(scores, dim=-1)
    torch.testing.assert_close(fused[0, :10], (base[0, :10] + 0.5 * torch.log(lm.distribution([2]))).float())
    torch.testing.assert_close(fused[1, :10], (base[1, :10] + 0.5 * torch.log(lm.distribution([]))).float())
    assert int(fused[0].argmax()) == 3  # the LM's continuation of 2 wins where the decoder is indifferent
    floor = math.log(float(lm.distribution([2])[:9].min()))
    assert float(fused[0, 11]) == pytest.approx(float(base[0, 11]) + 0.5 * floor)  # specials: the LM's floor


def test_the_lm_is_tokenised_as_the_training_labels(tiny):
    tok = tiny.tokenizer
    lm = train_lm(tok, ["hello world"], order=2)
    first = tok.encode(" hello world", add_special_tokens=False)
    assert lm.vocab_size == tok.eos_token_id + 1 and lm.eos == tok.eos_token_id
    assert int(lm.distribution(first[:1]).argmax()) == first[1]


def test_fusion_fields_are_validated_recorded_only_when_set_and_searched_only_when_named():
    config = method_config("fft")
    assert "lm_weight" not in config_record(config) and "lm_order" not in config_record(config)
    from dataclasses import replace
    assert config_record(replace(config, lm_weight=0.3))["lm_weight"] == 0.3
    with pytest.raises(ValueError, match="lm_weight"):
        replace(config, lm_weight=-1.0)
    assert "lm_weight" not in search_space(config)
    assert search_space(config, ["lm_weight"]) == {"lm_weight": {"choices": [0.0, 0.1, 0.2, 0.3, 0.5]}}



@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fusion") / "run"
    assert main([*MICRO, "--strategies", "fft,fft[lm_weight=2.0],zero_shot,zero_shot[lm_weight=2.0]",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("base", ["fft", "zero_shot"])  # zero_shot trains nothing: it reads each experience's text
def test_fusion_changes_only_the_learned_experiences_test_sets(fused_run, base):
    plain = {(p["trained_through"], p["eval_on"]): p["hyps"] for p in strategy_rows(fused_run, base, "predictions")}
    fused = {(p["trained_through"], p["eval_on"]): p["hyps"] for p in strategy_rows(fused_run, f"{base}[lm_weight=2.0]",
                                                                            "predictions")}
    assert plain.keys() == fused.keys()
    experiences = ["eo", "ia", "ga"]
    for (step, name), hyps in plain.items():
        learned = name in experiences and experiences.index(name) <= step
        if not learned:  # base languages, and experiences not trained yet: no LM, identical decodes
            assert fused[(step, name)] == hyps, (step, name)
    changed = [k for k in plain if plain[k] != fused[k]]
    assert changed and all(name in experiences for _, name in changed)
    config = json.loads((fused_run / "run.json").read_text())["config"]["strategies"]
    assert config[f"{base}[lm_weight=2.0]"]["lm_weight"] == 2.0 and "lm_weight" not in config[base]


def test_a_joint_strategy_with_fusion_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert main([*MICRO, "--strategies", "joint[lm_weight=0.3]", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "joint[lm_weight=0.3]: lm_weight fuses each experience's test set" in err[0]
    assert not out.exists()
