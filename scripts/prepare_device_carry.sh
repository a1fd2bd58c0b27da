#!/usr/bin/env bash
# Builds the CUDA binaries on this (GPU-less) machine and fills .devcarry/ for one call of the
# device tool, which then runs scripts/device_check.sh there (see BENCHMARKS.md, "GPU").
#
# Needs a CUDA 13.0 toolkit: scripts/cuda_toolkit.sh installs one from PyPI into /work/cuda
# (nvcc, headers, cuBLAS, cuRAND, NVRTC, cuDNN, and a link stub for the driver's libcuda).
# 13.0 because the lent H200's driver (580) runs PTX up to CUDA 13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
source "${CUDA_ENV:-/work/cuda/env.sh}"
C=.devcarry
rm -rf "$C" && mkdir -p "$C/bin" "$C/whl" "$C/shared/data/labels" "$C/shared/models/tflite"

build_tests() { # feature → test binaries named after their files
    cargo test --release --features "$1" --no-run --message-format=json \
        --test parity --test real_weights --test gpu_kernels 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["target"]["name"], m["executable"])'
}
cargo build --release --features cuda --bin ferrovision
cp "$CARGO_TARGET_DIR/release/ferrovision" "$C/bin/ferrovision-cuda"
cargo build --release --features cudnn --bin ferrovision
cp "$CARGO_TARGET_DIR/release/ferrovision" "$C/bin/ferrovision-cudnn"
build_tests cudnn | while read -r name exe; do cp "$exe" "$C/bin/$name"; done
strip "$C"/bin/*
xz -T0 -6 "$C"/bin/*

# the real photographs and MobileNet v2 that the GPU tests read from ../shared
S=../shared
cp "$S/README.md" "$C/shared/"
cp -r "$S/data/images" "$C/shared/data/"
cp "$S/data/labels/imagenet_1001_tfslim.txt" "$C/shared/data/labels/"
cp "$S/models/tflite/mobilenet_v2_1.0_224_quant.tflite" "$C/shared/models/tflite/"
# the converter's TFLite reader (the GPU machine has numpy, safetensors and flatbuffers)
python3 -m pip download -q --no-deps --only-binary=:all: -d "$C/whl" tflite==2.18.0
du -sh "$C" "$C"/*
