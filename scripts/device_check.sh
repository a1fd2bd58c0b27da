#!/usr/bin/env bash
# One call of the device tool (a lent GPU machine, which has no Rust and no network): unpacks
# the CUDA build that scripts/prepare_device_carry.sh put in .devcarry/, runs the GPU tests and
# the GPU benchmark, and leaves logs and tables in $OUT (8 files: the tool returns at most 8).
#
#   device run: bash scripts/device_check.sh     (carry: [".devcarry"], timeout_s 420)
#
# Steps are time-boxed so that the whole stays within BUDGET seconds (default 390; the last
# step gets what is left); STEPS=... picks some; each prints its own result.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
C=$PWD/.devcarry
STEPS=${STEPS:-smoke,kernels,parity,photos,bench,profile,rest}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s]"; }
left() { local l=$(( ${BUDGET:-390} - ($(date +%s) - t0) )); echo $(( l > 30 ? l : 30 )); }

# the test binaries look for the sources and ../shared where they were built
mkdir -p /work
[ "$PWD" = /work/main ] || [ -e /work/main ] || ln -s "$PWD" /work/main
[ -e /work/shared ] || ln -s "$C/shared" /work/shared

# CUDA 13 libraries of the machine's PyTorch (cuBLAS, cuRAND, NVRTC, cuDNN), and the driver's
NV=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
LIBS=$([ -n "$NV" ] && find $NV -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${LIBS}/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for f in "$C"/bin/*.xz; do # xz, or Python's lzma where the image lacks xz
    xz -dkf -T0 "$f" 2>/dev/null ||
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], "wb"))' "$f"
done
chmod +x "$C"/bin/*
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/env.txt"
FV=$C/bin/ferrovision-cudnn
if ldd "$FV" | grep -q "not found"; then
    echo "ferrovision-cudnn lacks libraries:"; ldd "$FV" | grep "not found"
    FV=$C/bin/ferrovision-cuda
fi
ldd "$FV" | grep -E "cuda|cublas|cudnn|nvrtc|curand" | tee -a "$OUT/env.txt"
echo "binary: $FV" | tee -a "$OUT/env.txt"

export FERROVISION_TEST_DEVICE=cuda CI=true FERROVISION_PYTHON=python3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$C"/whl/*.whl && export PYTHONPATH=/tmp/site

if step smoke; then
    echo "== smoke $(el)"
    timeout 60 "$FV" bench --model mobilenet_v2 --device cuda --batch 1,8 --runs 3 2>&1 | tee -a "$OUT/tests.log"
    timeout 60 "$FV" bench --model resnet50 --device cuda --weights-dtype f16 --batch 8 --runs 3 2>&1 | tee -a "$OUT/tests.log"
    # the CLI end to end: the real MobileNet v2 on the photos, f32 and f16 on the GPU
    S=/work/shared
    python3 scripts/convert_weights.py tflite "$S/models/tflite/mobilenet_v2_1.0_224_quant.tflite" \
        --labels "$S/data/labels/imagenet_1001_tfslim.txt" --out /tmp/mnv2.safetensors > /dev/null &&
        for dt in f32 f16; do
            timeout 60 "$FV" classify --weights /tmp/mnv2.safetensors --device cuda --weights-dtype $dt \
                --top-k 1 --format csv "$S/data/images" > /tmp/classify.csv 2>&1
            cat /tmp/classify.csv >> "$OUT/tests.log"
            echo "classify $dt: $(cut -d, -f3-4 /tmp/classify.csv | tail -n +2 | head -14 | tr '\n' ';' | cut -c1-300)"
            tail -1 /tmp/classify.csv
        done
fi
if step kernels; then
    echo "== gpu_kernels $(el)"
    timeout 60 "$C/bin/gpu_kernels" device_ nvrtc_compiles --test-threads 1 2>&1 | tee -a "$OUT/tests.log" | grep -E "^test |test result|panicked"
    echo "== gpu_kernels, cuDNN's fused call $(el)"
    FERROVISION_CUDNN_FUSE=1 timeout 60 "$C/bin/gpu_kernels" device_cudnn --test-threads 1 2>&1 | tee -a "$OUT/tests.log" | grep -E "test result|panicked"
fi
if step parity; then
    # f32 as the issue means it: the default (cuDNN called by us, strict f32 by its math type,
    # then our epilogue), with cuDNN's fused conv+bias+ReLU call, and candle's convolutions with
    # NVIDIA_TF32_OVERRIDE=0 (cuDNN's default math may use TF32 for f32 from Ampere on). Each
    # case prints max|diff|/max|logit|; the worst is shown.
    for mode in default fused candle; do
        echo "== parity device::, $mode $(el)"
        (
            [ $mode = fused ] && export FERROVISION_CUDNN_FUSE=1
            [ $mode = candle ] && export FERROVISION_CUDNN=candle NVIDIA_TF32_OVERRIDE=0
            timeout 100 "$C/bin/parity" device:: --test-threads 4 --nocapture
        ) > /tmp/parity.log 2>&1
        grep -m1 -E "cuDNN called directly failed|fused convolution failed" /tmp/parity.log
        cat /tmp/parity.log >> "$OUT/tests.log"
        grep -E "FAILED|panicked" /tmp/parity.log | head -12
        grep "test result" /tmp/parity.log
        echo "worst max|diff|/max|logit|: $(grep 'max|diff|' /tmp/parity.log | grep -oE '[0-9.]+e[-+][0-9]+' | sort -g | tail -1)"
    done
fi
if step photos; then
    echo "== real photos $(el)"
    timeout 90 "$C/bin/real_weights" device_keeps --nocapture 2>&1 | tee -a "$OUT/tests.log" | grep -E "top-1|test result|panicked" | tail -40
fi
# the targets first (resnet50, mobilenet_v2), ours in the default build and in its
# variants next to PyTorch eager (cudnn.benchmark off, its default, and on); then ours per layer
# type at batch 256 f16; then the other architectures while the time box lasts; each table is
# rewritten after every model, so a cut-off run keeps its cells
VARIANTS=(--variant fused:FERROVISION_CUDNN_FUSE=1 --variant tf32:FERROVISION_TF32=1
    --variant candle:FERROVISION_CUDNN=candle)
if step bench; then
    echo "== bench $(el)"
    timeout ${BENCH_CORE_TIMEOUT:-150} python3 scripts/bench_gpu.py --bin "$FV" --only resnet50,mobilenet_v2 \
        "${VARIANTS[@]}" --cudnn-benchmark \
        --out "$OUT/bench_gpu_core.md" --json "$OUT/bench_gpu_core.json" 2> "$OUT/bench_gpu_core.err"
    cat "$OUT/bench_gpu_core.md"
fi
if step profile; then
    echo "== profile $(el)"
    PYTHONUNBUFFERED=1 timeout ${PROFILE_TIMEOUT:-40} python3 scripts/bench_gpu.py --bin "$FV" --profile --no-torch-profile \
        --only resnet50,mobilenet_v2 --batches 256 --dtypes f16 > "$OUT/profile.txt" 2>&1
    grep -E "^## |ms/image \(median" "$OUT/profile.txt"
fi
if step rest; then
    echo "== bench, other architectures $(el)"
    timeout $(left) python3 scripts/bench_gpu.py --bin "$FV" \
        --only resnet18,vgg16,squeezenet1_1,googlenet,inception_v3,alexnet,mobilenet_v1 \
        --out "$OUT/bench_gpu_rest.md" 2> "$OUT/bench_gpu_rest.err"
    tail -3 "$OUT/bench_gpu_rest.err"
fi
echo "== done $(el)"
