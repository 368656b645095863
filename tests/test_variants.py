"""Variants (`--strategies "spt_decoder,spt_decoder[lr=0.1]"`, `--variants FILE.yaml`) and scenario-profile overrides
(`--set n_train=2`), README "Variants and profile overrides": the syntax and the canonical names, every mistake
refused before anything is written, and micro runs on both executors whose results rows, run.json, summary,
report and compare name each variant as its own strategy."""
import dataclasses
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cl_asr.cli import main
from cl_asr.run_dir import RunDirectory
from cl_asr.runner import RunRequest, check_request
from cl_asr.variants import file_component, inline_name, parse_inline, render, split_top_level

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress"]
VARIANT = "spt_decoder[lr=0.1]"


# -- syntax and names -----------------------------------------------------------------------------------------------
def test_the_syntax_and_canonical_names():
    assert split_top_level("zero_shot, spt_entire[eval_routing=lid,prompt_length=128],x[l=[1,2],s='a,b']",
                           "--strategies") == ["zero_shot", "spt_entire[eval_routing=lid,prompt_length=128]",
                                               "x[l=[1,2],s='a,b']"]
    assert parse_inline("zero_shot") is None
    assert parse_inline("spt_entire[prompt_length=128, eval_routing=lid,lr=3e-2]") == (
        "spt_entire", {"prompt_length": 128, "eval_routing": "lid", "lr": "3e-2"})  # 3e-2: PyYAML's string
    for value, text in [(0.1, "0.1"), (128, "128"), (True, "true"), (None, "null"), ("lid", "lid"),
                        ("true", '"true"'), ("a,b", '"a,b"'), ([1, 2], "[1,2]")]:
        assert render(value) == text and yaml.safe_load(text) == value  # it reads back as the same value
    assert render(1e-05) == "1e-05"  # PyYAML reads it as a string, which a float field takes
    assert inline_name("spt_entire", {"prompt_length": 128, "eval_routing": "lid"}) == \
        "spt_entire[eval_routing=lid,prompt_length=128]"


def test_names_become_safe_file_names_and_plain_names_stay():
    for plain in ("spt_decoder", "zero_shot", "run__lora", "my-strategy.v2"):
        assert file_component(plain) == plain
    names = [VARIANT, "spt_decoder[lr=0_1]", "spt_decoder(lr=0.1)", "a/b", "../x", "x" * 300, "sp ace", "ünï"]
    safe = [file_component(n) for n in names]
    assert len(set(safe)) == len(names)  # never two names on one file
    for s in safe:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", s) and len(s) <= 100 and s not in (".", "..")
    assert file_component(VARIANT) == f"spt_decoder_lr_0.1_{hashlib.sha1(VARIANT.encode()).hexdigest()[:8]}"
    checkpoint = RunDirectory(Path("/r")).checkpoint(VARIANT, 0)
    assert checkpoint.parent == Path("/r/checkpoints") and checkpoint.name == f"{file_component(VARIANT)}_seed0.pt"
    assert RunDirectory(Path("/r")).checkpoint("spt_decoder", 1).name == "spt_decoder_seed1.pt"
    from cl_asr.executors import job_name
    assert job_name(VARIANT, 2) == f"{file_component(VARIANT)}_seed2" and job_name("lora", 0) == "lora_seed0"


def test_check_request_validates_and_spells_variants_canonically(tmp_path):
    req = RunRequest(scenario="languages", strategies=["zero_shot", "spt_decoder[schedule=linear,lr=1e-1]",
                                                       "spt_decoder[prompt_length=8]", "fast"],
                     profile="micro", out_dir=tmp_path / "run", profile_overrides={"n_train": 2, "epochs": 2},
                     variants={"fast": {"strategy": "spt_decoder", "config": {"lr": 0.5}}})
    checked = check_request(req)
    assert checked.names == ["zero_shot", "spt_decoder[lr=0.1,schedule=linear]", "spt_decoder[prompt_length=8]",
                             "fast"]
    assert list(checked.configs) == req.strategies  # keyed as the request wrote them (the rows it writes)
    plain = check_request(dataclasses.replace(req, strategies=["spt_decoder"])).configs["spt_decoder"]
    base = dataclasses.asdict(plain)
    changed = dataclasses.asdict(checked.configs["spt_decoder[schedule=linear,lr=1e-1]"])
    assert {k for k in base if base[k] != changed[k]} == {"lr", "schedule"} and changed["lr"] == 0.1
    assert checked.configs["spt_decoder[prompt_length=8]"].prompt_length == 8  # over the profile's 4
    assert checked.configs["fast"].lr == 0.5
    assert checked.variants == {
        "spt_decoder[schedule=linear,lr=1e-1]": {"strategy": "spt_decoder",
                                                 "overrides": {"lr": 0.1, "schedule": "linear"}},
        "spt_decoder[prompt_length=8]": {"strategy": "spt_decoder", "overrides": {"prompt_length": 8}},
        "fast": {"strategy": "spt_decoder", "overrides": {"lr": 0.5}}}
    assert checked.profile.n_train == 2 and checked.profile.epochs == 2
    assert checked.profile_overrides == {"n_train": 2, "epochs": 2}
    again = check_request(dataclasses.replace(req, strategies=checked.names))
    assert again.names == checked.names  # the canonical spelling is its own canonical spelling
    assert not (tmp_path / "run").exists()


