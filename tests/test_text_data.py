"""Text data: the Mandarin sentence bank, code-switched sentences and entity-heavy domains (no audio)."""
import re

import pytest

from cl_asr.data.code_switch_text import PAIRS, code_switched_sentences, sentence_text
from cl_asr.data.domain_text import DOMAINS, domain_sentences
from cl_asr.data.text_bank import load_sentences, split_sentences

CJK = re.compile(r"[\u3400-\u9fff]")
DIGIT = re.compile(r"[0-9\uff10-\uff19]")


def test_mandarin_bank_loads_with_180_distinct_sentences():
    sentences = load_sentences("zh")
    assert len(sentences) == 180 == len(set(sentences))
    for s in sentences:
        assert 5 <= len(s) <= 20, s
        assert CJK.search(s) and not re.search(r"[A-Za-z]", s) and not DIGIT.search(s), s
    train, test = split_sentences("zh", 40)
    assert len(test) == 40 and not set(train) & set(test)


@pytest.mark.parametrize("pair", PAIRS)
def test_code_switched_sentences_are_valid_and_deterministic(pair):
    sentences = code_switched_sentences(pair)
    assert sentences == code_switched_sentences(pair)
    assert len(sentences) >= 220
    texts = [sentence_text(s) for s in sentences]
    assert len(set(texts)) == len(texts)
    matrix, other = pair.split("-")
    for segs, text in zip(sentences, texts, strict=True):
        langs = [lang for lang, _ in segs]
        assert set(langs) == {matrix, other}, segs
        assert all(a != b for a, b in zip(langs, langs[1:])), segs
        for _, seg in segs:
            assert seg == seg.strip() and re.search(r"\w", seg), segs
        assert not DIGIT.search(text), text
        if matrix == "zh":
            size = len(CJK.findall(text)) + len(re.findall(r"[A-Za-z]+", text))
            assert size <= 20, text
            assert not re.search(r"[\u3400-\u9fff]\s+[\u3400-\u9fff]", text), text
            assert re.search(r"[\u3400-\u9fff] [A-Za-z]|[A-Za-z] [\u3400-\u9fff]", text), text
            assert text.replace(" ", "") == "".join(seg for _, seg in segs).replace(" ", "")
        else:
            assert len(text.split()) <= 14, text
            assert text == " ".join(seg for _, seg in segs)
        for lang, seg in segs:
            if lang == "en":
                assert not CJK.search(seg), segs
            elif lang == "zh":
                assert not re.search(r"[A-Za-z]", seg), segs


def test_sentence_text_joins_like_ascend():
    assert sentence_text([("zh", "我们明天的"), ("en", "meeting"), ("zh", "要"), ("en", "cancel"), ("zh", "吗")]) == (
        "我们明天的 meeting 要 cancel 吗"
    )
    assert sentence_text([("es", "Mañana tengo un"), ("en", "meeting"), ("es", "con el equipo.")]) == (
        "Mañana tengo un meeting con el equipo."
    )


def test_unknown_pair_names_the_valid_ones():
    with pytest.raises(ValueError, match="es-en"):
        code_switched_sentences("fr-en")


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_sentences_are_deterministic_and_entities_verbatim(domain):
    train = domain_sentences(domain, 200, "train")
    test = domain_sentences(domain, 100, "test")
    assert train == domain_sentences(domain, 200, "train")
    assert domain_sentences(domain, 20, "train") == train[:20]
    assert not {s.text for s in train} & {s.text for s in domain_sentences(domain, 300, "test")}
    assert len(train) == 200 and len(test) == 100
    for s in train + test:
        assert 1 <= len(s.entities) <= 3, s
        assert len(s.text.split()) <= 20, s
        assert s.text.isascii() and not DIGIT.search(s.text), s
        rest = s.text
        for e in s.entities:  # verbatim and in order of appearance
            assert re.fullmatch(r"[A-Za-z]+( [A-Za-z]+)*", e), s
            assert e in rest, s
            rest = rest.split(e, 1)[1]
    # both splits draw on many distinct entities
    assert len({e for s in train for e in s.entities}) > 100


def test_domain_train_and_test_use_disjoint_templates():
    from cl_asr.data.domain_text import split_templates

    for domain in DOMAINS:
        train, test = split_templates(domain, "train"), split_templates(domain, "test")
        assert len(train) + len(test) >= 16 and not set(train) & set(test)
        assert 0.2 <= len(test) / (len(train) + len(test)) <= 0.3


def test_domain_errors():
    with pytest.raises(ValueError, match="music"):
        domain_sentences("sports", 10, "train")
    with pytest.raises(ValueError, match="available"):
        domain_sentences("food", 10**6, "train")
    with pytest.raises(ValueError):
        domain_sentences("food", 10, "validation")
