#!/usr/bin/env python3
"""Convert pretrained weights into ferrovision's self-describing safetensors.

    python scripts/convert_weights.py tflite FILE.tflite [--labels FILE] [--out FILE]
    python scripts/convert_weights.py torchvision NAME [--weights ENUM] [--input FILE.pth] [--out FILE]

Every output file carries, in its safetensors ``__metadata__`` (all values are strings, JSON
where structured): ``format``, ``architecture``, ``variant``, ``width_multiplier``, ``input_size``,
``num_classes``, ``padding`` (``torch`` | ``tf_same``), ``bn_folded``, ``bn_eps``, ``preprocessing``,
``labels``, ``source`` and ``licence``. ``ferrovision::pretrained::Model::load`` rebuilds the
architecture from that metadata alone.

This file is the one place where foreign parameter names are mapped to ours (torchvision's
``state_dict`` names; see ``src/archs/mobilenet.rs`` for MobileNet v1's).

Only numpy, safetensors and the ``tflite`` flatbuffer schema are needed for TFLite files;
torch / torchvision are imported lazily for the torchvision source.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

FORMAT = "ferrovision/1"

# Preprocessing conventions (value = (pixel · scale − mean) / std, per channel in channel_order).
TF_SLIM_PREPROCESSING = {
    # TF-slim's inception preprocessing at eval: central crop of 87.5 %, bilinear resize, [-1, 1].
    "resize": "crop_fraction",
    "crop_fraction": 0.875,
    "interpolation": "bilinear",
    "antialias": False,
    "scale": 1.0 / 255.0,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "channel_order": "RGB",
}


def torchvision_preprocessing(resize: int, crop: int) -> dict:
    # torchvision's ImageClassification transform: resize shorter side (antialiased bilinear),
    # center crop, ImageNet mean / std.
    return {
        "resize": "shorter_side",
        "resize_size": resize,
        "crop_size": [crop, crop],
        "interpolation": "bilinear",
        "antialias": True,
        "scale": 1.0 / 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "channel_order": "RGB",
    }


class ConversionError(Exception):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_bytes(arr: np.ndarray, dtype: str) -> bytes:
    """Little-endian bytes of `arr` as f32, f16 or bf16 (round to nearest even)."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "f32":
        return a.astype("<f4").tobytes()
    if dtype == "f16":
        return a.astype("<f2").tobytes()
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # bf16: keep the top 16 bits, RNE
    return rounded.astype("<u2").tobytes()


def write(tensors: dict, metadata: dict, out: Path, dtype: str) -> None:
    """Writes a safetensors file (sorted names, 8-byte aligned header) with string metadata."""
    for name, t in tensors.items():
        if not np.all(np.isfinite(t)):
            raise ConversionError(f"tensor {name} has NaN or Inf values")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta["dtype"] = dtype
    st_dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[dtype]
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name in sorted(tensors):
        blob = to_bytes(tensors[name], dtype)
        header[name] = {"dtype": st_dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(tensors)} tensors)")


# ---------------------------------------------------------------------------------------------
# TensorFlow Lite (TF-slim MobileNet v1 / v2, quantized)
# ---------------------------------------------------------------------------------------------

SUPPORTED_TFLITE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX", "SQUEEZE",
                        "QUANTIZE", "DEQUANTIZE", "MEAN"}

# TFLite tensor types (schema.fbs TensorType)
TFL_FLOAT32, TFL_INT32, TFL_UINT8, TFL_INT8 = 0, 2, 3, 9


def mobilenet_v1_names() -> list[tuple[str, str]]:
    # (our name, TFLite op) in execution order. TF-slim MobilenetV1/Conv2d_0 → features.0.0,
    # Conv2d_i_depthwise → features.i.depthwise.0, Conv2d_i_pointwise → features.i.pointwise.0,
    # Logits/Conv2d_1c_1x1 (1×1 conv on the pooled features) → classifier.1 (a Linear).
    names = [("features.0.0", "CONV_2D")]
    for i in range(1, 14):
        names += [(f"features.{i}.depthwise.0", "DEPTHWISE_CONV_2D"), (f"features.{i}.pointwise.0", "CONV_2D")]
    return names + [("classifier.1", "CONV_2D")]


