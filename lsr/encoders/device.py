"""Where models run: device and dtype resolution, the CPU's bf16 capability, and the threads
that run forward passes.

torch is imported when these are called, not when this module is imported.

Why forward passes run with one intra-op thread: a matmul's last bits depend on how many threads
split it (and on its shape), so a text's vector is reproducible bit for bit only when its forward
pass always runs with the same intra-op thread count, alone at its own length. torch's count is
per OS thread (OpenMP keeps it per thread): each :class:`ForwardPool` worker runs torch with one
intra-op thread for good, and throughput comes from running several texts at once, one per
worker; a single text runs in the calling thread under :func:`one_intra_op_thread` (no hand-off
to another thread, which costs a wake-up that a loaded machine makes slow). One intra-op thread
also keeps a single query from waiting on a sibling thread that another process has descheduled
(the latency spikes of a shared machine).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from lsr.errors import InputError

T = TypeVar("T")
R = TypeVar("R")


def resolve_device(device: str, dtype: str = "auto") -> tuple[Any, Any]:
    """(torch.device, torch.dtype); ``auto``: CUDA when available (bf16 where supported, else
    fp16), CPU float32."""
    import torch

    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise InputError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return dev, torch.float32
    return dev, getattr(torch, dtype)


_NATIVE_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 matmuls natively (else they are emulated, slow)."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        import torch

        try:
            _NATIVE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _NATIVE_BF16 = False
        if _NATIVE_BF16 and Path("/proc/cpuinfo").exists():  # oneDNN also says yes for AVX512 core
            flags = Path("/proc/cpuinfo").read_text(errors="ignore")
            _NATIVE_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return _NATIVE_BF16


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch in this thread with one intra-op thread, then give the thread its count back.

    (torch.set_num_threads also sets the count that threads which have not used torch yet will
    start with: for this block's duration that is 1, then it is put back.)
    """
    import torch

    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _one_intra_op_thread(started: threading.Barrier) -> None:
    import torch

    torch.get_num_threads()  # torch initialises a thread's count on first use: do that first
    torch.set_num_threads(1)
    started.wait()


class ForwardPool:
    """Worker threads that each run torch with one intra-op thread (see the module docstring)."""

    def __init__(self, workers: int | None = None) -> None:
        import torch

        self.workers = max(1, workers or usable_cpus())
        caller = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="lsr-forward")
        started = threading.Barrier(self.workers + 1, timeout=60)
        for _ in range(self.workers):  # each blocks on the barrier, so each gets its own thread
            self._executor.submit(_one_intra_op_thread, started)
        started.wait()
        # torch.set_num_threads also sets the count that threads which have not used torch yet
        # start with; give that back (this thread keeps the count it had)
        torch.set_num_threads(caller)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` on the workers; results in the order of ``items``."""
        return self._executor.map(fn, items)

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on a worker, waited for."""
        return self._executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


_POOL: ForwardPool | None = None
_POOL_LOCK = threading.Lock()


def forward_pool() -> ForwardPool:
    """The process's :class:`ForwardPool`, one worker per usable CPU, made on first use."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ForwardPool()
    return _POOL


def _forget_pool_in_child() -> None:  # a forked child has none of the parent's threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_in_child)
