"""Remove each documented feature in turn and check that a test fails (a hand-picked mutation test).

Each mutation is a one-line source edit; the script applies it to the working tree,
runs the test that pins the feature, and restores the file (also on Ctrl-C). It
prints one line per mutation: ``killed`` when the test failed, ``SURVIVED`` when it
passed. Run from the repository root:

    PYTHONPATH=src python benchmarks/documented_mutations.py [WORD ...]

With words, only the mutations whose feature contains one of them run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

MUTATIONS = [  # (feature, file, original, mutated, test)
    ("adapter residual MLP(M + attended)", "src/s2d_align/models/adapter.py",
     "self.norm(self.mlp(queries + attended))", "self.norm(self.mlp(attended))",
     "tests/models/test_adapter.py::test_the_mlp_reads_the_memory_plus_what_it_attended"),
    ("memory initialised at unit scale", "src/s2d_align/models/adapter.py",
     "nn.Parameter(torch.randn(num_memory, memory_dim))", "nn.Parameter(0.02 * torch.randn(num_memory, memory_dim))",
     "tests/models/test_adapter.py::test_memory_starts_at_unit_scale"),
    ("joint ablation mixes contexts", "src/s2d_align/training/loop.py",
     "    if len(contexts) == 1:\n        return contexts[0]", "    if True:\n        return contexts[0]",
     "tests/training/test_documented_training.py::test_the_joint_ablation_draws_every_context_reproducibly"),
    ("missing_reference: skip", "src/s2d_align/training/loop.py",
     'skip = uses_reference and config.data.missing_reference == "skip"', "skip = False",
     "tests/training/test_documented_training.py::test_missing_reference_skip_drops_studies_without_one"),
    ("min_delta", "src/s2d_align/training/loop.py",
     'val_loss < state["best_val_loss"] - config.train.min_delta', 'val_loss < state["best_val_loss"]',
     "tests/training/test_documented_training.py::test_min_delta_is_the_improvement_an_evaluation_must_make"),
    ("no weight decay on 1-D parameters", "src/s2d_align/training/loop.py",
     '{"params": no_decay, "weight_decay": 0.0}', '{"params": no_decay, "weight_decay": settings.weight_decay}',
     "tests/training/test_documented_training.py::test_one_dimensional_parameters_get_no_weight_decay"),
    ("random key-phrase subset", "src/s2d_align/data/dataset.py",
     "count = rng.randint(1, min(len(phrases), self.max_key_phrases))", "count = len(phrases)",
     "tests/data/test_dataset.py::test_each_epoch_draws_a_random_ordered_subset_of_the_key_phrases"),
    ("report truncation", "src/s2d_align/data/dataset.py",
     "fit_report(t, self.llm_tokenizer, self.max_report_tokens)[0] + [eos]",
     "self.llm_tokenizer(t, add_special_tokens=False).input_ids + [eos]",
     "tests/data/test_dataset.py::test_reports_are_truncated_to_max_report_tokens_and_end_with_eos"),
    ("bootstrap percentiles at the asked confidence", "src/s2d_align/evaluation/bootstrap.py",
     "np.percentile(values, [tail, 100 - tail])", "np.percentile(values, [0, 100])",
     "tests/evaluation/test_bootstrap.py::test_intervals_are_the_asked_percentiles_exactly"),
    ("CheXbert attention mask", "src/s2d_align/evaluation/labelers/chexbert.py",
     "logits = self.model(input_ids.to(self.device), mask.to(self.device))",
     "logits = self.model(input_ids.to(self.device), torch.ones_like(mask).to(self.device))",
     "tests/evaluation/test_chexbert.py::test_padding_is_masked_so_every_logit_equals_the_unpadded_ones"),
    ("RNG state read without unpickling", "src/s2d_align/training/checkpoint.py",
     'torch.load(path, map_location="cpu", weights_only=True)', 'torch.load(path, map_location="cpu", weights_only=False)',
     "tests/training/test_rng_state.py::test_a_pickled_object_in_a_received_run_folder_does_not_run"),
    ("failed train start writes nothing", "src/s2d_align/training/loop.py",
     "    _check_run_folder(config, out)  # nothing is written",
     "    _claim_run_folder(config, out)  # nothing is written",
     "tests/training/test_run_folder.py::test_a_failed_start_writes_nothing"),
    ("atomic predictions", "src/s2d_align/inference/generation.py",
     "    with atomic.atomic_open(output) as handle:", "    with open(output, 'w') as handle:",
     "tests/inference/test_generation_outputs.py::test_a_generate_that_fails_half_way_keeps_the_previous_predictions"),
    ("image-path containment", "src/s2d_align/inference/generation.py",
     "    check_image_paths(studies, manifest, [images], allow_absolute_paths)\n", "",
     "tests/inference/test_generation_outputs.py::test_image_paths_outside_the_manifest_folder_are_refused"),
    ("API key only to https or localhost", "src/s2d_align/data/refiners.py",
     "if api_key and not allow_insecure_url and not key_may_go_to(url):", "if False:",
     "tests/data/test_refiners.py::test_the_api_key_is_not_sent_to_a_plain_http_host"),
    ("range checks at load", "src/s2d_align/config.py",
     "    if problems:\n        raise ConfigError(f\"{source}: \" + \"; \".join(problems))", "",
     "tests/test_config.py::test_ranges_are_checked_at_load_naming_the_override"),
]


def main(words: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still restores the file
    chosen = [m for m in MUTATIONS if not words or any(w in m[0] for w in words)]
    survived = 0
    for feature, file, original, mutated, test in chosen:
        path = Path(file)
        source = path.read_text(encoding="utf-8")
        if source.count(original) != 1:
            print(f"CANNOT APPLY  {feature}: the original text is not in {file} exactly once")
            survived += 1
            continue
        try:
            path.write_text(source.replace(original, mutated), encoding="utf-8")
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                                    capture_output=True, text=True)
        finally:
            path.write_text(source, encoding="utf-8")
        verdict = "killed  " if result.returncode != 0 else "SURVIVED"
        survived += result.returncode == 0
        print(f"{verdict}  {feature}  ({test.split('::')[1]})", flush=True)
    print(f"{len(chosen)} mutations, {len(chosen) - survived} killed, {survived} survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