def mobilenet_v2_names() -> list[tuple[str, str]]:
    # TF-slim MobilenetV2/Conv → features.0.0; expanded_conv (t = 1): depthwise → features.1.conv.0.0,
    # project → features.1.conv.1; expanded_conv_k (k = 1..16): expand → features.{k+1}.conv.0.0,
    # depthwise → .conv.1.0, project → .conv.2; Conv_1 → features.18.0; Logits → classifier.1.
    names = [("features.0.0", "CONV_2D"), ("features.1.conv.0.0", "DEPTHWISE_CONV_2D"), ("features.1.conv.1", "CONV_2D")]
    for b in range(2, 18):
        names += [(f"features.{b}.conv.0.0", "CONV_2D"), (f"features.{b}.conv.1.0", "DEPTHWISE_CONV_2D"),
                  (f"features.{b}.conv.2", "CONV_2D")]
    return names + [("features.18.0", "CONV_2D"), ("classifier.1", "CONV_2D")]


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def dequantize(model, sg, tensor_index: int, per_axis: int | None = None) -> np.ndarray:
    """real = scale × (q − zero_point), per tensor or per channel along the quantized dimension."""
    t = sg.Tensors(tensor_index)
    name = t.Name().decode()
    data = model.Buffers(t.Buffer()).DataAsNumpy()
    if isinstance(data, int) or data is None or len(data) == 0:
        raise ConversionError(f"tensor {name} has no constant data")
    dtype = {TFL_FLOAT32: np.float32, TFL_INT32: np.int32, TFL_UINT8: np.uint8, TFL_INT8: np.int8}.get(t.Type())
    if dtype is None:
        raise ConversionError(f"tensor {name}: unsupported tensor type {t.Type()}")
    q = np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy())
    if dtype == np.float32:
        return q.astype(np.float32)
    quant = t.Quantization()
    scale = quant.ScaleAsNumpy() if quant is not None else None
    if scale is None or isinstance(scale, int) or len(scale) == 0:
        raise ConversionError(f"tensor {name}: quantized without a scale")
    zp = quant.ZeroPointAsNumpy()
    zp = np.zeros_like(scale, dtype=np.int64) if isinstance(zp, int) else zp.astype(np.int64)
    real = q.astype(np.float64) - (zp if len(zp) == 1 else 0)
    if len(scale) == 1:
        real = real * scale[0]
    else:
        axis = quant.QuantizedDimension()
        shape = [1] * q.ndim
        shape[axis] = len(scale)
        real = (q.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)
    return real.astype(np.float32)


def bias_dequantize(model, sg, bias_index: int, input_index: int, weight_index: int) -> np.ndarray:
    """int32 bias: its own scale when the file stores one, else input_scale × weight_scale."""
    t = sg.Tensors(bias_index)
    if t.Type() != TFL_INT32:
        return dequantize(model, sg, bias_index)
    quant = t.Quantization()
    scale = quant.ScaleAsNumpy() if quant is not None else None
    if scale is None or isinstance(scale, int) or len(scale) == 0:
        in_s = sg.Tensors(input_index).Quantization().ScaleAsNumpy()
        w_s = sg.Tensors(weight_index).Quantization().ScaleAsNumpy()
        data = np.frombuffer(model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), dtype=np.int32)
        return (data.astype(np.float64) * (in_s[0] * w_s)).astype(np.float32)
    return dequantize(model, sg, bias_index)


def is_linear_bottleneck(our: str) -> bool:
    # MobileNetV2 projections (features.1.conv.1, features.k.conv.2) and the logits have no activation.
    return our == "classifier.1" or bool(re.fullmatch(r"features\.1\.conv\.1|features\.\d+\.conv\.2", our))


