import numpy as np
import pytest
import torch

from cl_asr.backbones import BackboneError, load_backbone
from cl_asr.backbones.offline import (OfflineWeightsError, package_data_dirs, read_ctranslate2_model,
                                      whisper_tokenizer)
from cl_asr.backbones.window import set_encoder_window, window_feature_extractor


def test_tokenizer_is_completed_to_the_model_vocabulary():
    tok = whisper_tokenizer()
    assert len(tok) == 51865
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|en|>", "<|es|>", "<|transcribe|>", "<|notimestamps|>",
                                                     "<|startofprev|>", "<|0.00|>", "<|30.00|>")}
    assert ids["<|en|>"] == 50259 and ids["<|es|>"] == 50262 and ids["<|notimestamps|>"] == 50363
    assert ids["<|0.00|>"] == 50364 and ids["<|30.00|>"] == 51864


def test_ctranslate2_reader_verifies_the_weights(tmp_path):
    part1, part2 = package_data_dirs()
    broken = tmp_path / "model.bin.part2"
    broken.write_bytes((part2 / "model.bin.part2").read_bytes()[:-10])
    with pytest.raises(OfflineWeightsError, match="expected 145217532 bytes"):
        read_ctranslate2_model([part1 / "model.bin.part1", broken])


def test_unknown_backbone_gives_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="cannot load backbone"):
        load_backbone(str(tmp_path / "missing-model"))
    with pytest.raises(BackboneError, match="unknown offline backbone 'whisper-huge'"):
        load_backbone("offline:whisper-huge")


@pytest.mark.slow
def test_offline_whisper_base_conversion_matches_the_ctranslate2_tensors():
    b = load_backbone("offline:whisper-base")
    m = b.model
    assert sum(p.numel() for p in m.parameters()) == 72_593_920
    assert (m.config.d_model, m.config.encoder_layers, m.config.decoder_layers, m.config.vocab_size) == (512, 6, 6, 51865)
    part1, part2 = package_data_dirs()
    v = read_ctranslate2_model([part1 / "model.bin.part1", part2 / "model.bin.part2"])
    q, k, vv = np.split(v["encoder/layer_3/self_attention/linear_0/weight"].astype(np.float32), 3)
    sd = m.state_dict()
    np.testing.assert_array_equal(sd["model.encoder.layers.3.self_attn.q_proj.weight"].numpy(), q)
    np.testing.assert_array_equal(sd["model.encoder.layers.3.self_attn.v_proj.weight"].numpy(), vv)
    kv = v["decoder/layer_5/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(sd["model.decoder.layers.5.encoder_attn.v_proj.weight"].numpy(), kv[512:])
    assert m.proj_out.weight.data_ptr() == m.model.decoder.embed_tokens.weight.data_ptr()  # tied
    assert m.model.encoder.layers[0].self_attn.k_proj.bias is None


def test_encoder_window_truncates_positions_and_config(tiny_model):
    set_encoder_window(tiny_model, 10)
    assert tiny_model.config.max_source_positions == 500
    assert tiny_model.model.encoder.embed_positions.weight.shape == (500, 64)
    out = tiny_model.model.encoder(torch.randn(1, 80, 1000)).last_hidden_state
    assert out.shape == (1, 500, 64)
    with pytest.raises(ValueError, match="multiple of 0.02 s"):
        set_encoder_window(tiny_model, 45)


def test_window_feature_extractor_pads_to_the_window(tiny):
    fe = window_feature_extractor(tiny.feature_extractor, 10)
    feats = fe([np.zeros(16000, dtype=np.float32)], sampling_rate=16000, return_tensors="pt").input_features
    assert feats.shape == (1, 80, 1000)
    assert window_feature_extractor(tiny.feature_extractor, 30) is tiny.feature_extractor
