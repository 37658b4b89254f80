"""Engine threads: the count from --threads / $DNCOMPRESS_THREADS / free cores, bad values, and a parallel
split that gives the single-threaded result."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress import threads
from dncompress.cli import main
from dncompress.engine.conv import conv2d, conv3x3_winograd, winograd_weights
from dncompress.engine.pool import maxpool2d
from dncompress.errors import DncompressError


@pytest.fixture
def restore_threads():
    yield
    threads.configure(1)


@pytest.mark.parametrize("value", [0, -1, "abc", "", "1.5"])
def test_bad_thread_counts_are_errors(value):
    with pytest.raises(DncompressError, match="--threads"):
        threads.parse_threads(value, "--threads", cores=2)


def test_more_threads_than_cores_clamp_with_a_note():
    count, note = threads.parse_threads(3, "--threads", cores=2)
    assert count == 2 and "3" in note and "using 2" in note
    assert threads.parse_threads(" 2 ", "X", cores=2) == (2, None)


def test_environment_and_option_precedence(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "garbage")
    with pytest.raises(DncompressError, match=threads.THREADS_ENV):
        threads.resolve_threads()
    assert threads.resolve_threads(1) == (1, None)  # the option wins over the environment
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert threads.resolve_threads() == (1, None)


def test_free_cores_subtract_the_load(monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0, 0))
    assert threads.free_cores(4) == 4
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 0, 0))
    assert threads.free_cores(4) == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (50.0, 0, 0))
    assert threads.free_cores(4) == 1


def test_split_covers_the_range_in_aligned_parts():
    for total in (1, 7, 16, 255):
        for parts in (1, 2, 3):
            slices = threads.split(total, parts, align=4)
            covered = np.concatenate([np.arange(total)[sl] for sl in slices])
            assert covered.tolist() == list(range(total)) and len(slices) <= parts
            assert all((sl.stop - sl.start) % 4 == 0 for sl in slices[:-1])


def test_parallel_raises_a_workers_error(restore_threads):
    threads.configure(2)

    def fail_late(sl):
        if sl.start > 0:
            raise ValueError("boom")
    if threads.thread_count() > 1:
        with pytest.raises(ValueError, match="boom"):
            threads.parallel(fail_late, 64)


def test_two_threads_give_the_single_thread_convolution(restore_threads):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 64, 9, 11)).astype(np.float32)
    w = rng.normal(size=(40, 64, 3, 3)).astype(np.float32)
    b = rng.normal(size=40).astype(np.float32)
    leaky = lambda y: np.maximum(y, y * np.float32(0.1), out=y)  # noqa: E731
    results = []
    for count in (1, 2):
        threads.configure(count)
        results.append((conv2d(x, w, b, 1, 1, activation=leaky),
                        conv3x3_winograd(x, winograd_weights(w), b, 1, leaky), maxpool2d(x, 3, 2, 2)))
    for single, split in zip(*results):
        np.testing.assert_allclose(split, single, rtol=1e-6, atol=1e-6)
    # maxpool against a brute-force window max (Darknet windows start at -padding/2, -inf outside)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2)), constant_values=-np.inf)
    brute = np.max([xp[:, :, dy:dy + 9:2, dx:dx + 11:2] for dy in range(3) for dx in range(3)], axis=0)
    np.testing.assert_array_equal(results[1][2], brute[:, :, :results[1][2].shape[2], :results[1][2].shape[3]])
    # and both match the float64 reference
    ref = conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, 1)
    np.testing.assert_allclose(results[1][0], np.maximum(ref, 0.1 * ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args,env", [(["--threads", "0"], {}), (["--threads", "-3"], {}),
                                      ([], {threads.THREADS_ENV: "lots"})])
def test_cli_rejects_bad_thread_counts_in_one_line(args, env):
    result = CliRunner().invoke(main, args + ["stats", "yolov3-tiny"], env=env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def test_freed_memory_is_kept_for_reuse_on_glibc():
    """glibc accepts the thresholds (elsewhere there is no mallopt and nothing changes)."""
    import ctypes
    try:
        ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        pytest.skip("not glibc")
    assert threads.keep_freed_memory()
    big = np.ones(40 << 20, np.uint8)  # over glibc's default 32 MB ceiling for heap allocations
    assert big.sum() == 40 << 20
