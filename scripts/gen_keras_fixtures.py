#!/usr/bin/env python3
"""Reference fixtures for Keras-converted models (tests/parity.rs reads them like the others).

For each case: build the `keras.applications` model (weights=None, logits out), fill every
Keras weight so that, after `scripts/convert_weights.py keras`, it equals the fvrng tensor of
its ferrovision name (the inverse layout of the converter's own mapping), save it in the legacy
HDF5 format the published Keras weight files use, run the converter on that file and check
every converted tensor bit for bit, then record Keras' logits on the fvrng input.

    pip install -r scripts/requirements-reference.txt   # torch, keras, h5py, …
    KERAS_BACKEND=torch python scripts/gen_keras_fixtures.py [--only CASE ...]
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import convert_weights as cw  # noqa: E402
from gen_parity_fixtures import SEED, fvrng, write_safetensors_f32  # noqa: E402

# case → (keras arch, constructor kwargs, input H×W)
CASES = {
    "keras_vgg16": ("vgg16", {}, 224),
    "keras_resnet50": ("resnet50", {}, 224),
    "keras_mobilenet_0.5_160": ("mobilenet", {"alpha": 0.5}, 160),
    "keras_mobilenet_v2_1.0_224": ("mobilenet_v2", {"alpha": 1.0}, 224),
    "keras_mobilenet_v2_0.35_192": ("mobilenet_v2", {"alpha": 0.35}, 192),
    "keras_inception_v3": ("inception_v3", {}, 299),
}

CTORS = {"vgg16": "VGG16", "resnet50": "ResNet50", "mobilenet": "MobileNet", "mobilenet_v2": "MobileNetV2",
         "inception_v3": "InceptionV3"}


def run_case(case, out_dir):
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    arch, kwargs, size = CASES[case]
    model = getattr(keras.applications, CTORS[arch])(weights=None, input_shape=(size, size, 3),
                                                     classifier_activation=None, **kwargs)
    weights = [(layer.name, w.path, tuple(w.shape)) for layer in model.layers for w in layer.weights]
    plan = cw.keras_plan(arch, weights)
    variables = {(layer.name, w.path): w for layer in model.layers for w in layer.weights}
    expected = {}
    for layer, wname, ours, kind in plan:
        var = variables[(layer, wname)]
        our_shape = cw.keras_to_ours(kind, np.zeros(tuple(var.shape), np.float32)).shape
        value = fvrng(SEED, ours, our_shape)
        var.assign(cw.ours_to_keras(kind, value, tuple(var.shape)))
        expected[ours] = value
    constants = {}
    if arch == "inception_v3":  # BatchNormalization(scale=False): γ is 1, not generated
        for n in [n for n in expected if n.endswith(".bn.running_mean")]:
            constants[n.replace("running_mean", "weight")] = 1.0

    with tempfile.TemporaryDirectory() as d:
        h5 = Path(d) / f"{case}.h5"
        with h5py.File(h5, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        tensors, meta = cw.convert_keras(h5, arch, kwargs.get("alpha"), size, None)
    for name, value in expected.items():
        assert np.array_equal(tensors[name], value), f"{case}: converter output differs for {name}"
    for name, c in constants.items():
        assert np.all(tensors[name] == c), name
    assert set(tensors) == set(expected) | set(constants), set(tensors) ^ (set(expected) | set(constants))

    x = fvrng(SEED, "input", [3, 3, size, size], (-2.0, 2.0))
    logits = np.asarray(model(x.transpose(0, 2, 3, 1), training=False).detach().cpu().numpy(), dtype=np.float32)
    options = {"width": float(meta["width_multiplier"]), "num_classes": int(meta["num_classes"]),
               "padding": meta["padding"], "flavor": "keras", "bn_eps": float(meta["bn_eps"]) if "bn_eps" in meta else None}
    metadata = {
        "arch": meta["architecture"],
        "options": json.dumps(options),
        "input_shape": json.dumps([3, 3, size, size]),
        "seed": SEED,
        "params": json.dumps([[n, list(t.shape)] for n, t in sorted(tensors.items())], separators=(",", ":")),
        "constants": json.dumps(constants),
        "generator": "scripts/gen_keras_fixtures.py",
        "keras": keras.__version__,
        "converter_checked": "every tensor bit-identical to fvrng after convert_weights.py keras",
    }
    path = os.path.join(out_dir, f"{case}.safetensors")
    write_safetensors_f32(path, "logits", logits, metadata)
    top5 = np.argsort(-logits[0])[:5].tolist()
    print(f"{case}: max|logit| {np.abs(logits).max():.6g} top5[0] {top5} ({os.path.getsize(path)} bytes)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"))
    p.add_argument("--only", nargs="*")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    for case in args.only or CASES:
        run_case(case, args.out)


if __name__ == "__main__":
    main()
