#!/usr/bin/env python3
"""Convert pretrained weights into ferrovision's self-describing safetensors.

    python scripts/convert_weights.py tflite FILE.tflite [--labels FILE] [--out FILE]
    python scripts/convert_weights.py keras FILE.h5 --arch NAME [--width A] [--input-size S] [--out FILE]
    python scripts/convert_weights.py torchvision NAME [--weights ENUM] [--input FILE.pth] [--out FILE]
    python scripts/convert_weights.py tfjs DIR/model.json [--labels FILE] [--out FILE]

Every output file carries, in its safetensors ``__metadata__`` (all values are strings, JSON
where structured): ``format``, ``architecture``, ``variant``, ``width_multiplier``, ``input_size``,
``num_classes``, ``padding`` (``torch`` | ``tf_same``), ``bn_folded``, ``bn_eps``, ``preprocessing``,
``labels``, ``source`` and ``licence``. ``ferrovision::pretrained::Model::load`` rebuilds the
architecture from that metadata alone.

This file is the one place where foreign parameter names are mapped to ours (torchvision's
``state_dict`` names; see ``src/archs/mobilenet.rs`` for MobileNet v1's).

Only numpy, safetensors and the ``tflite`` flatbuffer schema are needed for TFLite files;
torch / torchvision (torchvision source) and h5py (Keras source) are imported lazily.
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
TFL_FLOAT32, TFL_FLOAT16, TFL_INT32, TFL_UINT8, TFL_INT8 = 0, 1, 2, 3, 9


SUPPORTED_SSD_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RESHAPE", "CONCATENATION", "LOGISTIC", "DEQUANTIZE",
                     "CUSTOM:TFLite_Detection_PostProcess"}


def tflite_ops(path: Path, model, sg, op_names: dict, supported: set, where: str = "") -> list[tuple[str, object]]:
    """(op name, operator) in execution order, custom ops as `CUSTOM:<code>`; an op outside
    `supported` is named with its index."""
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"builtin code {code}")
        if name == "CUSTOM":
            name = "CUSTOM:" + oc.CustomCode().decode()
        if name not in supported:
            raise ConversionError(f"{path}: unsupported TFLite op {name} (operator {i}){where}; "
                                  f"supported: {', '.join(sorted(supported))}")
        ops.append((name, op))
    return ops


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
    dtype = {TFL_FLOAT32: np.float32, TFL_FLOAT16: np.float16, TFL_INT32: np.int32, TFL_UINT8: np.uint8,
             TFL_INT8: np.int8}.get(t.Type())
    if dtype is None:
        raise ConversionError(f"tensor {name}: unsupported tensor type {t.Type()}")
    q = np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.ShapeAsNumpy())
    if dtype in (np.float32, np.float16):
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
    names = [sg.Tensors(i).Name().decode() for i in range(sg.TensorsLength())]
    if any(n.startswith("BoxPredictor_") for n in names):
        return convert_tflite_ssd(path, labels_path, model, sg, op_names)
    if any("MobilenetV1/heatmap_2" in n for n in names):
        return convert_tflite_posenet(path, model, sg, op_names)
    if any(n.startswith("kpt_heatmap_0/") for n in names):
        return convert_tflite_movenet(path, model, sg, op_names)

    ops = tflite_ops(path, model, sg, op_names, SUPPORTED_TFLITE_OPS)

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
# TensorFlow Lite SSD MobileNetV2 (TF Object Detection API `ssd_mobilenet_v2`)
# ---------------------------------------------------------------------------------------------

# The SSD anchor generator of TF's ssd_mobilenet_v2 configs (`ssd_anchor_generator` in
# pipeline.config; MediaPipe's SsdAnchorsCalculator options for its SSD MobileNetV2 files), used
# when a file does not store its anchors.
SSD_ANCHOR_GENERATOR = {"generator": "ssd_anchor_generator", "num_layers": 6, "min_scale": 0.2, "max_scale": 0.95,
                        "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333], "interpolated_scale_aspect_ratio": 1.0,
                        "reduce_boxes_in_lowest_layer": True}
# pipeline.config of ssd_mobilenet_v2: faster_rcnn_box_coder scales, post_processing with
# batch_non_max_suppression (score 1e-8, IoU 0.6, 100 detections); TFLite's export uses fast NMS.
SSD_DEFAULT_POSTPROCESS = {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0,
                           "nms_score_threshold": 1e-8, "nms_iou_threshold": 0.6, "max_detections": 100,
                           "max_classes_per_detection": 1, "detections_per_class": 100, "use_regular_nms": False}


def tf_mobilenet_v2_layer(scope: str) -> tuple[str, str] | None:
    """A TF-slim / TF-Hub MobileNetV2 scope after `MobilenetV2/` (`Conv`, `expanded_conv_3/expand`,
    …) → (our torchvision-style module path, its activation)."""
    if scope == "Conv":
        return "features.0.0", "relu6"
    if scope == "Conv_1":
        return "features.18.0", "relu6"
    if m := re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|project)", scope):
        k, part = int(m.group(1) or 0), m.group(2)
        if k == 0:  # t = 1: no expansion
            return {"depthwise": ("features.1.conv.0.0", "relu6"),
                    "project": ("features.1.conv.1", "none")}.get(part)
        return {"expand": (f"features.{k + 1}.conv.0.0", "relu6"),
                "depthwise": (f"features.{k + 1}.conv.1.0", "relu6"),
                "project": (f"features.{k + 1}.conv.2", "none")}[part]
    return None


def ssd_layer_name(scope: str) -> tuple[str, str] | None:
    """TF scope of an SSD MobileNetV2 convolution → (our module path, its activation)."""
    fe = "FeatureExtractor/MobilenetV2/"
    if scope.startswith(fe) and (mapped := tf_mobilenet_v2_layer(scope[len(fe):])):
        return "backbone." + mapped[0], mapped[1]
    # the extra feature layers: layer_19_1_Conv2d_{j}_1x1_{d/2}, then layer_19_2_Conv2d_{j}_3x3_s2_{d}
    if m := re.fullmatch(re.escape(fe) + r"layer_19_([12])_Conv2d_(\d)_(?:1x1|3x3_s2)_\d+", scope):
        return f"extra.{int(m.group(2)) - 2}.{int(m.group(1)) - 1}", "relu6"
    if m := re.fullmatch(r"BoxPredictor_(\d)/(BoxEncodingPredictor|ClassPredictor)", scope):
        head = "box_encoding" if m.group(2) == "BoxEncodingPredictor" else "class_prediction"
        return f"head.{head}.{m.group(1)}", "none"
    return None


def read_detection_labels(path: Path, columns: int, label_offset: int) -> list[str]:
    """One label per class-score column, column 0 the background. Two formats: `ID name` lines
    (Coral's coco_labels.txt: the model's class output is the id, and ids have gaps, which
    become "n/a" as in torchvision's COCO categories), or one name per column (line 0 the
    background, as MediaPipe's label maps)."""
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    keyed = [re.fullmatch(r"(\d+)\s+(.+)", l) for l in lines]
    if all(keyed):
        labels = ["background"] + ["n/a"] * (columns - label_offset)
        for m in keyed:
            i = int(m.group(1)) + label_offset
            if i >= columns:
                raise ConversionError(f"{path}: id {m.group(1)} is beyond the model's {columns - label_offset} classes")
            labels[i] = m.group(2)
        return labels
    if len(lines) != columns:
        raise ConversionError(f"{path}: {len(lines)} labels for a model with {columns} class-score columns")
    return ["background"] + lines[label_offset:]


def quantized_range(sg, idx: int) -> tuple[float, float] | tuple[None, None]:
    """The real interval a uint8 tensor can hold: scale × ([0, 255] − zero_point)."""
    t = sg.Tensors(idx)
    q = t.Quantization()
    scale = q.ScaleAsNumpy() if q is not None else None
    if t.Type() != TFL_UINT8 or scale is None or isinstance(scale, int) or len(scale) != 1:
        return None, None
    zp = int(q.ZeroPointAsNumpy()[0])
    return float(scale[0]) * (0 - zp), float(scale[0]) * (255 - zp)


def convert_tflite_ssd(path: Path, labels_path: Path | None, model, sg, op_names: dict) -> tuple[dict, dict]:
    """SSD MobileNetV2 as TF's Object Detection API exports it to TFLite, quantized (weights
    dequantized here) or float16 (DEQUANTIZE ops in front of the convolutions). Layers are
    mapped by the TF scope that names each convolution's output, so the op order does not matter."""
    import flatbuffers.flexbuffers as flex
    from tflite.ActivationFunctionType import ActivationFunctionType as Act
    from tflite.Conv2DOptions import Conv2DOptions
    from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
    from tflite.Padding import Padding

    ops = tflite_ops(path, model, sg, op_names, SUPPORTED_SSD_OPS, " in an SSD file")
    producer = {int(o): (name, op) for name, op in ops for o in op.OutputsAsNumpy()}

    def const(idx: int) -> np.ndarray:
        """A constant tensor, through a DEQUANTIZE op (float16 files) where there is one."""
        if idx in producer and producer[idx][0] == "DEQUANTIZE":
            idx = int(producer[idx][1].InputsAsNumpy()[0])
        return dequantize(model, sg, idx)

    tensors, post = {}, None
    for name, op in ops:
        if name.startswith("CUSTOM:"):
            post = flex.Loads(op.CustomOptionsAsNumpy().tobytes())
            anchors_idx = int(op.InputsAsNumpy()[2])
            continue
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        out_name = sg.Tensors(int(op.OutputsAsNumpy()[0])).Name().decode().split(";")[0]
        scope = out_name.rsplit("/", 1)[0].removesuffix("/BatchNorm")  # …/Relu6, …/BatchNorm/FusedBatchNormV3
        mapped = ssd_layer_name(scope)
        if mapped is None:
            raise ConversionError(f"{path}: convolution `{out_name}` is not part of SSD MobileNetV2's layout")
        our, act = mapped
        inp, w_idx, b_idx = (int(i) for i in op.InputsAsNumpy()[:3])
        w = const(w_idx)
        if sg.Tensors(b_idx).Type() == TFL_INT32:
            b = bias_dequantize(model, sg, b_idx, inp, w_idx)
        else:
            b = const(b_idx)
        opts = (Conv2DOptions if name == "CONV_2D" else DepthwiseConv2DOptions)()
        table = op.BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        if w.shape[1] > 1 and opts.Padding() != Padding.SAME:
            raise ConversionError(f"{path}: {our} uses VALID padding; only SAME is supported")
        if name == "DEPTHWISE_CONV_2D" and opts.DepthMultiplier() not in (0, 1):
            raise ConversionError(f"{path}: {our}: depth multiplier {opts.DepthMultiplier()} is not supported")
        want = {"relu6": Act.RELU6, "none": Act.NONE}[act]
        fused = opts.FusedActivationFunction()
        if fused == Act.NONE and want == Act.RELU6 and quantized_range(sg, int(op.OutputsAsNumpy()[0]))[0] == 0.0:
            fused = Act.RELU6  # TF1 quantized files: the uint8 output range [0, ≤ 6] is the ReLU6 (the graph's Relu6)
        if fused != want:
            raise ConversionError(f"{path}: {our}: fused activation {opts.FusedActivationFunction()}, expected {want}")
        w = w.transpose(0, 3, 1, 2) if name == "CONV_2D" else w.transpose(3, 0, 1, 2)
        if f"{our}.weight" in tensors:
            raise ConversionError(f"{path}: two convolutions map to {our}")
        tensors[f"{our}.weight"], tensors[f"{our}.bias"] = w, b

    want = {f"head.{h}.{i}.weight" for h in ("box_encoding", "class_prediction") for i in range(6)}
    want |= {f"extra.{j}.{k}.weight" for j in range(4) for k in range(2)}
    want |= {"backbone.features.0.0.weight", "backbone.features.18.0.weight"}
    if missing := sorted(want - tensors.keys()):
        raise ConversionError(f"{path}: SSD MobileNetV2 layers missing: {', '.join(missing)}")

    columns = tensors["head.class_prediction.0.weight"].shape[0] // 3  # 3 anchors per cell on the lowest layer
    label_offset = 1  # column 0 is the background score (TF Object Detection API)
    detection = {"score_converter": "sigmoid", "label_offset": label_offset}
    if post is not None:
        if post.get("num_classes") != columns - label_offset:
            raise ConversionError(f"{path}: the post-processing op has {post.get('num_classes')} classes, "
                                  f"the class predictor {columns} columns")
        keys = ("y_scale", "x_scale", "h_scale", "w_scale", "nms_score_threshold", "nms_iou_threshold",
                "max_detections", "max_classes_per_detection", "detections_per_class", "use_regular_nms")
        settings = {k: post[k] for k in keys}
        anchors = dequantize(model, sg, anchors_idx)  # A×4: y_center, x_center, height, width
        tensors["anchors"] = anchors
        detection["anchors"] = "stored"
        detection["postprocess"] = "TFLite_Detection_PostProcess options of the file"
    else:
        settings = dict(SSD_DEFAULT_POSTPROCESS)
        detection["anchors"] = SSD_ANCHOR_GENERATOR
        detection["postprocess"] = "ssd_mobilenet_v2 pipeline.config defaults (the file has no post-processing op)"
    detection["box_coder"] = {k: float(settings[k]) for k in ("y_scale", "x_scale", "h_scale", "w_scale")}
    detection["nms"] = {"score_threshold": float(settings["nms_score_threshold"]),
                        "iou_threshold": float(settings["nms_iou_threshold"]),
                        "max_detections": int(settings["max_detections"]),
                        "max_classes_per_detection": int(settings["max_classes_per_detection"]),
                        "detections_per_class": int(settings["detections_per_class"]),
                        "use_regular_nms": bool(settings["use_regular_nms"])}

    inp = sg.Tensors(int(sg.InputsAsNumpy()[0]))
    size = int(inp.ShapeAsNumpy()[1])
    q = inp.Quantization()
    scale = q.ScaleAsNumpy() if q is not None else None
    if inp.Type() == TFL_UINT8 and scale is not None and not isinstance(scale, int) and len(scale):
        # the uint8 input is the pixel itself: real = scale × (pixel − zero_point)
        s, zp = float(scale[0]), float(q.ZeroPointAsNumpy()[0])
        norm = {"scale": s, "mean": [s * zp] * 3, "std": [1.0, 1.0, 1.0]}
    else:  # float input: TF Object Detection API's MobileNet preprocessing, (2 / 255) · pixel − 1
        norm = {"scale": 1.0 / 127.5, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]}
    # the app resizes the photo to 8-bit 300×300 pixels (PIL's bilinear), then the model normalises
    preprocessing = {"resize": "exact", "crop_size": [size, size], "interpolation": "bilinear", "antialias": True,
                     "round_to_uint8": True, **norm, "channel_order": "RGB"}
    width = tensors["backbone.features.0.0.weight"].shape[0] / 32
    labels = (read_detection_labels(labels_path, columns, label_offset) if labels_path is not None
              else ["background"] + [str(i) for i in range(columns - label_offset)])
    meta = {
        "format": FORMAT,
        "architecture": "ssd_mobilenet_v2",
        "variant": path.stem,
        "task": "detection",
        "width_multiplier": str(width),
        "input_size": str(size),
        "num_classes": str(columns),
        "padding": "tf_same",
        "bn_folded": "true",
        "bn_eps": "0.001",
        "preprocessing": preprocessing,
        "labels": labels,
        "background_class": "0",
        "detection": detection,
        "source": {"framework": "tflite", "file": path.name, "sha256": sha256(path),
                   "quantization": "dequantized (real = scale × (q − zero_point)) or float16 widened"},
        "licence": "Apache-2.0 (TensorFlow Object Detection API models; Coral / MediaPipe)",
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# TensorFlow Lite pose estimators: PoseNet (Coral's MobileNet v1 files) and MoveNet
# ---------------------------------------------------------------------------------------------

# COCO's 17 keypoints, in the order of the heatmap channels of both models.
COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]

