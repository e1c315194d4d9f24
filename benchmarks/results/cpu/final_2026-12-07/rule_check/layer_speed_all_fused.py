"""benchmarks/layer_speed.py with the stride-1 training rule lifted (every layer with output
rows of 7 pixels or more trains on the pixel kernels), as run for docs/benchmarks.md:

    python benchmarks/results/cpu/final_2026-12-07/rule_check/layer_speed_all_fused.py \
        --threads 2 --repeats 7 --nchw --train --shapes vgg19 --json OUT.json
"""

import runpy
import sys

import ssconv.layers.dispatch as d

d.AUTO_FUSED_TRAIN_NARROW = 4096  # every stride-1 layer with rows >= 7 px trains fused
sys.argv = ["layer_speed.py"] + sys.argv[1:]
runpy.run_path("benchmarks/layer_speed.py", run_name="__main__")
