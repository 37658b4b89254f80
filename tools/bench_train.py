"""Training throughput: images/s of one forward + loss + backward pass of yolov3-tiny (real weights).

    python tools/bench_train.py [--imgsz 416 320] [--batch 8] [--runs 3] [--threads 2] [--baseline DIR]

Median over `runs` passes after one warm-up, on random images with one box each, with the CPU time of the
pass (all threads of the process: with --threads 1 the work done, which a busy machine disturbs far less
than the wall clock) and the peak resident memory of the measuring process. With --baseline DIR (a checkout of an older commit, e.g.
`git worktree add /tmp/base a08938b`), that tree is measured in the same run, alternating with this one
(each pass in its own child process), and the ratio is printed: machine load hits both alike. The tree
under test uses dncompress.threads (BLAS pinned to one thread, its own split over THREADS); a tree
without that module gets OPENBLAS_NUM_THREADS=THREADS, as it was benchmarked then.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys, time
import numpy as np
import dncompress
print("tree", dncompress.__file__, file=sys.stderr)
size, batch, runs, threads = map(int, sys.argv[1:5])
try:
    from dncompress import threads as engine_threads
    engine_threads.configure(threads)
except ImportError:
    pass
from dncompress.network import Network
from dncompress.train.loop import batch_loss
from dncompress.train.runner import TrainRun
from dncompress.zoo import find_weights, resolve_cfg
cfg = resolve_cfg(sys.argv[5])
net = Network.from_cfg(cfg, find_weights(cfg), size, size)
run = TrainRun(net)
x = np.random.default_rng(0).random((batch, *net.input_shape), dtype=np.float32)
labels = [np.array([[0, 0.5, 0.5, 0.2, 0.3]], np.float32)] * batch
def step():
    outs = run.forward(x)
    run.backward(batch_loss(net, outs, labels, None, True)[1])
step()
times, cpu = [], []
for _ in range(runs):
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps({"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(tree: Path, size: int, args) -> dict:
    """One child process timing `tree`'s training step at `size`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    if not (tree / "dncompress" / "threads.py").exists():
        env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    # cwd=tree: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(args.batch), str(args.runs),
                          str(args.threads), args.cfg], env=env, cwd=tree, capture_output=True, text=True,
                         check=True)
    assert str(tree) in out.stderr, out.stderr  # the child timed the tree it was meant to
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[416, 320])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--baseline", type=Path, help="source tree of the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --baseline (median taken)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"this tree": here}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    print(f"{args.cfg} batch {args.batch}, {args.threads} threads; load average {os.getloadavg()[0]:.2f}")
    for size in args.imgsz:
        results = {name: [] for name in trees}
        for _ in range(args.rounds if args.baseline else 1):
            for name, tree in trees.items():
                results[name].append(measure(tree, size, args))
        rates, cpu_rates = {}, {}
        for name, runs in results.items():
            seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
            cpu_seconds = sorted(r["cpu_seconds"] for r in runs)[len(runs) // 2]
            rates[name], cpu_rates[name] = args.batch / seconds, args.batch / cpu_seconds
            print(f"  {size}x{size} {name:<10} forward+backward {seconds:6.2f} s, {rates[name]:6.2f} images/s, "
                  f"CPU {cpu_seconds:6.2f} s, peak RSS {max(r['rss_mb'] for r in runs):6.0f} MB", flush=True)
        if args.baseline:
            print(f"  {size}x{size} this tree / baseline: {rates['this tree'] / rates['baseline']:.2f}x images/s, "
                  f"{cpu_rates['this tree'] / cpu_rates['baseline']:.2f}x images per CPU second")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