SUPPORTED_POSENET_OPS = {"QUANTIZE", "DEQUANTIZE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION",
                         "CUSTOM:PosenetDecoderOp"}
SUPPORTED_MOVENET_OPS = {"CAST", "QUANTIZE", "DEQUANTIZE", "SUB", "MUL", "ADD", "DIV", "SQRT", "CONV_2D",
                         "DEPTHWISE_CONV_2D", "RESIZE_BILINEAR", "LOGISTIC", "RESHAPE", "ARG_MAX", "FLOOR_DIV",
                         "PACK", "UNPACK", "GATHER_ND", "CONCATENATION"}


def conv_options(op, kind: str):
    from tflite.Conv2DOptions import Conv2DOptions
    from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions

    o = (Conv2DOptions if kind == "CONV_2D" else DepthwiseConv2DOptions)()
    table = op.BuiltinOptions()
    o.Init(table.Bytes, table.Pos)
    return o


def convert_pose_convs(path: Path, model, sg, ops, layer_name) -> tuple[dict, dict]:
    """Every CONV_2D / DEPTHWISE_CONV_2D through `layer_name(output and bias names, weight name)` →
    (our path, activation); weights dequantized and transposed to ours, SAME padding and the
    fused activation checked. Returns the tensors and {our path: (stride, dilation)}."""
    from tflite.ActivationFunctionType import ActivationFunctionType as Act
    from tflite.Padding import Padding

    tensors, geometry = {}, {}
    for name, op in ops:
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        inp, w_idx, b_idx = (int(i) for i in op.InputsAsNumpy()[:3])
        out_idx = int(op.OutputsAsNumpy()[0])
        out_names = sg.Tensors(out_idx).Name().decode().split(";")
        w_name = sg.Tensors(w_idx).Name().decode().split(";")[0]
        mapped = layer_name(out_names + sg.Tensors(b_idx).Name().decode().split(";"), w_name)
        if mapped is None:
            raise ConversionError(f"{path}: convolution `{out_names[0]}` (weights `{w_name}`) is not part of the "
                                  f"model's layout")
        our, act = mapped
        w = dequantize(model, sg, w_idx)
        b = bias_dequantize(model, sg, b_idx, inp, w_idx)
        o = conv_options(op, name)
        if w.shape[1] > 1 and o.Padding() != Padding.SAME:
            raise ConversionError(f"{path}: {our} uses VALID padding; only SAME is supported")
        if name == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() not in (0, 1):
            raise ConversionError(f"{path}: {our}: depth multiplier {o.DepthMultiplier()} is not supported")
        want = {"relu6": Act.RELU6, "relu": Act.RELU, "none": Act.NONE}[act]
        fused = o.FusedActivationFunction()
        if fused == Act.NONE and want == Act.RELU6 and quantized_range(sg, out_idx)[0] == 0.0:
            fused = Act.RELU6  # TF1 quantized files: the uint8 output range [0, ≤ 6] is the ReLU6
        if fused != want:
            raise ConversionError(f"{path}: {our}: fused activation {o.FusedActivationFunction()}, expected {want}")
        w = w.transpose(0, 3, 1, 2) if name == "CONV_2D" else w.transpose(3, 0, 1, 2)
        if f"{our}.weight" in tensors:
            raise ConversionError(f"{path}: two convolutions map to {our}")
        tensors[f"{our}.weight"], tensors[f"{our}.bias"] = w, b
        geometry[our] = (o.StrideH(), o.DilationHFactor())
    return tensors, geometry


