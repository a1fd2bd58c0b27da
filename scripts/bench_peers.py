#!/usr/bin/env python3
"""Peer comparison: ONNX Runtime (and PyTorch when installed) against ferrovision, same
architectures, input sizes, batch sizes and thread count, in one session on one machine.
Random weights everywhere (speed does not depend on their values). Prints one table of
ms/image with the ratio peer/ours (> 1: we are faster) and writes BENCHMARKS.md.

    pip install -r scripts/requirements-reference.txt onnxruntime onnx
    cargo build --release
    python scripts/bench_peers.py [--threads 2] [--batches 1 8] [--runs 10] [--only resnet50 ...]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHS = [("resnet50", 224), ("vgg16", 224), ("inception_v3", 299), ("googlenet", 224), ("resnet18", 224),
         ("mobilenet_v2", 224), ("squeezenet1_1", 224)]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def torch_model(name):
    import torchvision
    kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return getattr(torchvision.models, name)(weights=None, **kw).eval()


def ours(name, size, batch, threads, runs):
    out = subprocess.run([str(ROOT / "target" / "release" / "ferrovision"), "bench", "--model", name, "--input", str(size),
                          "--batch", str(batch), "--threads", str(threads), "--runs", str(runs), "--format", "json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["ms_per_image"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--only", nargs="*")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args()
    import torch
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in ARCHS:
            if args.only and name not in args.only:
                continue
            model = torch_model(name)
            onnx_path = Path(tmp) / f"{name}.onnx"
            x0 = torch.randn(1, 3, size, size)
            torch.onnx.export(model, x0, onnx_path, input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            row = {"model": name, "input": size}
            for b in args.batches:
                x = np.random.default_rng(0).standard_normal((b, 3, size, size)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    row[f"torch_b{b}"] = median_ms(lambda: model(xt), args.runs) / b
                row[f"ort_b{b}"] = median_ms(lambda: sess.run(None, {"x": x}), args.runs) / b
                row[f"ours_b{b}"] = ours(name, size, b, args.threads, args.runs)
                print(f"{name} b{b}: torch {row[f'torch_b{b}']:.1f}, ort {row[f'ort_b{b}']:.1f}, "
                      f"ours {row[f'ours_b{b}']:.1f} ms/image", flush=True)
            rows.append(row)
    bs = args.batches
    head = ("| arch | input | " + " | ".join(f"PyTorch b{b}" for b in bs) + " | " + " | ".join(f"ORT b{b}" for b in bs)
            + " | " + " | ".join(f"ours b{b}" for b in bs) + " | " + " | ".join(f"ORT/ours b{b}" for b in bs) + " |")
    lines = [head, "|" + "---|" * (2 + 4 * len(bs))]
    for r in rows:
        cells = [r["model"], str(r["input"])] + [f"{r[f'torch_b{b}']:.1f}" for b in bs] + [f"{r[f'ort_b{b}']:.1f}" for b in bs]
        cells += [f"{r[f'ours_b{b}']:.1f}" for b in bs] + [f"{r[f'ort_b{b}'] / r[f'ours_b{b}']:.2f}" for b in bs]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    doc = f"""# Benchmarks

CPU inference, ms per image (median of {args.runs} runs after 2 warm-ups; lower is better), random weights,
{args.threads} threads, measured in one run of `python scripts/bench_peers.py --threads {args.threads}` on
{datetime.date.today()}.

- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}
- Peers: PyTorch {torch.__version__} (eager, `inference_mode`), ONNX Runtime {ort.__version__} (CPU provider,
  models exported from torchvision with opset 17)
- Ours: `ferrovision bench` (release build), the same architectures, sizes and batch sizes

{table}

ORT/ours > 1 means ferrovision is faster than ONNX Runtime. Machines here are noisy: compare ratios from one run.
"""
    args.out.write_text(doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
