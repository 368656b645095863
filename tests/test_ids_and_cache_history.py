"""Reproducible by construction: utterance ids depend on the scenario and the utterance only, never on what the
corpus cache held before (the cache is keyed by content, so scenarios asking for the same audio share a corpus);
and `compare` pairs runs' test sets by their content checksums, not by their ids alone."""
import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from cl_asr.data import corpus as corpus_mod
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.text_bank import load_sentences
from cl_asr.data.tts import Voice
from cl_asr.report import write_comparison
from cl_asr.report.load import check_comparable, load_run
from cl_asr.report.stats import SET_CONTENT, Bootstrap, DifferentTestSets
from helpers import run_suite as cli


def arrow_checksum(ds) -> str:
    """The hash Scenario.checksums records in run.json for a set of one dataset (its arrow batches, ids included)."""
    h = hashlib.blake2b(digest_size=16)
    for batch in ds.with_format("arrow").iter(batch_size=256):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


# -- the corpus cache ------------------------------------------------------------------------------------------
def test_a_corpus_cached_by_another_spec_has_the_asking_specs_ids(tmp_path, monkeypatch):
    calls = []
    real = corpus_mod.speak_in_fresh_process
    monkeypatch.setattr(corpus_mod, "speak_in_fresh_process", lambda items: calls.append(len(items)) or real(items))
    sentences, voices = tuple(load_sentences("eo")[:2]), (Voice("eo", "m2", 150, 50),)
    first = CorpusSpec("first/eo/test", "eo", sentences, voices)
    second = CorpusSpec("second/eo/test", "eo", sentences, voices)

    monkeypatch.setenv("CL_ASR_CACHE", str(tmp_path / "shared"))
    synthesize_corpus(first, progress=False)
    reused = synthesize_corpus(second, progress=False)  # the same content: read from the cache `first` wrote
    assert calls == [2] and len(list((tmp_path / "shared" / "corpora").iterdir())) == 1
    assert list(reused["id"]) == ["second/eo/test/00000", "second/eo/test/00001"]
    assert list(synthesize_corpus(first, progress=False)["id"]) == ["first/eo/test/00000", "first/eo/test/00001"]

    monkeypatch.setenv("CL_ASR_CACHE", str(tmp_path / "fresh"))
    fresh = synthesize_corpus(second, progress=False)  # written under its own name
    assert calls == [2, 2]
    assert reused.column_names == fresh.column_names == ["id", "audio", "text", "language", "speaker", "duration"]
    assert reused.features == fresh.features
    for a, b in zip(reused, fresh, strict=True):
        assert a["id"] == b["id"] and a["text"] == b["text"] and a["speaker"] == b["speaker"]
        assert isinstance(a["audio"]["array"], np.ndarray)  # still numpy-formatted
        np.testing.assert_array_equal(a["audio"]["array"], b["audio"]["array"])
    # run.json's data checksum of the set does not depend on the cache's history either
    assert arrow_checksum(reused) == arrow_checksum(fresh)


def test_a_scenario_gives_the_same_predictions_on_an_empty_cache_and_on_one_another_scenario_filled(tmp_path):
    """code_switching's English, Spanish and German monolingual test sets are the languages scenario's
    preservation sets (the same sentences, voices and silence): cached first by code_switching, they are read
    by languages with languages' ids."""
    def run(scenario, cache, out):
        # spt_decoder too: a strategy trained on the training sets (f2 among their voices) reproduces exactly
        proc = cli("run", "--scenario", scenario, "--profile", "micro", "--strategies", "zero_shot,spt_decoder",
                   "--backbone", "tiny:random", "--out", str(out), "--no-progress", "--no-report",
                   env={"CL_ASR_CACHE": str(cache)})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return out / "predictions.jsonl"

    def corpora(cache):
        return {p.name: json.loads((p / "SPEC.json").read_text())["name"] for p in (cache / "corpora").iterdir()}

    alone = run("languages", tmp_path / "empty_cache", tmp_path / "alone")
    own = corpora(tmp_path / "empty_cache")
    run("code_switching", tmp_path / "filled_cache", tmp_path / "code_switching")
    before = corpora(tmp_path / "filled_cache")
    after_cs = run("languages", tmp_path / "filled_cache", tmp_path / "after_code_switching")
    shared = set(own) & set(before)  # languages' corpora that code_switching wrote first
    assert {before[k] for k in shared} == {f"code_switching/{lang}/test" for lang in ("en", "de", "es")}
    assert set(corpora(tmp_path / "filled_cache")) == set(before) | set(own)  # reused, not synthesised again

    assert after_cs.read_bytes() == alone.read_bytes()
    preds = [json.loads(line) for line in after_cs.read_text().splitlines()]
    en = next(p for p in preds if p["eval_on"] == "en")
    assert en["ids"] == [f"languages/en/test/{i:05d}" for i in range(3)]
    sums = [json.loads((tmp_path / d / "run.json").read_text())["checksums"]["data"]
            for d in ("alone", "after_code_switching")]
    # The same data checksums, training sets included (espeak-ng's noise is seeded per utterance, so the f2
    # training voice gives the same samples on every cache): either directory resumes on either cache.
    assert sums[0] == sums[1] and {"train/eo", "test/eo", "preservation/en"} <= set(sums[0])


# -- compare: sets paired by content ---------------------------------------------------------------------------
SETS = {"a": "test", "b": "test", "z": "preservation"}