def test_every_way_into_a_run_uses_the_canonical_names(tmp_path, monkeypatch):
    """Python callers too: run_benchmark and run_grid (both executors) name a row as the CLI does, so a resume
    written with another spelling of the same variant finds its rows."""
    import cl_asr.executors as executors
    import cl_asr.runner as runner
    from cl_asr.runner import canonical_request

    seen = []

    class Stop(Exception):
        pass

    def prepare(req, run_dir):
        seen.append(req)
        raise Stop

    monkeypatch.setattr(runner, "prepare", prepare)
    monkeypatch.setattr(executors, "_run_on_ray", lambda req, options, run_dir: prepare(req, run_dir))
    req = RunRequest(scenario="languages", strategies=["spt_decoder[schedule=linear,lr=1e-1]", "zero_shot"],
                     profile="micro", out_dir=tmp_path / "run", orders=2, profile_overrides={"n_train": 2})
    for call in (lambda: runner.run_benchmark(req), lambda: executors.run_grid(req, "local"),
                 lambda: executors.run_grid(req, "ray")):
        with pytest.raises(Stop):
            call()
    want = canonical_request(req)
    assert want.strategies[0].startswith("spt_decoder[lr=0.1,schedule=linear]") and len(want.strategies) == 4
    assert want.orders is None and want.profile_overrides == {"n_train": 2}
    assert all(r.strategies == want.strategies and r.profile_overrides == want.profile_overrides for r in seen)
    assert canonical_request(want) == want  # idempotent


