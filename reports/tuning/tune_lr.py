import sys, time, copy, dataclasses, torch
from cl_asr.backbones import load_backbone
from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
from cl_asr.scenarios import load_scenario_builder
from cl_asr.cl.collate import ASRCollator
from cl_asr.cl.template import ASRTemplate
from cl_asr.methods import get_method, method_config
from cl_asr.metrics.text import error_counts
torch.set_num_threads(2)
lang_idx = int(sys.argv[1]); runs = [(a.split(":")[0], float(a.split(":")[1]), int(a.split(":")[2]), (a.split(":") + ["constant"])[3]) for a in sys.argv[2:]]
b = load_backbone(); set_encoder_window(b.model, 10); fe = window_feature_extractor(b.feature_extractor, 10)
builder = load_scenario_builder("languages"); prof = builder.config.profile("quick")
sc = builder.build(prof, b, fe, progress=False)
print(sc.settings["decode_language"], sc.settings["lid_probabilities"], flush=True)
col = ASRCollator(b.tokenizer, fe, sc.decode_languages)
for name, lr, epochs, sched in runs:
    cfg = dataclasses.replace(method_config(name, "quick"), lr=lr, schedule=sched)
    torch.manual_seed(0)
    m = get_method(name)(cfg, copy.deepcopy(b.model), b.tokenizer); m.setup()
    st = ASRTemplate(m, col, sc.target_of, train_mb_size=prof.batch_size, train_epochs=epochs, eval_mb_size=12, max_new_tokens=48, progress=False)
    st.eval(sc.benchmark.test_stream[lang_idx]); o0 = list(st.eval_outputs.values())[0]
    t=time.time(); st.train(sc.benchmark.train_stream[lang_idx]); tt=time.time()-t
    # skip to the trained state: experiences_trained counts all, so mark index trained
    m.experiences_trained = lang_idx + 1
    st.eval_outputs = {}; st.eval(sc.benchmark.test_stream[lang_idx]); o = list(st.eval_outputs.values())[0]
    c0 = error_counts(o0.refs, o0.hyps, o0.target.language)["cer"].rate; c = error_counts(o.refs, o.hyps, o.target.language)["cer"].rate
    print(f"{name} lr={lr} ep={epochs} {sched} n_train={prof.n_train}: train {tt:.0f}s  CER {c0:.3f} -> {c:.3f} ({(c0-c)/c0*100:.0f}% rel)", flush=True)
    print("   ", o.refs[0], "|", o.hyps[0], flush=True)
