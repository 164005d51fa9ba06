"""Documented trainer behaviour, each pinned so that removing it fails a test.

The joint ablation mixes contexts; ``missing_reference: skip`` drops studies without a
reference; ``min_delta`` is the improvement an evaluation must make; 1-D parameters
(biases, norms) get no weight decay.
"""

import pytest
import torch

from s2d_align.data.manifest import read_manifest
from s2d_align.training import loop
from s2d_align.training.loop import _pick_context, train


class _Stop(Exception):
    pass


def test_the_joint_ablation_draws_every_context_reproducibly():
    contexts = [("image",), ("image", "reference"), ("image", "reference", "key_phrases")]
    picks = [_pick_context(contexts, 42, "joint", step) for step in range(30)]
    assert picks == [_pick_context(contexts, 42, "joint", step) for step in range(30)]
    assert {len(p) for p in picks} == {1, 2, 3}
    assert [len(p) for p in picks[:12]] == [2, 3, 3, 2, 2, 2, 2, 1, 2, 1, 1, 2]  # drawn from seed:stage:step
    assert [len(_pick_context(contexts, 43, "joint", s)) for s in range(12)] == [1, 2, 2, 3, 1, 1, 2, 3, 3, 3, 3, 3]
    assert _pick_context(contexts[:1], 42, "s1", 5) == ("image",)


@pytest.mark.parametrize("policy", ["skip", "empty"])
def test_missing_reference_skip_drops_studies_without_one(tiny_world, tmp_path, monkeypatch, policy):
    built = []

    def recording(studies, *args, **kwargs):
        built.append([s.id for s in studies])
        if len(built) == 2:
            raise _Stop
        return real(studies, *args, **kwargs)

    real = loop.TrainingDataset
    monkeypatch.setattr(loop, "TrainingDataset", recording)
    config = tiny_world.config("train.stages=[{name: s2, contexts: [image+reference], lora: true}]",
                               f"data.missing_reference={policy}")
    with pytest.raises(_Stop):
        train(config, tmp_path / "run")
    studies = read_manifest(tiny_world.manifest)
    for split, ids in zip(("train", "val"), built):
        everyone = [s.id for s in studies if s.split == split]
        with_reference = [s.id for s in studies if s.split == split and s.reference_id is not None]
        assert 0 < len(with_reference) < len(everyone)
        assert ids == (with_reference if policy == "skip" else everyone)


@pytest.mark.parametrize("min_delta, steps", [(0.1, 2), (0.04, 8)])
def test_min_delta_is_the_improvement_an_evaluation_must_make(tiny_world, tmp_path, monkeypatch, min_delta, steps):
    losses = iter([1.0 - 0.05 * k for k in range(100)])  # every evaluation improves by 0.05
    monkeypatch.setattr(loop, "validation_loss", lambda *args, **kwargs: next(losses))
    config = tiny_world.config("train.stages=[{name: s1, contexts: [image], epochs: 2, patience: 1}]",
                               "train.eval_every=1", f"train.min_delta={min_delta}")
    (result,) = train(config, tmp_path / "run")
    assert result.steps == steps  # 16 training studies in batches of 4: 8 steps in 2 epochs
    assert result.stopped == ("no improvement in 1 evaluations" if steps == 2 else "max epochs")
    assert result.best_val_loss == pytest.approx(1.0 if steps == 2 else 1.0 - 0.05 * 7)


def test_one_dimensional_parameters_get_no_weight_decay(tiny_world, tmp_path, monkeypatch):
    groups = []

    def recording(param_groups, **kwargs):
        groups.extend(param_groups)
        raise _Stop

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    with pytest.raises(_Stop):
        train(tiny_world.config("train.stages=[{name: s1, contexts: [image]}]", "train.weight_decay=0.3"), tmp_path / "r")
    decayed, plain = groups
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    assert decayed["params"] and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["params"] and all(p.ndim == 1 for p in plain["params"])
