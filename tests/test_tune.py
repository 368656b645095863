"""`run_suite.py tune`: searches on dev sets only (never a test set built or decoded), resumes, writes the tuned
defaults with their provenance, and later runs of that scenario and profile use them."""
import dataclasses
import json

import pytest
import yaml

import cl_asr.resources
from cl_asr.cli import main
from cl_asr.config import ConfigError
from cl_asr.data import corpus as corpus_mod
from cl_asr.methods import method_config
from cl_asr.tune import search_space, variant


def test_the_search_space_is_what_each_config_marks_around_its_defaults():
    spt = method_config("spt_decoder")  # lr 3e-2 in baselines/spt_decoder.yaml
    space = search_space(spt)
    assert space["lr"] == {"low": 1e-3, "high": 0.9, "log": True}  # three significant digits
    assert space["prompt_length"] == {"choices": [8, 16, 32, 64, 128]}
    assert set(search_space(method_config("lora"))) == {"lr", "rank"}
    assert set(search_space(method_config("replay"))) == {"lr", "buffer_size"}
    assert search_space(spt, ["lr"]).keys() == {"lr"}
    with pytest.raises(ConfigError, match="'grad_clip': not a searchable field"):
        search_space(spt, ["grad_clip"])
    assert variant("lora", {"rank": 16, "lr": 0.001}) == "lora[lr=0.001,rank=16]"


@pytest.fixture
def tuned_dir(tmp_path, monkeypatch):
    path = tmp_path / "tuned"
    monkeypatch.setattr(cl_asr.resources, "TUNED_DIR", path)
    return path


