"""Soak test: long runs of `dncompress detect` and `dncompress eval` with their resident memory (RSS)
sampled, to catch leaks that short tests never see.

    python tools/soak.py [--images 1000] [--data ../shared/data/voc765] [--interval 0.5]
        [--max-growth 0.10] [--json soak.json]

detect runs over --images copies of the 7 Darknet sample images (hard links in a temp folder; the
annotated images go to a temp folder too), eval over --data. Each command runs in its own process
(`python -m dncompress`); /proc/PID/status VmRSS is read every --interval seconds. Growth is the RSS at
the end against the RSS once the first 10% of the run had passed (start-up, lazy imports and the first
buffers are done by then): (late - early) / early, late and early each the median of their window's
samples. Exit code 1 if a command grows by more than --max-growth or fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ../shared/data beside the checkout (or beside the worktree folder)
VOC765 = next((p / "shared" / "data" / "voc765" for p in (ROOT.parent, ROOT.parent.parent)
               if (p / "shared" / "data" / "voc765").is_dir()), ROOT.parent / "shared" / "data" / "voc765")
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_sampled(args: list[str], interval: float, cwd: Path) -> dict:
    """Run `python -m dncompress ARGS`, sampling its RSS; returns samples (seconds, MB) and the verdict."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "dncompress", *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    while process.poll() is None:
        mb = rss_mb(process.pid)
        if mb is not None:
            samples.append((round(time.monotonic() - start, 2), round(mb, 1)))
        time.sleep(interval)
    stderr = process.stderr.read()
    total = time.monotonic() - start
    early = [mb for t, mb in samples if 0.1 * total <= t <= 0.2 * total]
    late = [mb for t, mb in samples if t >= 0.9 * total]
    median = lambda values: sorted(values)[len(values) // 2] if values else float("nan")  # noqa: E731
    e, l = median(early), median(late)
    return {"command": "dncompress " + " ".join(args), "returncode": process.returncode, "seconds": round(total, 1),
            "samples": len(samples), "early_mb": e, "late_mb": l, "peak_mb": max((mb for _, mb in samples), default=0),
            "growth": (l - e) / e if e == e and e else float("nan"), "stderr_tail": stderr.splitlines()[-3:],
            "rss": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", default=str(VOC765))
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json", help="Write every sample and the verdicts here.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        images = folder / "images"
        images.mkdir()
        for i in range(args.images):
            source = SAMPLES[i % len(SAMPLES)]
            os.link(source, images / f"{i:05d}_{source.name}")
        results.append(run_sampled(["detect", str(images), "--out", str(folder / "out")], args.interval, folder))
        results.append(run_sampled(["eval", "--data", str(Path(args.data).resolve())], args.interval, folder))
    failed = False
    for r in results:
        ok = r["returncode"] == 0 and r["growth"] <= args.max_growth
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {r['command']}: {r['seconds']} s, {r['samples']} samples, RSS "
              f"{r['early_mb']:.0f} MB at 10-20% -> {r['late_mb']:.0f} MB at 90-100% ({r['growth']:+.1%}), "
              f"peak {r['peak_mb']:.0f} MB" + ("" if r["returncode"] == 0 else f"; exit {r['returncode']}: "
                                               f"{r['stderr_tail']}"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
