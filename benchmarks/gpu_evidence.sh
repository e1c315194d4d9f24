#!/usr/bin/env bash
# Run a sweep file's whole grid on a GPU machine with many worker processes sharing one GPU,
# then write its report: the accuracy evidence of docs/results/ in minutes instead of CPU hours.
#
# Here, before the device call (copies the Debian Fashion-MNIST files into data/, ~30 MB, which
# the device call carries with the working tree):
#
#   bash benchmarks/gpu_evidence.sh --prepare
#
# On the GPU machine (a python3 holding torch, torchvision, PyYAML, tqdm and matplotlib; the
# package itself is used from src/, not installed):
#
#   bash benchmarks/gpu_evidence.sh SWEEP_FILE OUTDIR [WORKERS] [TIME_LIMIT_S]
#
# e.g. with the device tool: command "bash benchmarks/gpu_evidence.sh
# configs/fashion_mnist_regime.yaml $OUT 24 480", carry ["data"].
#
# Every cell runs with device=cuda (DEVICE=cpu to try the script on a small grid without a GPU)
# and data_root=data/fashion-mnist when that folder exists, so its digest differs from the CPU
# cells': the GPU grid gets its own run folder, OUTDIR/runs. The workers claim cells with the
# sweep's lock files, one CPU thread each; at TIME_LIMIT_S (default 480) they get SIGTERM, save
# a checkpoint and stop; cells unfinished then are listed in status.txt and are not in the
# report (checkpoints do not come back from the device machine: size the grid to the call).
# OUTDIR receives evidence.tar.gz (the report: results.md, results.csv, plots; and every
# cell's config.yaml, final.json and metrics.jsonl), status.txt (sweep --status) and env.txt:
# three files, within the device tool's limits on what comes back.
set -u
if [ "${1:-}" = "--prepare" ]; then
    src=${2:-/usr/share/datasets/fashion-mnist}
    mkdir -p data/fashion-mnist
    cp -v "$src"/*-ubyte.gz data/fashion-mnist/ || {
        echo "gpu_evidence: no Fashion-MNIST files in $src (apt-get install dataset-fashion-mnist)" >&2
        exit 2
    }
    exit 0
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 SWEEP_FILE OUTDIR [WORKERS] [TIME_LIMIT_S]  (or: $0 --prepare [SRC])" >&2
    exit 2
fi
sweep=$1
out=$2
workers=${3:-16}
limit=${4:-480}
mkdir -p "$out"
runs="$out/runs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export OMP_NUM_THREADS=1
overrides=(--set "device=${DEVICE:-cuda}" --set workers=0)
if [ -d data/fashion-mnist ]; then
    overrides+=(--set data_root=data/fashion-mnist)
fi
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    echo "sweep $sweep, $workers workers, limit ${limit} s"
} >"$out/env.txt" 2>&1

pids=()
for k in $(seq 1 "$workers"); do
    python3 -m ssconv sweep "$sweep" --out "$runs" "${overrides[@]}" --no-progress \
        >"$out/worker$k.log" 2>&1 &
    pids+=($!)
    sleep 0.2
done
start=$(date +%s)
while :; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
        echo "time limit reached: SIGTERM to the workers (they checkpoint and stop)" >>"$out/env.txt"
        kill -TERM "${pids[@]}" 2>/dev/null
        wait
        break
    fi
    sleep 5
done
echo "workers done after $(($(date +%s) - start)) s" >>"$out/env.txt"
python3 -m ssconv sweep "$sweep" --out "$runs" "${overrides[@]}" --status >"$out/status.txt" 2>&1
python3 -m ssconv report "$runs" -o "$out/report" >>"$out/env.txt" 2>&1
echo "report: exit $?" >>"$out/env.txt"
tail -n 3 "$out"/worker*.log >>"$out/env.txt" 2>/dev/null
(cd "$out" && find runs -name config.yaml -o -name final.json -o -name metrics.jsonl \
    -o -name failed.json -o -name skipped.json | tar czf evidence.tar.gz report -T -)
rm -f "$out"/worker*.log
rm -rf "$out/report"
rm -rf "$runs"  # checkpoints: too large and too deep to come back
