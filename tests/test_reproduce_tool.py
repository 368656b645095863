"""tools/reproduce.py says when a strategy's config today differs from the one a committed run recorded (the
fresh run takes today's defaults, e.g. a newly tuned learning rate), instead of reporting a mere mismatch."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("reproduce_tool", ROOT / "tools" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_match_names_each_differing_key(capsys):
    tool = _tool()
    committed = {"strategies": {"spt_entire": {"lr": 0.03, "prompt_length": 16}, "fft": {"lr": 3e-5}}}
    fresh = {"strategies": {"spt_entire": {"lr": 0.13, "prompt_length": 16}, "fft": {"lr": 3e-5}}}
    assert tool.configs_match(committed, committed, ["spt_entire", "fft"])
    assert not tool.configs_match(committed, fresh, ["spt_entire", "fft"])
    out = capsys.readouterr().out
    assert "spt_entire: config differs" in out and "lr: committed 0.03, here 0.13" in out and "fft" not in out
