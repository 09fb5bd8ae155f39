"""Dynamic micro-batching of query encoding, on the event loop.

Requests that need a text encoded call :meth:`EncodeBatcher.encode` and await the result. While
fewer than ``max_inflight`` batches are being encoded, a request's text is dispatched at once
(after ``window_s``, when a window is set, to let more arrive), together with every text already
waiting, up to ``max_batch``; while the encoder is busy, texts queue and leave together as one
batch when a slot frees up. Under light load a query waits for nobody; under heavy load the
encoder runs ``max_inflight`` batches at a time instead of one thread per request fighting for
the cores. Results are exactly those of encoding each text alone: lsr's encoders are batch
invariant (tests/test_batch_invariance.py), and tests/test_batching.py checks it here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class EncodeBatcher(Generic[T]):
    """Coalesce concurrent ``encode(text)`` calls into ``encode_batch(texts)`` calls."""

    def __init__(
        self,
        encode_batch: Callable[[list[str]], Sequence[T]],
        *,
        max_batch: int = 32,
        max_inflight: int = 1,
        window_s: float = 0.0,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_inflight < 1 or window_s < 0:
            raise ValueError("max_batch and max_inflight must be >= 1, window_s >= 0")
        self._encode_batch = encode_batch
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.window_s = window_s
        self._observe = observe  # (batch size, seconds) of each batch, for metrics
        self._waiting: list[tuple[str, asyncio.Future[T]]] = []
        self._inflight = 0
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0
        self.texts = 0

    async def encode(self, text: str) -> T:
        """``text``'s encoding (exceptions of the encoder are raised here, per request)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((text, future))
        if self._inflight < self.max_inflight:
            if self.window_s == 0 or len(self._waiting) >= self.max_batch:
                self._dispatch()
            elif self._timer is None:
                self._timer = loop.call_later(self.window_s, self._dispatch)
        return await future

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting and self._inflight < self.max_inflight:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            batch = [(t, f) for t, f in batch if not f.cancelled()]  # clients that went away
            if batch:
                self._inflight += 1
                asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[str, asyncio.Future[T]]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                results = await run_in_threadpool(self._encode_batch, [t for t, _ in batch])
            except Exception:
                if len(batch) == 1:
                    raise
                for item in batch:  # one bad text must not fail the others: each alone
                    await self._run_alone(*item)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._inflight -= 1
            self.batches += 1
            self.texts += len(batch)
            if self._observe is not None:
                self._observe(len(batch), loop.time() - started)
            if self._waiting:
                self._dispatch()

    async def _run_alone(self, text: str, future: asyncio.Future[T]) -> None:
        try:
            [result] = await run_in_threadpool(self._encode_batch, [text])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
