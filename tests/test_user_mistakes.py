"""Every user mistake caught before any work (one test per class): one `error: ...` line naming the flag, file,
key or value, exit status 2, no traceback, and nothing written (the --out directory is not created; an existing
run directory is left byte for byte as it was). CLI cases call `cl_asr.cli.main` in-process (what
`python run_suite.py` runs); tests/test_bad_input.py has the data-side cases (corpora, audio, the cache)."""
import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO

import cl_asr.resources
from cl_asr.cli import main

SCENARIO = REPO / "cl_asr" / "resources" / "scenarios" / "languages.yaml"
RUN = ["run", "--profile", "micro", "--no-progress", "--strategies", "zero_shot"]


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def refused(capsys, tmp_path, *args, out=None) -> str:
    """Run the command; assert it is refused as the module doc says; return the error line."""
    out = out or tmp_path / "run"
    before = _snapshot(out)
    existed = out.exists()
    rc = main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out.exists() == existed and _snapshot(out) == before, "something was written"
    return lines[0]


def scenario_with(tmp_path, old: str, new: str) -> str:
    """A copy of the languages scenario with one edit (a user's own scenario file)."""
    text = SCENARIO.read_text()
    assert old in text, old
    path = tmp_path / "my_scenario.yaml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


def test_seeds(capsys, tmp_path):
    assert "'0,,1'" in refused(capsys, tmp_path, *RUN, "--seeds", "0,,1")
    assert "-1 is not a seed" in refused(capsys, tmp_path, *RUN, "--seeds", "-1")
    assert "distinct" in refused(capsys, tmp_path, *RUN, "--seeds", "1,1")
    # a directory with a run in it keeps what it had: seed -1 is not recorded for the next run there
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "run.json").write_text('{"config": {"seeds": [0]}, "strategy_runs": [], "status": "complete"}')
    refused(capsys, tmp_path, *RUN, "--seed", "-1", out=existing)


def test_devices(capsys, tmp_path):
    assert "--device 'gpu0': not a torch device" in refused(capsys, tmp_path, *RUN, "--device", "gpu0")
    if not torch.cuda.is_available():
        assert "--device cuda: this machine has no CUDA GPU" in refused(capsys, tmp_path, *RUN, "--device", "cuda")
    else:
        n = torch.cuda.device_count()
        assert f"has {n} GPU(s)" in refused(capsys, tmp_path, *RUN, "--device", f"cuda:{n}")


def test_backbones(capsys, tmp_path):
    assert "--backbone '/no/such/dir': no such directory" in refused(capsys, tmp_path, *RUN, "--backbone", "/no/such/dir")
    assert "unknown offline backbone 'whisper-huge'" in refused(capsys, tmp_path, *RUN, "--backbone",
                                                                "offline:whisper-huge")
    (tmp_path / "empty_model").mkdir()
    assert "holds no config.json" in refused(capsys, tmp_path, *RUN, "--backbone", str(tmp_path / "empty_model"))


def test_names(capsys, tmp_path):
    assert "unknown strategy 'lorra'" in refused(capsys, tmp_path, "run", "--profile", "micro", "--strategies", "lorra")
    assert "unknown scenario 'languagse'" in refused(capsys, tmp_path, *RUN, "--scenario", "languagse")
    assert "has no profile 'tiny'" in refused(capsys, tmp_path, "run", "--profile", "tiny", "--strategies", "zero_shot")
    assert "names a strategy twice" in refused(capsys, tmp_path, "run", "--profile", "micro", "--strategies",
                                               "zero_shot,zero_shot")


def test_non_finite_numbers_in_scenario_and_strategy_yaml(capsys, tmp_path, monkeypatch):
    path = scenario_with(tmp_path, "silence_seconds: 0.3", "silence_seconds: .nan")
    line = refused(capsys, tmp_path, *RUN, "--scenario", path)
    assert "my_scenario.yaml" in line and "silence_seconds expects a finite number, got nan" in line
    # a strategy's defaults file (baselines/<name>.yaml) with an infinite learning rate
    baselines = tmp_path / "baselines"
    shutil.copytree(cl_asr.resources.BASELINE_DIR, baselines)
    text = (baselines / "fft.yaml").read_text()
    assert "\n  lr: " in text
    (baselines / "fft.yaml").write_text(re.sub(r"\n  lr: [^\n]*", "\n  lr: .inf", text, count=1))
    monkeypatch.setattr(cl_asr.resources, "BASELINE_DIR", baselines)
    line = refused(capsys, tmp_path, "run", "--profile", "micro", "--strategies", "fft")
    assert "fft.yaml" in line and "lr expects a finite number, got inf" in line


def test_duplicate_experiences(capsys, tmp_path):
    path = scenario_with(tmp_path, "experiences: [eo, ia, ga]", "experiences: [eo, ia, eo, ga]")
    line = refused(capsys, tmp_path, *RUN, "--scenario", path)
    assert "my_scenario.yaml: experiences lists 'eo' more than once" in line


def test_prompt_length_against_the_decoder_positions(capsys, tmp_path):
    # Whisper's decoder has 448 positions: <|startofprev|> + 500 placeholders + 4 prefix tokens + 16 new tokens
    path = scenario_with(tmp_path, "    lid_utterances: 2\n    prompt_length: 4\n", "    lid_utterances: 2\n    prompt_length: 500\n")
    line = refused(capsys, tmp_path, "run", "--profile", "micro", "--strategies", "zero_shot,spt_decoder",
                   "--scenario", path)
    assert "strategy spt_decoder: its decoder prefix of 501 positions (prompt_length 500)" in line
    assert "exceeds the backbone's 448 decoder positions" in line
    # an encoder-only prompt takes no decoder position: the same length passes this check
    from cl_asr.methods import method_config
    assert method_config("spt_encoder", "micro", 500).decoder_prefix_positions() == 0


def test_methods_from_files_that_do_not_import(capsys, tmp_path):
    broken = tmp_path / "my_methods.py"
    broken.write_text("from cl_asr.methods.base import register_method\n\ndef oops(:\n    pass\n")
    line = refused(capsys, tmp_path, *RUN, "--methods-from", str(broken))
    assert f"--methods-from {broken}: cannot import it: SyntaxError" in line and "(line 3)" in line
    broken.write_text("import os\nfrom cl_asr.methods.base import NoSuchThing\n")
    line = refused(capsys, tmp_path, *RUN, "--methods-from", str(broken))
    assert "ImportError: cannot import name 'NoSuchThing'" in line and "(line 2)" in line
    assert "no such file" in refused(capsys, tmp_path, *RUN, "--methods-from", str(tmp_path / "missing.py"))
