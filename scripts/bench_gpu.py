#!/usr/bin/env python3
"""GPU throughput: ferrovision (`bench --device cuda`) next to PyTorch eager, same machine, same run.

For every architecture, batch size and dtype, images/s of a forward pass on random weights:
ours from `ferrovision bench --format json` (median of --runs synchronised passes), PyTorch's
from torchvision's model in eval mode under `torch.inference_mode()`, timed the same way
(median of --runs passes, each ended by `torch.cuda.synchronize()`, after two warm-ups).
PyTorch runs as a user gets it: NCHW, `cudnn.benchmark` off (its default); `--cudnn-benchmark`
turns it on as well and reports both.

Prints a Markdown table (and writes it with --out) and the raw numbers as JSON (--json).
With --profile, instead: where the time goes at the largest batch, ours (`bench --profile`, each
layer timed up to a device synchronisation) next to PyTorch's profiler (CUDA time per operator).
--variant NAME:VAR=VALUE,... (repeatable) adds ours again with those environment variables, e.g.
`fused:FERROVISION_CUDNN_FUSE=1` or `candle:FERROVISION_CUDNN=candle`.
Needs torch and torchvision with CUDA; no weights are downloaded.

    python3 scripts/bench_gpu.py --bin target/release/ferrovision --out bench_gpu.md
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (our name, torchvision name or None, input size)
ARCHS = [
    ("resnet50", "resnet50", 224),
    ("mobilenet_v2", "mobilenet_v2", 224),
    ("resnet18", "resnet18", 224),
    ("vgg16", "vgg16", 224),
    ("squeezenet1_1", "squeezenet1_1", 224),
    ("googlenet", "googlenet", 224),
    ("inception_v3", "inception_v3", 299),
    ("alexnet", "alexnet", 224),
    ("mobilenet_v1", None, 224),
]


def variant(spec):
    """`NAME:VAR=VALUE,...` as (NAME, {VAR: VALUE})."""
    name, _, assignments = spec.partition(":")
    return name, dict(a.split("=", 1) for a in assignments.split(",") if a)


def ours_env(extra):
    """The environment for our binary: ours with `extra` variables set, or as is."""
    return dict(os.environ, **extra) if extra else None


def ours_cmd(binary, model, dtype, batches, runs, *extra):
    """Our `bench` command line on the GPU at these batch sizes, with `extra` options."""
    return [binary, "bench", "--model", model, "--device", "cuda", "--weights-dtype", dtype,
            "--batch", ",".join(map(str, batches)), "--runs", str(runs), *extra]


def ours(binary, model, batches, dtype, runs, timeout, var=("", {})):
    """images/s per batch size; `var`: a variant's name and environment variables."""
    cmd = ours_cmd(binary, model, dtype, batches, runs, "--format", "json")
    t = time.time()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ours_env(var[1]))
    except subprocess.TimeoutExpired:
        print(f"  ours {model} {dtype}: timed out after {timeout} s", file=sys.stderr)
        return {}
    if res.returncode != 0:
        print(f"  ours {model} {dtype}: exit {res.returncode}: {res.stderr.strip()[-400:]}", file=sys.stderr)
        return {}
    if res.stderr.strip():
        print(f"  ours {model} {dtype} stderr: {res.stderr.strip()[-400:]}", file=sys.stderr)
    out = {}
    for line in res.stdout.splitlines():
        r = json.loads(line)
        out[r["batch"]] = r["images_per_s"]
    print(f"  ours{f' ({var[0]})' if var[0] else ''} {model} {dtype}: {out} ({time.time() - t:.0f} s)", file=sys.stderr)
    return out


def torch_eager(name, size, batches, dtype, runs, cudnn_benchmark):
    import torch

    torch.backends.cudnn.benchmark = cudnn_benchmark
    model, tdtype = torchvision_model(name, dtype)
    out = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, size, size, device="cuda", dtype=tdtype)
            for _ in range(2):
                model(x)
            torch.cuda.synchronize()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            out[b] = b / statistics.median(times)
            del x
    del model
    torch.cuda.empty_cache()
    return out