# -- mistakes -------------------------------------------------------------------------------------------------------
def refused(capsys, out: Path, *args) -> str:
    """One `error:` line, exit status 2, no --out directory (tests/test_user_mistakes.py's rules)."""
    rc = main([*args, "--out", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not out.exists(), "something was written"
    return lines[0]


def test_bad_variants_are_refused_naming_the_variant_and_key(capsys, tmp_path):
    out = tmp_path / "run"

    def run(*args):
        return refused(capsys, out, *MICRO, *args)

    line = run("--strategies", "spt_decoder,spt_decoder[lrr=0.1]")
    assert "variant spt_decoder[lrr=0.1]: unknown key 'lrr' (did you mean 'lr'?)" in line
    line = run("--strategies", "spt_decoder[lr=fast]")
    assert "variant spt_decoder[lr=fast]: lr expects a number, got 'fast'" in line
    assert "variant spt_decoder[lr=-1]: lr must be positive" in run("--strategies", "spt_decoder[lr=-1]")
    assert "variant spt_entire[eval_routing=lda]: eval_routing expects one of 'oracle', 'lid'" in run(
        "--strategies", "spt_entire[eval_routing=lda]")
    line = run("--strategies", "spt_decoder[lr=0.1],zero_shot,spt_decoder[lr=1e-1]")
    assert "names a strategy twice: spt_decoder[lr=0.1]" in line
    assert "names a strategy twice: zero_shot" in run("--strategies", "zero_shot,zero_shot")
    lr = check_request(RunRequest("languages", ["spt_decoder"], "micro", out)).configs["spt_decoder"].lr
    line = run("--strategies", f"spt_decoder[lr={lr!r}]")
    assert f"variant spt_decoder[lr={lr!r}] changes nothing: spt_decoder already has lr={lr!r}" in line
    line = run("--strategies", "spt_decodr[lr=0.1]")
    assert "variant spt_decodr[lr=0.1]: unknown strategy 'spt_decodr'. Did you mean: spt_decoder" in line
    assert "a '[' without its ']'" in run("--strategies", "spt_decoder[lr=0.1")
    assert "expected key=value" in run("--strategies", "spt_decoder[lr]")
    assert "the brackets name no override" in run("--strategies", "spt_decoder[]")

    def variants_file(data) -> str:
        path = tmp_path / "variants.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    line = run("--variants", variants_file({"fast": {"strategy": "spt_decoder", "confg": {"lr": 0.1}}}))
    assert "variants.yaml: variant fast: unknown key 'confg' (did you mean 'config'?)" in line
    line = run("--variants", variants_file({"fast": {"strategy": "spt_decoder", "config": {"lr": "quick"}}}))
    assert "variant fast (of spt_decoder): lr expects a number, got 'quick'" in line
    line = run("--variants", variants_file({"lora": {"strategy": "spt_decoder", "config": {"lr": 0.1}}}))
    assert "variant lora: that is a registered strategy's name" in line
    line = run("--variants", variants_file({"a b": {"strategy": "lora", "config": {"rank": 2}}}))
    assert "variant name 'a b'" in line
    line = run("--strategies", VARIANT, "--variants", variants_file({"fast": {"strategy": "spt_decoder",
                                                                              "config": {"lr": 0.1}}}))
    assert f"{VARIANT} and fast are the same config of spt_decoder" in line


def test_bad_profile_overrides_are_refused(capsys, tmp_path):
    out = tmp_path / "run"

    def run(*args):
        return refused(capsys, out, *MICRO, "--strategies", "zero_shot", *args)

    assert "--set: unknown key 'n_trian' (did you mean 'n_train'?)" in run("--set", "n_trian=2")
    assert "--set: n_train expects an integer, got 'many'" in run("--set", "n_train=many")
    assert "--set: n_train must be at least 1, got 0" in run("--set", "n_train=0")
    assert "--set 'n_train': expected key=value" in run("--set", "n_train")
    assert "--set n_train is given twice" in run("--set", "n_train=2", "--set", "n_train=3")


# -- micro runs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    variants = base / "variants.yaml"
    variants.write_text("spt_linear:\n  strategy: spt_decoder\n  config: {schedule: linear}\n")
    out = base / "run"
    args = [*MICRO, "--strategies", "spt_decoder,spt_decoder[lr=1e-1]", "--variants", str(variants),
            "--set", "n_train=2", "--out", str(out)]
    assert main(args) == 0
    return out, args


def test_each_variant_is_its_own_row_everywhere(micro):
    out, _ = micro
    names = ["spt_decoder", VARIANT, "spt_linear"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    counts = pd.Series([r["strategy"] for r in rows]).value_counts()
    assert list(dict.fromkeys(r["strategy"] for r in rows)) == names and counts.nunique() == 1
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    final = {(p["strategy"], p["eval_on"]): p["hyps"] for p in preds if p["trained_through"] == 2}
    assert any(final[("spt_decoder", s)] != final[(VARIANT, s)] for _, s in final)  # the lr made a difference

    meta = json.loads((out / "run.json").read_text())
    cfg = meta["config"]
    assert cfg["variants"] == {VARIANT: {"strategy": "spt_decoder", "overrides": {"lr": 0.1}},
                               "spt_linear": {"strategy": "spt_decoder", "overrides": {"schedule": "linear"}}}
    plain, fast = cfg["strategies"]["spt_decoder"], cfg["strategies"][VARIANT]
    assert fast["lr"] == 0.1 and {k: v for k, v in fast.items() if k != "lr"} == \
        {k: v for k, v in plain.items() if k != "lr"}
    records = {r["strategy"]: r for r in meta["strategy_runs"]}
    assert records[VARIANT]["variant_of"] == "spt_decoder" and records[VARIANT]["overrides"] == {"lr": 0.1}
    assert "variant_of" not in records["spt_decoder"] and records[VARIANT]["config"] == fast
    # --set n_train=2: the profile's 4 training utterances per experience became 2
    assert cfg["profile_overrides"] == {"n_train": 2} and cfg["profile_config"]["n_train"] == 2
    assert meta["scenario_settings"]["utterances"]["train_per_experience"] == 2
    assert not (out / "checkpoints").exists()

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.strategy) == names and set(summary.status) == {"complete"}
    report = (out / "report.md").read_text()
    assert "## Variants" in report and f"| {VARIANT} | spt_decoder | lr=0.1 |" in report
    assert "| spt_linear | spt_decoder | schedule=linear |" in report
    assert "(`--set`, on top of profile `micro`): n_train=2" in report
    assert (out / "plots" / f"matrix_{file_component(VARIANT)}.png").is_file()


def test_a_variant_run_resumes_and_other_overrides_are_refused(micro, capsys):
    out, args = micro
    before = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*args, "--no-report"]) == 0  # the same command: everything already complete
    assert f"{VARIANT} (seed 0): already complete, skipped" in "".join(capsys.readouterr())
    other = [a if a != "n_train=2" else "n_train=3" for a in args]
    assert main(other) == 2
    assert "holds a run with profile overrides (--set) {'n_train': 2}, not {'n_train': 3}" in capsys.readouterr().err
    assert (out / "results.jsonl").read_bytes() == before


