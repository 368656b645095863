"""Which espeak-ng voice variants give the same audio on every synthesis (README "Reproducibility").

    python tools/espeak_determinism.py

Synthesises one sentence with each variant the scenarios use, in two fresh processes (as the corpus cache does:
cl_asr/data/corpus.py speak_in_fresh_process), and prints whether the two waveforms are identical.
"""
from cl_asr.data.corpus import speak_in_fresh_process
from cl_asr.data.tts import Voice

VARIANTS = ["m1", "m2", "m3", "f1", "f2", "f3", "f4", "klatt"]

if __name__ == "__main__":
    items = [("Hello there, this is a test sentence.", Voice("en", v, 150, 50)) for v in VARIANTS]
    first, second = speak_in_fresh_process(items), speak_in_fresh_process(items)
    for v, a, b in zip(VARIANTS, first, second):
        same = len(a) == len(b) and bool((a == b).all())
        print(f"{v:6} {'deterministic' if same else 'DIFFERS between syntheses'}")
