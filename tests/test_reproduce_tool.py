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


def _today(tool, strategies):
    return tool.today_configs({"scenario": "languages", "profile": "micro"}, strategies, {})


def test_as_committed_sets_back_each_changed_key_as_a_variant_of_the_base():
    from cl_asr.config import config_record
    from cl_asr.runner import RunRequest, check_request

    tool = _tool()
    names = ["spt_decoder", "spt_decoder[eval_routing=lid]", "zero_shot"]
    today = _today(tool, names)
    committed = {name: dict(today[name]) for name in names}
    committed["spt_decoder"]["lr"] = committed["spt_decoder[eval_routing=lid]"]["lr"] = 0.5  # tuned since
    cfg = {"scenario": "languages", "profile": "micro", "strategies": committed}
    run, variants, renamed = tool.as_committed(cfg, names, {})
    assert run[2] == "zero_shot" and renamed.keys() == {"spt_decoder", "spt_decoder[eval_routing=lid]"}
    assert variants[renamed["spt_decoder"]] == {"strategy": "spt_decoder", "config": {"lr": 0.5}}
    assert variants[renamed["spt_decoder[eval_routing=lid]"]] == {
        "strategy": "spt_decoder", "config": {"lr": 0.5, "eval_routing": "lid"}}  # its own override kept
    checked = check_request(RunRequest(scenario="languages", strategies=run, profile="micro", out_dir=Path("/nonexistent"),
                                       variants=variants))
    for old, fresh in renamed.items():  # the fresh run's config is the committed one, key for key
        assert config_record(checked.configs[fresh]) == committed[old]
    committed["zero_shot"]["prompt_length"] = 8  # a key zero_shot never had: that config cannot run any more
    try:
        tool.as_committed(cfg, names, {})
    except SystemExit as exc:
        assert "zero_shot: the committed config sets prompt_length, which zero_shot no longer has" in str(exc)
    else:
        raise AssertionError("a vanished key was not refused")
