"""Dynamic batching: requests that arrive together are generated together.

Beam search on a batch of studies costs far less than the same studies one by
one (the vision encoder, the SMA and every decoding step run once per batch),
so the server queues requests and one worker hands them to
``generator.batch`` in groups of at most ``max_batch``, waiting at most
``max_wait_ms`` after the first request of a group for others to join (the
scheme of NVIDIA Triton's dynamic batcher and TorchServe's ``batch_size`` /
``max_batch_delay``). Generation runs in a single worker thread, so the event
loop keeps accepting uploads while a batch is being decoded, and the model is
never called from two threads at once.

Requests asking for grounding maps and requests that do not are batched
apart, so a plain request never pays for the maps. If a batch fails, its
studies are retried one by one, so one bad study cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

BatchFn = Callable[[Sequence[Any], bool], list]


@dataclass(eq=False)
class _Job:
    study: Any
    heatmaps: bool
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Queue of studies answered by ``generate(studies, heatmaps)`` in batches.

    ``generate`` is called from one worker thread only. Use :meth:`start` and
    :meth:`stop` from the event loop that calls :meth:`submit`.
    """

    def __init__(self, generate: BatchFn, max_batch: int = 8, max_wait_ms: float = 10.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        self.generate = generate
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.batch_sizes: list[int] = []  # every batch handed to ``generate``, for tests and logs
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = self._queue = None

    async def submit(self, study: Any, heatmaps: bool = False) -> Any:
        """Queue one study and wait for its report."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running: call start() first")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(study, heatmaps, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        held: list[_Job] = []  # jobs taken off the queue that wait for a group of their kind
        while True:
            first = held.pop(0) if held else await self._queue.get()
            group = [first] + [job for job in held if job.heatmaps == first.heatmaps][: self.max_batch - 1]
            held = [job for job in held if job not in group]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(group) < self.max_batch and len(held) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    if timeout <= 0:
                        job = self._queue.get_nowait()
                    else:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                (group if job.heatmaps == first.heatmaps else held).append(job)
            group = [job for job in group if not job.future.cancelled()]  # the client went away
            if group:
                await self._answer(group)

    async def _answer(self, group: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        studies, heatmaps = [job.study for job in group], group[0].heatmaps
        self.batch_sizes.append(len(group))
        try:
            reports = await loop.run_in_executor(self._executor, self.generate, studies, heatmaps)
            if len(reports) != len(group):
                raise RuntimeError(f"generator returned {len(reports)} reports for {len(group)} studies")
        except Exception as err:
            if len(group) == 1:
                _settle(group[0], error=err)
                return
            for job in group:  # find the study at fault; the others still get their reports
                try:
                    _settle(job, (await loop.run_in_executor(self._executor, self.generate, [job.study], heatmaps))[0])
                except Exception as err:
                    _settle(job, error=err)
            return
        for job, report in zip(group, reports):
            _settle(job, report)


def _settle(job: _Job, report: Any = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(report)
