#!/usr/bin/env bash
# Load benchmark of `ferrovision serve` next to `ferrovision classify` on the same photos, in the
# same run, alternating in rounds: images/s and p50 / p99 latency at concurrency 1, 8 and 32
# (examples/serve_load.rs: one image per POST /classify, each client on its own connection), for
# MobileNet v2 (the real TFLite weights, weights/default.safetensors from scripts/quickstart.sh) and
# ResNet-50 (synthetic weights: speed does not depend on the values). Prints a Markdown table of
# medians and the server's batch-size histogram.
#
#   [MODELS="mobilenet_v2 resnet50"] scripts/bench_serve.sh [ROUNDS=3] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; seconds="${2:-10}"
shared="${FERROVISION_SHARED:-../shared}"
cargo build --release --quiet --bin ferrovision --example serve_load
bin=target/release/ferrovision; load=target/release/examples/serve_load
out=target/bench; mkdir -p "$out"
[ -f weights/default.safetensors ] || scripts/quickstart.sh "$shared/data/images/cat.jpg" >/dev/null
[ -f "$out/resnet50_synthetic.safetensors" ] || "$load" synthetic resnet50 "$out/resnet50_synthetic.safetensors"
mapfile -t photos < <(ls "$shared"/data/images/*.jpg "$shared"/data/images/*.bmp)
# the CLI's folder: the photos 40 times over (symlinks; about 5 s of work per round)
folder="$out/serve_photos"; rm -rf "$folder"; mkdir -p "$folder"
for k in $(seq 40); do for p in "${photos[@]}"; do ln -s "$(realpath "$p")" "$folder/$k-$(basename "$p")"; done; done
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; ISA: $(grep -o 'avx512f\|avx2\|asimd' /proc/cpuinfo | sort -u | xargs)"
echo "# ${#photos[@]} photos; $rounds rounds of ${seconds} s per concurrency; batch 16 for both"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for model in ${MODELS:-mobilenet_v2 resnet50}; do
  case $model in
    mobilenet_v2) weights=weights/default.safetensors ;;
    resnet50) weights="$out/resnet50_synthetic.safetensors" ;;
  esac
  log="$out/serve_$model.log"
  "$bin" serve --weights "$weights" --addr 127.0.0.1:0 --max-batch 16 --max-queue-delay-ms 5 2>"$log" &
  server=$!
  for _ in $(seq 100); do grep -q "^serving" "$log" && break; sleep 0.1; done
  addr=$(grep -m1 "^serving" "$log" | sed 's/.* on http:\/\///')
  : > "$out/serve_$model.rounds"
  for r in $(seq "$rounds"); do
    cli=$("$bin" classify --weights "$weights" --batch-size 16 --format json "$folder" 2>&1 >/dev/null |
          sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p')
    echo "cli 0 $cli 0 0" >> "$out/serve_$model.rounds"
    for c in 1 8 32; do
      "$load" load "http://$addr/classify" "$c" "$seconds" "${photos[@]}" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("serve", d["concurrency"], d["images_per_s"], d["p50_ms"], d["p99_ms"], d["errors"])' \
        >> "$out/serve_$model.rounds"
    done
  done
  curl -s "http://$addr/metrics" | grep '^ferrovision_batch_size' > "$out/serve_$model.batches" || true
  kill -TERM "$server"; wait "$server" || true
  cli_med=$(awk '$1=="cli"{print $3}' "$out/serve_$model.rounds" | median)
  echo
  echo "## $model"
  echo "| engine | concurrency | images/s (median) | vs CLI | p50 ms | p99 ms |"
  echo "|---|---|---|---|---|---|"
  echo "| classify --batch-size 16 | - | $cli_med | 1.00 | - | - |"
  for c in 1 8 32; do
    ips=$(awk -v c="$c" '$1=="serve" && $2==c {print $3}' "$out/serve_$model.rounds" | median)
    p50=$(awk -v c="$c" '$1=="serve" && $2==c {print $4}' "$out/serve_$model.rounds" | median)
    p99=$(awk -v c="$c" '$1=="serve" && $2==c {print $5}' "$out/serve_$model.rounds" | median)
    echo "| serve | $c | $ips | $(python3 -c "print(f'{$ips/$cli_med:.2f}')") | $p50 | $p99 |"
  done
  echo
  echo "batch sizes (cumulative buckets, whole run):"
  cat "$out/serve_$model.batches"
done
