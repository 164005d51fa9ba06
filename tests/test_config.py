import re
from pathlib import Path

import pytest

from s2d_align.config import (
    Config, ConfigError, StageConfig, check_model_paths, differing_keys, load_config, looks_like_a_path, recipe_roots,
    save_config,
)

# configs/accelerate/ holds accelerate launch presets, not recipes (tests/training/test_accelerate_presets.py)
RECIPES = sorted(p for root in recipe_roots() for p in root.rglob("*.yaml") if p.parent.name != "accelerate")


def test_recipes_are_found():
    names = {p.relative_to(root).as_posix() for root in recipe_roots() for p in root.rglob("*.yaml")}
    assert {"mimic_cxr/s2d_align.yaml", "iu_xray/s2d_align.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    assert isinstance(config, Config)
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key train\.'batch_sise'"):
        load_config(bad)


def test_wrong_type_names_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: four\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size must be an integer, got 'four'"):
        load_config(bad)


def test_bad_literal_and_nested_stage_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stages:\n    - {name: s1, lr: 1e-4, epoch: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown key train\.stages\[0\]\.'epoch'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="model.connector.kind must be one of"):
        load_config(None, ["model.connector.kind=transformer"])


def test_overrides_by_index_and_by_stage_name():
    config = load_config(None, ["train.stages.s2.lr=3e-4", "train.stages.0.epochs=7", "train.seed=5"])
    assert config.train.stages[1].lr == pytest.approx(3e-4)
    assert config.train.stages[0].epochs == 7
    assert config.train.seed == 5
    with pytest.raises(ConfigError, match="no element named 's9'"):
        load_config(None, ["train.stages.s9.lr=1"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["train.seed"])


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  stages:\n    - {name: only, contexts: [image], lr: 2e-5}\n")
    config = load_config(recipe)
    assert config.train.stages == (StageConfig(name="only", contexts=("image",), lr=2e-5),)


def test_missing_recipe_is_an_error():
    with pytest.raises(ConfigError, match="no recipe at nowhere"):
        load_config(Path("nowhere"))


def test_bare_no_is_the_string_no():
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"


def test_ablation_recipes_change_only_what_they_ablate():
    full = load_config("mimic_cxr/s2d_align")
    assert [s.name for s in load_config("ablations/s1_only").train.stages] == ["s1"]
    joint = load_config("ablations/joint").train.stages
    assert len(joint) == 1 and joint[0].contexts == ("image", "image+reference", "image+reference+key_phrases")
    assert [s.name for s in load_config("ablations/s1_s3_s2").train.stages] == ["s1", "s3", "s2"]
    assert [s.contexts for s in load_config("ablations/s1_s3").train.stages] == [("image",), ("image+key_phrases",)]
    for kind in ("sma_unshared", "mlp", "mlp_qformer", "mlp_msa"):
        ablated = load_config(f"ablations/{kind}")
        assert ablated.model.connector.kind == kind
        assert ablated.model.llm == full.model.llm and ablated.train == full.train


def test_base_recipes_merge_and_loops_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain: {seed: 3}\n")
    (tmp_path / "b.yaml").write_text("train: {seed: 1, batch_size: 2}\n")
    config = load_config(tmp_path / "a.yaml")
    assert (config.train.seed, config.train.batch_size) == (3, 2)
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="in a loop"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="names no recipe file"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", r"train\.batch_size must be at least 1, got 0"),
    ("train.eval_batch_size=-2", r"train\.eval_batch_size must be at least 1, got -2"),
    ("train.stages.s1.lr=-1", r"train\.stages\[0\]\.lr must be positive, got -1\.0"),
    ("train.stages.s2.epochs=0", r"train\.stages\[1\]\.epochs must be at least 1, got 0"),
    ("train.stages.s3.patience=0", r"train\.stages\[2\]\.patience must be at least 1, got 0"),
    ("generate.num_beams=0", r"generate\.num_beams must be at least 1, got 0"),
    ("generate.min_new_tokens=500", r"generate\.min_new_tokens \(500\) must not exceed generate\.max_new_tokens \(100\)"),
    ("model.connector.dropout=1.0", r"model\.connector\.dropout must be in \[0, 1\), got 1\.0"),
    ("model.connector.num_heads=3", r"memory_dim \(128\) must be a multiple of model\.connector\.num_heads \(3\)"),
    ("train.adam_betas=[0.9, 1.5]", r"train\.adam_betas\[1\] must be in \[0, 1\), got 1\.5"),
    ("data.max_images=0", r"data\.max_images must be at least 1, got 0"),
    ("train.stages.s1.name=a/b", r"train\.stages\[0\]\.name must be a folder name"),
    ("train.stages.s2.name=s1", r"train\.stages\[1\]\.name 's1' repeats train\.stages\[0\]\.name"),
])
def test_ranges_are_checked_at_load_naming_the_override(override, message):
    with pytest.raises(ConfigError, match=rf"^command-line override `{re.escape(override)}`: .*{message}"):
        load_config("demo", [override])


def test_a_context_typo_is_rejected_at_load_with_the_allowed_parts():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.stages.s2.contexts=[image+refrence]"])
    assert str(caught.value) == (
        "command-line override `train.stages.s2.contexts=[image+refrence]`: train.stages[1].contexts[0] "
        "'image+refrence': unknown part 'refrence' (did you mean 'reference'?); a context is '+'-joined distinct "
        "names from ['image', 'reference', 'key_phrases'], including 'image'"
    )
    with pytest.raises(ConfigError, match=r"contexts\[0\] 'reference' is not '\+'-joined distinct names"):
        load_config(None, ["train.stages.s2.contexts=[reference]"])


def test_errors_blame_the_override_or_the_recipe_and_suggest_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^command-line override `train.batch_sise=8`: unknown key "
                                          r"train\.'batch_sise' \(did you mean 'batch_size'\?\)"):
        load_config("demo", ["train.seed=3", "train.batch_sise=8"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(recipe))}: train\.batch_size must be at least 1"):
        load_config(recipe, ["train.seed=3"])
    assert load_config(recipe, ["train.batch_size=2"]).train.batch_size == 2  # an override may fix the recipe
    with pytest.raises(ConfigError, match=r"must be one of .*got 'bf61' \(did you mean 'bf16'\?\)"):
        load_config(None, ["train.mixed_precision=bf61"])


def test_a_local_model_path_that_does_not_exist_is_named(tmp_path):
    config = load_config(None, [f"model.llm.name_or_path={tmp_path / 'llm'}"])
    with pytest.raises(ConfigError, match=r"model\.llm\.name_or_path .*looks like a local folder but there is none"):
        check_model_paths(config)
    (tmp_path / "llm").mkdir()
    for name in (str(tmp_path / "llm"), "lmsys/vicuna-7b-v1.5", "gpt2"):
        check_model_paths(load_config(None, [f"model.llm.name_or_path={name}"]))
    assert [looks_like_a_path(n) for n in ("./m", "~/m", "a/b/c", "org/name", "name", "/abs")] == [
        True, True, True, False, False, True]


def test_differing_keys_are_dotted_paths():
    a = load_config(None)
    b = load_config(None, ["train.seed=1", "train.stages.s2.lr=0.1", "model.lora.r=8"])
    assert differing_keys(a, b) == ["model.lora.r", "train.stages[1].lr", "train.seed"]
    assert differing_keys(a, a) == []
