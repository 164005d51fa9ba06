"""The demo's CPU pins: set before torch loads, by starting the command again; never twice."""

import os
import subprocess
import sys
from pathlib import Path

from s2d_align.reproducibility import PINS

SRC = str(Path(__file__).resolve().parents[2] / "src")
CHILD = "from s2d_align.reproducibility import reexec_pinned; reexec_pinned(['demo', '--help'])"


def _run(env):
    return subprocess.run([sys.executable, "-c", CHILD], env={**env, "PYTHONPATH": SRC}, capture_output=True, text=True)


def test_an_unpinned_demo_starts_again_pinned():
    clean = {k: v for k, v in os.environ.items() if k not in PINS and k != "S2D_ALIGN_CPU_PINNED"}
    result = _run(clean)
    assert result.returncode == 0
    assert "pinning the CPU math for reproducible figures: MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2" in result.stderr
    assert "usage: s2d-align demo" in result.stdout  # the command ran again, in the pinned process


def test_a_pinned_process_is_left_alone():
    result = _run({**os.environ, **PINS})
    assert result.returncode == 0 and result.stdout == "" and "pinning" not in result.stderr
