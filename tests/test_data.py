import threading

import numpy as np
import pytest

from cl_asr.data import corpus as corpus_mod
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.text_bank import available_languages, load_sentences, split_sentences
from cl_asr.data.tts import SAMPLE_RATE, SynthesisError, Voice, synthesize

LANGUAGES = ["en", "de", "es", "eo", "ia", "ga"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_synthesis_gives_16khz_speech_in_every_scenario_language(lang):
    text = load_sentences(lang)[0]
    audio = synthesize(text, Voice(lang, "m1", 150, 50))
    assert audio.dtype == np.float32 and audio.ndim == 1
    seconds = len(audio) / SAMPLE_RATE
    assert 1.0 < seconds < 10.0, f"{lang}: {seconds:.2f} s for {text!r}"
    assert np.abs(audio).max() > 0.1  # not silence
    assert np.abs(audio).max() <= 1.0


def median_f0(audio, sr=SAMPLE_RATE):
    """Median fundamental frequency (Hz) of the voiced 40 ms frames, from their autocorrelation peak."""
    frame, f0s = int(0.04 * sr), []
    for i in range(0, len(audio) - frame, frame // 2):
        w = audio[i:i + frame] - audio[i:i + frame].mean()
        if np.sqrt(np.mean(w ** 2)) < 0.05 * np.abs(audio).max():
            continue  # silence
        ac = np.correlate(w, w, "full")[frame - 1:]
        lag = sr // 400 + int(np.argmax(ac[sr // 400: sr // 60]))  # 60..400 Hz
        if ac[lag] > 0.3 * ac[0]:
            f0s.append(sr / lag)
    return float(np.median(f0s))


def test_voices_rate_and_pitch_change_the_audio():
    text = "The weather is lovely today."
    base = synthesize(text, Voice("en", "m1", 150, 50))
    slow = synthesize(text, Voice("en", "m1", 100, 50))
    other = synthesize(text, Voice("en", "f2", 150, 50))
    higher = synthesize(text, Voice("en", "m1", 150, 90))
    assert len(slow) > 1.2 * len(base)  # a slower rate is longer speech
    # (espeak-ng's samples differ from call to call anyway: compare what the voice is, its pitch)
    assert median_f0(higher) > 1.3 * median_f0(base)  # a higher pitch setting is a higher voice (~140 vs ~92 Hz)
    assert median_f0(other) > 1.5 * median_f0(base)  # the female variant f2 (~190 Hz) against the male m1


def test_synthesis_errors_are_clear():
    with pytest.raises(SynthesisError, match="no voice 'xx-nonexistent'"):
        synthesize("hello", Voice("xx-nonexistent"))
    with pytest.raises(SynthesisError, match="empty text"):
        synthesize("   ", Voice("en"))


def test_concurrent_synthesis_is_safe():
    # espeak-ng itself crashes on concurrent calls (double free); the module lock must serialise them.
    results, errors = [], []

    def work(lang):
        try:
            for s in load_sentences(lang)[:3]:
                results.append(len(synthesize(s, Voice(lang))))
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lang,)) for lang in LANGUAGES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 * len(LANGUAGES) and min(results) > SAMPLE_RATE


def test_sentence_bank_has_enough_distinct_sentences_and_disjoint_splits():
    assert set(LANGUAGES) <= set(available_languages())
    for lang in LANGUAGES:
        sentences = load_sentences(lang)
        assert len(set(sentences)) >= 120, lang
        assert not any(ch.isdigit() for s in sentences for ch in s), f"{lang}: digits are read inconsistently"
        train, test = split_sentences(lang, 40)
        assert len(test) == 40 and len(train) == len(sentences) - 40
        assert not set(train) & set(test)
        assert split_sentences(lang, 40) == (train, test)  # fixed, independent of any run seed


