"""CL-MASR's new-language-token protocol (cl_asr/cl/language_tokens.py; variant `[language_token=new]`): the
model gains a row per unseen language while its pretrained matrix stays the same tensor, the row trains with its
experience, is counted as stored, and a run with it resumes after a failure as if uninterrupted."""
import copy
import json

import pytest
import torch

from cl_asr import runner
from cl_asr.cl.language_tokens import ExtendedEmbedding, install, trained_row
from cl_asr.cli import main
from helpers import fail_once, strategy_rows

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--no-report", "--set", "n_train=2"]


@pytest.fixture
def model_and_tokenizer(tiny):
    return copy.deepcopy(tiny.model).eval(), copy.deepcopy(tiny.tokenizer)


@pytest.mark.parametrize("init", ["new", "new_copied"])
def test_new_rows_extend_the_vocabulary_and_leave_the_pretrained_matrix_alone(model_and_tokenizer, init):
    model, tok = model_and_tokenizer
    embed = model.get_decoder().embed_tokens
    weight, v = embed.weight, embed.num_embeddings
    before = weight.detach().clone()
    ids = install(model, tok, {"eo": "es", "ia": "es"}, init, seed=0)
    assert ids == {"eo": v, "ia": v + 1}
    assert tok.convert_tokens_to_ids("<|eo|>") == v and tok.convert_tokens_to_ids("<|ia|>") == v + 1
    wrapped = model.get_decoder().embed_tokens
    assert isinstance(wrapped, ExtendedEmbedding) and wrapped.weight is weight and torch.equal(weight, before)
    es = tok.convert_tokens_to_ids("<|es|>")
    out = wrapped(torch.tensor([[es, v, v + 1]]))
    torch.testing.assert_close(out[0, 0], weight[es])
    torch.testing.assert_close(out[0, 1], wrapped.rows[0][0])
    if init == "new_copied":
        torch.testing.assert_close(wrapped.rows[0][0], weight[es])
    else:
        assert not torch.equal(wrapped.rows[0][0], weight[es])
    hidden = torch.randn(2, 3, weight.shape[1])
    logits = model.proj_out(hidden)
    assert logits.shape[-1] == v + 2
    torch.testing.assert_close(logits[..., v], hidden @ wrapped.rows[0][0])
    assert model.generation_config.lang_to_id["<|eo|>"] == v
    assert tok.decode([v, tok.convert_tokens_to_ids(" hello") or 0], skip_special_tokens=True).strip() != "<|eo|>"
    assert install(model, tok, {"eo": "es", "ia": "es"}, init, seed=0) == ids  # idempotent (resuming)
    assert trained_row(model, ids, "ia") is wrapped.rows[1] and trained_row(model, ids, "en") is None


def test_generate_takes_the_new_token_as_the_language(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = install(model, tok, {"eo": "es"}, "new", seed=0)
    feats = torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions)
    out = model.generate(input_features=feats, language="<|eo|>", task="transcribe", max_new_tokens=3,
                         return_dict_in_generate=True).sequences
    sot, transcribe = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|transcribe|>")
    assert out[0, :3].tolist() == [sot, ids["eo"], transcribe]  # the forced prefix holds the new token



@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "run"
    assert main([*MICRO, "--strategies", "lora,lora[language_token=new],fft[language_token=new_copied]",
                 "--out", str(out)]) == 0
    return out


def test_a_frozen_backbone_strategy_trains_and_stores_the_row(token_run):
    records = {r["strategy"]: r for r in json.loads((token_run / "run.json").read_text())["strategy_runs"]}
    new = records["lora[language_token=new]"]
    assert new["trainable_params"] == records["lora"]["trainable_params"] + d_model_of(token_run)
    assert new["stored_params_per_experience"] == records["lora"]["stored_params_per_experience"] + d_model_of(token_run)
    assert strategy_rows(token_run, "lora[language_token=new]", "predictions") != strategy_rows(token_run, "lora", "predictions")
    fft = records["fft[language_token=new_copied]"]
    assert fft["stored_params_per_experience"] == fft["backbone_params"] + 3 * d_model_of(token_run)


def d_model_of(out) -> int:
    from cl_asr.backbones import load_backbone

    return load_backbone("tiny:random", seed=0).model.config.d_model


def test_a_run_with_new_tokens_resumes_as_if_uninterrupted(token_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "crash"
    fail_once(monkeypatch, runner, "evaluate_pass", lambda strategy, scenario, name, seed, step: step == 1,
              "injected failure")
    args = [*MICRO, "--strategies", "lora[language_token=new]", "--out", str(out)]
    assert main(args) == 1
    assert main(args) == 0
    for what in ("results", "predictions"):
        assert strategy_rows(out, "lora[language_token=new]", what) == strategy_rows(token_run, "lora[language_token=new]", what)
