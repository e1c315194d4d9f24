#!/usr/bin/env bash
# Every GPU check of the project in one call, for a machine with CUDA and a python3 that holds
# torch and torchvision (the package itself is used from src/, not installed):
#
#   bash benchmarks/gpu_check.sh OUTDIR [BUDGET_S]
#
# The steps run in order of what a short loan of a GPU should settle first, each under its own
# time limit and all of them within BUDGET_S seconds (default 540, inside the device tool's
# 600 s per call): a step whose limit would pass the budget gets what is left, and once less
# than 20 s is left the remaining steps are skipped (env.txt says which). Writes to OUTDIR:
#
#   env.txt              GPU, driver, versions; each step's exit status and seconds
#   triton_tests.log     tests/layers/test_triton.py: the Triton kernels against the masked
#                        reference on CUDA (forward, both gradients, half precision, compile)
#   e2e/, e2e_cuda.md    benchmarks/end_to_end.py --cuda-graphs: VGG-19 and ResNet-32 at 0.10
#                        and 0.05, batch 64 and 256, then ResNet-50 at 224 x 224, batch 64,
#                        0.20 and 0.10; inference and training step, eager and CUDA-graphed
#   layers_cuda.{md,json} benchmarks/layer_speed.py (backend="triton" beside the stock ones)
#   gpu_tests.log        pytest -m gpu (the other GPU-marked tests)
#   compile_cuda.md      ssconv bench --compile reduce-overhead --train on ResNet-32 at 0.10
#   full_suite.log       the whole suite on that machine's torch, with what time is left
set -u
out=${1:-gpu-results}
budget=${2:-540}
mkdir -p "$out" "$out/e2e"
export PYTHONPATH="$PWD/src:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
start=$(date +%s)
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
} >"$out/env.txt" 2>&1

# step NAME LIMIT_S LOG COMMAND...: run COMMAND (output to OUTDIR/LOG) under
# min(LIMIT_S, what is left of the budget); skipped when under 20 s are left.
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((budget - ($(date +%s) - start)))
    if [ "$left" -lt 20 ]; then
        echo "$name: skipped (budget of ${budget} s spent)" >>"$out/env.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    timeout "$limit" "$@" >>"$out/$log" 2>&1
    echo "$name: exit $? after $(($(date +%s) - t0)) s (limit ${limit} s)" >>"$out/env.txt"
}

# One kernel configuration per Triton kernel (no autotuning): the autotuner's compiles for every
# layer shape would not fit a short loan.
export SSCONV_TRITON_AUTOTUNE=0

step "triton tests" 150 triton_tests.log \
    python3 -m pytest -q tests/layers/test_triton.py -p no:cacheprovider

for batch in 64 256; do
    step "end-to-end cuda graphs batch $batch" 120 e2e_cuda.md \
        python3 benchmarks/end_to_end.py --device cuda --out "$out/e2e" --cuda-graphs \
        --batch "$batch" --models vgg19_bn cifar_resnet32 --repeats 7
done
step "end-to-end resnet50 batch 64" 120 e2e_cuda.md \
    python3 benchmarks/end_to_end.py --device cuda --out "$out/e2e" --cuda-graphs \
    --batch 64 --models resnet50 --repeats 5

step "layer benchmark" 100 layers_cuda.md \
    python3 benchmarks/layer_speed.py --device cuda --repeats 9 --json "$out/layers_cuda.json"

step "gpu tests" 120 gpu_tests.log \
    python3 -m pytest -q -m gpu tests -p no:cacheprovider --ignore=tests/layers/test_triton.py

step "bench --compile reduce-overhead" 120 compile_cuda.md \
    python3 -m ssconv bench cifar_resnet32 --density 0.1 --batch 64 --device cuda \
    --compile reduce-overhead --train

step "full suite" 240 full_suite.log python3 -m pytest -q -x tests -p no:cacheprovider
echo "total: $(($(date +%s) - start)) s of a ${budget} s budget" >>"$out/env.txt"
