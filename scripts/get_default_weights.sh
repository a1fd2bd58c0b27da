#!/usr/bin/env bash
# Makes weights/default.safetensors: MobileNet v2 (α 1.0, 224) converted from the real
# TFLite file in ../shared, with its 1001 TF-slim ImageNet labels. Needs python3 (3.11) and
# the packages of scripts/requirements.txt, installed here into .venv if missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FERROVISION_SHARED:-$root/../shared}"
py="${FERROVISION_PYTHON:-}"
if [ -z "$py" ]; then
  if python3 -c "import numpy, safetensors, tflite" 2>/dev/null; then
    py=python3
  else
    [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q -r "$root/scripts/requirements.txt"
    py="$root/.venv/bin/python"
  fi
fi
"$py" "$root/scripts/convert_weights.py" tflite "$shared/models/tflite/mobilenet_v2_1.0_224_quant.tflite" \
  --labels "$shared/data/labels/imagenet_1001_tfslim.txt" --out "$root/weights/default.safetensors"
