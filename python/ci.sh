#!/usr/bin/env bash
# The Python binding's CI: builds its wheel with maturin, installs it in a venv (.venv-py at the
# repository root) and runs python/tests with pytest against the CLI. Run from anywhere:
#   python/ci.sh
# CI=true (the default here) turns "../shared or the converter's packages are missing" from a
# skip into a failure. $FERROVISION_PYTHON, when set (as .ci/run sets it), converts the weights;
# otherwise the venv gets scripts/requirements.txt too.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

VENV=.venv-py
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
printf '*\n' > "$VENV/.gitignore"  # keep the venv out of git without touching .gitignore
"$VENV/bin/pip" install -q "maturin>=1.5,<2" pytest numpy pillow
if [ -z "${FERROVISION_PYTHON:-}" ]; then
  "$VENV/bin/pip" install -q -r scripts/requirements.txt
fi

# The CLI the tests compare with (already built by `cargo test --release` in .ci/run).
cargo build --release
export FERROVISION_BIN="$CARGO_TARGET_DIR/release/ferrovision"

rm -f "$CARGO_TARGET_DIR"/wheels/ferrovision-*.whl
(cd python && "../$VENV/bin/maturin" build --release -i "../$VENV/bin/python" -o "$CARGO_TARGET_DIR/wheels")
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$CARGO_TARGET_DIR"/wheels/ferrovision-*.whl
"$VENV/bin/python" -m pytest -q python/tests
