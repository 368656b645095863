import torch
from cl_asr.backbones import load_backbone
from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
from cl_asr.data.text_bank import split_sentences
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.tts import Voice
from cl_asr.metrics.text import error_counts
from cl_asr.methods.prompts import PromptInjector
import torch.nn.functional as F
b = load_backbone(); m=b.model; set_encoder_window(m, 10); fe = window_feature_extractor(b.feature_extractor, 10)
enc = m.model.encoder
inj = PromptInjector(m, b.tokenizer)
L=32; d=512
train, test = split_sentences("eo", 40)
ds = synthesize_corpus(CorpusSpec("languages/eo/test", "eo", tuple(test[:12]), (Voice("eo","m2",150,50), Voice("eo","f4",140,65))), progress=False)
feats = fe([r["audio"]["array"] for r in ds], sampling_rate=16000, return_tensors="pt").input_features
with torch.no_grad():
    x = F.gelu(enc.conv2(F.gelu(enc.conv1(feats)))).permute(0,2,1) + enc.embed_positions.weight
    silence_real = x[0, -L:].clone()  # the padded tail of a real utterance
    sil = torch.full((1, 80, 1000), -1.5)
    xs = F.gelu(enc.conv2(F.gelu(enc.conv1(sil)))).permute(0,2,1) + enc.embed_positions.weight
    silence_const = xs[0, -L:].clone()
g = torch.Generator().manual_seed(0)
inits = {"none": None, "gaussian(pos std)": torch.randn(L, d, generator=g) * enc.embed_positions.weight.std(),
         "padding tail of a real utterance": silence_real, "constant silence mel": silence_const}
print("std of layer-0 input:", x.std().item(), "pos std", enc.embed_positions.weight.std().item())
for name, p in inits.items():
    inj.encoder_prompt = p
    with torch.inference_mode():
        out = m.generate(input_features=feats, language="es", task="transcribe", max_new_tokens=40)
    hyps = b.tokenizer.batch_decode(out, skip_special_tokens=True)
    print(f"{name}: CER {error_counts(list(ds['text']), hyps, 'eo')['cer'].rate:.3f}", flush=True)
