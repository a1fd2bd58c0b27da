#!/usr/bin/env bash
# A CUDA 13.0 toolkit from PyPI wheels, for building `--features cuda` / `--features cudnn` on a
# machine without a GPU or NVIDIA's installer: nvcc (candle's kernels are compiled at build
# time), headers, and the libraries the binary links against (cuBLAS, cuRAND, NVRTC, cuDNN).
# The driver's libcuda is not on PyPI: a stub exporting cudarc's driver symbols stands in at
# link time (the real one is used at run time). Writes $ROOT/env.sh; `source` it before cargo.
#
#   scripts/cuda_toolkit.sh [/work/cuda] && source /work/cuda/env.sh
#   cargo build --release --features cuda
#
# With --compiler-only, just what `cargo check --features cuda` needs (nvcc and headers, ~100 MB
# of wheels instead of ~1.2 GB): CI checks that the CUDA code compiles that way.
set -euo pipefail
ROOT=${1:-/work/cuda}
ROOT=$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)
mkdir -p "$ROOT/whl" "$ROOT/x" "$ROOT/stub"
COMPILER=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
LIBS=(nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.21.1.3)
if [ "${2:-}" = --compiler-only ]; then LIBS=(); fi
python3 -m pip download -q --no-deps --only-binary=:all: -d "$ROOT/whl" "${COMPILER[@]}" "${LIBS[@]}"
for w in "$ROOT"/whl/*.whl; do unzip -q -o "$w" -d "$ROOT/x"; done
CU="$ROOT/x/nvidia/cu13"

if [ ${#LIBS[@]} -gt 0 ]; then
# libcuda.so.1 stub: every cu* function cudarc declares, returning an error
CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
grep -oE "^\s*fn cu[A-Za-z0-9_]+\(" "$CUDARC/src/driver/sys/mod.rs" | sed -E 's/\s*fn //; s/\(//' | sort -u |
    awk '{print "int " $1 "(void){return 999;}"}' > "$ROOT/stub/libcuda.c"
gcc -shared -fPIC -o "$ROOT/stub/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$ROOT/stub/libcuda.c"
ln -sf libcuda.so.1 "$ROOT/stub/libcuda.so"
# unversioned names for the linker
for n in cublas cublasLt curand nvrtc cudart; do
    ln -sf "$(ls "$CU"/lib/lib$n.so.* | grep -v -e builtins -e alt | head -1)" "$ROOT/stub/lib$n.so"
done
ln -sf "$ROOT/x/nvidia/cudnn/lib/libcudnn.so.9" "$ROOT/stub/libcudnn.so"
fi

cat > "$ROOT/env.sh" <<EOT
export CUDA_HOME=$CU CUDA_ROOT=$CU
export PATH=$CU/bin:\$PATH
export CUDNN_LIB=$ROOT/x/nvidia/cudnn/lib
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$ROOT/stub\${LIBRARY_PATH:+:\$LIBRARY_PATH}
# to run the tests that need no GPU (NVRTC) on this machine
export LD_LIBRARY_PATH=$CU/lib:$ROOT/x/nvidia/cudnn/lib:$ROOT/stub\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export CARGO_TARGET_DIR=\${CARGO_TARGET_DIR:-$(pwd)/target/cuda}
EOT
echo "wrote $ROOT/env.sh"