def uint8_input_normalisation(sg) -> dict:
    """The preprocessing entries of a uint8 input: real = scale × (pixel − zero_point)."""
    inp = sg.Tensors(int(sg.InputsAsNumpy()[0]))
    q = inp.Quantization()
    scale = q.ScaleAsNumpy() if q is not None else None
    if inp.Type() != TFL_UINT8 or scale is None or isinstance(scale, int) or len(scale) != 1:
        raise ConversionError("the input is not uint8 with one scale")
    s, zp = float(scale[0]), float(q.ZeroPointAsNumpy()[0])
    return {"scale": s, "mean": [s * zp] * 3, "std": [1.0, 1.0, 1.0]}


def convert_tflite_posenet(path: Path, model, sg, op_names: dict) -> tuple[dict, dict]:
    """PoseNet (MobileNet v1 at output stride 16) as Google Coral ships it: uint8 weights,
    an explicit PAD op in front of the stem, the four heads, then Coral's PosenetDecoderOp,
    whose options become the metadata's `pose` decoder."""
    import flatbuffers.flexbuffers as flex

    ops = tflite_ops(path, model, sg, op_names, SUPPORTED_POSENET_OPS, " in a PoseNet file")
    heads = {"heatmap_2": "heatmap", "offset_2": "offset", "displacement_fwd_2": "displacement_fwd",
             "displacement_bwd_2": "displacement_bwd"}

    def layer(out_names: list[str], w_name: str):
        first = out_names[0]
        if m := re.fullmatch(r"MobilenetV1/Conv2d_0/Relu6", first):
            return "backbone.features.0.0", "relu6"
        if m := re.fullmatch(r"MobilenetV1/Conv2d_(\d+)_(depthwise|pointwise)/Relu6", first):
            return f"backbone.features.{m.group(1)}.{m.group(2)}.0", "relu6"
        for n in out_names + [w_name]:
            if m := re.search(r"MobilenetV1/(heatmap_2|offset_2|displacement_fwd_2|displacement_bwd_2)/", n):
                return heads[m.group(1)], "none"
        return None

    tensors, geometry = convert_pose_convs(path, model, sg, ops, layer)
    want = {f"backbone.features.{i}.{p}.0.weight" for i in range(1, 14) for p in ("depthwise", "pointwise")}
    want |= {"backbone.features.0.0.weight"} | {f"{h}.weight" for h in heads.values()}
    if missing := sorted(want - tensors.keys()):
        raise ConversionError(f"{path}: PoseNet layers missing: {', '.join(missing)}")

    decoder = None
    input_pad = [0, 0, 0, 0]
    for name, op in ops:
        if name == "CUSTOM:PosenetDecoderOp":
            decoder = flex.Loads(op.CustomOptionsAsNumpy().tobytes())
        elif name == "PAD":
            t = sg.Tensors(int(op.InputsAsNumpy()[1]))
            pads = np.frombuffer(model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), dtype=np.int32).reshape(4, 2)
            if pads[0].any() or pads[3].any():
                raise ConversionError(f"{path}: the PAD op pads the batch or channels: {pads.tolist()}")
            input_pad = [int(pads[1][0]), int(pads[1][1]), int(pads[2][0]), int(pads[2][1])]
    if decoder is None:
        raise ConversionError(f"{path}: no PosenetDecoderOp: its stride, NMS radius and thresholds are unknown")
    # the network's own output stride: the stem's and the blocks' strides
    strides = [geometry["backbone.features.0.0"][0]] + [geometry[f"backbone.features.{i}.depthwise.0"][0]
                                                        for i in range(1, 14)]
    output_stride = int(np.prod(strides))
    if output_stride != int(decoder["stride"]):
        raise ConversionError(f"{path}: the network strides by {output_stride}, the decoder op says {decoder['stride']}")
    dilations = {geometry[f"backbone.features.{i}.depthwise.0"][1] for i in range(1, 14)}
    atrous = dilations != {1}

    inp = sg.Tensors(int(sg.InputsAsNumpy()[0]))
    _, h, w, _ = (int(v) for v in inp.ShapeAsNumpy())
    width = tensors["backbone.features.1.pointwise.0.weight"].shape[0] / 64  # PoseNet's blocks 12-13 are 512α wide
    k = tensors["heatmap.weight"].shape[0]
    if k != len(COCO_KEYPOINTS):
        raise ConversionError(f"{path}: {k} keypoint heatmaps; the COCO layout has {len(COCO_KEYPOINTS)}")
    # Coral's pipeline: the photo resized (bilinear) to the input size, uint8 pixels
    preprocessing = {"resize": "exact", "crop_size": [h, w], "interpolation": "bilinear", "antialias": False,
                     "round_to_uint8": True, **uint8_input_normalisation(sg), "channel_order": "RGB"}
    pose = {"decoder": "posenet", "output_stride": output_stride, "max_poses": int(decoder["max_detections"]),
            "score_threshold": float(decoder["score_threshold"]), "nms_radius": float(decoder["nms_radius"])}
    meta = {
        "format": FORMAT,
        "architecture": "posenet_mobilenet_v1",
        "variant": path.stem,
        "task": "pose",
        "width_multiplier": str(width),
        "input_size": str(h),
        "num_classes": str(k),
        "padding": "tf_same",
        "bn_folded": "true",
        "bn_eps": "0.001",
        "output_stride": str(output_stride),
        "atrous": "true" if atrous else "false",
        "input_pad": input_pad,
        "preprocessing": preprocessing,
        "labels": COCO_KEYPOINTS,
        "pose": pose,
        "source": {"framework": "tflite", "file": path.name, "sha256": sha256(path),
                   "quantization": "dequantized from uint8 (real = scale × (q − zero_point))"},
        "licence": "Apache-2.0 (Google Coral test data)",
    }
    return tensors, meta


