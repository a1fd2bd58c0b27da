#!/usr/bin/env python3
"""Generate torchvision parity fixtures for ferrovision.

The Rust tests compare ferrovision's models against torchvision without
needing torch in CI.  Weights and inputs are produced by "fvrng", a
deterministic counter-based generator implemented bit-identically here and on
the Rust side.  For every case this script

  1. builds the reference PyTorch model (torchvision, or the MobileNet-v1
     reference module below),
  2. fills every state_dict tensor (except ``*num_batches_tracked``) from
     fvrng, keyed by the tensor's name,
  3. runs it in eval mode, float32, on an fvrng input batch of 3 images,
  4. writes ``tests/fixtures/parity/{case}.safetensors`` holding only the
     expected ``logits`` ([3, num_classes] float32) plus metadata (arch,
     options, input shape, seed and the list of [name, shape] parameters in
     state_dict order).

The Rust test regenerates the same weights from the names list, writes them to
a safetensors file, loads them through the normal loader and compares logits.

fvrng
-----
key = FNV-1a 64 over UTF-8 of f"{seed}/{name}"
      (offset basis 0xcbf29ce484222325, prime 0x100000001b3, wrapping).
For element i (C order):
    z = key + (i + 1) * 0x9E3779B97F4A7C15            (wrapping u64)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    u = float64(z >> 40) / 2**24
    value = float32(lo + (hi - lo) * u)               (computed in float64)
Ranges: ndim >= 2: b = sqrt(6 / prod(shape[1:])), (-b, b);
        ndim == 1: *running_var (0.5, 1.5), *running_mean (-0.2, 0.2),
                   *.weight (0.5, 1.5), *.bias (-0.2, 0.2); else error.
Input: name "input", shape [3, 3, H, W], range (-2, 2).
Seed: "ferrovision-parity-v1".

Self-check (``--selftest``), seed "ferrovision-parity-v1":
    fnv1a64("ferrovision-parity-v1/input")        = 0x2bba40a66f433992
    fnv1a64("ferrovision-parity-v1/conv1.weight") = 0xe9cc3b1fc06f6b47
    fvrng("input", [4], range (-2, 2)) =
        [1.8628406524658203, -0.7095105648040771,
         0.7519381046295166, -1.930229663848877]
        (f32 bits 0x3fee7190 0xbf35a27c 0x3f407f04 0xbff711c4)
    fvrng("conv1.weight", [2, 3, 1, 1]) (range +-sqrt(6/3)), first 4 =
        [0.9533494114875793, 0.7538015842437744,
         1.0945457220077515, -1.223541021347046]
        (f32 bits 0x3f740eb5 0x3f40f924 0x3f8c1a13 0xbf9c9cfe)

Usage:
    python scripts/gen_parity_fixtures.py [--out tests/fixtures/parity]
                                          [--only CASE ...] [--selftest]
"""

import argparse
import json
import math
import os
import sys

import numpy as np

SEED = "ferrovision-parity-v1"
GENERATOR = "scripts/gen_parity_fixtures.py"

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 22

# Expected `--selftest` values (float32 bit patterns); see the docstring.
SELFTEST_INPUT_BITS = [0x3FEE7190, 0xBF35A27C, 0x3F407F04, 0xBFF711C4]
SELFTEST_CONV1_BITS = [0x3F740EB5, 0x3F40F924, 0x3F8C1A13, 0xBF9C9CFE]


def fnv1a64(s: str) -> int:
    h = _FNV_OFFSET
    for byte in s.encode("utf-8"):
        h ^= byte
        h = (h * _FNV_PRIME) & _MASK64
    return h


def fvrng_range(name: str, shape) -> tuple:
    shape = list(shape)
    if len(shape) >= 2:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= int(d)
        b = math.sqrt(6.0 / fan_in)
        return (-b, b)
    if len(shape) == 1:
        if name.endswith("running_var"):
            return (0.5, 1.5)
        if name.endswith("running_mean"):
            return (-0.2, 0.2)
        if name.endswith(".weight"):
            return (0.5, 1.5)
        if name.endswith(".bias"):
            return (-0.2, 0.2)
    raise ValueError(f"fvrng: no range rule for {name!r} with shape {shape}")