def profiles(args, archs, batch, dtypes):
    """Ours and PyTorch's per-operator times, one block of text per architecture and dtype."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for model, tv, size in archs:
        for dtype in dtypes:
            print(f"## {model} {dtype}, batch {batch}\n", flush=True)
            cmd = ours_cmd(args.bin, model, dtype, [batch], 3, "--profile", "--top", "15")
            for name, extra in [("", {})] + args.variant:
                print(f"ours, {name}:" if name else "ours:")
                try:
                    res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=ours_env(extra))
                    print(res.stdout + res.stderr[-400:] if res.returncode == 0 else f"exit {res.returncode}: {res.stderr[-400:]}")
                except subprocess.TimeoutExpired:
                    print(f"timed out after {args.timeout} s")
            if not tv or args.no_torch_profile:
                continue
            net, tdtype = torchvision_model(tv, dtype)
            with torch.inference_mode():
                x = torch.randn(batch, 3, size, size, device="cuda", dtype=tdtype)
                for _ in range(2):
                    net(x)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        net(x)
                    torch.cuda.synchronize()
            print("PyTorch eager, 3 passes (times are totals over the 3):")
            events = prof.key_averages()
            for key in ("self_device_time_total", "self_cuda_time_total"):
                try:
                    print(events.table(sort_by=key, row_limit=15), flush=True)
                    break
                except (AttributeError, KeyError, ValueError):
                    continue
            del net, x
            torch.cuda.empty_cache()


def torchvision_model(name, dtype):
    """torchvision's `name` with random weights, in eval mode on the GPU in `dtype`; and the dtype."""
    import torch
    import torchvision

    kwargs = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    tdtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return torchvision.models.get_model(name, **kwargs).eval().cuda().to(tdtype), tdtype


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ferrovision")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--dtypes", default="f32,f16")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", help="comma-separated architectures")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="also time PyTorch with cudnn.benchmark on")
    ap.add_argument("--timeout", type=int, default=240, help="seconds for one ferrovision run")
    ap.add_argument("--out", help="write the Markdown table here")
    ap.add_argument("--json", help="write the raw numbers here")
    ap.add_argument("--profile", action="store_true", help="per-operator profiles at the largest batch instead")
    ap.add_argument("--variant", type=variant, action="append", default=[],
                    help="NAME:VAR=VALUE,...: also ours with these environment variables (repeatable)")
    ap.add_argument("--no-torch-profile", action="store_true", help="with --profile: ours only")
    args = ap.parse_args()

    import torch

    batches = [int(b) for b in args.batches.split(",")]
    dtypes = args.dtypes.split(",")
    archs = [a for a in ARCHS if not args.only or a[0] in args.only.split(",")]
    gpu = torch.cuda.get_device_name(0)
    if args.profile:
        print(f"GPU: {gpu}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}\n")
        profiles(args, archs, max(batches), dtypes)
        return
    rows, raw = [], []
    for model, tv, size in archs:
        for dtype in dtypes:
            o = ours(args.bin, model, batches, dtype, args.runs, args.timeout)
            ov = [ours(args.bin, model, batches, dtype, args.runs, args.timeout, v) for v in args.variant]
            t = torch_eager(tv, size, batches, dtype, args.runs, False) if tv else {}
            tb = torch_eager(tv, size, batches, dtype, args.runs, True) if tv and args.cudnn_benchmark else {}
            print(f"  torch {model} {dtype}: {t} {tb}", file=sys.stderr)
            for b in batches:
                variants = {f"ours_{n}": v.get(b) for (n, _), v in zip(args.variant, ov)}
                raw.append({"model": model, "dtype": dtype, "batch": b, "ours": o.get(b), **variants,
                            "torch": t.get(b), "torch_cudnn_benchmark": tb.get(b)})
                rows.append((model, dtype, b, o.get(b), [v.get(b) for v in ov], t.get(b), tb.get(b)))
            write(args, gpu, rows, raw)

    write(args, gpu, rows, raw, final=True)


def table(args, gpu, rows):
    import torch

    def f(v):
        return "—" if v is None else f"{v:,.0f}"

    head = "| arch | dtype | batch | ours (img/s) | PyTorch eager (img/s) | ours / PyTorch |"
    sep = "|---|---|---|---:|---:|---:|"
    for name, _ in args.variant:
        head += f" ours, {name} | that / PyTorch |"
        sep += "---:|---:|"
    if args.cudnn_benchmark:
        head += " PyTorch, cudnn.benchmark | ours / that |"
        sep += "---:|---:|"
    lines = [f"GPU: {gpu}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
             f"median of {args.runs} synchronised passes per cell; {time.strftime('%Y-%m-%d %H:%M')}", "", head, sep]
    for model, dtype, b, o, ov, t, tb in rows:
        ratio = f"{o / t:.2f}" if o and t else "—"
        line = f"| {model} | {dtype} | {b} | {f(o)} | {f(t)} | {ratio} |"
        for v in ov:
            line += f" {f(v)} | {f'{v / t:.2f}' if v and t else '—'} |"
        if args.cudnn_benchmark:
            line += f" {f(tb)} | {f'{o / tb:.2f}' if o and tb else '—'} |"
        lines.append(line)
    return "\n".join(lines)


def write(args, gpu, rows, raw, final=False):
    """Writes what is measured so far (a run cut short keeps its finished cells)."""
    text = table(args, gpu, rows)
    if final:
        print(text)
    if args.out:
        open(args.out, "w").write(text + "\n")
    if args.json:
        json.dump({"gpu": gpu, "rows": raw}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
