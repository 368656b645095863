"""Where the learned router's two constants come from (cl_asr/methods/learned_router.py): its routing accuracy on
a scenario's DEV sets (never a test set) for a grid of shrinkage and rejection factors, beside Whisper-LID
routing's view of the same utterances.

    python tools/router_calibration.py [--scenario languages] [--profile quick]
        [--shrinkage 0.1,0.3,0.5,0.7,0.9] [--reject 1.5,2,3,5,10]

The router learns every experience from its training rows (features of the plain backbone, as a run does after
the last experience) and routes each dev utterance: an experience's dev set is routed right when it goes to that
experience, a preservation (base-language) dev set when it goes to no set. Printed: accuracy per set and the
mean over sets, per setting; the constants in learned_router.py are the best mean (ties: the smaller factor).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_asr.backbones import load_backbone  # noqa: E402
from cl_asr.backbones.window import set_encoder_window, window_feature_extractor  # noqa: E402
from cl_asr.cl.collate import ASRCollator  # noqa: E402
from cl_asr.methods import learned_router  # noqa: E402
from cl_asr.scenarios import load_scenario_builder  # noqa: E402


def features(model, collator, rows, batch: int = 16) -> torch.Tensor:
    out = []
    for i in range(0, len(rows), batch):
        feats = collator(rows[i: i + batch])["input_features"]
        out.append(learned_router.speech_frame_features(model, feats))
    return torch.cat(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="languages")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--shrinkage", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--reject", default="1.5,2,3,5,10")
    args = ap.parse_args(argv)
    builder = load_scenario_builder(args.scenario)
    profile = builder.profile(args.profile)
    backbone = load_backbone(profile.backbone, seed=0)
    set_encoder_window(backbone.model, profile.encoder_window_seconds)
    extractor = window_feature_extractor(backbone.feature_extractor, profile.encoder_window_seconds)
    model = backbone.model.eval()
    scenario = builder.build(profile, backbone, extractor, progress=False, evaluate="dev")
    collator = ASRCollator(backbone.tokenizer, extractor, scenario.decode_languages)
    rows = lambda exp: [exp.dataset[i] for i in range(len(exp.dataset))]  # noqa: E731
    train = [features(model, collator, rows(e)) for e in scenario.benchmark.train_stream]
    evaluated = [(f"{t.stream}/{t.name}", str(t.index) if t.is_experience else None, features(model, collator, rows(e)))
                 for e in list(scenario.benchmark.test_stream) + list(scenario.benchmark.preservation_stream)
                 for t in [scenario.target_of(e)]]
    print(f"{args.scenario}/{args.profile} dev sets: " + ", ".join(f"{n} ({len(f)})" for n, _, f in evaluated))
    grid = []
    for shrink in [float(x) for x in args.shrinkage.split(",")]:
        for reject in [float(x) for x in args.reject.split(",")]:
            learned_router.SHRINKAGE, learned_router.REJECT_FACTOR = shrink, reject
            router = learned_router.StreamingLDARouter()
            for i, f in enumerate(train):
                router.add(str(i), i, f)
            accuracy = {name: sum(r == want for r in router.route(f, router.keys)) / len(f)
                        for name, want, f in evaluated}
            mean = sum(accuracy.values()) / len(accuracy)
            grid.append((mean, -reject, shrink, reject, accuracy))
            print(f"shrinkage {shrink:<4} reject {reject:<5} mean {mean:.3f}  " +
                  "  ".join(f"{n} {a:.2f}" for n, a in accuracy.items()))
    best = max(grid)
    print(f"best: shrinkage {best[2]} reject {best[3]} (mean routing accuracy {best[0]:.3f} on the dev sets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
