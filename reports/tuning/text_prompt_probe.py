import torch
from cl_asr.backbones import load_backbone
from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
from cl_asr.data.text_bank import split_sentences
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.tts import Voice
from cl_asr.metrics.text import error_counts
b = load_backbone(); set_encoder_window(b.model, 10); fe = window_feature_extractor(b.feature_extractor, 10)
tok = b.tokenizer; prev = tok.convert_tokens_to_ids("<|startofprev|>")
for lang, code in [("eo","es"),("ga","en"),("ia","es")]:
    train, test = split_sentences(lang, 40)
    ds = synthesize_corpus(CorpusSpec(f"languages/{lang}/test", lang, tuple(test[:12]), (Voice(lang,"m2",150,50), Voice(lang,"f4",140,65))), progress=False)
    feats = fe([r["audio"]["array"] for r in ds], sampling_rate=16000, return_tensors="pt").input_features
    for L in [0, 32]:
        ids = tok.encode(" " + " ".join(train[:6]), add_special_tokens=False)[:L]
        with torch.inference_mode():
            out = b.model.generate(input_features=feats, language=code, task="transcribe", max_new_tokens=40, prompt_ids=torch.tensor([prev]+ids) if L else None)
        hyps = tok.batch_decode(out, skip_special_tokens=True)
        print(lang, "text prompt tokens", L, "CER %.3f" % error_counts(list(ds["text"]), hyps, lang)["cer"].rate, flush=True)