def test_compare_names_each_variant(micro, tmp_path):
    out, _ = micro
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    assert main(["compare", str(out), str(copy), "--out", str(tmp_path / "cmp")]) == 0
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert {f"{label}/{VARIANT}" for label in summary.run.unique()} <= set(summary.system)
    assert summary.run.nunique() == 2 and set(summary.strategy) == {"spt_decoder", VARIANT, "spt_linear"}
    assert "**Variants**" in (tmp_path / "cmp" / "report.md").read_text()


class _FakeRay:
    """Enough of Ray for cl_asr/executors.py: every task runs at once, in this process, and its name is kept."""

    class _Ref:  # an object reference: hashable, by identity
        value = error = None

    class _Task:
        def __init__(self, ray, fn, name=None):
            self.ray, self.fn, self.name = ray, fn, name

        def options(self, name=None, **_resources):
            return type(self)(self.ray, self.fn, name)

        def remote(self, *args):
            self.ray.names.append(self.name)
            ref = _FakeRay._Ref()
            try:
                ref.value = self.fn(*args)
            except Exception as exc:  # noqa: BLE001 - handed back by get, as Ray does
                ref.error = exc
            return ref

    def __init__(self):
        self.names = []

    def is_initialized(self):
        return True

    def remote(self, fn):
        return self._Task(self, fn)

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def cluster_resources(self):
        return {"CPU": 1}


def test_the_ray_executor_runs_variants_and_profile_overrides(tmp_path, monkeypatch, capsys):
    ray = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    out = tmp_path / "ray"
    args = [*MICRO, "--executor", "ray", "--strategies", f"zero_shot,{VARIANT}", "--set", "n_train=2",
            "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    jobs = ["zero_shot_seed0", f"{file_component(VARIANT)}_seed0"]
    assert ray.names == jobs and sorted(p.name for p in (out / "jobs").iterdir()) == sorted(jobs)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert list(dict.fromkeys(r["strategy"] for r in rows)) == ["zero_shot", VARIANT]
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["variants"] == {VARIANT: {"strategy": "spt_decoder", "overrides": {"lr": 0.1}}}
    assert meta["config"]["profile_overrides"] == {"n_train": 2}
    assert meta["config"]["requested"]["profile_overrides"] == {"n_train": 2}
    assert meta["scenario_settings"]["utterances"]["train_per_experience"] == 2
    assert {r["strategy"]: r.get("variant_of") for r in meta["strategy_runs"]} == {"zero_shot": None,
                                                                                   VARIANT: "spt_decoder"}
    assert list(pd.read_csv(out / "summary.csv").strategy) == ["zero_shot", VARIANT]
    capsys.readouterr()
    assert main([a if a != "n_train=2" else "n_train=3" for a in args]) == 2  # refused before any job
    assert "profile_overrides={'n_train': 2}, not {'n_train': 3}" in capsys.readouterr().err
    assert ray.names == jobs


def test_set_n_test_moves_the_dev_size_that_follows_it():
    from cl_asr.variants import with_overrides
    from cl_asr.scenarios import load_scenario_builder

    micro = load_scenario_builder("languages").profile("micro")  # n_dev not given: it follows n_test
    assert with_overrides(micro, {"n_test": 2}, "--set").n_dev == 2
    assert with_overrides(micro, {"n_test": 2, "n_dev": 1}, "--set").n_dev == 1
    fixed = with_overrides(micro, {"n_dev": 1}, "--set")
    assert with_overrides(fixed, {"n_test": 2}, "--set").n_dev == 1  # a value given stays
