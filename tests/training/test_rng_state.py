"""Random states are stored as tensors and numbers and read with ``weights_only=True``."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from s2d_align.training.checkpoint import LAST_DIR, load_rng_state, restore_rng_state, save_rng_state


def _draw():
    return torch.rand(3).tolist(), random.random(), random.gauss(0, 1), np.random.rand(2).tolist()


def test_saved_states_resume_every_generator_exactly(tmp_path):
    (tmp_path / LAST_DIR).mkdir()
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    save_rng_state(tmp_path, 0)
    expected = _draw()
    _draw()
    restore_rng_state(load_rng_state(tmp_path, 0))
    assert _draw() == expected


def test_the_state_file_holds_only_tensors_and_plain_values(tmp_path):
    (tmp_path / LAST_DIR).mkdir()
    save_rng_state(tmp_path, 1)
    states = torch.load(tmp_path / LAST_DIR / "rng-1.pt", weights_only=True)
    assert sorted(states) == ["cuda", "numpy", "python", "torch"]
    assert states["numpy"]["kind"] == "MT19937" and states["numpy"]["keys"].shape == (624,)
    assert states["python"]["state"].shape == (625,)


class _Payload:
    """What a malicious run folder would hold: unpickling it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def _touch(path):
    with open(path, "w") as handle:
        handle.write("ran")
    return {}


def test_a_pickled_object_in_a_received_run_folder_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / LAST_DIR).mkdir()
    with open(tmp_path / LAST_DIR / "rng-0.pt", "wb") as handle:
        pickle.dump(_Payload(marker), handle)
    with pytest.raises(ValueError, match=r"rng-0\.pt: not a random-state file .*never unpickled"):
        load_rng_state(tmp_path, 0)
    assert not marker.exists()
    # the same file, unpickled without the guard, does run: the fixture is a real attack
    with open(tmp_path / LAST_DIR / "rng-0.pt", "rb") as handle:
        pickle.load(handle)
    assert marker.read_text() == "ran"
    os.unlink(marker)