def convert_tflite_movenet(path: Path, model, sg, op_names: dict) -> tuple[dict, dict]:
    """MoveNet single-pose (TF Hub's TFLite export, int8 post-training quantized): Keras
    MobileNetV2, the FPN and the CenterNet heads; the in-graph decoding's constants (input
    normalisation, the centre-weighting offset) become metadata."""
    ops = tflite_ops(path, model, sg, op_names, SUPPORTED_MOVENET_OPS, " in a MoveNet file")
    heads = {"center": "center", "kpt_heatmap": "keypoint_heatmap", "kpt_offset": "keypoint_offset",
             "kpt_regress": "keypoint_regress"}
    fe = "center_net_mobile_net_v2fpn_feature_extractor/model_1/"

    def layer(out_names: list[str], w: str):
        if w.startswith(fe + "model/"):
            scope = w[len(fe + "model/"):].split("/")[0].removesuffix("_BN")
            if scope == "Conv1":
                return "backbone.features.0.0", "relu6"
            if scope == "Conv_1":
                return "backbone.features.18.0", "relu6"
            if scope == "expanded_conv_depthwise":
                return "backbone.features.1.conv.0.0", "relu6"
            if scope == "expanded_conv_project":
                return "backbone.features.1.conv.1", "none"
            if m := re.fullmatch(r"block_(\d+)_(expand|depthwise|project)", scope):
                b, part = int(m.group(1)) + 1, m.group(2)
                return {"expand": (f"backbone.features.{b}.conv.0.0", "relu6"),
                        "depthwise": (f"backbone.features.{b}.conv.1.0", "relu6"),
                        "project": (f"backbone.features.{b}.conv.2", "none")}[part]
            return None
        if m := re.fullmatch(re.escape(fe) + r"conv2d(?:_(\d))?/Conv2D", w):
            return f"fpn.lateral.{int(m.group(1) or 0)}", "none"
        if m := re.fullmatch(re.escape(fe) + r"separable_conv2d(?:_(\d))?/separable_conv2d(/depthwise\d*)?", w):
            part = ("depthwise", "none") if m.group(2) else ("pointwise", "relu")
            return f"fpn.output.{int(m.group(1) or 0)}.{part[0]}", part[1]
        if m := re.fullmatch(r"(center|kpt_heatmap|kpt_offset|kpt_regress)_0/separable_conv2d_\d/separable_conv2d"
                             r"(/depthwise\d*)?", w):
            part = ("depthwise", "none") if m.group(2) else ("pointwise", "relu")
            return f"head.{heads[m.group(1)]}.0.{part[0]}", part[1]
        if m := re.fullmatch(r"(center|kpt_heatmap|kpt_offset|kpt_regress)_0/conv2d_\d/Conv2D", w):
            return f"head.{heads[m.group(1)]}.1", "none"
        return None

    tensors, _ = convert_pose_convs(path, model, sg, ops, layer)
    want = {f"backbone.features.{i}.conv.2.weight" for i in range(2, 18)} | {"backbone.features.18.0.weight"}
    want |= {f"fpn.lateral.{i}.weight" for i in range(4)}
    want |= {f"fpn.output.{i}.{p}.weight" for i in range(3) for p in ("depthwise", "pointwise")}
    want |= {f"head.{h}.{j}.weight" for h in heads.values() for j in ("0.depthwise", "0.pointwise", "1")}
    if missing := sorted(want - tensors.keys()):
        raise ConversionError(f"{path}: MoveNet layers missing: {', '.join(missing)}")

    def named_const(name: str) -> np.ndarray:
        for i in range(sg.TensorsLength()):
            if sg.Tensors(i).Name().decode().split(";")[0] == name:
                return dequantize(model, sg, i)
        raise ConversionError(f"{path}: no constant `{name}` (MoveNet's in-graph decoding has changed)")

    # in-graph input normalisation: ((pixel − Reshape) · truediv_1) − sub_1/y
    mean, mul, sub = named_const("Reshape").ravel(), float(named_const("truediv_1").ravel()[0]), \
        float(named_const("sub_1/y").ravel()[0])
    norm = {"scale": round(mul, 8), "mean": [round(float(m) * mul + sub, 6) for m in mean],
            "std": [1.0, 1.0, 1.0]}
    offset = round(float(named_const("add_1/y").ravel()[0]), 4)  # keypoint weighting: heat / (distance + offset)
    # the stored centre weighting must be 1 / (distance to the grid centre + offset), as we compute it
    weight = named_const("truediv_2").reshape(-1)
    side = int(round(np.sqrt(weight.size)))
    yy, xx = np.mgrid[0:side, 0:side]
    ours = 1.0 / (np.sqrt((yy - side // 2) ** 2 + (xx - side // 2) ** 2) + offset)
    step = float(sg.Tensors(next(i for i in range(sg.TensorsLength())
                                 if sg.Tensors(i).Name().decode().split(";")[0] == "truediv_2"))
                 .Quantization().ScaleAsNumpy()[0])
    if np.abs(ours.ravel() - weight).max() > step:
        raise ConversionError(f"{path}: the centre weighting is not 1 / (distance + {offset})")

    inp = sg.Tensors(int(sg.InputsAsNumpy()[0]))
    _, h, w, _ = (int(v) for v in inp.ShapeAsNumpy())
    k = tensors["head.keypoint_heatmap.1.weight"].shape[0]
    if k != len(COCO_KEYPOINTS):
        raise ConversionError(f"{path}: {k} keypoint heatmaps; the COCO layout has {len(COCO_KEYPOINTS)}")
    width = tensors["backbone.features.0.0.weight"].shape[0] / 32
    # the model card: tf.image.resize_with_pad to the input size, then cast to integers
    preprocessing = {"resize": "pad", "crop_size": [h, w], "interpolation": "bilinear", "antialias": False,
                     "round_to_uint8": True, **norm, "channel_order": "RGB"}
    meta = {
        "format": FORMAT,
        "architecture": "movenet",
        "variant": path.stem,
        "task": "pose",
        "width_multiplier": str(width),
        "input_size": str(h),
        "num_classes": str(k),
        "padding": "tf_same",
        "bn_folded": "true",
        "bn_eps": "0.001",
        "preprocessing": preprocessing,
        "labels": COCO_KEYPOINTS,
        "pose": {"decoder": "movenet", "center_weight_offset": offset},
        "source": {"framework": "tflite", "file": path.name, "sha256": sha256(path),
                   "quantization": "dequantized from int8, per channel (real = scale × (q − zero_point))"},
        "licence": "Apache-2.0 (Google MoveNet, TF Hub)",
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# torchvision (state_dict names are already ours)
# ---------------------------------------------------------------------------------------------

TORCHVISION_ARCHS = ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
                     "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2",
                     "squeezenet1_0", "squeezenet1_1", "googlenet", "inception_v3"]


# torchvision's ImageNet eval transform sizes (resize, crop) of each architecture's default weights,
# for a safetensors state_dict converted where torchvision is not installed.
TORCHVISION_EVAL_SIZES = {"inception_v3": (342, 299)}  # the rest: (256, 224)


def convert_torchvision(name: str, weights: str | None, input_path: Path | None,
                        transform_input: bool | None = None) -> tuple[dict, dict]:
    """A torchvision checkpoint: downloaded (`--weights`), or a state_dict file (`--input`): a
    `.pth` from `torch.save(model.state_dict())`, or a `.safetensors` one
    (`safetensors.torch.save_file`), which needs neither torch nor torchvision (then the
    preprocessing is torchvision's default eval transform for the architecture and the labels
    are class numbers, unless torchvision is installed)."""
    if name not in TORCHVISION_ARCHS:
        raise ConversionError(f"unknown torchvision architecture {name}; known: {', '.join(TORCHVISION_ARCHS)}")
    if transform_input is not None and name not in ("googlenet", "inception_v3"):
        raise ConversionError(f"--transform-input applies to googlenet and inception_v3, not {name}")
    if input_path is not None and not input_path.is_file():
        raise ConversionError(f"{input_path}: no such file")
    try:
        import torchvision
    except ImportError:
        if input_path is None or input_path.suffix != ".safetensors":
            raise ConversionError("torch and torchvision are needed for a download or a .pth state_dict "
                                  "(pip install torch torchvision); a .safetensors state_dict converts without them")
        torchvision = None
    w = None
    if torchvision is not None:
        enum = torchvision.models.get_model_weights(name)
        w = enum[weights] if weights else enum.DEFAULT
    if input_path is not None and input_path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            tensors = {k: v.astype(np.float32) for k, v in load_file(str(input_path)).items()}
        except Exception as e:  # safetensors raises assorted errors on a broken file
            raise ConversionError(f"{input_path}: not a readable safetensors state_dict ({e})")
        source = {"framework": "torchvision", "file": input_path.name, "sha256": sha256(input_path),
                  "weights": str(w) if weights else None}
    elif input_path is not None:
        import torch
        sd = torch.load(input_path, map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        source = {"framework": "torchvision", "file": input_path.name, "sha256": sha256(input_path),
                  "weights": str(w) if weights else None}
        tensors = {k: v.detach().float().numpy() for k, v in sd.items()}
    else:
        sd = w.get_state_dict(progress=True)  # downloads on a connected machine
        source = {"framework": "torchvision", "weights": str(w), "url": w.url}
        tensors = {k: v.detach().float().numpy() for k, v in sd.items()}
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    # Auxiliary classifiers are training-only; inference never reads them.
    tensors = {k: v for k, v in tensors.items() if not re.match(r"^(AuxLogits|aux1|aux2)\.", k)}
    # the classifier's bias: `fc.bias`, or the highest `classifier.{i}.bias` (whatever order the file
    # keeps: safetensors sorts names)
    heads = sorted((int(m.group(1) or 0), k) for k in tensors if (m := re.fullmatch(r"(?:fc|classifier(?:\.(\d+))?)\.bias", k)))
    if not heads:
        raise ConversionError(f"{input_path or name}: no classifier bias (fc.bias or classifier.N.bias) in the state_dict")
    num_classes = tensors[heads[-1][1]].shape[0]
    if w is not None:
        tf = w.transforms()
        crop = int(tf.crop_size[0]) if hasattr(tf, "crop_size") else 224
        resize = int(tf.resize_size[0]) if hasattr(tf, "resize_size") else 256
        categories = w.meta.get("categories", [])
    else:
        resize, crop = TORCHVISION_EVAL_SIZES.get(name, (256, 224))
        categories = []
    labels = categories if num_classes == len(categories) else [str(i) for i in range(num_classes)]
    if transform_input is None:
        # torchvision's pretrained GoogLeNet / Inception v3 (and models fine-tuned from them)
        # expect transform_input=True; models trained from scratch usually do not.
        transform_input = name in ("googlenet", "inception_v3")
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
        "transform_input": "true" if transform_input else "false",
        "preprocessing": torchvision_preprocessing(resize, crop),
        "labels": labels,
        "background_class": "none",
        "source": source,
        "licence": "BSD-3-Clause (torchvision); see the checkpoint's own terms",
    }
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# Keras applications (.h5 in the legacy HDF5 format the published weight files use)
# ---------------------------------------------------------------------------------------------

KERAS_ARCHS = {  # --arch → (our architecture, BN ε, preprocessing mode, padding)
    "vgg16": ("vgg16", None, "caffe", "torch"),
    "vgg19": ("vgg19", None, "caffe", "torch"),
    "resnet50": ("resnet50", 1.001e-5, "caffe", "torch"),
    "mobilenet": ("mobilenet_v1", 1e-3, "tf", "tf_same"),
    "mobilenet_v2": ("mobilenet_v2", 1e-3, "tf", "tf_same"),
    "inception_v3": ("inception_v3", 1e-3, "tf", "torch"),
}

# keras.applications.imagenet_utils.preprocess_input modes; Keras examples load images with
# `load_img(path, target_size=(S, S))`: a plain resize, nearest neighbour by default.
KERAS_PREPROCESSING = {
    "caffe": {"scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0], "channel_order": "BGR"},
    "tf": {"scale": 1.0 / 127.5, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0], "channel_order": "RGB"},
}

# Keras weight name → our tensor name suffix (BatchNormalization and Conv2D / Dense).
KERAS_WEIGHT = {"kernel": "weight", "depthwise_kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}

VGG_CFGS = {"vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}  # convs per block (Table 1, D and E)

INCEPTION_V3_CONVS = (  # torchvision's BasicConv2d modules in the order Keras creates conv2d_k
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    + [f"{m}.{b}" for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d") for b in
       ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool")]
    + [f"Mixed_6a.{b}" for b in ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")]
    + [f"{m}.{b}" for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e") for b in
       ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
        "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool")]
    + [f"Mixed_7a.{b}" for b in ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
                                 "branch7x7x3_4")]
    + [f"{m}.{b}" for m in ("Mixed_7b", "Mixed_7c") for b in
       ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
        "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")]
)


def _numbered(layers: list[str], base: str) -> list[str]:
    """Keras' auto-named layers (`conv2d`, `conv2d_1`, …) in creation order."""
    pat = re.compile(rf"^{base}(?:_(\d+))?$")
    found = [(int(m.group(1) or 0), n) for n in layers if (m := pat.match(n))]
    return [n for _, n in sorted(found)]


def keras_layer_map(arch: str, layers: list[str]) -> dict[str, str]:
    """Keras layer name → our module path, one rule per naming scheme."""
    out = {}
    if arch in VGG_CFGS:
        idx = 0
        for b, n in enumerate(VGG_CFGS[arch], start=1):
            for c in range(1, n + 1):
                out[f"block{b}_conv{c}"] = f"features.{idx}"  # conv at idx, ReLU at idx + 1
                idx += 2
            idx += 1  # max pool
        out.update({"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"})
    elif arch == "resnet50":
        out.update({"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"})
        for n in layers:  # conv{stage}_block{b}_{i}_{conv|bn}: stage 2..5 → layer1..4, i = 0 is the shortcut
            m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", n)
            if m:
                stage, block, i, kind = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
                base = f"layer{stage - 1}.{block - 1}"
                if i == 0:
                    out[n] = f"{base}.downsample.{0 if kind == 'conv' else 1}"
                else:
                    out[n] = f"{base}.{kind}{i}"
    elif arch == "mobilenet":
        out.update({"conv1": "features.0.0", "conv1_bn": "features.0.1", "conv_preds": "classifier.1"})
        for i in range(1, 14):
            for part, ours in (("dw", "depthwise"), ("pw", "pointwise")):
                out[f"conv_{part}_{i}"] = f"features.{i}.{ours}.0"
                out[f"conv_{part}_{i}_bn"] = f"features.{i}.{ours}.1"
    elif arch == "mobilenet_v2":
        out.update({"Conv1": "features.0.0", "bn_Conv1": "features.0.1", "Conv_1": "features.18.0",
                    "Conv_1_bn": "features.18.1", "predictions": "classifier.1",
                    "expanded_conv_depthwise": "features.1.conv.0.0", "expanded_conv_depthwise_BN": "features.1.conv.0.1",
                    "expanded_conv_project": "features.1.conv.1", "expanded_conv_project_BN": "features.1.conv.2"})
        for k in range(1, 17):
            f = f"features.{k + 1}.conv"
            out.update({f"block_{k}_expand": f"{f}.0.0", f"block_{k}_expand_BN": f"{f}.0.1",
                        f"block_{k}_depthwise": f"{f}.1.0", f"block_{k}_depthwise_BN": f"{f}.1.1",
                        f"block_{k}_project": f"{f}.2", f"block_{k}_project_BN": f"{f}.3"})
    elif arch == "inception_v3":
        convs, bns = _numbered(layers, "conv2d"), _numbered(layers, "batch_normalization")
        if len(convs) != len(INCEPTION_V3_CONVS) or len(bns) != len(INCEPTION_V3_CONVS):
            raise ConversionError(f"expected 94 conv2d and batch_normalization layers, found {len(convs)} and {len(bns)}")
        for c, b, ours in zip(convs, bns, INCEPTION_V3_CONVS):
            out[c], out[b] = f"{ours}.conv", f"{ours}.bn"
        out["predictions"] = "fc"
    return out


def keras_to_ours(kind: str, w: np.ndarray) -> np.ndarray:
    """Layout of one Keras weight → ours. `kind`: conv (HWIO), dw (HWC1), dense (IO),
    dense_nhwc (a Dense after Flatten of an H×W×C map), conv1x1_linear, vec."""
    if kind == "conv":
        return w.transpose(3, 2, 0, 1)  # HWIO → OIHW
    if kind == "dw":
        return w.transpose(2, 3, 0, 1)  # H×W×C×1 → C×1×H×W
    if kind == "dense":
        return w.T  # I×O → O×I
    if kind == "conv1x1_linear":
        return w.reshape(w.shape[2], w.shape[3]).T  # 1×1×C×N conv on pooled features → N×C Linear
    if kind == "dense_nhwc":
        # Keras flattens H×W×C, torchvision C×H×W: reorder fc1's input rows (VGG: 7×7×512).
        return w.reshape(7, 7, -1, w.shape[1]).transpose(3, 2, 0, 1).reshape(w.shape[1], -1)
    return w


def ours_to_keras(kind: str, w: np.ndarray, keras_shape: tuple) -> np.ndarray:
    """Inverse of keras_to_ours (used by the reference generator to fill Keras models)."""
    if kind == "conv":
        return w.transpose(2, 3, 1, 0)
    if kind == "dw":
        return w.transpose(2, 3, 0, 1)
    if kind == "dense":
        return w.T
    if kind == "conv1x1_linear":
        return w.T.reshape(keras_shape)
    if kind == "dense_nhwc":
        return w.reshape(w.shape[0], -1, 7, 7).transpose(2, 3, 1, 0).reshape(keras_shape)
    return w


def keras_plan(arch: str, weights: list[tuple[str, str, tuple]]) -> list[tuple[str, str, str, str]]:
    """(keras layer, keras weight, our tensor name, layout kind) for every weight of the model;
    `weights` lists (layer, weight name such as `kernel`, shape)."""
    mapping = keras_layer_map(arch, sorted({layer for layer, _, _ in weights}))
    plan = []
    for layer, wname, shape in weights:
        if layer not in mapping:
            raise ConversionError(f"Keras layer {layer} has no counterpart in {KERAS_ARCHS[arch][0]}")
        short = wname.split("/")[-1].split(":")[0]
        if short not in KERAS_WEIGHT:
            raise ConversionError(f"Keras weight {layer}/{wname} is not supported")
        ours = f"{mapping[layer]}.{KERAS_WEIGHT[short]}"
        if short == "depthwise_kernel" or len(shape) == 4 and re.search(r"(^|_)(dw|depthwise)(_|$)", layer):
            kind = "dw"
        elif len(shape) == 4 and mapping[layer] == "classifier.1":
            kind = "conv1x1_linear"
        elif len(shape) == 4:
            kind = "conv"
        elif len(shape) == 2 and layer == "fc1" and arch in VGG_CFGS:
            kind = "dense_nhwc"
        elif len(shape) == 2:
            kind = "dense"
        else:
            kind = "vec"
        plan.append((layer, wname, ours, kind))
    return plan


def convert_keras(path: Path, arch: str, width: float | None, input_size: int | None,
                  labels_path: Path | None) -> tuple[dict, dict]:
    import h5py  # lazily: only the Keras source needs it

    if arch not in KERAS_ARCHS:
        raise ConversionError(f"unknown Keras architecture {arch}; known: {', '.join(KERAS_ARCHS)}")
    ours_arch, eps, mode, padding = KERAS_ARCHS[arch]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: not an HDF5 file ({e})")
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ConversionError(f"{path}: no `layer_names`: not a Keras HDF5 weights file")
        dec = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
        weights, arrays = [], {}
        for layer in map(dec, root.attrs["layer_names"]):
            for wname in map(dec, root[layer].attrs["weight_names"]):
                arr = np.asarray(root[layer][wname], dtype=np.float32)
                weights.append((layer, wname, arr.shape))
                arrays[(layer, wname)] = arr
    tensors = {}
    for layer, wname, ours, kind in keras_plan(arch, weights):
        tensors[ours] = np.ascontiguousarray(keras_to_ours(kind, arrays[(layer, wname)]))
    if arch == "inception_v3":  # BatchNormalization(scale=False): γ = 1
        for name in [n[: -len("running_mean")] + "weight" for n in tensors if n.endswith(".bn.running_mean")]:
            tensors[name] = np.ones_like(tensors[name.replace(".weight", ".running_mean")])
    head = {"vgg16": "classifier.6", "vgg19": "classifier.6", "resnet50": "fc", "inception_v3": "fc"}.get(arch, "classifier.1")
    if f"{head}.bias" not in tensors:
        raise ConversionError(f"{path}: no classifier ({head}); convert models saved with include_top=True")
    num_classes = tensors[f"{head}.bias"].shape[0]
    if width is None and arch == "mobilenet":
        width = tensors["features.13.pointwise.0.weight"].shape[0] / 1024  # 1024·α (exact when published)
    elif width is None and arch == "mobilenet_v2":
        width = tensors["features.17.conv.2.weight"].shape[0] / 320  # 320·α
    size = input_size or {"inception_v3": 299}.get(arch, 224)
    labels = [str(i) for i in range(num_classes)]
    if labels_path is not None:
        labels = [l.rstrip("\n") for l in labels_path.read_text().splitlines()]
        if len(labels) == num_classes + 1 and labels[0] == "background":
            labels = labels[1:]  # TF-slim's list carries a background class Keras models lack
        if len(labels) != num_classes:
            raise ConversionError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} classes")
    meta = {
        "format": FORMAT,
        "architecture": ours_arch,
        "variant": f"keras_{arch}" + (f"_{width}_{size}" if width else ""),
        "flavor": "keras",
        "width_multiplier": str(width or 1.0),
        "input_size": str(size),
        "num_classes": str(num_classes),
        "padding": padding,
        "bn_folded": "false",
        "preprocessing": dict(KERAS_PREPROCESSING[mode], resize="exact", crop_size=[size, size], interpolation="nearest",
                              antialias=False),
        "labels": labels,
        "background_class": "none",
        "source": {"framework": "keras", "file": path.name, "sha256": sha256(path), "preprocess_input": mode},
        "licence": "Keras applications weights: see the Keras documentation for each model's terms",
    }
    if eps is not None:
        meta["bn_eps"] = repr(eps)
    return tensors, meta


# ---------------------------------------------------------------------------------------------
# TensorFlow.js (Keras layers models; nsfwjs' NSFW classifiers)
# ---------------------------------------------------------------------------------------------

# nsfwjs 4.4.0 (src/index.ts): classes in output order, and what `classify` does to an image:
# pixels / 255 (no mean, no std), tf.image.resizeBilinear(…, alignCorners = true) to the model's
# size, nothing cropped.
NSFWJS_CLASSES = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]
NSFWJS_PREPROCESSING = {"resize": "exact", "interpolation": "bilinear_align_corners", "antialias": False,
                        "scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": "RGB"}

TFJS_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "float16": np.float16}

# Keras layer classes a layers model may use, and what we do with them: those with weights are mapped
# by keras_layer_map (backbone) or as the Dense head; the rest must fit the architecture as built.
TFJS_LAYERS = {"InputLayer", "ZeroPadding2D", "Conv2D", "BatchNormalization", "ReLU", "DepthwiseConv2D", "Add",
               "Activation", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Concatenate",
               "Flatten", "Dense", "Dropout"}


def read_tfjs(path: Path) -> tuple[dict, dict]:
    """model.json and its weights, dequantised (uint8: real = min + scale · q). Refuses a damaged
    model.json, a missing shard, and shards whose sizes disagree with the manifest."""
    try:
        model = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: not a TF.js model.json ({e})")
    if not isinstance(model, dict) or "modelTopology" not in model or "weightsManifest" not in model:
        raise ConversionError(f"{path}: not a TF.js model.json (no modelTopology / weightsManifest)")
    arrays = {}
    for g, group in enumerate(model["weightsManifest"]):
        try:
            blobs = []
            for shard in group["paths"]:
                f = path.parent / shard
                if not f.is_file():
                    raise ConversionError(f"{path}: weight shard {shard} is missing")
                blobs.append(f.read_bytes())
            data = b"".join(blobs)
            offset = 0
            for w in group["weights"]:
                quant = w.get("quantization")
                dtype = TFJS_DTYPES.get(quant["dtype"] if quant else w["dtype"])
                if dtype is None:
                    raise ConversionError(f"{path}: weight {w['name']}: unsupported dtype {quant or w['dtype']}")
                count = int(np.prod(w["shape"], dtype=np.int64))
                size = count * np.dtype(dtype).itemsize
                if offset + size > len(data):
                    raise ConversionError(f"{path}: manifest group {g} needs more than the {len(data)} bytes its "
                                          f"shards ({', '.join(group['paths'])}) hold, at weight {w['name']}")
                q = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(w["shape"])
                offset += size
                if quant and quant["dtype"] == "uint8":
                    arrays[w["name"]] = (quant["min"] + quant["scale"] * q.astype(np.float64)).astype(np.float32)
                else:
                    arrays[w["name"]] = q.astype(np.float32)
            if offset != len(data):
                raise ConversionError(f"{path}: manifest group {g} describes {offset} bytes, its shards hold {len(data)}")
        except (KeyError, TypeError) as e:
            raise ConversionError(f"{path}: malformed weightsManifest ({e!r})")
    return model, arrays


TFJS_GRAPH_OPS = {"Placeholder", "Const", "Identity", "Mul", "Sub", "_FusedConv2D", "FusedDepthwiseConv2dNative",
                  "AddV2", "AvgPool", "Squeeze", "_FusedMatMul", "Softmax"}


def convert_tfjs_graph(path: Path, model: dict, arrays: dict, labels_path: Path | None) -> tuple[dict, dict]:
    """A TF.js graph model of a TF-Hub MobileNetV2 feature vector with a Dense classifier
    (nsfwjs' mobilenet_v2_mid): BN folded into the convolutions (`_bn_offset`), the input scaled
    inside the graph (`hub_input/Mul`, `hub_input/Sub`), which becomes our preprocessing."""
    import base64

    try:
        nodes = model["modelTopology"]["node"]
    except (KeyError, TypeError):
        raise ConversionError(f"{path}: graph model without modelTopology.node")
    attr_s = lambda n, k: base64.b64decode(n["attr"][k]["s"]).decode()  # noqa: E731
    fused = lambda n: [base64.b64decode(x).decode() for x in n["attr"]["fused_ops"]["list"]["s"]]  # noqa: E731
    tensors, mul, sub, size, dense = {}, 1.0, 0.0, None, None
    for n in nodes:
        op, name = n["op"], n["name"]
        if op not in TFJS_GRAPH_OPS:
            raise ConversionError(f"{path}: unsupported graph op {op} ({name})")
        inputs = [i.split(":")[0] for i in n.get("input", [])]
        if op == "Placeholder":
            size = int(n["attr"]["shape"]["shape"]["dim"][1]["size"])
        elif op in ("Mul", "Sub"):
            const = [i for i in inputs if i in arrays]
            if not name.endswith(f"hub_input/{op}") or len(const) != 1 or arrays[const[0]].size != 1:
                raise ConversionError(f"{path}: {op} {name} is not the input scaling this converter knows")
            value = float(arrays[const[0]].reshape(()))
            mul, sub = (value, sub) if op == "Mul" else (mul, value)
        elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            scope = name.split("/MobilenetV2/", 1)[-1].rsplit("/", 1)[0].removesuffix("/BatchNorm")
            mapped = tf_mobilenet_v2_layer(scope)
            if "/MobilenetV2/" not in name or mapped is None:
                raise ConversionError(f"{path}: convolution {name} is not part of MobileNetV2's layout")
            ours, act = mapped
            want = ["BiasAdd", "Relu6"] if act == "relu6" else ["BiasAdd"]
            if fused(n) != want or attr_s(n, "padding") != "SAME" or attr_s(n, "data_format") != "NHWC":
                raise ConversionError(f"{path}: {name}: fused ops {fused(n)}, padding {attr_s(n, 'padding')}; "
                                      f"expected {want}, SAME, NHWC")
            w, b = arrays[inputs[1]], arrays[inputs[2]]
            tensors[f"{ours}.weight"] = w.transpose(3, 2, 0, 1) if op == "_FusedConv2D" else w.transpose(2, 3, 0, 1)
            tensors[f"{ours}.bias"] = b
        elif op == "AvgPool":
            ksize = [int(x) for x in n["attr"]["ksize"]["list"]["i"]]
            if size is None or ksize[1:3] != [-(-size // 32)] * 2:
                raise ConversionError(f"{path}: {name} pools {ksize[1:3]}, not the whole final map")
        elif op == "_FusedMatMul":
            if dense is not None or fused(n) != ["BiasAdd"]:
                raise ConversionError(f"{path}: {name}: only one Dense layer (MatMul + BiasAdd) is supported")
            dense = n
            tensors["classifier.1.weight"] = np.ascontiguousarray(arrays[inputs[1]].T)
            tensors["classifier.1.bias"] = arrays[inputs[2]]
    if dense is None or size is None:
        raise ConversionError(f"{path}: no Dense classifier or no input placeholder")
    num_classes = tensors["classifier.1.bias"].shape[0]
    width = tensors["features.18.0.weight"].shape[0] / 1280  # 1280·α for α > 1
    labels = NSFWJS_CLASSES if num_classes == len(NSFWJS_CLASSES) else [str(i) for i in range(num_classes)]
    if labels_path is not None:
        labels = [l.strip() for l in labels_path.read_text().splitlines() if l.strip()]
        if len(labels) != num_classes:
            raise ConversionError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} classes")
    # nsfwjs feeds pixels / 255; the graph then computes x · mul − sub: one affine map of the pixel
    preprocessing = dict(NSFWJS_PREPROCESSING, crop_size=[size, size], scale=mul / 255.0, mean=[sub] * 3)
    meta = {
        "format": FORMAT,
        "architecture": "mobilenet_v2",
        "variant": f"tfjs_{path.parent.name}",
        "width_multiplier": str(round(width, 4)),
        "input_size": str(size),
        "num_classes": str(num_classes),
        "padding": "tf_same",
        "bn_folded": "true",
        "bn_eps": "0.001",
        "preprocessing": preprocessing,
        "labels": labels,
        "background_class": "none",
        "source": {"framework": "tfjs", "format": "graph-model", "file": path.parent.name + "/" + path.name,
                   "sha256": sha256(path), "input_scaling": f"x * {mul} - {sub} inside the graph",
                   "quantization": "uint8 per tensor, dequantised (real = min + scale · q)"},
        "licence": "MIT (nsfwjs, github.com/infinitered/nsfwjs)",
    }
    return tensors, meta


def convert_tfjs(path: Path, labels_path: Path | None) -> tuple[dict, dict]:
    model, arrays = read_tfjs(path)
    if model.get("format") == "graph-model":
        return convert_tfjs_graph(path, model, arrays, labels_path)
    try:
        layers = model["modelTopology"]["model_config"]["config"]["layers"]
    except (KeyError, TypeError):
        raise ConversionError(f"{path}: modelTopology has no Keras model_config.config.layers")
    names = {l["config"]["name"]: l for l in layers}
    for l in layers:
        if l["class_name"] not in TFJS_LAYERS:
            raise ConversionError(f"{path}: unsupported Keras layer {l['class_name']} ({l['config']['name']})")
    if "block_16_project" in names:
        arch = "mobilenet_v2"
    elif "mixed10" in names:
        arch = "inception_v3"
    else:
        raise ConversionError(f"{path}: neither Keras MobileNetV2 (block_16_project) nor InceptionV3 (mixed10)")
    ours_arch, eps, _, padding = KERAS_ARCHS[arch]
    # the head: the Dense layers after the backbone's pooling, in model order
    dense = [l for l in layers if l["class_name"] == "Dense"]
    for i, l in enumerate(dense):
        act = l["config"].get("activation")
        want = "softmax" if i == len(dense) - 1 else "relu"
        if act != want:
            raise ConversionError(f"{path}: Dense layer {l['config']['name']} has activation {act}, expected {want}")
    pools = [l for l in layers if l["class_name"] in ("AveragePooling2D", "GlobalAveragePooling2D")]
    size = int(layers[0]["config"]["batch_input_shape"][1])
    final = {"mobilenet_v2": -(-size // 32), "inception_v3": (size - 299) // 32 + 8}[arch]
    for l in pools[-1:]:  # the head's 7×7 average pool on a 7×7 map is the global pool our networks take
        if l["class_name"] == "AveragePooling2D" and l["config"]["pool_size"] != [final, final]:
            raise ConversionError(f"{path}: {l['config']['name']} pools {l['config']['pool_size']}, not the whole "
                                  f"{final}×{final} map")
    head_names = {l["config"]["name"] for l in dense}
    weights = []
    for name, arr in arrays.items():
        layer, _, wname = name.partition("/")
        if layer not in head_names:
            weights.append((layer, wname, arr.shape))
    tensors = {}
    for layer, wname, ours, kind in keras_plan(arch, weights):
        tensors[ours] = np.ascontiguousarray(keras_to_ours(kind, arrays[f"{layer}/{wname}"]))
    if arch == "inception_v3":  # BatchNormalization(scale=False): γ = 1
        for name in [n[: -len("running_mean")] + "weight" for n in tensors if n.endswith(".bn.running_mean")]:
            tensors.setdefault(name, np.ones_like(tensors[name.replace(".weight", ".running_mean")]))
    for i, l in enumerate(dense):  # Keras Dense → our head.{i} (Linear: O×I)
        n = l["config"]["name"]
        tensors[f"head.{i}.weight"] = np.ascontiguousarray(arrays[f"{n}/kernel"].T)
        tensors[f"head.{i}.bias"] = arrays[f"{n}/bias"]
    widths = [int(l["config"]["units"]) for l in dense]
    num_classes = widths[-1]
    labels = NSFWJS_CLASSES if num_classes == len(NSFWJS_CLASSES) else [str(i) for i in range(num_classes)]
    if labels_path is not None:
        labels = [l.strip() for l in labels_path.read_text().splitlines() if l.strip()]
        if len(labels) != num_classes:
            raise ConversionError(f"{labels_path}: {len(labels)} labels for a model with {num_classes} classes")
    width = tensors["features.17.conv.2.weight"].shape[0] / 320 if arch == "mobilenet_v2" else 1.0
    meta = {
        "format": FORMAT,
        "architecture": ours_arch,
        "variant": f"tfjs_{path.parent.name}",
        "flavor": "keras",
        "width_multiplier": str(width),
        "input_size": str(size),
        "num_classes": str(num_classes),
        "classifier_hidden": widths[:-1],
        "padding": padding,
        "bn_folded": "false",
        "bn_eps": repr(eps),
        "preprocessing": dict(NSFWJS_PREPROCESSING, crop_size=[size, size]),
        "labels": labels,
        "background_class": "none",
        "source": {"framework": "tfjs", "file": str(path.parent.name + "/" + path.name), "sha256": sha256(path),
                   "keras_version": model["modelTopology"].get("keras_version"),
                   "quantization": "uint8 per tensor, dequantised (real = min + scale · q)"},
        "licence": "MIT (nsfwjs, github.com/infinitered/nsfwjs)",
    }
    return tensors, meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True)
    t = sub.add_parser("tflite", help="TensorFlow Lite flatbuffer (TF-slim MobileNet v1/v2)")
    t.add_argument("file", type=Path)
    t.add_argument("--labels", type=Path)
    k = sub.add_parser("keras", help="keras.applications weights (.h5)")
    k.add_argument("file", type=Path)
    k.add_argument("--arch", required=True, choices=sorted(KERAS_ARCHS))
    k.add_argument("--width", type=float, help="width multiplier α (MobileNets)")
    k.add_argument("--input-size", type=int, help="input size the model was built for")
    k.add_argument("--labels", type=Path)
    j = sub.add_parser("tfjs", help="TensorFlow.js Keras layers model (model.json + shards; nsfwjs)")
    j.add_argument("file", type=Path)
    j.add_argument("--labels", type=Path)
    tv = sub.add_parser("torchvision", help="torchvision checkpoint (downloaded, or --input offline)")
    tv.add_argument("name")
    tv.add_argument("--weights", help="torchvision weight enum member, e.g. IMAGENET1K_V2")
    tv.add_argument("--input", type=Path, help="a state_dict file: .pth (torch.save) or .safetensors "
                    "(safetensors.torch.save_file; converts without torch)")
    tv.add_argument("--transform-input", choices=["true", "false"],
                    help="googlenet / inception_v3: whether the model re-normalises its input as torchvision's "
                         "pretrained checkpoints do (transform_input=True). Default true: right for torchvision's "
                         "weights and models fine-tuned from them; pass false for a model built with "
                         "transform_input=False (torchvision's default for weights=None) and trained from scratch")
    for s in (t, k, j, tv):
        s.add_argument("--out", type=Path)
        s.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    args = p.parse_args(argv)
    try:
        if args.source == "tflite":
            if not args.file.is_file():
                raise ConversionError(f"{args.file}: no such file")
            tensors, meta = convert_tflite(args.file, args.labels)
            default_out = Path("weights") / (args.file.stem + ".safetensors")
        elif args.source == "keras":
            if not args.file.is_file():
                raise ConversionError(f"{args.file}: no such file")
            tensors, meta = convert_keras(args.file, args.arch, args.width, args.input_size, args.labels)
            default_out = Path("weights") / (args.file.name.split(".")[0] + ".safetensors")
        elif args.source == "tfjs":
            if not args.file.is_file():
                raise ConversionError(f"{args.file}: no such file")
            tensors, meta = convert_tfjs(args.file, args.labels)
            default_out = Path("weights") / f"nsfw_{args.file.parent.name}.safetensors"
        else:
            ti = None if args.transform_input is None else args.transform_input == "true"
            tensors, meta = convert_torchvision(args.name, args.weights, args.input, ti)
            default_out = Path("weights") / f"{args.name}.safetensors"
        write(tensors, meta, args.out or default_out, args.dtype)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
