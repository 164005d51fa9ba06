"""CPU pins that make the demo's figures the same on any x86-64 processor of one kind.

Two runs on one machine already agree byte for byte (everything is built from
the seed). Across processors, CPU math still differs in the last bits, and
training amplifies the difference, through three paths:

- the BLAS kernel MKL picks for the processor: ``MKL_CBWR`` (MKL's
  conditional numerical reproducibility) fixes it to the AVX2 code path, which
  every x86-64 processor of the last decade runs, so they all take the same one;
- ATen's vectorised kernels, chosen by the processor's capability (AVX-512 on
  one machine, AVX2 on the next): ``ATEN_CPU_CAPABILITY=avx2`` fixes that;
- oneDNN's kernels (PyTorch's CPU linear and convolution layers), chosen
  the same way: ``ONEDNN_MAX_CPU_ISA=AVX2``;
- the thread count, which changes how reductions are split and summed:
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads``.

The libraries read these variables once, when torch is loaded, so the demo sets
them and starts itself again (:func:`reexec_pinned`) before any torch code
runs; ``make demo`` sets them too. The pins are applied at the demo's entry,
never at import: a user's own training keeps its machine's fastest kernels.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

THREADS = 2
PINS = {
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
}
MARK = "S2D_ALIGN_CPU_PINNED"


def pinned() -> bool:
    return all(os.environ.get(k) == v for k, v in PINS.items())


def reexec_pinned(argv: Sequence[str]) -> None:
    """Start ``python -m s2d_align.cli ARGV`` again with :data:`PINS` set, unless they are set already.

    :data:`MARK` guards against a loop should a variable not survive the exec.
    """
    if pinned() or os.environ.get(MARK):
        return
    env = {**os.environ, **PINS, MARK: "1"}
    print("pinning the CPU math for reproducible figures: " + " ".join(f"{k}={v}" for k, v in PINS.items()), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "s2d_align.cli", *argv], env)


def apply_threads() -> dict[str, object]:
    """Pin torch's intra-op threads and say what this process runs with (for metrics.json)."""
    import torch

    if pinned():
        torch.set_num_threads(THREADS)
    return {
        "pinned": pinned(),
        **{k: os.environ.get(k) for k in PINS},
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
