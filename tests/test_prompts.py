import copy

import pytest
import torch

from cl_asr.cl.decode_key import decode_key
from cl_asr.cl.fingerprint import Digests
from cl_asr.methods import Target, get_method, method_config

FEATS = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
TRAIN0 = Target("train", 0, "eo", "eo", "es")
TEST0 = Target("test", 0, "eo", "eo", "es")
TEST1 = Target("test", 1, "ia", "ia", "es")
BASE = Target("preservation", 0, "en", "en", "en")


def make(name, model, tokenizer, L=3, **kw):
    cfg = method_config(name, None, prompt_length=L)
    for k, v in kw.items():
        setattr(cfg, k, v)
    method = get_method(name)(cfg, model, tokenizer, seed=0)
    method.setup()
    return method


def generate(model, prefix=None):
    with torch.inference_mode():
        return model.generate(input_features=FEATS, language="es", task="transcribe", max_new_tokens=4,
                              prompt_ids=torch.tensor(prefix) if prefix else None)


def train_through(method, target):
    method.before_experience(target)
    method.end_experience(target)


def test_hooks_change_nothing_while_no_prompt_is_active(tiny, tiny_model):
    reference = generate(tiny.model)
    method = make("spt_entire", tiny_model, tiny.tokenizer)
    train_through(method, TRAIN0)
    with method.route(BASE) as route:
        assert route.decoder_prefix == []
        assert torch.equal(generate(tiny_model), reference)


def test_entire_prompts_reach_encoder_and_decoder_and_generate_still_works(tiny, tiny_model):
    method = make("spt_entire", tiny_model, tiny.tokenizer, L=3)
    method.before_experience(TRAIN0)
    with method.route(TRAIN0) as route:
        enc = tiny_model.model.encoder(FEATS).last_hidden_state
        assert enc.shape[1] == 1500 + 3
        prev, ph = tiny.tokenizer.convert_tokens_to_ids(["<|startofprev|>", "<|startoflm|>"])
        assert route.decoder_prefix == [prev, ph, ph, ph]
        out = generate(tiny_model, route.decoder_prefix)
    assert out.shape == (2, 4)  # only the new text tokens come back, no prompt or prefix
    assert not torch.isin(out, torch.tensor([prev, ph])).any()


def test_gradients_reach_only_the_prompts(tiny, tiny_model):
    method = make("spt_entire", tiny_model, tiny.tokenizer, L=3)
    method.before_experience(TRAIN0)
    with method.route(TRAIN0) as route:
        prefix = torch.tensor([route.decoder_prefix] * 2)
        dec = torch.tensor([[50258, 50262, 50359, 50363, 400, 500]] * 2)
        labels = torch.cat([torch.full((2, prefix.shape[1] + 3), -100), torch.tensor([[400, 500, 50257]] * 2)], 1)
        loss = tiny_model(input_features=FEATS, decoder_input_ids=torch.cat([prefix, dec], 1), labels=labels).loss
    loss.backward()
    params = method.trainable_parameters()
    assert len(params) == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for p in tiny_model.parameters())


@pytest.mark.parametrize("name, places", [("spt_decoder", 1), ("spt_entire", 2)])
def test_parameter_counts_are_the_closed_form(tiny, tiny_model, name, places):
    L, d = 5, tiny_model.config.d_model
    method = make(name, tiny_model, tiny.tokenizer, L=L)
    method.before_experience(TRAIN0)
    # spt_entire stores L x (d_enc + d_dec) per experience; spt_decoder L x d_dec (Whisper: d_enc = d_dec)
    assert method.n_trainable() == L * d * places
    assert method.stored_parameters_per_experience() == L * d * places


def decode_key_of(method, target):
    return decode_key(method, target, Digests())


