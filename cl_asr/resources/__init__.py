"""Files the package ships (package data, so that a wheel has them as an editable install does):

- `scenarios/*.yaml`: every scenario definition (`run_suite.py run --scenario NAME`);
- `baselines/*.yaml`: each strategy's default hyper-parameters with their source, and `references.yaml`, the
  papers' claims the report checks;
- `tuned/<scenario>.yaml`: hyper-parameters `run_suite.py tune` chose on dev sets, per profile and strategy,
  with their provenance (cl_asr/tune.py); they take precedence over baselines/ for that scenario and profile.

The repository's top-level `scenarios/`, `baselines/` and `tuned/` are links to these folders: the user-facing copies."""
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
TUNED_DIR = Path(__file__).resolve().parent / "tuned"
