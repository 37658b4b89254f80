"""CPU time of `dncompress --help`, `dncompress prune --help` and an error path (issue 16: < 0.3 s each), beside
two peers measured in the same run (a bare interpreter, `import numpy`), and what each imports
(`python -X importtime`): the slowest modules and whether a heavy one (OpenCV, onnx, onnxruntime,
pycocotools) was loaded.

    python tools/bench_cli.py [--repeat 7] [--top 8]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("cv2", "onnx", "onnxruntime", "pycocotools")
BUDGET = 0.3
CASES = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import numpy'": ["-c", "import numpy"],
    "dncompress --help": ["-m", "dncompress", "--help"],
    "dncompress prune --help": ["-m", "dncompress", "prune", "--help"],
    "dncompress prune search --help": ["-m", "dncompress", "prune", "search", "--help"],
    "dncompress detect nonexistent.jpg": ["-m", "dncompress", "detect", "nonexistent.jpg"],
}


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cpu_seconds(args: list[str]) -> float:
    """User + system CPU time of one `python ARGS` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], capture_output=True, env=environment(), cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports(args: list[str]) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of every top-level import, slowest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                          env=environment(), cwd=ROOT)
    rows = [re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line) for line in done.stderr.splitlines()]
    return sorted(((int(m[1]), m[3]) for m in rows if m and not m[2]), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--top", type=int, default=6)
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores; median of {options.repeat} runs")
    medians = {}
    for name, args in CASES.items():
        medians[name] = statistics.median(cpu_seconds(args) for _ in range(options.repeat))
    base = medians["python -c pass"]
    print(f"{'command':<36} {'CPU s':>6} {'x bare python':>13} {'budget':>7}")
    for name, seconds in medians.items():
        verdict = "" if not name.startswith("dncompress") else "ok" if seconds < BUDGET else "OVER"
        print(f"{name:<36} {seconds:6.3f} {seconds / base:13.1f} {verdict:>7}")
    for name, args in CASES.items():
        if not name.startswith("dncompress"):
            continue
        rows = imports(args)
        modules = {module.split(".")[0] for _, module in rows}
        heavy = [m for m in HEAVY if m in modules]
        top = ", ".join(f"{module} {us / 1e3:.0f} ms" for us, module in rows[:options.top])
        print(f"{name}: heavy modules {heavy or 'none'}; slowest imports: {top}")


if __name__ == "__main__":
    main()
