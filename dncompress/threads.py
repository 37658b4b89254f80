"""How many threads the engine uses, and the small pool that runs its parallel work.

Why not OpenBLAS's own threads: they busy-wait for each other at every GEMM, so when another process
holds a core, the one waiting spins through its time slice while the other is descheduled; a yolov3-tiny
forward measured 65 ms with one OpenBLAS thread and 1,022 ms with two beside one busy process. So BLAS is
pinned to one thread (threadpoolctl) and the engine splits its own work (the GEMM and the bias/activation
after it, by output channel) over a pool of Python threads that *block* while they wait (numpy releases
the GIL inside its kernels). Under load such a split costs at most the time a single thread would take.

Training keeps freed memory for reuse (`keep_freed_memory`, glibc only; called by `train.runner.TrainRun`):
glibc returns every array over 32 MB to the kernel when it is freed, so the next array of that size (the
next layer's columns, the next training step's activations) is page-faulted in again, zero-filled page by
page; in a yolov3-tiny training step at batch 8 that was ~25% of the CPU time. Inference runs image by
image, whose arrays stay under 32 MB, and is left alone (the heap's fragmentation would add ~25 MB to a
batch-1 forward's peak).

Thread count, first found wins: `configure(n)` (the CLI's --threads), $DNCOMPRESS_THREADS, else the
cores free now: the CPUs this process may run on (sched_getaffinity) minus the 1-minute load average,
rounded, at least 1.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .errors import DncompressError

THREADS_ENV = "DNCOMPRESS_THREADS"


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask; cgroups' CPU quota is not read)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(cores: int | None = None) -> int:
    """Cores not busy with other work now: the allowed cores minus the 1-minute load average, rounded,
    between 1 and `cores`. The load average lags by up to a minute, which is fine for a default."""
    cores = available_cores() if cores is None else cores
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cores, cores - math.floor(load + 0.5)))


def parse_threads(value: int | str, source: str, cores: int | None = None) -> tuple[int, str | None]:
    """(thread count, note) from a user's value; non-positive or non-integer values are errors, values over
    the cores are clamped to them with a note (more threads than cores only time-share)."""
    cores = available_cores() if cores is None else cores
    try:
        count = int(str(value).strip())
    except ValueError:
        raise DncompressError(f"{source}={value!r} must be a whole number of threads (1 to {cores})") from None
    if count < 1:
        raise DncompressError(f"{source}={count} must be at least 1 (this machine has {cores} cores)")
    if count > cores:
        return cores, f"{source}={count} is more than the {cores} cores this process may use; using {cores}"
    return count, None


def resolve_threads(option: int | None = None) -> tuple[int, str | None]:
    """(thread count, note or None): --threads, else $DNCOMPRESS_THREADS, else free_cores()."""
    if option is not None:
        return parse_threads(option, "--threads")
    raw = os.environ.get(THREADS_ENV)
    if raw is not None:
        return parse_threads(raw, THREADS_ENV)
    return free_cores(), None


class _State:
    threads: int | None = None
    pool: ThreadPoolExecutor | None = None
    blas_limit = None
    lock = threading.Lock()
    local = threading.local()


def _limit_blas() -> None:
    """One BLAS thread for the life of the process (see the module docstring)."""
    if _State.blas_limit is None:
        import numpy  # noqa: F401 (loads OpenBLAS, so that threadpoolctl finds it)
        from threadpoolctl import threadpool_limits
        _State.blas_limit = threadpool_limits(1, user_api="blas")


# glibc mallopt parameters: arrays up to MMAP_THRESHOLD come from the heap, which is handed back to the
# kernel only when TRIM_THRESHOLD bytes at its top are free. Peak memory stays that of the largest working
# set; what is freed is reused instead of faulted in again.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int


def keep_freed_memory() -> bool:
    """Ask glibc to keep large freed arrays for reuse (see the module docstring); False where the C library
    is not glibc (no mallopt) or refuses the values."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    results = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(results)


def configure(threads: int | None = None) -> tuple[int, str | None]:
    """Set the engine's thread count (resolved as in resolve_threads); returns (count, note)."""
    count, note = resolve_threads(threads)
    with _State.lock:
        _limit_blas()
        if _State.pool is not None and _State.threads != count:
            _State.pool.shutdown(wait=True)
            _State.pool = None
        _State.threads = count
        if count > 1 and _State.pool is None:
            _State.pool = ThreadPoolExecutor(count - 1, thread_name_prefix="dncompress",
                                             initializer=_mark_worker)
    return count, note


def _mark_worker() -> None:
    _State.local.worker = True


def thread_count() -> int:
    """The configured count (configuring the default on first use)."""
    if _State.threads is None:
        configure()
    return _State.threads


@contextlib.contextmanager
def serial():
    """Inside, parallel() runs in the calling thread: for work that is itself one part of a split (the
    engine's threads take whole images; nested splits would queue behind them)."""
    before = getattr(_State.local, "worker", False)
    _State.local.worker = True
    try:
        yield
    finally:
        _State.local.worker = before


def split(total: int, parts: int, align: int = 1) -> list[slice]:
    """Up to `parts` contiguous slices covering range(total), sizes multiples of `align` (but the last)."""
    parts = max(1, min(parts, -(-total // align)))
    step = -(-total // (parts * align)) * align
    return [slice(start, min(start + step, total)) for start in range(0, total, step)]


def parallel(fn: Callable[[slice], None], total: int, min_per_part: int = 1, align: int = 1) -> None:
    """Run fn(part) over slices of range(total), one per thread, the first in the calling thread; returns
    when all are done (exceptions re-raised). Serial inside a worker (no nested waits on the pool)."""
    count = thread_count()
    if count > 1 and not getattr(_State.local, "worker", False):
        count = min(count, max(1, total // max(min_per_part, 1)))
    else:
        count = 1
    parts = split(total, count, align)
    if len(parts) == 1:
        fn(parts[0])
        return
    futures = [_State.pool.submit(fn, part) for part in parts[1:]]
    try:
        fn(parts[0])
    finally:
        for future in futures:
            future.result()