def test_tune_searches_on_dev_sets_only_resumes_and_writes_the_tuned_defaults(tmp_path, tuned_dir, monkeypatch,
                                                                             capsys):
    built = []
    real = corpus_mod.synthesize_corpus
    monkeypatch.setattr(corpus_mod, "synthesize_corpus", lambda spec, *a, **k: (built.append(spec.name),
                                                                                 real(spec, *a, **k))[1])
    for module in ("languages", "code_switching", "speakers", "text_domains"):  # the builders' own imports
        mod = __import__(f"cl_asr.scenarios.{module}", fromlist=["x"])
        if hasattr(mod, "synthesize_corpus"):
            monkeypatch.setattr(mod, "synthesize_corpus", corpus_mod.synthesize_corpus)
    out = tmp_path / "study"
    args = ["tune", "--scenario", "languages", "--strategies", "spt_decoder", "--profile", "micro", "--trials", "2",
            "--params", "lr", "--out", str(out), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert built and not [n for n in built if n.endswith("/test")], built  # no test set even synthesised
    assert any(n.endswith("/dev") for n in built)
    preds = [line for line in (out / "spt_decoder" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 4 * 6  # 2 trials x 4 passes x 6 evaluated sets, every one a dev set
    assert all("/dev/" in line and "/test/" not in line for line in preds)

    tuned = yaml.safe_load((tuned_dir / "languages.yaml").read_text())
    entry = tuned["profiles"]["micro"]["spt_decoder"]
    prov = entry["provenance"]
    assert prov["trials"] == 2 and len(prov["all_trials"]) == 2 and "dev set" in prov["objective"]
    assert prov["all_trials"][0]["values"] == {"lr": 0.03}  # the first trial: the hand-set default (baselines/)
    assert entry["config"]["lr"] == min(prov["all_trials"], key=lambda t: t["dev_error"])["values"]["lr"]
    assert prov["search_space"]["lr"]["log"] is True and prov["git_commit"]

    # the same command again: the study is resumed, no trial is run twice
    built.clear()
    assert main(args) == 0
    again = yaml.safe_load((tuned_dir / "languages.yaml").read_text())["profiles"]["micro"]["spt_decoder"]["provenance"]
    assert again["trials"] == 2 and again["date"] == prov["date"] and again["git_commit"] == prov["git_commit"]
    out_text = capsys.readouterr().out
    assert "2 of 2 trials done" in out_text and "no new trial" in out_text  # its record (commit, date) is kept

    # on another machine (no study database, other corpora): the committed record stands, no trial is run
    for db in out.glob("*.db"):
        db.unlink()
    monkeypatch.setattr("cl_asr.runner.run_benchmark", lambda req: pytest.fail("a trial ran again"))
    assert main(args) == 0
    assert yaml.safe_load((tuned_dir / "languages.yaml").read_text())["profiles"]["micro"]["spt_decoder"] == entry
    assert "2 trials recovered from" in capsys.readouterr().out

    # later runs of this scenario and profile take the tuned value (and nothing else does)
    assert method_config("spt_decoder", "micro", 4, scenario="languages").lr == entry["config"]["lr"]
    assert method_config("spt_decoder", "quick", None, scenario="languages").lr == 3e-2
    assert method_config("spt_decoder", "micro", 4, scenario="languages", tuned=False).lr == 3e-2


def test_tune_refuses_a_strategy_that_does_not_train_and_bad_budgets(tmp_path, tuned_dir, capsys):
    assert main(["tune", "--strategies", "zero_shot", "--profile", "micro", "--out", str(tmp_path / "s")]) == 2
    assert "strategy zero_shot does not train: it has nothing to tune" in capsys.readouterr().err
    assert main(["tune", "--strategies", "lora", "--profile", "micro", "--trials", "0",
                 "--out", str(tmp_path / "s")]) == 2
    assert "--trials must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_run_records_the_tuned_defaults_it_used(tmp_path, tuned_dir):
    import json

    tuned_dir.mkdir()
    (tuned_dir / "languages.yaml").write_text(yaml.safe_dump(
        {"profiles": {"micro": {"spt_decoder": {"config": {"lr": 0.05}, "provenance": {"trials": 1}}}}}))
    out = tmp_path / "run"
    assert main(["run", "--scenario", "languages", "--profile", "micro", "--strategies", "zero_shot,spt_decoder",
                 "--out", str(out), "--no-progress", "--no-report"]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["strategies"]["spt_decoder"]["lr"] == 0.05
    assert meta["tuned_defaults"]["strategies"] == ["spt_decoder"] and len(meta["tuned_defaults"]["sha256"]) == 64
    assert dataclasses.asdict(method_config("spt_decoder", "micro", 4, scenario="languages"))["lr"] == 0.05


def test_tune_on_ray_runs_trials_with_ray_tune_and_a_local_search_resumes_its_study(tmp_path, tuned_dir, capsys):
    out = tmp_path / "study"
    args = ["tune", "--scenario", "languages", "--strategies", "spt_decoder", "--profile", "micro", "--params", "lr",
            "--out", str(out), "--no-progress"]
    assert main([*args, "--trials", "2", "--executor", "ray", "--workers", "2"]) == 0, capsys.readouterr().err
    trial_dirs = sorted((out / "spt_decoder-ray").iterdir())
    assert len(trial_dirs) == 2 and (out / "ray_tune" / "spt_decoder").is_dir()  # one run directory per trial
    for d in trial_dirs:  # each trial ran on the dev sets only
        preds = (d / "predictions.jsonl").read_text().splitlines()
        assert len(preds) == 4 * 6 and all("/dev/" in line and "/test/" not in line for line in preds)
    prov = yaml.safe_load((tuned_dir / "languages.yaml").read_text())["profiles"]["micro"]["spt_decoder"]["provenance"]
    assert prov["trials"] == 2 and prov["executor"] == "Ray Tune (OptunaSearch)"
    first_two = [t["values"]["lr"] for t in prov["all_trials"]]
    assert len(set(first_two)) == 2

    # the same study goes on locally: one more trial, with new values (the resumed sampler does not repeat itself)
    capsys.readouterr()
    assert main([*args, "--trials", "3"]) == 0
    assert "2 of 3 trials done" in capsys.readouterr().out
    prov = yaml.safe_load((tuned_dir / "languages.yaml").read_text())["profiles"]["micro"]["spt_decoder"]["provenance"]
    assert prov["trials"] == 3 and prov["executor"] == "local"
    assert prov["all_trials"][2]["values"]["lr"] not in first_two


def test_the_defaults_trial_runs_the_hand_set_values_even_where_a_tuned_value_exists(tmp_path, tuned_dir):
    import json

    tuned_dir.mkdir()
    (tuned_dir / "languages.yaml").write_text(yaml.safe_dump(
        {"profiles": {"micro": {"spt_decoder": {"config": {"lr": 0.05}, "provenance": {"trials": 1}}}}}))
    out = tmp_path / "study"
    assert main(["tune", "--scenario", "languages", "--strategies", "spt_decoder", "--profile", "micro", "--params",
                 "lr", "--trials", "1", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((out / "spt_decoder" / "run.json").read_text())
    # a plain `spt_decoder` would have run with the tuned 0.05: the trial is the variant of the hand-set 3e-2
    assert list(meta["config"]["strategies"]) == ["spt_decoder[lr=0.03]"]
    assert meta["config"]["strategies"]["spt_decoder[lr=0.03]"]["lr"] == 0.03


def test_a_winner_at_the_edge_of_its_search_space_is_flagged():
    import optuna

    from cl_asr.tune import _record, at_edge_of_space

    space = {"lr": {"low": 1e-6, "high": 9e-4, "log": True}, "lm_weight": {"choices": [0.0, 0.5]}}
    assert at_edge_of_space({"lr": 1.19e-6, "lm_weight": 0.5}, space) == {"lr": "low"}  # choices are not judged
    assert at_edge_of_space({"lr": 7e-4}, space) == {"lr": "high"}
    assert at_edge_of_space({"lr": 3e-5}, space) == {}
    assert at_edge_of_space({"n": 9.5}, {"n": {"low": 1, "high": 10}}) == {"n": "high"}  # linear scale
    assert at_edge_of_space({"n": 9}, {"n": {"low": 1, "high": 10}}) == {}
    study = optuna.create_study()
    for lr, error in ((3e-5, 0.41), (1.19e-6, 0.25), (4.21e-5, 0.45)):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": optuna.distributions.FloatDistribution(1e-6, 9e-4, log=True)},
            value=error))
    req = type("Req", (), {"seed": 0, "trials": 4, "executor": "local", "backbone": "offline:whisper-base", "command": "tune",
                           "commit": "abc"})()
    record = _record(study, {"lr": space["lr"]}, req, None)
    assert record["config"] == {"lr": 1.19e-6} and record["provenance"]["at_edge_of_space"] == {"lr": "low"}
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 3e-5}, distributions={"lr": optuna.distributions.FloatDistribution(1e-6, 9e-4, log=True)},
        value=0.1))
    assert "at_edge_of_space" not in _record(study, {"lr": space["lr"]}, req, None)["provenance"]


def test_a_trial_cut_short_goes_on_with_its_own_values(tmp_path):
    """A search stopped mid-trial leaves that trial RUNNING in its study; on resuming it runs first with the same
    values (so its run resumes from its checkpoint) instead of a new proposal that would orphan its rows."""
    import optuna

    from cl_asr.tune import _resume_interrupted

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="fft")
    lr = optuna.distributions.FloatDistribution(1e-6, 9e-4, log=True)
    study.add_trial(optuna.trial.create_trial(params={"lr": 3e-5}, distributions={"lr": lr}, value=0.41))
    study.enqueue_trial({"lr": 3e-5})
    stale_done = study.ask({"lr": lr})  # a stale trial whose values a finished trial holds: not run again
    study.enqueue_trial({"lr": 4.205680317637069e-05})
    study.ask({"lr": lr})  # stopped while running
    queue = _resume_interrupted(study, "fft")
    assert queue == [{"lr": 4.21e-05}]
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and states.count(optuna.trial.TrialState.FAIL) == 2
    assert stale_done.number in [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert _resume_interrupted(study, "fft") == []  # nothing left running


def test_a_space_of_decoding_choices_is_searched_exhaustively_from_one_training(tmp_path, tuned_dir, monkeypatch,
                                                                                capsys):
    """lm_weight's five choices within a five-trial budget: each point tried once (TPE would repeat some), and as
    lm_weight only changes decoding, the strategy trains once and every point is a decoding twin of it."""
    from cl_asr.cl.template import ASRTemplate

    trained = []
    real_train = ASRTemplate.train
    monkeypatch.setattr(ASRTemplate, "train", lambda self, *a, **k: (trained.append(1), real_train(self, *a, **k))[1])
    out = tmp_path / "study"
    assert main(["tune", "--scenario", "text_domains", "--strategies", "text_spt", "--profile", "micro", "--params",
                 "lm_weight", "--trials", "5", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    prov = yaml.safe_load((tuned_dir / "text_domains.yaml").read_text())["profiles"]["micro"]["text_spt"]["provenance"]
    choices = search_space(method_config("text_spt"), ["lm_weight"])["lm_weight"]["choices"]
    assert sorted(t["values"]["lm_weight"] for t in prov["all_trials"]) == sorted(choices)
    assert prov["sampler"].startswith("every point of the space once")
    experiences = {json.loads(line)["trained_through"] for line in (out / "text_spt" / "results.jsonl").open()} - {-1}
    assert len(trained) == len(experiences)  # one training: one train() call per experience, not one per point
    errors = {t["values"]["lm_weight"]: t["dev_error"] for t in prov["all_trials"]}
    assert len(set(errors.values())) > 1  # the points decode differently (fusion at 0.5 is not fusion at 0)
