import sys, runpy
import ssconv.layers.dispatch as d
d.AUTO_FUSED_TRAIN_NARROW = 4096  # every stride-1 layer with rows >= 7 px trains fused
sys.argv = ["layer_speed.py"] + sys.argv[1:]
runpy.run_path("benchmarks/layer_speed.py", run_name="__main__")
