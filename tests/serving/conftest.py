"""A real tiny trained model, and the real server on 127.0.0.1 serving it (one subprocess per test session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from s2d_align.training.loop import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def served_checkpoint(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve_run")
    train(tiny_world.config("train.stages.s2.lr=0.01", "train.stages.s3.lr=0.01"), out)
    return out / "checkpoints" / "s3"


@pytest.fixture(scope="session")
def real_generator(served_checkpoint):
    from s2d_align import ReportGenerator

    return ReportGenerator.from_pretrained(served_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def phantom_images(tmp_path_factory) -> list[Path]:
    from s2d_align.data.phantom import prepare_phantom

    root = tmp_path_factory.mktemp("phantom")
    prepare_phantom(root, studies=16, seed=3, image_size=64)
    images = sorted(root.rglob("*.png"))
    assert len(images) >= 16, images
    return images[:16]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(served_checkpoint, tmp_path_factory):
    """``s2d-align serve`` in a subprocess; yields its base URL, then stops it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "s2d_align.cli", "serve", "--model", str(served_checkpoint), "--port", str(port),
             "--device", "cpu", "--max-batch", "16", "--max-wait-ms", "50"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not answer /health within 120 s:\n{log.read_text()}")
        time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
