"""Benchmarks that compare dncompress against peers measured in the same run (medians and ratios).

    python tools/bench.py [--runs 20] [--imgsz 416] [--batch 1 8] [--threads 2] [--load 1] [--pruned 0.3] [--rss]
    python tools/bench.py --per-layer [--pruned 0.3] [--pruned-model p50.cfg] [--batch 1] [--runs 20]

Prints the median latency of a yolov3-tiny forward pass for the numpy engine, onnxruntime (on the ONNX
export) and OpenCV DNN at each batch size, each as a ratio to OpenCV DNN; with --pruned R, the same for
the model pruned with `prune --scope layer --ratio R` (R=0.3 removes ~50% of the BFLOPs) and its speed-up
over the unpruned model in each backend; --pruned-model CFG does the same for a pruned model on disk
(e.g. `prune --target-bflops`'s). --load N starts N busy processes (pure Python spin loops, ended
when the benchmark ends, at most --load-seconds) beside the measurement: the machine's other work.
--rss runs `detect`, `eval` and `train` (one short epoch) in child processes and prints each one's peak
resident memory, and that of one batch-1 forward. --int8 adds onnxruntime on the `quantize --format
onnx-int8` model (W8A8, calibrated on the packaged sample images) and its speed-up over the fp32 export,
timed in the same blocks. --per-layer prints, instead of the backends, each engine layer's median wall and
CPU time (the CPU time of all the process's threads, which a busy machine disturbs less) for the unpruned
model and, with --pruned, the pruned one beside it in the same run (the models take turns, one forward
each), with each layer's MACs: where a pruned model's time goes when it is not faster in proportion.
The 1-minute load average is printed before and after.
Targets live in the README, not in tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# time the tree this script is in (not whatever dncompress is installed), here and in the --rss children
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
DATA = Path(os.environ.get("DNCOMPRESS_DATA", "/work/shared/data"))


def medians_ms(fns: dict, runs: int, warmup: int = 2, block: int = 5, cpu: dict | None = None) -> dict:
    """Median ms per function. Backends take turns in blocks of `block` runs: machine load still hits all
    alike, while one backend's idle-spinning worker threads do not slow the next one's single run, as
    strict run-by-run alternation does. `cpu`, if given, receives the median CPU ms of each (all threads
    of this process: with one thread per backend the work done, which other processes disturb less than
    the wall clock)."""
    times = {name: [] for name in fns}
    cpu_times = {name: [] for name in fns}
    while min(len(t) for t in times.values()) < runs:
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(block):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
                cpu_times[name].append((time.process_time() - start_cpu) * 1e3)
    if cpu is not None:
        cpu.update({name: statistics.median(t) for name, t in cpu_times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


def start_load(count: int, seconds: float) -> list[subprocess.Popen]:
    """`count` busy processes, each spinning one core for at most `seconds`."""
    return [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)]) for _ in range(count)]


def peak_rss_mb(args: list[str]) -> tuple[float, int]:
    """(peak resident MB, exit code) of a child running `args` (its own grandchild's ru_maxrss, so the
    figure is that one command's, not the benchmark's)."""
    probe = ("import resource, subprocess, sys\n"
             "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True)
    kb, code = out.stdout.split()
    return int(kb) / 1024, int(code)


def rss_report(threads: int) -> None:
    """Peak RSS of detect, eval, train (1 epoch of 8 images, batch 8) and one batch-1 forward."""
    cli = [sys.executable, "-m", "dncompress", "--threads", str(threads)]
    forward = ("import numpy as np\nfrom dncompress.model_io import open_model\nnet = open_model('yolov3-tiny')\n"
               "net.forward(np.zeros((1, 3, 416, 416), np.float32))\n")
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp, "train8.txt")
        lines = Path(DATA, "voc765", "fit565.txt").read_text().split()[:8]
        subset.write_text("\n".join(str(Path(DATA, "voc765", line)) if not Path(line).is_absolute() else line
                                    for line in lines) + "\n")
        jobs = {
            "forward (yolov3-tiny, batch 1)": [sys.executable, "-c", forward],
            "detect (7 images)": cli + ["detect", *map(str, sorted(Path(DATA, "images").glob("*.jpg"))),
                                        "--out", str(Path(tmp, "det"))],
            "eval (voc765 eval200, batch 8)": cli + ["eval", "yolov3-tiny", "--data",
                                                     str(Path(DATA, "voc765", "eval200.txt"))],
            "train (8 images, batch 8, 1 epoch)": cli + ["train", "yolov3-tiny", "--data", str(subset),
                                                         "--epochs", "1", "--batch", "8",
                                                         "-o", str(Path(tmp, "trained"))],
        }
        print("peak resident memory (ru_maxrss of each command alone)")
        for name, args in jobs.items():
            start = time.perf_counter()
            mb, code = peak_rss_mb(args)
            status = "" if code == 0 else f"   (exit {code})"
            print(f"  {name:<36} {mb:7.0f} MB   {time.perf_counter() - start:6.1f} s{status}", flush=True)


def layer_times(models: dict, blob, runs: int, warmup: int = 2) -> dict:
    """{label: {layer index: (median wall ms, median CPU ms)}} of each model's engine layers on `blob`; the
    models take turns forward by forward, so load hits all alike."""
    samples = {label: {} for label in models}

    def timed(label):
        def run(layer, xs):
            wall, cpu = time.perf_counter(), time.process_time()
            out = layer.forward(xs)
            samples[label].setdefault(layer.index, []).append(
                ((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3))
            return out
        return run
    for label, model in models.items():
        for _ in range(warmup):
            model.forward(blob)
    for _ in range(runs):
        for label, model in models.items():
            model.forward(blob, run=timed(label))
    return {label: {index: tuple(statistics.median(t[k] for t in times) for k in (0, 1))
                    for index, times in per_layer.items()} for label, per_layer in samples.items()}


def print_layer_times(models: dict, times: dict) -> None:
    """One row per layer: type, output shape and MACs of each model, median wall / CPU ms, and the first
    model's time over each other's."""
    from dncompress.stats import layer_costs
    costs = {label: layer_costs(model) for label, model in models.items()}
    first = next(iter(models))
    header = "".join(f" | {label:>24}" for label in models)
    print(f"{'layer':<22}{header}   (per model: MMACs, wall ms / CPU ms)"
          + ("".join(f" | {first} / {label} CPU" for label in list(models)[1:])))
    totals = {label: [0.0, 0.0, 0] for label in models}
    for index, layer in enumerate(models[first].layers):
        row = f"{index:3d} {layer.type[:13]:<13} {costs[first][index].out_shape[0]:>4}"
        for label in models:
            wall, cpu = times[label][index]
            macs = costs[label][index].macs
            totals[label][0] += wall
            totals[label][1] += cpu
            totals[label][2] += macs
            row += f" | {macs / 1e6:7.1f} {wall:7.2f} / {cpu:7.2f}"
        for label in list(models)[1:]:
            row += f" | {times[first][index][1] / max(times[label][index][1], 1e-9):5.2f}x"
        print(row)
    row = f"{'sum':<22}"
    for label in models:
        wall, cpu, macs = totals[label]
        row += f" | {macs / 1e6:7.1f} {wall:7.2f} / {cpu:7.2f}"
    for label in list(models)[1:]:
        row += f" | {totals[first][1] / totals[label][1]:5.2f}x (MACs {totals[first][2] / totals[label][2]:.2f}x)"
    print(row, flush=True)


def int8_model(net):
    """The W8A8 `quantize --format onnx-int8` model (our QDQ graph reproducing the engine, dynamic batch),
    calibrated on the packaged sample images as `quantize` does by default."""
    from dncompress.quant.apply import QuantConfig, quantize_network
    from dncompress.quant.ort_int8 import engine_int8_onnx
    from dncompress.quant.workflow import load_calibration
    calib, _, _ = load_calibration(net, None, 8)
    return engine_int8_onnx(quantize_network(net, QuantConfig(8, 8, rounding="nearest", out_bits=8), calib))


def pruned_network(net, ratio: float):
    """`dncompress prune --scope layer --ratio R` (bn criterion, compensation) of net."""
    from dncompress.prune.apply import prune_network
    from dncompress.prune.criteria import CRITERIA
    from dncompress.prune.groups import channel_groups
    from dncompress.prune.plan import plan_pruning
    keep = plan_pruning(channel_groups(net), CRITERIA["bn"](net, calib=None), ratio, "layer", 0.1, 1)
    return prune_network(net, keep, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="for every backend (engine: dncompress.threads)")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy processes beside the measurement")
    parser.add_argument("--load-seconds", type=float, default=900)
    parser.add_argument("--pruned", type=float, metavar="R", help="also time the model pruned layer-wise by R")
    parser.add_argument("--pruned-model", metavar="CFG", action="append", default=[],
                        help="also time this pruned model (cfg, weights beside it; e.g. `prune --target-bflops`'s "
                             "output), as --pruned; repeatable")
    parser.add_argument("--rss", action="store_true", help="peak RSS of detect, eval and train")
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--weights")
    parser.add_argument("--int8", action="store_true", help="also time onnxruntime int8 vs fp32")
    parser.add_argument("--per-layer", action="store_true",
                        help="engine time per layer (unpruned and --pruned side by side) instead of the backends")
    args = parser.parse_args()

    import cv2
    import numpy as np

    from dncompress import threads
    from dncompress.export.onnx import build_onnx, onnx_forward
    from dncompress.model_io import open_model
    from dncompress.stats import summary

    engine_threads, note = threads.configure(args.threads)
    if note:
        print(f"note: {note}")
    cv2.setNumThreads(engine_threads)
    net = open_model(args.cfg, args.weights, (args.imgsz, args.imgsz) if args.imgsz else None)
    models = {"unpruned": net}
    if args.pruned:
        models[f"pruned {args.pruned:g}"] = pruned_network(net, args.pruned)
    for path in args.pruned_model:
        from dncompress.model_io import open_model
        models[Path(path).stem] = open_model(path, imgsz=(args.imgsz, args.imgsz))

    load = start_load(args.load, args.load_seconds)
    try:
        time.sleep(1 if load else 0)
        print(f"{Path(net.file).stem} {args.imgsz}x{args.imgsz}, {engine_threads} threads, {args.load} busy processes, "
              f"median of {args.runs} runs; load average before {os.getloadavg()[0]:.2f}", flush=True)
        if args.per_layer:
            for batch in args.batch:
                blob = np.random.default_rng(0).random((batch, 3, args.imgsz, args.imgsz), dtype=np.float32)
                print(f" engine per layer, batch {batch}, median of {args.runs} forwards; "
                      f"load average {os.getloadavg()[0]:.2f}")
                print_layer_times(models, layer_times(models, blob, args.runs))
            models = {}
        with tempfile.TemporaryDirectory() as tmp:
            medians, cpu_medians = {}, {}
            for label, model in models.items():
                prefix = Path(tmp, label.replace(" ", "_"))
                model.save(f"{prefix}.cfg", f"{prefix}.weights")
                cvnet = cv2.dnn.readNetFromDarknet(f"{prefix}.cfg", f"{prefix}.weights")
                outs = cvnet.getUnconnectedOutLayersNames()
                ort_forward = onnx_forward(build_onnx(model, dynamic_batch=True), threads=engine_threads)
                int8_forward = onnx_forward(int8_model(model), threads=engine_threads) if args.int8 else None
                for batch in args.batch:
                    blob = np.random.default_rng(0).random((batch, 3, args.imgsz, args.imgsz), dtype=np.float32)

                    def opencv(blob=blob):
                        cvnet.setInput(blob)
                        cvnet.forward(outs)
                    runs = max(3, args.runs // batch) if batch > 1 else args.runs
                    fns = {"numpy engine": lambda blob=blob, model=model: model.forward(blob),
                           "onnxruntime": lambda blob=blob: ort_forward(blob), "opencv dnn": opencv}
                    if int8_forward:
                        fns["onnxruntime int8"] = lambda blob=blob: int8_forward(blob)
                    cpu = {}
                    result = medians_ms(fns, runs, cpu=cpu)
                    medians[label, batch] = result
                    cpu_medians[label, batch] = cpu
                    base, cpu_base = result["opencv dnn"], cpu["opencv dnn"]
                    print(f" {label} ({summary(model)['bflops']:.2f} BFLOPs), batch {batch} ({runs} runs), "
                          f"load average {os.getloadavg()[0]:.2f}")
                    for name, ms in result.items():
                        print(f"  {name:<16} {ms:9.1f} ms   {ms / base:5.2f}x opencv dnn   CPU {cpu[name]:9.1f} ms   "
                              f"{cpu[name] / cpu_base:5.2f}x", flush=True)
                    if int8_forward:
                        print(f"  onnxruntime int8 vs fp32: {result['onnxruntime'] / result['onnxruntime int8']:.2f}x "
                              "faster", flush=True)
            for label in list(models)[1:]:
                for batch in args.batch:
                    speedups = "  ".join(f"{name} {medians['unpruned', batch][name] / ms:.2f}x"
                                         for name, ms in medians[label, batch].items())
                    print(f" {label} vs unpruned, batch {batch}: faster by  {speedups}")
                    speedups = "  ".join(f"{name} {cpu_medians['unpruned', batch][name] / ms:.2f}x"
                                         for name, ms in cpu_medians[label, batch].items())
                    print(f" {label} vs unpruned, batch {batch}: CPU time less by  {speedups}")
        if args.rss:
            rss_report(engine_threads)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
