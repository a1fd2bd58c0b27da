#!/usr/bin/env python3
"""Peer comparison: ONNX Runtime (and PyTorch when installed) against ferrovision, same
architectures, input sizes, batch sizes and thread count, in one session on one machine.
Random weights everywhere (speed does not depend on their values). Prints one table of
ms/image with the ratio peer/ours (> 1: we are faster) and writes BENCHMARKS.md.

    pip install -r scripts/requirements-reference.txt onnxruntime onnx
    cargo build --release
    python scripts/bench_peers.py [--threads 2] [--batches 1 8] [--runs 10] [--rounds 2] [--only resnet50 ...]
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


def ours(name, size, batch, threads, runs, profile=False):
    cmd = [str(ROOT / "target" / "release" / "ferrovision"), "bench", "--model", name, "--input", str(size),
           "--batch", str(batch), "--threads", str(threads), "--runs", str(runs), "--format", "json"]
    out = subprocess.run(cmd + (["--profile"] if profile else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def gemm_peak(threads):
    """Our GEMM's f32 peak (the `gemm` crate, 1024³) from the criterion kernels bench, GFLOP/s."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(["cargo", "bench", "--bench", "kernels", "--", "gemm/1024x1024x1024", "--warm-up-time", "2",
                          "--measurement-time", "5"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if "thrpt:" in line:
            value, unit = line.split("[")[1].split()[2:4]  # the median
            return float(value) * {"Gelem/s": 1.0, "Melem/s": 1e-3, "Telem/s": 1e3}[unit]
    raise RuntimeError("no throughput in the kernels bench output")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2,
                   help="each engine's median is taken this many times, alternating engines; the best counts "
                        "(the machines here change speed 1.5-2x from minute to minute)")
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
                for _ in range(args.rounds):
                    with torch.inference_mode():
                        t = median_ms(lambda: model(xt), args.runs) / b
                    row[f"torch_b{b}"] = min(t, row.get(f"torch_b{b}", t))
                    t = median_ms(lambda: sess.run(None, {"x": x}), args.runs) / b
                    row[f"ort_b{b}"] = min(t, row.get(f"ort_b{b}", t))
                    time.sleep(0.5)  # ONNX Runtime's and PyTorch's threads spin for a while after a run
                    o = ours(name, size, b, args.threads, args.runs)
                    if o["ms_per_image"] < row.get(f"ours_b{b}", float("inf")):
                        row[f"ours_b{b}"] = o["ms_per_image"]
                        row[f"gflops_b{b}"] = o["gflop_per_s"]
                        row[f"rss_b{b}"] = o["peak_rss_mb"]
                print(f"{name} b{b}: torch {row[f'torch_b{b}']:.1f}, ort {row[f'ort_b{b}']:.1f}, "
                      f"ours {row[f'ours_b{b}']:.1f} ms/image", flush=True)
            row["profile"] = ours(name, size, 1, args.threads, args.runs, profile=True)["profile"]
            rows.append(row)
    peak = gemm_peak(args.threads)
    print(f"GEMM peak (gemm crate, f32 1024³, {args.threads} threads): {peak:.0f} GFLOP/s", flush=True)
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
    rate_head = ("| arch | " + " | ".join(f"ours GFLOP/s b{b}" for b in bs) + " | " + " | ".join(f"% of GEMM peak b{b}" for b in bs)
                 + " | " + " | ".join(f"peak RSS MB b{b}" for b in bs) + " |")
    rate_lines = [rate_head, "|" + "---|" * (1 + 3 * len(bs))]
    for r in rows:
        cells = [r["model"]] + [f"{r[f'gflops_b{b}']:.0f}" for b in bs] + [f"{100 * r[f'gflops_b{b}'] / peak:.0f}%" for b in bs]
        cells += [f"{r[f'rss_b{b}']:.0f}" for b in bs]
        rate_lines.append("| " + " | ".join(cells) + " |")
    rates = "\n".join(rate_lines)
    profiles = []
    for r in rows:
        profiles.append(f"**{r['model']}** (batch 1): " + ", ".join(
            f"{p['kind']} {p['ms_per_image']:.2f} ms ({100 * p['share']:.0f}%"
            + (f", {p['gflop_per_s']:.0f} GFLOP/s)" if p["gflop_per_s"] > 0 else ")")
            for p in r["profile"] if p["share"] >= 0.02))
    doc = f"""# Benchmarks

CPU inference, ms per image (median of {args.runs} runs after 2 warm-ups, the best of {args.rounds} such medians
taken in alternation with the other engines; lower is better), random weights, {args.threads} threads, measured in
one run of `python scripts/bench_peers.py --threads {args.threads}` on {datetime.date.today()}.

- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}
- Peers: PyTorch {torch.__version__} (eager, `inference_mode`), ONNX Runtime {ort.__version__} (CPU provider,
  models exported from torchvision with opset 17)
- Ours: `ferrovision bench` (release build), the same architectures, sizes and batch sizes

{table}

ORT/ours > 1 means ferrovision is faster than ONNX Runtime. Machines here are noisy: compare ratios from one run.

## Effective rate and memory (ours)

GFLOP/s counts 2 FLOP per multiply-add of the direct convolution (`gmacs_per_image` of `ferrovision bench
--format json`), so Winograd layers can exceed the GEMM's own rate. GEMM peak measured in the same run:
**{peak:.0f} GFLOP/s** (the `gemm` crate, f32 1024×1024×1024, {args.threads} threads,
`cargo bench --bench kernels -- gemm/1024x1024x1024`).

{rates}

## Where the time goes (ours, `ferrovision bench --profile`)

Per layer type, ms per image at batch 1 (types under 2% left out); a block's own row is what it does after
its children (residual add, concat).

""" + "\n\n".join(profiles) + "\n"
    # hand-written analysis below the marker survives a re-run
    marker = "<!-- notes: kept by bench_peers.py -->"
    old = args.out.read_text() if args.out.exists() else ""
    notes = old[old.index(marker):] if marker in old else marker + "\n"
    args.out.write_text(doc + "\n" + notes)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
