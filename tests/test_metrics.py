import numpy as np
import pytest

from cl_asr.metrics.continual import continual_metrics
from cl_asr.metrics.text import error_counts, normalize

# Rows: before training, after exp 0, after exp 1, after exp 2; columns: experiences 0..2.
R = np.array([
    [0.80, 0.70, 0.90],
    [0.30, 0.60, 0.85],
    [0.40, 0.20, 0.80],
    [0.50, 0.25, 0.10],
])
BASE = np.array([[0.10, 0.20], [0.12, 0.20], [0.15, 0.22], [0.20, 0.30]])


def test_continual_metrics_match_hand_computation():
    m = continual_metrics(R, BASE)
    assert m.avg_error == pytest.approx((0.50 + 0.25 + 0.10) / 3)
    assert m.learned_error == pytest.approx((0.30 + 0.20 + 0.10) / 3)
    # bwt: (R00 - R20) and (R11 - R21): (0.30-0.50) and (0.20-0.25)
    assert m.bwt == pytest.approx(((0.30 - 0.50) + (0.20 - 0.25)) / 2)
    # forgetting: final minus best earlier: exp0 best of (0.30, 0.40) -> 0.50-0.30; exp1 best 0.20 -> 0.05
    assert m.forgetting == pytest.approx(((0.50 - 0.30) + (0.25 - 0.20)) / 2)
    # fwt: zero-shot minus error just before training: exp1 0.70-0.60, exp2 0.90-0.80
    assert m.fwt == pytest.approx(((0.70 - 0.60) + (0.90 - 0.80)) / 2)
    assert m.base_error_delta == pytest.approx(((0.20 - 0.10) + (0.30 - 0.20)) / 2)


def test_no_forgetting_for_a_model_that_never_changes():
    frozen = np.tile([0.5, 0.6], (3, 1))
    m = continual_metrics(frozen, np.tile([0.1], (3, 1)))
    assert (m.bwt, m.forgetting, m.fwt, m.base_error_delta) == (0.0, 0.0, 0.0, 0.0)


def test_continual_metrics_refuse_bad_shapes_and_missing_cells():
    with pytest.raises(ValueError, match="T\\+1 rows"):
        continual_metrics(np.zeros((3, 3)))
    bad = R.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="missing cells"):
        continual_metrics(bad)


def test_error_counts_are_pooled_over_the_corpus_not_averaged():
    refs = ["the cat sat", "a dog ran away fast"]
    hyps = ["the cat", "a dog ran away fast"]
    c = error_counts(refs, hyps, "en")
    assert (c["wer"].edits, c["wer"].ref_tokens) == (1, 8)
    assert c["wer"].rate == pytest.approx(1 / 8)  # a per-utterance mean would give 1/6
    # CER counts characters including spaces: "the cat sat" -> "the cat" deletes " sat" (4 characters)
    assert c["cer"].edits == 4 and c["cer"].ref_tokens == len("the cat sat") + len("a dog ran away fast")


def test_normalisation_keeps_diacritics_and_drops_punctuation_and_case():
    assert normalize("Ĉu vi vidis la ŝlosilojn?", "eo") == "ĉu vi vidis la ŝlosilojn"
    assert normalize("Tá an aimsir go hálainn!", "ga") == "tá an aimsir go hálainn"
    assert normalize("¿Dónde está?", "es") == "dónde está"
    # the English normaliser standardises numbers, so "ten" and "10" score as equal
    assert normalize("Ten minutes.", "en") == normalize("10 minutes", "en")


def test_error_counts_refuse_empty_references():
    with pytest.raises(ValueError, match="empty after normalisation"):
        error_counts(["?!"], ["x"], "en")
    with pytest.raises(ValueError, match="empty test set"):
        error_counts([], [], "en")
