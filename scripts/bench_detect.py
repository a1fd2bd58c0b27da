#!/usr/bin/env python3
"""SSD MobileNetV2: `ferrovision bench --model ssd_mobilenet_v2` against the TensorFlow Lite runtime
(XNNPACK delegate) on the same real files, alternating engines in rounds (shared machines are
noisy). Batch 1, 300×300, the same thread count for both.

    pip install ai-edge-litert numpy && cargo build --release
    python scripts/bench_detect.py [--threads 2] [--runs 30] [--rounds 3]

TFLite runs ssd_mobilenet_v2_coco_quant_postprocess.tflite in uint8 (its post-processing op
included) and ssd_mobilenet_v2_oidv4_fp16.tflite in f32 (float16 weights widened); ferrovision
computes in f32 on either (the network only; its decoder and NMS take well under 1 ms).
Prints medians in ms/image per round and the ratio TFLite / ours (> 1: we are faster).
"""
import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models" / "tflite"


def ours(threads: int, runs: int) -> float:
    cmd = [str(ROOT / "target" / "release" / "ferrovision"), "bench", "--model", "ssd_mobilenet_v2", "--input", "300",
           "--batch", "1", "--threads", str(threads), "--runs", str(runs), "--format", "json"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["ms_per_image"]


def tflite(file: str, threads: int, runs: int) -> float:
    it = Interpreter(model_path=str(MODELS / file), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    if inp["dtype"] == np.uint8:
        x = rng.integers(0, 256, size=inp["shape"], dtype=np.uint8)
    else:
        x = rng.uniform(-1, 1, size=inp["shape"]).astype(np.float32)
    times = []
    for i in range(runs + 2):
        it.set_tensor(inp["index"], x)
        t = time.perf_counter()
        it.invoke()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rows = []
    for r in range(a.rounds):
        o = ours(a.threads, a.runs)
        q = tflite("ssd_mobilenet_v2_coco_quant_postprocess.tflite", a.threads, a.runs)
        f = tflite("ssd_mobilenet_v2_oidv4_fp16.tflite", a.threads, a.runs)
        rows.append((o, q, f))
        print(f"round {r + 1}: ferrovision f32 {o:.2f} ms | TFLite uint8 (COCO) {q:.2f} ms ({q / o:.2f}×) | "
              f"TFLite f32 (OIDv4) {f:.2f} ms ({f / o:.2f}×)", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median: ferrovision {med[0]:.2f} ms, TFLite uint8 {med[1]:.2f} ms (ratio {med[1] / med[0]:.2f}), "
          f"TFLite f32 {med[2]:.2f} ms (ratio {med[2] / med[0]:.2f})")


if __name__ == "__main__":
    main()
