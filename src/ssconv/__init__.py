"""ssconv: Structured Sparse Convolution for PyTorch.

Implements "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma, Mehta,
Si, Henao, Carin, WACV 2023, arXiv:2210.12818): convolutions whose filters carry a fixed,
structured sparsity pattern chosen before training.
"""

from ssconv._profile import ProfileResult, profile
from ssconv.conversion import convert, load_dense_state_dict
from ssconv.deploy import export_onnx, freeze
from ssconv.layers import SSCFactory, SSCLinear, SSConv2d, SSCPattern, SSCTracer, symbolic_trace
from ssconv.layers.tuning import autotune
from ssconv.models import create_model, list_models
from ssconv.runs import load_run

__version__ = "0.1.0"

__all__ = [
    "ProfileResult",
    "SSCFactory",
    "SSCLinear",
    "SSCPattern",
    "SSConv2d",
    "SSCTracer",
    "__version__",
    "autotune",
    "convert",
    "create_model",
    "export_onnx",
    "freeze",
    "list_models",
    "load_dense_state_dict",
    "load_run",
    "profile",
    "symbolic_trace",
]

if __import__("os").environ.get("SSCONV_BUILD_KERNELS") == "1":
    # Opt-in: build (or load) the fused CPU kernel now, at import, instead of inside the first
    # forward pass that uses it (a notebook's first cell, a job's start-up).
    from ssconv.kernels import fused as _fused

    _fused.available()