def fvrng(seed: str, name: str, shape, lo_hi=None) -> np.ndarray:
    """float32 array of `shape` filled deterministically from (seed, name)."""
    shape = [int(d) for d in shape]
    lo, hi = fvrng_range(name, shape) if lo_hi is None else lo_hi
    lo = float(lo)
    hi = float(hi)
    numel = 1
    for d in shape:
        numel *= d
    key = np.uint64(fnv1a64(f"{seed}/{name}"))
    out = np.empty(numel, dtype=np.float32)
    with np.errstate(over="ignore"):
        for start in range(0, numel, _CHUNK):
            stop = min(start + _CHUNK, numel)
            z = np.arange(start + 1, stop + 1, dtype=np.uint64)
            z *= _GOLDEN
            z += key
            z ^= z >> np.uint64(30)
            z *= _M1
            z ^= z >> np.uint64(27)
            z *= _M2
            z ^= z >> np.uint64(31)
            u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
            out[start:stop] = (lo + (hi - lo) * u).astype(np.float32)
    return out.reshape(shape)


# --------------------------------------------------------------------------
# torch part (imported lazily so --selftest works without torch)
# --------------------------------------------------------------------------

def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    return torch, nn, F, torchvision


def apply_tf_same_padding(model):
    """Turn every Conv2d into a TensorFlow 'SAME'-padded conv.

    Padding is set to (0, 0) and a forward pre-hook pads the input with
    F.pad: per spatial dim out = ceil(in / s), total = max((out - 1) * s +
    (k - 1) * d + 1 - in, 0), before = total // 2, after = total - before.
    """
    torch, nn, F, _ = _torch()

    def hook(mod, args):
        x = args[0]
        ih, iw = x.shape[-2], x.shape[-1]
        pads = []
        for size, k, s, d in (
            (ih, mod.kernel_size[0], mod.stride[0], mod.dilation[0]),
            (iw, mod.kernel_size[1], mod.stride[1], mod.dilation[1]),
        ):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            before = total // 2
            pads.append((before, total - before))
        (pt, pb), (pl, pr) = pads
        if pt or pb or pl or pr:
            x = F.pad(x, (pl, pr, pt, pb))
        return (x,) + tuple(args[1:])

    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.padding = (0, 0)
            m.register_forward_pre_hook(hook)
            n += 1
    assert n > 0
    return model


