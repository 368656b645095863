import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The fast lane (`pytest -m "not slow"`, README) leaves these out: whole command-line runs in subprocesses, Ray,
# several processes, a wheel build, the real whisper-base (each 10 s to 2 min on 2 cores). CI runs everything.
SLOW_MODULES = {"test_robustness.py", "test_ray_executor.py", "test_data_parallel.py", "test_slow_whisper_base.py",
                "test_user_strategy_caches.py", "test_packaging.py", "test_cli_and_micro_run.py",
                "test_strategy_failures.py"}
SLOW_TESTS = {"test_seeds_run_every_strategy_per_seed_and_the_report_has_intervals",
              "test_compare_refuses_runs_whose_test_sets_differ", "test_text_domains_micro_benchmark_with_text_spt",
              "test_speakers_micro_benchmark_with_ts_prompt", "test_code_switching_micro_benchmark",
              "test_fft_learns_by_changing_the_weights",
              "test_a_scenario_gives_the_same_predictions_on_an_empty_cache_and_on_one_another_scenario_filled",
              # tests/test_variants.py: micro runs with variants and --set (the first pays for the module's run)
              "test_each_variant_is_its_own_row_everywhere", "test_a_variant_run_resumes_and_other_overrides_are_refused",
              "test_compare_names_each_variant", "test_the_ray_executor_runs_variants_and_profile_overrides",
              # tests/test_tune.py: a study of two trials, and a run with tuned defaults (micro runs)
              "test_tune_searches_on_dev_sets_only_resumes_and_writes_the_tuned_defaults",
              "test_a_run_records_the_tuned_defaults_it_used",
              "test_tune_on_ray_runs_trials_with_ray_tune_and_a_local_search_resumes_its_study",
              "test_the_defaults_trial_runs_the_hand_set_values_even_where_a_tuned_value_exists",
              # tests/test_orders.py: micro runs in three orders, on both executors
              "test_each_order_is_a_row_that_trains_in_its_order",
              "test_the_report_averages_each_measure_over_orders_and_keeps_each_orders_matrix",
              "test_an_ordered_run_resumes_and_bad_orders_are_refused", "test_the_ray_executor_runs_each_order_as_a_job",
              # tests/test_decoding_twins.py: micro runs of strategies with and without their decoding twins
              "test_a_decoding_twin_is_evaluated_from_the_same_training_and_equals_training_it_alone",
              "test_a_failure_mid_stream_resumes_the_row_and_its_twin_together",
              # tests/test_gpu_script.py: benchmarks/gpu/run_gpu.py's micro run, as on the GPU machine (~75 s)
              "test_micro_profile_on_the_cpu_end_to_end_with_only_the_gpu_machines_packages"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    """The tiny random Whisper (real tokenizer) shared by unit tests; tests must not modify it."""
    from cl_asr.backbones import load_backbone

    return load_backbone("tiny:random", seed=0)


@pytest.fixture
def tiny_model(tiny):
    import copy

    return copy.deepcopy(tiny.model).eval()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private CL_ASR_CACHE for tests that check caching itself."""
    monkeypatch.setenv("CL_ASR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