def check_tflite_options(path: Path, our: str, kind: str, op, w: np.ndarray) -> None:
    """Refuse anything our model would silently compute differently: VALID padding on a k×k conv,
    a depth multiplier other than 1, an unexpected fused activation."""
    from tflite.ActivationFunctionType import ActivationFunctionType as Act
    from tflite.Conv2DOptions import Conv2DOptions
    from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
    from tflite.FullyConnectedOptions import FullyConnectedOptions
    from tflite.Padding import Padding

    cls = {"CONV_2D": Conv2DOptions, "DEPTHWISE_CONV_2D": DepthwiseConv2DOptions,
           "FULLY_CONNECTED": FullyConnectedOptions}[kind]
    table = op.BuiltinOptions()
    o = cls()
    o.Init(table.Bytes, table.Pos)
    if kind != "FULLY_CONNECTED" and w.ndim == 4 and w.shape[-1] > 1 and o.Padding() != Padding.SAME:
        raise ConversionError(f"{path}: {our} uses VALID padding; only SAME is supported")
    if kind == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() not in (0, 1):
        raise ConversionError(f"{path}: {our}: depth multiplier {o.DepthMultiplier()} is not supported")
    want = Act.NONE if is_linear_bottleneck(our) else Act.RELU6
    if o.FusedActivationFunction() != want:
        raise ConversionError(f"{path}: {our}: fused activation {o.FusedActivationFunction()}, expected {want}")


def convert_tflite(path: Path, labels_path: Path | None) -> tuple[dict, dict]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ConversionError(f"{path}: not a TensorFlow Lite flatbuffer (no TFL3 file identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        sg = model.Subgraphs(0) if model.SubgraphsLength() > 0 else None
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise ConversionError(f"{path}: corrupt TensorFlow Lite flatbuffer ({e})")
    if sg is None:
        raise ConversionError(f"{path}: the model has no subgraph")
    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}

    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"builtin code {code}")
        if name not in SUPPORTED_TFLITE_OPS:
            raise ConversionError(f"{path}: unsupported TFLite op {name} (operator {i}); "
                                  f"supported: {', '.join(sorted(SUPPORTED_TFLITE_OPS))}")
        ops.append((name, op))

    convs = [(n, op) for n, op in ops if n in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    n_dw = sum(n == "DEPTHWISE_CONV_2D" for n, _ in convs)
    if n_dw == 13:
        arch, names = "mobilenet_v1", mobilenet_v1_names()
    elif n_dw == 17:
        arch, names = "mobilenet_v2", mobilenet_v2_names()
    else:
        raise ConversionError(f"{path}: {n_dw} depthwise convolutions: neither MobileNet v1 (13) nor v2 (17)")
    if convs and convs[-1][0] == "FULLY_CONNECTED":
        names[-1] = ("classifier.1", "FULLY_CONNECTED")  # fine-tuned heads are exported as FC
    if [n for n, _ in convs] != [kind for _, kind in names]:
        raise ConversionError(f"{path}: the convolution sequence does not match {arch}'s layout")

    tensors = {}
    for (our, kind), (_, op) in zip(names, convs):
        inp, w_idx, b_idx = op.InputsAsNumpy()[:3]
        w = dequantize(model, sg, w_idx)
        b = bias_dequantize(model, sg, b_idx, inp, w_idx)
        if kind == "CONV_2D":
            w = w.transpose(0, 3, 1, 2)  # TFLite O×H×W×I → O×I×H×W
        elif kind == "DEPTHWISE_CONV_2D":
            w = w.transpose(3, 0, 1, 2)  # TFLite 1×H×W×C (depth multiplier 1) → C×1×H×W
        if our == "classifier.1":
            w = w.reshape(w.shape[0], -1)  # 1×1 conv on pooled features (or FC) ≡ Linear O×I
        check_tflite_options(path, our, kind, op, w)
        tensors[f"{our}.weight"] = w
        tensors[f"{our}.bias"] = b

    input_shape = sg.Tensors(sg.InputsAsNumpy()[0]).ShapeAsNumpy().tolist()  # 1×H×W×3
    size = int(input_shape[1])
    num_classes = tensors["classifier.1.weight"].shape[0]
    if arch == "mobilenet_v1":
        width = tensors["features.13.pointwise.0.weight"].shape[0] / 1024
    else:
        width = tensors["features.17.conv.2.weight"].shape[0] / 320
    m = re.search(r"_(\d+(?:\.\d+)?)_(\d+)", path.name)
    if m and abs(float(m.group(1)) - width) < 0.13:
        width = float(m.group(1))  # the published multiplier (channel rounding blurs e.g. 0.35)

    labels = None
    if labels_path is not None:
        labels = [l.rstrip("\n") for l in labels_path.read_text().splitlines()]
        if len(labels) != num_classes:
            raise ConversionError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} classes")
    meta = {
        "format": FORMAT,
        "architecture": arch,
        "variant": f"{arch}_{width}_{size}",
        "width_multiplier": str(width),
        "input_size": str(size),
        "num_classes": str(num_classes),
        "padding": "tf_same",
        "bn_folded": "true",
        "bn_eps": "0.001",
        "preprocessing": dict(TF_SLIM_PREPROCESSING, crop_size=[size, size]),
        "labels": labels if labels is not None else [str(i) for i in range(num_classes)],
        "background_class": "0" if num_classes == 1001 else "none",
        "source": {"framework": "tflite", "file": path.name, "sha256": sha256(path),
                   "quantization": "dequantized from uint8/int8 (real = scale × (q − zero_point))"},
        "licence": "Apache-2.0 (TensorFlow models / Coral test data)",
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# torchvision (state_dict names are already ours)
# ---------------------------------------------------------------------------------------------

TORCHVISION_ARCHS = ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
                     "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2",
                     "squeezenet1_0", "squeezenet1_1", "googlenet", "inception_v3"]


