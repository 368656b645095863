"""The `languages` scenario's `standard` profile (test sets that resolve a 0.03 CER difference, its own test pool)
and the promise that adding it changed no other profile's sentences. Sentence selection only: nothing is
synthesised (LanguagesBuilder.plan)."""
import hashlib
import json

import pytest

from cl_asr.config import ConfigError
from cl_asr.data.text_bank import split_sentences
from cl_asr.scenarios import load_scenario_builder
from cl_asr.scenarios.languages import LanguagesProfile
from cl_asr.variants import with_overrides

LANGUAGES = ["eo", "ia", "ga", "en", "de", "es"]

# Computed from the sentence bank before the standard profile (and per-profile test pools) existed: per language,
# sha256 of json.dumps({"train": quick's 32 training sentences (taught languages), "test": its 12 test sentences,
# "dev": its 12 dev sentences}, ensure_ascii=False, sort_keys=True).
QUICK_BEFORE = {
    "eo": "cb5dcda5dd532de6539c281ba1c626d4fa5596b4e1b08c8a9b56d67e2e62e61a",
    "ia": "cc45aadc179f72a57763ad3c94b1eef3fc9227b9f2afe20cc7c713e2aa1df544",
    "ga": "5524c43557931a8639b180fa463729c1bbe676c686d911cdb1411d2ee8eca62b",
    "en": "45d891e7914ba511e54ad721d8dc3deddfc1215924f23bbb614e0c2bc17204b4",
    "de": "6b393f8e21caa59046ba3c93a1d8ea28ca6ca5cb8e9f8537c83f2c4ffd86bdf1",
    "es": "d880368cac67c44b6b638859ca3a55aa8e8f5644109956669f40d9292b492ed0",
}
# sha256 of json.dumps({language: the scenario's 40-sentence test pool}, ensure_ascii=False), same time
TEST_POOL_40_BEFORE = "9e4e4fd18fe7a975cfc913e47b2d91970e2db350688f553e36cf67e3c8de5103"


@pytest.fixture(scope="module")
def builder():
    return load_scenario_builder("languages")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def test_the_quick_profile_keeps_its_sentences(builder):
    quick = builder.profile("quick")
    assert builder.test_pool_size(quick) == 40
    test, dev = builder.plan(quick, "test"), builder.plan(quick, "dev")
    for lang in LANGUAGES:
        got = {"test": test[lang]["test"], "dev": dev[lang]["dev"]}
        if "train" in test[lang]:
            assert test[lang]["train"] == dev[lang]["train"]
            got["train"] = test[lang]["train"]
        assert _digest(got) == QUICK_BEFORE[lang], lang
    pools = {lang: split_sentences(lang, 40)[1] for lang in sorted(LANGUAGES)}
    assert hashlib.sha256(json.dumps(pools, ensure_ascii=False).encode()).hexdigest() == TEST_POOL_40_BEFORE


def test_the_standard_profile_builds_disjoint_splits_from_its_larger_test_pool(builder):
    std = builder.profile("standard")
    assert isinstance(std, LanguagesProfile) and std.backbone == "offline:whisper-base"
    assert (std.test_pool, std.n_test, std.n_train, std.n_dev) == (120, 120, 40, 20)
    test, dev = builder.plan(std, "test"), builder.plan(std, "dev")
    for lang in LANGUAGES:
        splits = {"test": test[lang]["test"], "dev": dev[lang]["dev"]}
        if lang in builder.config.experiences:
            assert test[lang]["train"] == dev[lang]["train"]  # the same training sentences whatever is evaluated
            splits["train"] = test[lang]["train"]
        assert {k: len(v) for k, v in splits.items()} == {
            "test": 120, "dev": 20, **({"train": 40} if "train" in splits else {})}
        for name, sentences in splits.items():
            assert len(set(sentences)) == len(sentences), (lang, name)  # each sentence once: independent utterances
        names = list(splits)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not set(splits[a]) & set(splits[b]), (lang, a, b)
        # its test pool extends the scenario's: the quick (and full) profile's test sentences come first
        assert test[lang]["test"][:40] == split_sentences(lang, 40)[1]
        # and none of its training or dev sentences is a test sentence of any other profile
        assert not (set(splits["dev"]) | set(splits.get("train", []))) & set(split_sentences(lang, 40)[1])


def test_a_test_pool_that_leaves_too_little_to_train_is_refused(builder):
    std = builder.profile("standard")
    greedy = with_overrides(std, {"test_pool": 150}, "--set")  # 30 sentences left, 40 to train on
    assert isinstance(greedy, LanguagesProfile) and greedy.test_pool == 150
    with pytest.raises(ValueError, match=r"asks for 40 train / 120 test utterances of eo; the bank has 30 / 150 "
                                         r"\(test pool 150\)"):
        builder.plan(greedy)
    with pytest.raises(ValueError, match="n_dev"):  # 60 left: 40 train + 30 dev do not fit
        builder.plan(with_overrides(std, {"n_dev": 30}, "--set"), "dev")
    with pytest.raises(ValueError, match=r"test_pool \(39\) may not be smaller than the scenario's \(40\)"):
        builder.plan(with_overrides(std, {"test_pool": 39}, "--set"))
    with pytest.raises(ConfigError, match="test_pool must be at least 1"):
        with_overrides(std, {"test_pool": 0}, "--set")


def test_the_sizing_tool_reproduces_the_bootstraps_standard_errors_and_prints_its_figures(capsys):
    """tools/size_test_sets.py on the committed three-seed quick run: at the run's own size and seeds its model
    gives back the bootstrap's SE of every pair (within 10%), and it prints the figures the profile quotes."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("size_test_sets", root / "tools" / "size_test_sets.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = tool.load_run(root / "reports" / "languages-seeds-quick")
    meta = run.meta
    b = tool.Bootstrap([{**p, "system": p["strategy"]} for p in run.predictions], meta["metric"],
                       meta["experiences"], meta["preservation"])
    comp = {s: tool.components(b, s, "avg_error") for s in b.systems}
    for x, y in [("fft", "lora"), ("spt_entire", "lapt"), ("spt_decoder", "spt_entire"), ("zero_shot", "lora")]:
        pair = {"n0": 12, "k0": 3, "I": comp[x]["I"] + comp[y]["I"], "tau": comp[x]["tau"] + comp[y]["tau"],
                "U": float(((comp[x]["mean"] - comp[y]["mean"])[1:]).var(ddof=1))}
        assert tool.model(pair, 12, 3)[0] == pytest.approx(b.compare(x, y, "avg_error").se, rel=0.1), (x, y)
        assert tool.model(pair, 48, 3)[0] < tool.model(pair, 12, 3)[0]  # more utterances, smaller SE
    assert tool.main(["--sizes", "12,120", "--profile", "standard"]) == 0
    out = capsys.readouterr().out
    assert "median MDD 0.064" in out and "n=120: 0.030" in out  # 5 seeds, as the profile's comment says
    assert "default run (zero_shot, fft, spt_decoder, spt_entire), 5 seed(s): 3.8 h" in out
