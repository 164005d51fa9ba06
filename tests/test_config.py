from pathlib import Path

import pytest

from s2d_align.config import Config, ConfigError, StageConfig, load_config, recipe_roots, save_config

RECIPES = sorted(p for root in recipe_roots() for p in root.rglob("*.yaml"))


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