def build_mobilenet_v1(width: float, num_classes: int):
    """MobileNet v1 (paper Table 1 / TF-slim), min_depth 8, BN eps 1e-3."""
    torch, nn, F, _ = _torch()

    def depth(d):
        return max(int(d * width), 8)

    def cbr(cin, cout, k, stride, groups):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3),
            nn.ReLU6(inplace=True),
        )

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.depthwise = cbr(cin, cin, 3, stride, cin)
            self.pointwise = cbr(cin, cout, 1, 1, 1)

        def forward(self, x):
            return self.pointwise(self.depthwise(x))

    class MobileNetV1(nn.Module):
        def __init__(self):
            super().__init__()
            spec = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                    (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
            assert len(spec) == 13
            cin = depth(32)
            layers = [cbr(3, cin, 3, 2, 1)]
            for c, s in spec:
                layers.append(Block(cin, depth(c), s))
                cin = depth(c)
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.001),
                                            nn.Linear(cin, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = x.mean(dim=(2, 3))
            return self.classifier(x)

    return MobileNetV1()


def build_model(arch: str, opts: dict):
    torch, nn, F, tv = _torch()
    M = tv.models
    nc = opts["num_classes"]
    if arch in ("googlenet",):
        model = M.googlenet(weights=None, aux_logits=False,
                            transform_input=False, init_weights=False,
                            num_classes=nc)
    elif arch == "inception_v3":
        model = M.inception_v3(weights=None, aux_logits=False,
                               transform_input=False, init_weights=False,
                               num_classes=nc)
    elif arch == "mobilenet_v2":
        model = M.mobilenet_v2(weights=None, width_mult=opts["width"],
                               num_classes=nc)
    elif arch == "mobilenet_v1":
        model = build_mobilenet_v1(opts["width"], nc)
    else:
        model = getattr(M, arch)(weights=None, num_classes=nc)
    if opts["padding"] == "tf_same":
        apply_tf_same_padding(model)
    elif opts["padding"] != "torch":
        raise ValueError(opts["padding"])
    return model


def _case(arch, h, w, width=1.0, num_classes=1000, padding="torch"):
    return dict(arch=arch, hw=(h, w),
                options=dict(width=float(width), num_classes=int(num_classes),
                             padding=padding))


def all_cases():
    cases = {}
    for a in ("vgg11", "vgg13", "vgg16", "vgg19",
              "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"):
        cases[a] = _case(a, 97, 129)
    for a in ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101",
              "resnet152", "squeezenet1_0", "squeezenet1_1", "googlenet"):
        cases[a] = _case(a, 193, 225)
    cases["inception_v3"] = _case("inception_v3", 299, 299)
    cases["inception_v3_odd"] = _case("inception_v3", 311, 333)
    for al in (0.25, 0.5, 0.75, 1.0, 1.4):
        cases[f"mobilenet_v2_{al}_224"] = _case("mobilenet_v2", 224, 224, al)
    for r in (128, 160):
        cases[f"mobilenet_v2_1.0_{r}"] = _case("mobilenet_v2", r, r, 1.0)
    cases["mobilenet_v2_0.5_193x225"] = _case("mobilenet_v2", 193, 225, 0.5)
    cases["mobilenet_v2_1.0_224_tfsame"] = _case(
        "mobilenet_v2", 224, 224, 1.0, 1001, "tf_same")
    cases["mobilenet_v2_0.75_193x225_tfsame"] = _case(
        "mobilenet_v2", 193, 225, 0.75, 1001, "tf_same")
    for al in (0.25, 0.5, 0.75, 1.0, 1.4):
        cases[f"mobilenet_v1_{al}_224"] = _case(
            "mobilenet_v1", 224, 224, al, 1001, "tf_same")
    for al, r in ((0.25, 128), (0.5, 160), (0.75, 192)):
        cases[f"mobilenet_v1_{al}_{r}"] = _case(
            "mobilenet_v1", r, r, al, 1001, "tf_same")
    cases["mobilenet_v1_1.0_193x225"] = _case(
        "mobilenet_v1", 193, 225, 1.0, 1001, "tf_same")
    return cases


def fill_state_dict(model, seed):
    """Fill every state_dict tensor from fvrng; return [[name, shape], ...]."""
    torch, _, _, _ = _torch()
    params = []
    sd = model.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            if name.endswith("num_batches_tracked"):
                continue
            if t.dtype != torch.float32:
                raise TypeError(f"{name}: unexpected dtype {t.dtype}")
            shape = list(t.shape)
            t.copy_(torch.from_numpy(fvrng(seed, name, shape)))
            params.append([name, shape])
    # Make sure the values really landed in the module (not a copy).
    check = model.state_dict()
    for name, shape in params[:3] + params[-3:]:
        ref = torch.from_numpy(fvrng(seed, name, shape))
        assert torch.equal(check[name], ref), name
    return params


def write_safetensors_f32(path, name, array, metadata):
    """Write one little-endian float32 tensor as safetensors, byte-stable.

    safetensors.save_file orders the header keys nondeterministically, so
    regenerating would churn the committed files; writing the (simple)
    format by hand with sorted keys makes reruns byte-identical.  The result
    is re-read with the safetensors library by the caller.
    """
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header = {
        "__metadata__": dict(sorted(metadata.items())),
        name: {"dtype": "F32", "shape": list(array.shape),
               "data_offsets": [0, len(data)]},
    }
    hb = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hb += b" " * (-len(hb) % 8)  # align the data section to 8 bytes
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        f.write(data)
    os.replace(tmp, path)


