"""Files the package ships (package data, so that a wheel has them as an editable install does):

- `scenarios/*.yaml`: every scenario definition (`run_suite.py run --scenario NAME`);
- `baselines/*.yaml`: each strategy's default hyper-parameters with their source, and `references.yaml`, the
  papers' claims the report checks.

The repository's top-level `scenarios/` and `baselines/` are links to these folders: the user-facing copies."""
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
