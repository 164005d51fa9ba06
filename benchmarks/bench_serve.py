"""Requests per second of ``s2d-align serve`` at concurrency 1 and 16, against a real server on 127.0.0.1.

    python benchmarks/bench_serve.py --model MODEL --image cxr.png [--requests 32] [--max-batch 16]

Starts the server in a subprocess on a free port, sends a few warm-up
requests, then for each concurrency sends ``--requests`` uploads of the same
image from that many client threads (a bounded loop, not a time budget) and
prints requests/s. Both figures come from one server in one run, so compare
them as a ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(
        [sys.executable, "-m", "s2d_align.cli", "serve", "--model", model, "--port", str(port),
         "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)], env=env,
    )
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not come up")


def measure(url: str, image: bytes, name: str, requests: int, concurrency: int) -> tuple[float, set[str]]:
    def one(_):
        answer = httpx.post(url, files=[("images", (name, image, "application/octet-stream"))], timeout=600)
        answer.raise_for_status()
        return answer.json()["report"]

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        reports = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - start
    return requests / elapsed, set(reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    args = parser.parse_args()
    image = Path(args.image).read_bytes()
    port = free_port()
    server = start_server(args.model, port, args.max_batch, args.max_wait_ms)
    url = f"http://127.0.0.1:{port}/v1/reports"
    try:
        measure(url, image, Path(args.image).name, 4, 1)  # warm-up
        for concurrency in (1, 16):
            rate, reports = measure(url, image, Path(args.image).name, args.requests, concurrency)
            print(f"concurrency {concurrency:2d}: {rate:.2f} requests/s ({args.requests} requests, "
                  f"{len(reports)} distinct report(s))", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