def run_case(case, spec, out_dir):
    torch, nn, F, tv = _torch()
    from safetensors.torch import load_file
    from safetensors import safe_open

    arch, (h, w), opts = spec["arch"], spec["hw"], spec["options"]
    model = build_model(arch, opts)
    params = fill_state_dict(model, SEED)
    model.eval()
    input_shape = [3, 3, h, w]
    x = torch.from_numpy(fvrng(SEED, "input", input_shape, (-2.0, 2.0)))
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor):  # namedtuple outputs
        logits = logits[0]
    logits = logits.detach().float().contiguous()
    nc = opts["num_classes"]
    assert list(logits.shape) == [3, nc], logits.shape
    if not torch.isfinite(logits).all():
        print(f"WARNING {case}: non-finite logits!", file=sys.stderr)
    maxabs = logits.abs().max().item()
    spread = (logits.max(dim=1).values - logits.min(dim=1).values)
    if (spread < 1e-3 * maxabs).any() or maxabs == 0.0:
        print(f"WARNING {case}: degenerate logits (per-image max-min "
              f"{spread.tolist()}, max|logit| {maxabs})", file=sys.stderr)
    top = torch.topk(logits[0], 6)
    gaps = (top.values[:-1] - top.values[1:]).tolist()
    if min(gaps[:5]) < 1e-4 * max(maxabs, 1e-30):
        print(f"WARNING {case}: near-tied top-5 of image 0 (gaps {gaps})",
              file=sys.stderr)

    meta = {
        "arch": arch,
        "options": json.dumps(opts),
        "input_shape": json.dumps(input_shape),
        "seed": SEED,
        "params": json.dumps(params, separators=(",", ":")),
        "generator": GENERATOR,
        "torch": torch.__version__,
        "torchvision": tv.__version__,
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{case}.safetensors")
    write_safetensors_f32(path, "logits", logits.numpy(), meta)

    # Verify the file we just wrote.
    back = load_file(path)
    assert set(back) == {"logits"} and torch.equal(back["logits"], logits)
    with safe_open(path, framework="pt") as f:
        m = f.metadata()
    assert m["arch"] == arch and m["seed"] == SEED
    assert json.loads(m["options"]) == opts
    assert json.loads(m["input_shape"]) == input_shape
    assert json.loads(m["params"]) == params

    size = os.path.getsize(path)
    nparams = sum(math.prod(s) for _, s in params)
    print(f"{case}: arch={arch} input={input_shape} tensors={len(params)} "
          f"numel={nparams} max|logit|={maxabs!r} size={size} B")
    print("    top5(img0): " + ", ".join(
        f"{i}:{v:.6g}" for v, i in zip(top.values[:5].tolist(),
                                        top.indices[:5].tolist())))
    sys.stdout.flush()
    return path, size, maxabs


def selftest():
    a = fvrng(SEED, "input", [4], (-2.0, 2.0))
    b = fvrng(SEED, "conv1.weight", [2, 3, 1, 1]).reshape(-1)
    print(f'fnv1a64("{SEED}/input") = {fnv1a64(SEED + "/input"):#018x}')
    print(f'fnv1a64("{SEED}/conv1.weight") = '
          f'{fnv1a64(SEED + "/conv1.weight"):#018x}')
    print("input [4] (-2,2):", [repr(float(v)) for v in a[:4]])
    print("input [4] (-2,2) f32 bits:", [f"{v:#010x}" for v in
                                          a[:4].view(np.uint32).tolist()])
    print("conv1.weight [2,3,1,1] (+-sqrt(2)):",
          [repr(float(v)) for v in b[:4]])
    print("conv1.weight f32 bits:", [f"{v:#010x}" for v in
                                      b[:4].view(np.uint32).tolist()])
    ok = (a[:4].view(np.uint32).tolist() == SELFTEST_INPUT_BITS and
          b[:4].view(np.uint32).tolist() == SELFTEST_CONV1_BITS)
    print("selftest", "OK" if ok else "MISMATCH with recorded values")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="tests/fixtures/parity")
    p.add_argument("--only", nargs="+", metavar="CASE")
    p.add_argument("--selftest", action="store_true")
    args = p.parse_args(argv)
    if args.selftest:
        return 0 if selftest() else 1

    torch, _, _, _ = _torch()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cases = all_cases()
    names = list(cases)
    if args.only:
        unknown = [c for c in args.only if c not in cases]
        if unknown:
            p.error(f"unknown case(s) {unknown}; known: {names}")
        names = args.only
    total = 0
    for c in names:
        _, size, _ = run_case(c, cases[c], args.out)
        total += size
    print(f"wrote {len(names)} file(s), {total} bytes total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
