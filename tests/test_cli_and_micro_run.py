"""The suite as a user drives it: the CLI, and one full `micro` run checked file by file."""
import base64
import json
import re
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = ["zero_shot", "fft", "spt_decoder", "spt_entire"]


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "run_suite.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_help_and_list_name_the_scenario_and_strategies():
    help_ = cli("--help")
    assert help_.returncode == 0 and "list" in help_.stdout and "run" in help_.stdout and "report" in help_.stdout
    listing = cli("list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    for name in ["languages", *STRATEGIES]:
        assert any(line.strip().startswith(name + " ") for line in lines), name


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
    proc = cli("run", "--scenario", "languages", "--strategies", ",".join(STRATEGIES), "--profile", "micro",
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
    # 4 strategies x 4 rows (before training + 3 experiences) x 6 sets x 2 metrics
    assert len(df) == 4 * 4 * 6 * 2
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
    for name in ["spt_decoder", "spt_entire"]:
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
    assert set(meta["config"]["strategies"]) == set(STRATEGIES)
    assert meta["packages"]["torch"] and meta["packages"]["transformers"]
    assert "git" in meta and "device" in meta and meta["timings"]["total_seconds_this_invocation"] > 0
    runs = {r["strategy"]: r for r in meta["strategy_runs"]}
    assert set(runs) == set(STRATEGIES)
    d, L = 64, 4
    assert runs["spt_entire"]["trainable_params"] == L * 2 * d
    assert runs["spt_entire"]["stored_params_per_experience"] == L * 2 * d
    assert runs["spt_decoder"]["stored_params_per_experience"] == L * d
    assert runs["zero_shot"]["trainable_params"] == 0 and runs["zero_shot"]["train_seconds"] == 0
    assert runs["fft"]["trainable_params"] == runs["fft"]["backbone_params"] - 500 * d  # 10 s window: 500 frozen positions
    assert len(runs["fft"]["train_seconds_per_experience"]) == 3 and runs["fft"]["peak_memory_mb"] > 0


def test_summary_and_report_files(micro_run):
    out, proc = micro_run
    summary = pd.read_csv(out / "summary.csv")
    for col in ["scenario", "strategy", "seed", "avg_error", "bwt", "forgetting", "fwt", "base_error_delta",
                "trainable_params", "train_seconds", "peak_memory_mb"]:
        assert col in summary.columns
    assert sorted(summary.strategy) == sorted(STRATEGIES)
    zs = summary.set_index("strategy").loc["zero_shot"]
    assert zs.bwt == 0 and zs.forgetting == 0 and zs.fwt == 0 and zs.base_error_delta == 0

    md = (out / "report.md").read_text()
    assert "How to read this report" in md and "positive = base languages got worse" in md
    for name in STRATEGIES:
        assert f"### {name} (seed 0)" in md
    for png in ["final_error.png", "forgetting.png", "error_vs_params.png"] + [f"matrix_{s}_seed0.png" for s in STRATEGIES]:
        Image.open(out / "plots" / png).verify()
        assert f"plots/{png}" in md

    page = (out / "report.html").read_text()
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(sources) == 3 + len(STRATEGIES)
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
