from dataclasses import dataclass, field
from typing import Literal

import pytest

from cl_asr.config import REPO_ROOT, ConfigError, from_dict, load_yaml
from cl_asr.methods import METHODS, get_method, method_config
from cl_asr.registry import Registry, UnknownNameError
from cl_asr.scenarios import load_scenario_builder


@dataclass
class Inner:
    rate: int = 150


@dataclass
class Outer:
    name: str
    lr: float = 1e-3
    mode: Literal["separate", "shared"] = "separate"
    voices: list[Inner] = field(default_factory=list)
    limit: int | None = None


def test_registry_suggests_close_names():
    reg = Registry("strategy")
    reg.register("spt_entire")(object)
    reg.register("spt_decoder")(object)
    with pytest.raises(UnknownNameError, match="Did you mean: spt_entire"):
        reg.get("spt_entrie")


def test_every_builtin_strategy_is_registered_with_a_description():
    for name in ("zero_shot", "fft", "spt_decoder", "spt_entire"):
        assert name in METHODS
        cls = get_method(name)
        assert cls.name == name and cls.description.strip(), name  # the class registered under that name


def test_from_dict_builds_nested_dataclasses_and_coerces_float_strings():
    cfg = from_dict(Outer, {"name": "x", "lr": "1e-2", "voices": [{"rate": 120}], "limit": None}, "f.yaml")
    assert cfg.lr == pytest.approx(0.01) and cfg.voices[0].rate == 120 and cfg.limit is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "lrr": 1}, "unknown key 'lrr' (did you mean 'lr'?)"),
        ({"name": "x", "lr": "fast"}, "f.yaml.lr expects a number, got 'fast'"),
        ({"name": "x", "mode": "both"}, "f.yaml.mode expects one of 'separate', 'shared', got 'both'"),
        ({"name": "x", "voices": [{"rate": "slow"}]}, "f.yaml.voices[0].rate expects an integer, got 'slow'"),
        ({"lr": 1.0}, "missing required key 'name'"),
        ({"name": "x", "limit": True}, "f.yaml.limit expects an integer (or null), got True"),
    ],
)
def test_from_dict_names_the_key_and_expected_type(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data, "f.yaml")
    assert message in str(err.value)


def test_unknown_scenario_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean: languages"):
        load_scenario_builder("langauges")


def test_languages_scenario_profiles_and_unknown_profile():
    builder = load_scenario_builder("languages")
    cfg = builder.config
    assert cfg.base_languages == ["en", "de", "es"] and cfg.experiences == ["eo", "ia", "ga"]
    assert builder.profile("micro").backbone == "tiny:random"
    assert builder.profile("quick").backbone == "offline:whisper-base"
    with pytest.raises(ValueError, match="no profile 'huge'; it has: micro, quick, standard, full"):
        builder.profile("huge")


def test_method_config_reads_baselines_and_profile_prompt_length():
    yaml_cfg = load_yaml(REPO_ROOT / "baselines" / "spt_entire.yaml")["config"]
    cfg = method_config("spt_entire", "quick")
    assert cfg.lr == pytest.approx(float(yaml_cfg["lr"])) and cfg.prompt_length == yaml_cfg["prompt_length"]
    assert method_config("spt_entire", "micro", prompt_length=4).prompt_length == 4
    fft_lr = float(load_yaml(REPO_ROOT / "baselines" / "fft.yaml")["config"]["lr"])
    assert method_config("fft", "quick", prompt_length=4).lr == pytest.approx(fft_lr)  # fft has no prompt_length


def test_every_baseline_file_names_its_source_and_matches_its_strategy():
    for name in METHODS.names():
        data = load_yaml(REPO_ROOT / "baselines" / f"{name}.yaml")
        assert data["strategy"] == name and str(data.get("source", "")).strip(), name
        method_config(name, "quick")  # the values type-check against the strategy's config
