"""The ``accelerate launch`` presets in ``configs/accelerate/`` parse with accelerate's own config classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


@pytest.mark.parametrize("name, kind, section", [
    ("ddp.yaml", "MULTI_GPU", None),
    ("fsdp.yaml", "FSDP", "fsdp_config"),
    ("deepspeed_zero2.yaml", "DEEPSPEED", "deepspeed_config"),
])
def test_preset_loads_as_an_accelerate_cluster_config(name, kind, section):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    config = ClusterConfig.from_yaml_file(str(PRESETS / name))  # rejects unknown top-level keys
    assert config.distributed_type == DistributedType[kind]
    assert config.mixed_precision == "bf16" and config.num_machines == 1 and config.num_processes == 8
    if section:
        # accelerate launch copies each key of the section onto its own command-line option
        keys = set(yaml.safe_load((PRESETS / name).read_text())[section])
        assert keys <= launch_options(), sorted(keys - launch_options())


def test_fsdp_preset_shards_llama_layers_with_original_parameters():
    fsdp = yaml.safe_load((PRESETS / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trainable parameters share units
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    from accelerate.utils import FullyShardedDataParallelPlugin  # the plugin accepts the strategy names

    plugin = FullyShardedDataParallelPlugin(
        sharding_strategy=fsdp["fsdp_sharding_strategy"], state_dict_type=fsdp["fsdp_state_dict_type"],
        backward_prefetch=fsdp["fsdp_backward_prefetch"], use_orig_params=True,
    )
    assert plugin.use_orig_params is True
    assert str(plugin.sharding_strategy).endswith("FULL_SHARD")


def test_zero2_preset_matches_the_mimic_recipe():
    from s2d_align.config import load_config

    ds = yaml.safe_load((PRESETS / "deepspeed_zero2.yaml").read_text())["deepspeed_config"]
    recipe = load_config("mimic_cxr/s2d_align")
    assert ds["zero_stage"] == 2
    assert ds["gradient_accumulation_steps"] == recipe.train.grad_accum_steps
    assert ds["gradient_clipping"] == recipe.train.max_grad_norm
