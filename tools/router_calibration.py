"""Where the learned router's two constants come from (cl_asr/methods/learned_router.py): its routing accuracy on
a scenario's DEV sets (never a test set) for a grid of shrinkage and rejection factors, beside Whisper-LID
routing's view of the same utterances.

    python tools/router_calibration.py [--scenario languages] [--profile quick]
        [--shrinkage 0.1,0.3,0.5,0.7,0.9] [--reject 1.5,2,3,5,10]

At every position of the stream (after experience 1, 2, ..., as a run evaluates) the router has learned the
experiences so far from their training rows (features of the plain backbone) and routes each dev utterance: the
dev set of a learned experience is routed right when it goes to that experience; a preservation (base-language)
dev set, or that of an experience not learned yet, when it goes to no set. Printed: accuracy per set after the
whole stream, the mean over sets after each position, and the mean over positions and sets, which picks the
constants in learned_router.py (the best; ties: the smaller factor). Scoring the end of the stream alone hid
that a router fitted to one experience rejected that experience's own utterances.
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
    ap.add_argument("--inflation", default="on", help="on, off or on,off: 'off' scores the router as it was before "
                    "the held-out inflation (a fixed factor on the in-sample distance), for comparison")
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
    measured = learned_router.StreamingLDARouter._held_out_inflation
    for inflation in args.inflation.split(","):
        learned_router.StreamingLDARouter._held_out_inflation = measured if inflation == "on" else \
            (lambda self, key, x: 1.0)
        print(f"held-out inflation {inflation}")
        grid += calibrate(args, train, evaluated, inflation)
    best = max(grid)
    print(f"best: shrinkage {best[2]} reject {best[3]}, inflation {best[5]} (mean routing accuracy {best[0]:.3f} on "
          f"the dev sets, over the stream's positions)")
    return 0


def calibrate(args, train, evaluated, inflation: str) -> list[tuple]:
    grid = []
    for shrink in [float(x) for x in args.shrinkage.split(",")]:
        for reject in [float(x) for x in args.reject.split(",")]:
            learned_router.SHRINKAGE, learned_router.REJECT_FACTOR = shrink, reject
            router = learned_router.StreamingLDARouter()
            per_position = []
            for i, f in enumerate(train):
                router.add(str(i), i, f)
                accuracy = {name: sum(r == (want if want is not None and int(want) <= i else None)
                                      for r in router.route(f, router.keys)) / len(f)
                            for name, want, f in evaluated}
                per_position.append(sum(accuracy.values()) / len(accuracy))
            mean = sum(per_position) / len(per_position)
            grid.append((mean, -reject, shrink, reject, accuracy, inflation))
            print(f"shrinkage {shrink:<4} reject {reject:<5} mean {mean:.3f} (after each experience: " +
                  ", ".join(f"{m:.3f}" for m in per_position) + ")  at the end: " +
                  "  ".join(f"{n} {a:.2f}" for n, a in accuracy.items()))
    return grid


if __name__ == "__main__":
    sys.exit(main())