def test_separate_prompts_are_routed_by_experience_identity(tiny, tiny_model):
    method = make("spt_decoder", tiny_model, tiny.tokenizer, L=2)
    pretrained = decode_key(get_method("zero_shot")(method_config("zero_shot"), tiny.model, tiny.tokenizer),
                            TEST0, Digests())
    assert decode_key_of(method, TEST0) == pretrained  # nothing learned: provably the plain pretrained model
    train_through(method, TRAIN0)
    key0, shareable = decode_key_of(method, TEST0)
    assert key0 != pretrained[0] and not shareable  # its prompt is active: keyed by the strategy's state
    assert method.oracle_key(TEST0) == "0"
    assert decode_key_of(method, TEST1) == pretrained  # experience 1 not learned yet: no prompt, no hook
    assert decode_key_of(method, BASE)[1]  # base languages never get a prompt
    train_through(method, Target("train", 1, "ia", "ia", "es"))
    assert method.oracle_key(TEST0) == "0" and method.oracle_key(TEST1) == "1"
    # the whole state is keyed (a new set is state too): experience 0's decode is computed again
    assert decode_key_of(method, TEST0)[0] != key0


def test_shared_mode_trains_one_prompt_set_for_all_experiences(tiny, tiny_model):
    method = make("spt_decoder", tiny_model, tiny.tokenizer, L=2, mode="shared")
    train_through(method, TRAIN0)
    method.before_experience(Target("train", 1, "ia", "ia", "es"))
    assert len(method.prompt_sets) == 1
    assert method.oracle_key(TEST0) == method.oracle_key(TEST1) == "shared"
    assert not decode_key_of(method, TEST0)[1]


def test_prompt_count_mismatch_is_reported(tiny, tiny_model):
    method = make("spt_decoder", tiny_model, tiny.tokenizer, L=3)
    method.before_experience(TRAIN0)
    ph = tiny.tokenizer.convert_tokens_to_ids("<|startoflm|>")
    with method.route(TRAIN0), pytest.raises(RuntimeError, match="decoder prompt of length 3"):
        tiny_model(input_features=FEATS, decoder_input_ids=torch.tensor([[50258, ph, ph]] * 2))


def test_decoder_prompts_start_from_the_experiences_transcripts(tiny, tiny_model):
    rows = [{"text": "La hundo dormas sur la tapiŝo."}, {"text": "Mi trinkas teon kun lakto."}]
    method = make("spt_decoder", tiny_model, tiny.tokenizer, L=6)
    method.before_experience(TRAIN0, rows)
    emb = tiny_model.model.decoder.embed_tokens.weight
    tokens = {tuple(tiny.tokenizer.encode(" " + r["text"], add_special_tokens=False)[:6]) for r in rows}
    prompt = method.prompt_sets["0"].raw["decoder_0"].detach()
    matches = [torch.equal(prompt, emb[list(t)]) for t in tokens]
    assert any(matches), "the prompt should begin as the embeddings of one training transcript's tokens"

    vocab = make("spt_decoder", copy.deepcopy(tiny_model), tiny.tokenizer, L=6, init="vocab")
    vocab.before_experience(TRAIN0, rows)
    random_tokens = vocab.prompt_sets["0"].raw["decoder_0"].detach()
    assert not torch.equal(random_tokens, prompt)
    # every row is the embedding of some text token (ids below <|endoftext|>), none of a special token
    eot = tiny.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    same = (random_tokens[:, None, :] == emb.detach()[None, :, :]).all(-1)  # [L, vocabulary]
    assert same[:, :eot].any(1).all() and not same[:, eot:].any()


def test_encoder_prompts_start_as_the_encoders_own_silence_frames(tiny, tiny_model):
    from cl_asr.methods.prompts import SILENCE_LOG_MEL

    seen = {}
    handle = tiny_model.model.encoder.layers[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    silent = tiny.feature_extractor([torch.zeros(16000).numpy()], sampling_rate=16000, return_tensors="pt")
    assert torch.allclose(silent.input_features[0, :, -10:], torch.tensor(SILENCE_LOG_MEL))  # the constant is right
    with torch.no_grad():
        tiny_model.model.encoder(torch.full((1, 80, 3000), SILENCE_LOG_MEL))
    handle.remove()
    method = make("spt_entire", tiny_model, tiny.tokenizer, L=4)
    method.before_experience(TRAIN0)
    assert torch.allclose(method.prompt_sets["0"].raw["encoder_0"].detach(), seen["x"][0, -4:], atol=1e-6)
