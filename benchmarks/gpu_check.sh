#!/usr/bin/env bash
# Every GPU check of the project in one go, for a machine with CUDA and a python3 that holds
# torch and torchvision (the package itself is used from src/, not installed):
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Writes OUTDIR/env.txt (GPU, driver, versions), gpu_tests.log (pytest -m gpu), triton_tests.log
# (the Triton kernels' tests, interpreter and CUDA),
# layers_cuda.{md,json} (benchmarks/layer_speed.py), e2e/ and e2e_cuda.md
# (benchmarks/end_to_end.py), compile_cuda.md (ssconv bench --compile on ResNet-32) and
# full_suite.log (the whole suite on that machine's torch). Each step has its own time limit,
# so that one slow step does not lose the others' figures.
set -u
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
} >"$out/env.txt" 2>&1

timeout 240 python3 -m pytest -q -m gpu tests -p no:cacheprovider \
    --ignore=tests/layers/test_triton.py >"$out/gpu_tests.log" 2>&1
echo "gpu tests: exit $?" >>"$out/env.txt"

# The Triton kernels (tests/layers/test_triton.py), in their own log: exactness on CUDA against
# the masked reference, half precision and a torch.compile training step (one kernel
# configuration each, no autotuning), and the interpreter tests on CPU tensors.
timeout 240 python3 -m pytest -q tests/layers/test_triton.py -p no:cacheprovider \
    >"$out/triton_tests.log" 2>&1
echo "triton tests: exit $?" >>"$out/env.txt"

# The layer benchmark times backend="triton" beside dense, masked, decomposed and split where
# triton is installed; one kernel configuration per kernel (SSCONV_TRITON_AUTOTUNE=0): the
# autotuner's compiles for every layer shape would not fit the time limit.
SSCONV_TRITON_AUTOTUNE=0 timeout 150 python3 benchmarks/layer_speed.py --device cuda --repeats 9 \
    --json "$out/layers_cuda.json" >"$out/layers_cuda.md" 2>"$out/layers_cuda.err"
echo "layer benchmark: exit $?" >>"$out/env.txt"

timeout 240 python3 benchmarks/end_to_end.py --device cuda --out "$out/e2e" >"$out/e2e_cuda.md" 2>&1
echo "end-to-end benchmark: exit $?" >>"$out/env.txt"

timeout 150 python3 -m ssconv bench cifar_resnet32 --density 0.1 --batch 64 --device cuda \
    --compile >"$out/compile_cuda.md" 2>&1
echo "bench --compile: exit $?" >>"$out/env.txt"

timeout 240 python3 -m pytest -q -x tests -p no:cacheprovider >"$out/full_suite.log" 2>&1
echo "full suite: exit $?" >>"$out/env.txt"