def test_noisy_voice_variants_give_the_same_audio_in_every_fresh_process():
    # f2 and f3 add breath noise from espeak-ng's random generator, which it seeds from the clock; tts seeds it
    # per utterance, so a corpus synthesised on another machine (or after a cache loss) is the same corpus
    items = [(text, Voice("eo", v, 150, 50)) for v in ("f2", "f3") for text in load_sentences("eo")[:2]]
    first, second = corpus_mod.speak_in_fresh_process(items), corpus_mod.speak_in_fresh_process(items)
    for (text, voice), a, b in zip(items, first, second):
        assert a.shape == b.shape and np.array_equal(a, b), (voice, text)
    assert not np.array_equal(first[0][:1000], first[1][:1000])  # different utterances, different audio


def test_corpus_is_built_once_then_read_from_cache(isolated_cache, monkeypatch):
    calls = []
    real = corpus_mod.speak_in_fresh_process

    def counting(items):
        calls.extend(text for text, _ in items)
        return real(items)

    monkeypatch.setattr(corpus_mod, "speak_in_fresh_process", counting)
    sentences = tuple(load_sentences("eo")[:3])
    spec = CorpusSpec("t/eo/train", "eo", sentences, (Voice("eo", "m1"), Voice("eo", "f2")), silence_seconds=0.3)
    ds = synthesize_corpus(spec, progress=False)
    assert len(calls) == 3
    assert set(ds.column_names) >= {"id", "audio", "text", "language", "speaker", "duration"}
    row = ds[1]
    assert row["text"] == sentences[1] and row["language"] == "eo" and row["speaker"].startswith("eo+f2")
    assert row["audio"]["sampling_rate"] == SAMPLE_RATE and row["audio"]["array"].dtype == np.float32
    assert np.all(row["audio"]["array"][: int(0.3 * SAMPLE_RATE)] == 0)  # leading silence
    again = synthesize_corpus(spec, progress=False)
    assert len(calls) == 3, "second build must come from the cache"
    np.testing.assert_array_equal(again[0]["audio"]["array"], ds[0]["audio"]["array"])
    other = synthesize_corpus(CorpusSpec("t/eo/train", "eo", sentences[:2], spec.voices), progress=False)
    assert len(calls) == 5 and len(other) == 2  # a different spec is a different corpus
    assert len(list((isolated_cache / "corpora").iterdir())) == 2


def test_corpus_audio_depends_on_its_spec_only_not_on_what_was_synthesised_before(isolated_cache):
    """espeak-ng's output depends on earlier calls in its process; corpora are made in fresh processes."""
    import shutil

    eo = tuple(load_sentences("eo")[:2])
    a = CorpusSpec("t/a", "eo", eo, (Voice("eo", "m1", 140),))
    b = CorpusSpec("t/b", "eo", eo[::-1], (Voice("eo", "f2", 150, 60),))
    first = [r["audio"]["array"] for r in synthesize_corpus(a, progress=False)]
    synthesize(eo[1], Voice("eo", "klatt"))  # history in this process must not matter
    shutil.rmtree(isolated_cache / "corpora")
    synthesize_corpus(b, progress=False)
    second = [r["audio"]["array"] for r in synthesize_corpus(a, progress=False)]
    assert len(first) == len(second) == 2
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)


def test_assemble_counts_utterances_longer_than_the_encoder_window():
    """The encoder sees only the window: utterances longer than it are counted (the report's data line)."""
    import datasets

    from cl_asr.core import Target
    from cl_asr.scenarios import load_scenario_builder

    builder = load_scenario_builder("languages")
    profile = builder.profile("micro")  # a 10 s window
    rows = lambda secs: datasets.Dataset.from_dict(  # noqa: E731
        {"id": [f"u{i}" for i in range(len(secs))], "text": ["x"] * len(secs), "duration": secs})
    targets = {(s, 0): Target(s, 0, "a", "en", "en") for s in ("train", "test")}
    settings = {}
    builder.assemble(profile, [rows([3.0, 12.5])], [rows([10.0, 10.5, 4.0])], [], targets, settings)
    assert settings["utterances"]["longer_than_window"] == 2  # 12.5 s and 10.5 s; exactly 10 s fits
    settings = {}
    builder.assemble(profile, [rows([3.0])], [rows([9.9])], [], targets, settings)
    assert "longer_than_window" not in settings["utterances"]
