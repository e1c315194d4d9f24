"""`import ssconv` stays light: torchvision is imported only where a torchvision model or
dataset is built."""

import subprocess
import sys


def test_import_ssconv_does_not_import_torchvision():
    code = (
        "import sys, ssconv; "
        "assert 'torchvision' not in sys.modules, 'import ssconv imported torchvision'; "
        "ssconv.create_model('resnet18', num_classes=10); "
        "assert 'torchvision' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_ssconv_imports_no_benchmark_code():
    code = (
        "import sys, ssconv; "
        "bench = sorted(m for m in sys.modules if m.split('.')[:2] == ['ssconv', 'bench']); "
        "assert not bench, f'import ssconv imported {bench}'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_ssconv_does_not_load_the_compiler_stack():
    """torch._dynamo takes seconds to import (it came in once through a module-level
    torch.compiler.disable in the Triton backend): `import ssconv` must not load it, nor the
    Triton backend, which loads on the first backend="triton" call."""
    code = (
        "import sys, torch; "
        "assert 'torch._dynamo' not in sys.modules, 'torch itself loaded torch._dynamo'; "
        "import ssconv; "
        "loaded = [m for m in ('torch._dynamo', 'ssconv.kernels.triton_ssc') if m in sys.modules]; "
        "assert not loaded, f'import ssconv loaded {loaded}'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_opt_in_build_at_import():
    """SSCONV_BUILD_KERNELS=1: `import ssconv` builds (or loads) the fused kernel; without it,
    import builds nothing. Where the kernel cannot be built, import still succeeds."""
    import os

    code = "import ssconv; from ssconv.kernels import fused; print(fused._tried)"
    env = {**os.environ, "SSCONV_BUILD_KERNELS": "1"}
    env.pop("SSCONV_NO_FUSED", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, timeout=600, capture_output=True
    )
    assert out.stdout.decode().strip() == "True"  # tried at import: built, or why not
    env.pop("SSCONV_BUILD_KERNELS")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, timeout=120, capture_output=True
    )
    assert out.stdout.decode().strip() == "False"  # not tried