def toy_run(out, prefix, content=True, change=None):
    """A run directory written by hand: zero_shot on a 2-experience scenario (sets a, b; base set z) of 6
    utterances each, ids `prefix/<set>/<i>`; `content`: record content checksums (False: a run from before
    they were); `change`: (set, 'ref' | 'content') to make one set differ."""
    out.mkdir()
    rng = np.random.default_rng(0)
    checksums = {f"{stream}/{name}": f"content-of-{name}" for name, stream in SETS.items()}
    if change and change[1] == "content":
        checksums[f"{SETS[change[0]]}/{change[0]}"] = "other-audio"
    meta = {"metric": "cer", "experiences": ["a", "b"], "preservation": ["z"],
            "config": {"scenario": "toy", "profile": "micro", "backbone": "tiny:random", "seeds": [0],
                       "profile_config": {"encoder_window_seconds": 10, "epochs": 1, "batch_size": 2,
                                          "max_new_tokens": 6}},
            "strategy_runs": [{"strategy": "zero_shot", "seed": 0, "description": "", "config": {}, "joint": False,
                               "trainable_params": 0, "stored_params_per_experience": 0, "stored_bytes": 0,
                               "train_seconds": 0.0, "eval_seconds": 1.0, "peak_memory_mb": 1.0,
                               "decodes": {"computed": 1, "reused": 0}}]}
    if content:
        meta["content_checksums"] = checksums
    preds, results = [], []
    for step in (-1, 0, 1):
        for name, stream in SETS.items():
            refs = [f"words of {name} {i}" for i in range(6)]
            if change == (name, "ref"):
                refs[0] = "someone else's words"
            edits = [int(x) for x in rng.integers(0, 5, 6)]
            preds.append({"strategy": "zero_shot", "seed": 0, "trained_through": step, "eval_on": name,
                          "stream": stream, "ids": [f"{prefix}/{name}/{i:05d}" for i in range(6)], "refs": refs,
                          "hyps": ["x"] * 6, "edits": {"cer": edits}, "ref_tokens": {"cer": [10] * 6}})
            results.append({"scenario": "toy", "strategy": "zero_shot", "seed": 0, "trained_through": step,
                            "eval_on": name, "metric": "cer", "value": sum(edits) / 60, "edits": sum(edits),
                            "ref_tokens": 60, "n_utts": 6, "stream": stream})
    (out / "run.json").write_text(json.dumps(meta))
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return out


def test_compare_pairs_sets_by_content_whatever_their_ids(tmp_path):
    a = toy_run(tmp_path / "A", "languages")
    b = toy_run(tmp_path / "B", "code_switching")  # the same audio and transcripts, named by another scenario
    write_comparison([a, b], tmp_path / "C")
    md = (tmp_path / "C" / "report.md").read_text()
    section = md.split("## The same strategy across runs")[1].split("\n## ")[0]
    assert "| zero_shot | B | A | +0.000 [+0.000, +0.000] (n.s.) |" in section  # the same counts, paired
    assert load_run(a).predictions[0][SET_CONTENT] == "content-of-a"


@pytest.mark.parametrize("change, what", [(("z", "ref"), "reference transcripts"),
                                          (("z", "content"), "audio or other content")])
def test_compare_refuses_sets_of_different_content_naming_the_set(tmp_path, change, what):
    a = toy_run(tmp_path / "A", "languages")
    b = toy_run(tmp_path / "B", "languages", change=change)
    with pytest.raises(ValueError, match=f"cannot compare .*A and .*B: test set 'z' holds different {what}"):
        write_comparison([a, b], tmp_path / "C")
    assert not (tmp_path / "C" / "report.md").exists()


def test_runs_without_content_checksums_are_paired_by_ids_and_refused_when_those_differ(tmp_path):
    new = toy_run(tmp_path / "new", "languages")
    old_same_ids = toy_run(tmp_path / "old", "languages", content=False)
    old_other_ids = toy_run(tmp_path / "older", "code_switching", content=False)
    check_comparable([load_run(new), load_run(old_same_ids)])  # ids and references agree: the same set
    with pytest.raises(ValueError, match=r"test set 'a' holds different utterances .*Only the ids differ .*older "
                                         r"recorded no content checksum"):
        check_comparable([load_run(new), load_run(old_other_ids)])
    # not transitive: new and old agree, old and a new run named differently agree by nothing, so refused
    renamed = toy_run(tmp_path / "renamed", "code_switching")
    check_comparable([load_run(new), load_run(renamed)])
    with pytest.raises(ValueError, match="holds different utterances"):
        check_comparable([load_run(new), load_run(old_same_ids), load_run(renamed)])


def test_bootstrap_pairs_rows_by_content_checksum_and_falls_back_to_ids():
    def rows(system, prefix, content, refs="r"):
        return [{"system": system, "strategy": system, "seed": 0, "trained_through": step, "eval_on": name,
                 "stream": "test" if name != "z" else "preservation", "ids": [f"{prefix}{name}{i}" for i in range(4)],
                 "refs": [f"{refs} {name} {i}" for i in range(4)], "hyps": ["x"] * 4, "edits": {"cer": [1, 0, 2, 1]},
                 "ref_tokens": {"cer": [5] * 4}, **({SET_CONTENT: f"c-{name}"} if content else {})}
                for step in (-1, 0, 1) for name in ("a", "b", "z")]

    b = Bootstrap(rows("m", "x/", True) + rows("n", "y/", True), "cer", ["a", "b"], ["z"], n_replicates=50)
    assert b.estimate("m", "avg_error").point == b.estimate("n", "avg_error").point
    with pytest.raises(DifferentTestSets, match="test set 'a': n was evaluated on different utterances than m"):
        Bootstrap(rows("m", "x/", True) + rows("n", "y/", False), "cer", ["a", "b"], ["z"], n_replicates=50)
    with pytest.raises(DifferentTestSets, match="different reference transcripts"):
        Bootstrap(rows("m", "x/", True) + rows("n", "y/", True, refs="s"), "cer", ["a", "b"], ["z"], n_replicates=50)
