"""The suite as a user drives it: the CLI, and one full `micro` run checked file by file."""
import base64
import json
import re
from io import BytesIO

import pandas as pd
import pytest
import torch
from PIL import Image

from cl_asr.methods import METHODS
from helpers import REPO, run_suite as cli

ALL = METHODS.names()  # the micro run below asks for every registered strategy (`--strategies all`)
# On the languages scenario these cannot run (no enrolment embeddings; no text-only experiences): the run
# records why and goes on with the others.
CANNOT_RUN = {"ts_prompt": "enrolment", "text_spt": "text-only"}
STRATEGIES = [s for s in ALL if s not in CANNOT_RUN]
# strategies that train the backbone itself
FULL = {"fft", "fft_spt", "replay", "ewc", "lwf", "joint", "single_task", "agem", "der", "mas"}
# one model for every set, base sets included (Capabilities.task_agnostic): no set stays at zero-shot by design
TASK_AGNOSTIC = {s for s in ALL if METHODS.get(s).capabilities.task_agnostic}
FROZEN = [s for s in STRATEGIES if s not in FULL | TASK_AGNOSTIC and s != "zero_shot"]


def test_help_and_list_name_the_scenario_and_strategies():
    help_ = cli("--help")
    assert help_.returncode == 0 and "list" in help_.stdout and "run" in help_.stdout and "report" in help_.stdout
    listing = cli("list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    for name in ["languages", *STRATEGIES]:
        assert any(line.strip().startswith(name + " ") for line in lines), name
    counted = cli("list", "strategies", "--backbone", "tiny:random")
    assert counted.returncode == 0, counted.stderr
    rows = {line.split()[0]: line.split()[1] for line in counted.stdout.splitlines()[1:]}
    required = ["zero_shot", "fft", "fft_spt", "lora", "adapter", "spt_input", "spt_encoder", "spt_decoder",
                "spt_entire", "dpt", "respt", "lpt", "spt4asr", "lapt", "replay", "ewc", "lwf", "joint"]
    assert set(required) <= set(rows)
    assert rows["zero_shot"] == "0"
    assert rows["spt_entire"] == f"{32 * 2 * 64:,}"  # L 32 (baselines/spt_entire.yaml) x (d_enc + d_dec)
    assert "languages" not in counted.stdout  # `list strategies` lists strategies only


def test_unknown_names_fail_fast_with_suggestions(tmp_path):
    bad = cli("run", "--profile", "micro", "--strategies", "zero_shot,spt_entrie", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown strategy 'spt_entrie'. Did you mean: spt_entire" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()
    bad = cli("run", "--profile", "micro", "--scenario", "languges", "--out", str(tmp_path / "y"))
    assert bad.returncode == 2 and "Did you mean: languages?" in bad.stderr
    bad = cli("run", "--profile", "tiny", "--out", str(tmp_path / "z"))
    assert bad.returncode == 2 and "no profile 'tiny'" in bad.stderr


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro") / "run"
    proc = cli("run", "--scenario", "languages", "--strategies", "all", "--profile", "micro",
               "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def load_results(out):
    return pd.DataFrame([json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()])


def test_micro_run_writes_a_complete_error_matrix(micro_run):
    out, _ = micro_run
    df = load_results(out)
    fields = {"scenario", "strategy", "seed", "trained_through", "eval_on", "metric", "value", "edits",
              "ref_tokens", "n_utts"}
    assert fields <= set(df.columns)
    # every strategy x 4 rows (before training + 3 experiences) x 6 sets x 2 metrics; joint: 2 rows
    assert len(df) == (len(STRATEGIES) - 1) * 4 * 6 * 2 + 2 * 6 * 2
    assert sorted(set(df[df.strategy == "joint"].trained_through)) == [-1, 2]
    assert not df.duplicated(["strategy", "seed", "trained_through", "eval_on", "metric"]).any()
    assert set(df.eval_on) == {"eo", "ia", "ga", "en", "de", "es"}
    assert ((df.value - df.edits / df.ref_tokens).abs() < 1e-12).all()
    assert (df.n_utts == 3).all()


def test_frozen_models_keep_the_zero_shot_error_where_they_should(micro_run):
    df = load_results(micro_run[0])
    cer = df[df.metric == "cer"].set_index(["strategy", "trained_through", "eval_on"])["value"]
    zs = cer["zero_shot"]
    for step in range(-1, 3):  # zero-shot never changes
        for s in ["eo", "ia", "ga", "en", "de", "es"]:
            assert zs[(step, s)] == zs[(-1, s)]
    for name in FROZEN:
        for step in range(-1, 3):
            for s in ["en", "de", "es"]:  # base sets are decoded without a prompt
                assert cer[(name, step, s)] == zs[(-1, s)]
        for j, s in enumerate(["eo", "ia", "ga"]):  # before its prompt exists, an experience is zero-shot
            for step in range(-1, j):
                assert cer[(name, step, s)] == zs[(-1, s)]


def test_run_json_records_what_determined_the_run(micro_run):
    meta = json.loads((micro_run[0] / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["config"]["profile"] == "micro" and meta["config"]["backbone"] == "tiny:random"
    assert set(meta["config"]["strategies"]) == set(ALL)
    assert meta["packages"]["torch"] and meta["packages"]["transformers"]
    assert "git" in meta and "device" in meta and meta["timings"]["total_seconds_this_invocation"] > 0
    failed = {r["strategy"]: r["failure"] for r in meta["strategy_runs"] if r.get("failure")}
    assert set(failed) == set(CANNOT_RUN)
    for name, word in CANNOT_RUN.items():
        assert failed[name]["kind"] == "cannot run" and word in failed[name]["reason"]
    runs = {r["strategy"]: r for r in meta["strategy_runs"] if not r.get("failure")}
    assert set(runs) == set(STRATEGIES)
    d, L = 64, 4
    assert runs["spt_entire"]["trainable_params"] == L * 2 * d
    assert runs["spt_entire"]["stored_params_per_experience"] == L * 2 * d
    assert runs["spt_decoder"]["stored_params_per_experience"] == L * d
    assert runs["zero_shot"]["trainable_params"] == 0 and runs["zero_shot"]["train_seconds"] == 0
    assert runs["fft"]["trainable_params"] == runs["fft"]["backbone_params"] - 500 * d  # 10 s window: 500 frozen positions
    assert len(runs["fft"]["train_seconds_per_experience"]) == 3 and runs["fft"]["peak_memory_mb"] > 0
    # what the seconds were measured on: this process's CPU and threads (a resumed run may list several)
    from cl_asr.env_info import timing_device
    assert {tuple(r["timed_on"]) for r in runs.values()} == {(timing_device(torch.device("cpu")),)}
    # checkpoints hold what a strategy trained: a frozen-backbone method's is far smaller than FFT's model
    backbone_bytes = 4 * runs["fft"]["backbone_params"]
    assert runs["fft"]["stored_bytes"] > 0.9 * backbone_bytes
    for name in ("spt_decoder", "spt_entire", "zero_shot"):
        assert 0 < runs[name]["stored_bytes"] < backbone_bytes / 3, (name, runs[name]["stored_bytes"])
    # spt_decoder's frozen encoder is cached; encoders with hooks or gradients (adapter, FFT, ...) are not
    cache = meta["speed"]["encoder_cache"]
    assert meta["speed"]["precision"] == "fp32" and cache["misses"] > 0 and cache["bypassed"] > 0
    # ... and so are its decoder's cross-attention keys/values (one epoch here: stored, reuse is unit-tested)
    assert cache["cross_attention"]["misses"] > 0 and cache["cross_attention"]["memory_mb"] > 0


def test_summary_and_report_files(micro_run):
    out, proc = micro_run
    summary = pd.read_csv(out / "summary.csv")
    for col in ["scenario", "strategy", "seed", "avg_error", "bwt", "forgetting", "fwt", "base_error_delta",
                "trainable_params", "stored_bytes", "train_seconds", "peak_memory_mb"]:
        assert col in summary.columns
    assert sorted(summary[summary.status == "complete"].strategy) == sorted(STRATEGIES)
    assert set(summary[summary.status != "complete"].strategy) == {"text_spt", "ts_prompt"}  # cannot run here: listed
    assert summary.set_index("strategy").loc["ts_prompt", "status"] == "cannot run"
    assert "incomplete" not in (out / "report.md").read_text().split("## How to read", 1)[0]  # not a failure
    summary = summary[summary.status == "complete"]
    zs = summary.set_index("strategy").loc["zero_shot"]
    assert zs.bwt == 0 and zs.forgetting == 0 and zs.fwt == 0 and zs.base_error_delta == 0
    by = summary.set_index("strategy")
    assert (by.loc[FROZEN, "base_error_delta"] == 0).all()
    assert by.loc[FROZEN, "routing"].eq("oracle").all() and by.loc[FROZEN, "routing_accuracy"].eq(1.0).all()
    joint = by.loc["joint"]  # the joint reference: final error defined, the sequential metrics not
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    final = [r["value"] for r in rows if r["strategy"] == "joint" and r["stream"] == "test" and r["metric"] == "cer"
             and r["trained_through"] == max(x["trained_through"] for x in rows)]
    assert len(final) == 3 and joint.avg_error == pytest.approx(sum(final) / 3)  # mean final error over experiences
    assert pd.isna(joint.forgetting) and pd.isna(joint.intransigence)
    assert by.drop(index="joint").intransigence.notna().all()

    md = (out / "report.md").read_text()
    assert "How to read this report" in md and "positive = base languages got worse" in md
    assert "## Failures" in md and "| ts_prompt | 0 | cannot run |" in md
    for name in STRATEGIES:
        assert f"### {name}\n" in md
    figures = ["final_error.png", "forgetting.png", "error_vs_params.png", "curves.png", "pairwise_avg_error.png"]
    for png in figures + [f"matrix_{s}.png" for s in STRATEGIES]:
        Image.open(out / "plots" / png).verify()
        assert f"plots/{png}" in md

    page = (out / "report.html").read_text()
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(sources) == len(figures) + len(STRATEGIES)
    for src in sources:  # self-contained: every image is embedded and decodes
        assert src.startswith("data:image/png;base64,")
        Image.open(BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert str(out / "report.md") in proc.stdout  # the run says where its report is


def test_rerun_resumes_and_report_regenerates_from_files(micro_run):
    out, _ = micro_run
    before = (out / "results.jsonl").read_text()
    again = cli("run", "--strategies", ",".join(STRATEGIES), "--profile", "micro", "--out", str(out), "--no-progress")
    assert again.returncode == 0
    assert again.stdout.count("already complete, skipped") == len(STRATEGIES)
    assert (out / "results.jsonl").read_text() == before
    (out / "report.md").unlink()
    rep = cli("report", str(out))
    assert rep.returncode == 0 and (out / "report.md").is_file()
    missing = cli("report", str(out / "nope"))
    assert missing.returncode == 2 and "no such run directory" in missing.stderr


def test_rerun_refuses_to_skip_a_strategy_whose_config_changed(micro_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(micro_run[0], out)
    meta = json.loads((out / "run.json").read_text())
    for run in meta["strategy_runs"]:
        if run["strategy"] == "spt_decoder":
            run["config"]["lr"] = 123.0  # as if the baseline file had changed since the run
    (out / "run.json").write_text(json.dumps(meta))
    again = cli("run", "--strategies", "spt_decoder", "--profile", "micro", "--out", str(out), "--no-progress")
    assert again.returncode == 2 and "differs from the current" in again.stderr


def _readme_example() -> tuple[str, list[str]]:
    """The Python file and the commands of README's 'Add a strategy' section, exactly as printed there."""
    section = (REPO / "README.md").read_text().split("## Add a strategy", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    return code, commands


def test_the_readme_add_a_strategy_example_runs_a_micro_benchmark(tmp_path):
    code, commands = _readme_example()
    assert 20 <= len(code.splitlines()) <= 40  # "about 30 lines"
    (tmp_path / "my_methods.py").write_text(code)
    listing, run = [c.split()[2:] for c in commands]  # drop "python run_suite.py"
    listed = cli(*listing, "--backbone", "tiny:random", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.strip().startswith("bitfit "))
    from cl_asr.backbones import load_backbone

    model = load_backbone("tiny:random").model
    n_bias = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    assert int(line.split()[1].replace(",", "")) == n_bias
    done = cli(*run, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "runs" / "bitfit" / "summary.csv")
    assert sorted(summary.strategy) == ["bitfit", "zero_shot"]
    meta = json.loads((tmp_path / "runs" / "bitfit" / "run.json").read_text())
    bitfit = next(r for r in meta["strategy_runs"] if r["strategy"] == "bitfit")
    assert bitfit["trainable_params"] == n_bias and bitfit["description"].startswith("BitFit")


def test_methods_from_a_missing_file_is_a_clear_error(tmp_path):
    bad = cli("list", "--methods-from", str(tmp_path / "nope.py"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_two_identical_micro_runs_give_identical_results(micro_run, tmp_path):
    """Same command, same seed, same CPU: every results.jsonl value is identical (timings aside)."""
    out = tmp_path / "again"
    proc = cli("run", "--scenario", "languages", "--strategies", "all", "--profile", "micro", "--out", str(out),
               "--no-progress", "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = ["strategy", "seed", "trained_through", "eval_on", "metric", "value", "edits", "ref_tokens"]
    first, second = load_results(micro_run[0]), load_results(out)
    pd.testing.assert_frame_equal(first[keys], second[keys])