def convert_torchvision(name: str, weights: str | None, input_path: Path | None) -> tuple[dict, dict]:
    import torch
    import torchvision

    if name not in TORCHVISION_ARCHS:
        raise ConversionError(f"unknown torchvision architecture {name}; known: {', '.join(TORCHVISION_ARCHS)}")
    enum = torchvision.models.get_model_weights(name)
    w = enum[weights] if weights else enum.DEFAULT
    if input_path is not None:
        sd = torch.load(input_path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        source = {"framework": "torchvision", "file": input_path.name, "sha256": sha256(input_path),
                  "weights": str(w) if weights else None}
    else:
        sd = w.get_state_dict(progress=True)  # downloads on a connected machine
        source = {"framework": "torchvision", "weights": str(w), "url": w.url}
    tensors = {k: v.detach().float().numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    # Auxiliary classifiers are training-only; inference never reads them.
    tensors = {k: v for k, v in tensors.items() if not re.match(r"^(AuxLogits|aux1|aux2)\.", k)}
    num_classes = next(v.shape[0] for k, v in reversed(list(tensors.items())) if k.endswith(".bias"))
    tf = w.transforms()
    crop = int(tf.crop_size[0]) if hasattr(tf, "crop_size") else 224
    resize = int(tf.resize_size[0]) if hasattr(tf, "resize_size") else 256
    labels = w.meta.get("categories") if num_classes == len(w.meta.get("categories", [])) else [str(i) for i in range(num_classes)]
    meta = {
        "format": FORMAT,
        "architecture": name,
        "variant": name,
        "width_multiplier": "1.0",
        "input_size": str(crop),
        "num_classes": str(num_classes),
        "padding": "torch",
        "bn_folded": "false",
        "bn_eps": "0.001" if name in ("googlenet", "inception_v3") else "1e-05",
        # torchvision's pretrained GoogLeNet / Inception v3 expect transform_input=True.
        "transform_input": "true" if name in ("googlenet", "inception_v3") else "false",
        "preprocessing": torchvision_preprocessing(resize, crop),
        "labels": labels,
        "background_class": "none",
        "source": source,
        "licence": "BSD-3-Clause (torchvision); see the checkpoint's own terms",
    }
    return tensors, meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    t = sub.add_parser("tflite", help="TensorFlow Lite flatbuffer (TF-slim MobileNet v1/v2)")
    t.add_argument("file", type=Path)
    t.add_argument("--labels", type=Path)
    tv = sub.add_parser("torchvision", help="torchvision checkpoint (downloaded, or --input offline)")
    tv.add_argument("name")
    tv.add_argument("--weights", help="torchvision weight enum member, e.g. IMAGENET1K_V2")
    tv.add_argument("--input", type=Path, help="a .pth state_dict saved with torch.save")
    for s in (t, tv):
        s.add_argument("--out", type=Path)
        s.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    args = p.parse_args(argv)
    try:
        if args.source == "tflite":
            if not args.file.is_file():
                raise ConversionError(f"{args.file}: no such file")
            tensors, meta = convert_tflite(args.file, args.labels)
            default_out = Path("weights") / (args.file.stem + ".safetensors")
        else:
            tensors, meta = convert_torchvision(args.name, args.weights, args.input)
            default_out = Path("weights") / f"{args.name}.safetensors"
        write(tensors, meta, args.out or default_out, args.dtype)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
