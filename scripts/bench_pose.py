#!/usr/bin/env python3
"""Pose networks: `ferrovision bench` against the TensorFlow Lite runtime (XNNPACK delegate) on
the same real files, alternating engines in rounds (shared machines are noisy). Batch 1, the
files' input sizes, the same thread count for both.

    pip install ai-edge-litert numpy tflite && cargo build --release
    python scripts/bench_pose.py [--threads 2] [--runs 30] [--rounds 3]

- PoseNet (posenet_mobilenet_v1_075_481_641_16_quant_decoder.tflite): TFLite runs the uint8
  network up to Coral's decoder op, which the stock runtime cannot run (the file is patched in
  memory as scripts/gen_pose_fixtures.py does); ours is `bench --model posenet_mobilenet_v1
  --width 0.75 --input 481x641`, the f32 network only. Both decoders take well under 1 ms.
- MoveNet Lightning (movenet_single_pose_lightning_ptq.tflite): TFLite runs the int8 file whole
  (its decoding is in the graph); ours is `bench --model movenet` (192×192), f32.
Prints medians in ms/image per round and the ratio TFLite / ours (> 1: we are faster).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models" / "tflite"
sys.path.insert(0, str(ROOT / "scripts"))
from gen_pose_fixtures import without_decoder_op  # noqa: E402


def ours(args: list[str], threads: int, runs: int) -> float:
    cmd = [str(ROOT / "target" / "release" / "ferrovision"), "bench", *args, "--batch", "1", "--threads", str(threads),
           "--runs", str(runs), "--format", "json"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["ms_per_image"]


def tflite(it: Interpreter, runs: int) -> float:
    inp = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, size=inp["shape"]).astype(inp["dtype"])
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
    content, _ = without_decoder_op(MODELS / "posenet_mobilenet_v1_075_481_641_16_quant_decoder.tflite")
    posenet = Interpreter(model_content=content, num_threads=a.threads)
    posenet.allocate_tensors()
    movenet = Interpreter(model_path=str(MODELS / "movenet_single_pose_lightning_ptq.tflite"), num_threads=a.threads)
    movenet.allocate_tensors()
    rows = []
    for r in range(a.rounds):
        op = ours(["--model", "posenet_mobilenet_v1", "--width", "0.75", "--input", "481x641"], a.threads, a.runs)
        tp = tflite(posenet, a.runs)
        om = ours(["--model", "movenet"], a.threads, a.runs)
        tm = tflite(movenet, a.runs)
        rows.append((op, tp, om, tm))
        print(f"round {r + 1}: PoseNet 481×641: ferrovision f32 {op:.2f} ms | TFLite uint8 {tp:.2f} ms ({tp / op:.2f}×)"
              f"   MoveNet 192×192: ferrovision f32 {om:.2f} ms | TFLite int8 {tm:.2f} ms ({tm / om:.2f}×)", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median: PoseNet ferrovision {med[0]:.2f} ms, TFLite {med[1]:.2f} ms (ratio {med[1] / med[0]:.2f}); "
          f"MoveNet ferrovision {med[2]:.2f} ms, TFLite {med[3]:.2f} ms (ratio {med[3] / med[2]:.2f})")


if __name__ == "__main__":
    main()
