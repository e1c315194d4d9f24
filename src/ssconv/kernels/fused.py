"""Optional fused CPU kernels for SSC layers (inference and training).

The kernels (``ssc_fused.cpp``) compute a block-structured sparse convolution in one pass over
the input: every output pixel reads its K x K window once and accumulates the spatial and the
1 x 1 weights of its filters together. Two layouts: ``"channels"`` (NHWC; vector lanes are
filters of one residue class, for wide layers in inference) and ``"pixels"`` (NCHW; lanes are
8 pixels of a row and blocks hold 1-4 filters, so narrow classes execute no zeros; used for
training; a strided layer's input is read through phase planes). Training adds the weight
gradient in the packed layout, and the input gradient as the forward of the transposed,
tap-flipped packing: one call at stride 1, one per output phase in a strided layer
(:class:`PhasePlans`; :func:`fused_conv2d_train`, an autograd function over the custom ops).

The module is compiled on first use with :func:`torch.utils.cpp_extension.load` (needs a C++
compiler and ``ninja``; ``pip install ninja``) and cached by PyTorch (``TORCH_EXTENSIONS_DIR``);
``ssconv kernels build`` compiles it ahead of time and ``ssconv kernels`` (:func:`status`)
says whether it is built, without building it. Where it cannot be built, :func:`available` is
false and the layers use their stock-kernel paths; nothing else changes.

Set ``SSCONV_NO_FUSED=1`` to never build or use it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

__all__ = [
    "available",
    "build_error",
    "pack",
    "PackedWeight",
    "fused_conv2d",
    "VB_CHOICES",
    "executed_per_pixel",
    "planned_executed",
    "can_run",
    "disabled",
    "full_weight",
    "grouped_weight",
    "weights_key",
    "cached_pack",
    "status",
    "KernelStatus",
]

log = logging.getLogger(__name__)

VB_CHOICES = (16, 8, 4)
# Relative throughput of the kernel's tiles per executed MAC (16 lanes x 6 pixels = 1), measured
# on the layer benchmark (2-core AVX2): the narrower tiles pay their loads over fewer FMAs.
_VB_SPEED = {16: 1.0, 8: 0.75, 4: 0.4}
KERNELS = ("channels", "pixels")
# The pixel kernel's block widths (filters per block) and their estimated relative throughput
# per executed MAC: each input vector feeds VB filters.
PIX_VB = (4, 2, 1)
_PIX_SPEED = {4: 1.0, 2: 0.85, 1: 0.65}
_SOURCE = Path(__file__).with_name("ssc_fused.cpp")
_lock = threading.Lock()
_module = None
_error: str | None = None
_tried = False


def portable() -> bool:
    """Whether this platform gets the portable build: macOS (Apple clang has no ``-fopenmp``),
    Windows (MSVC has no GCC vector extensions), or anywhere with ``SSCONV_PORTABLE_KERNEL=1``.

    The portable build compiles without OpenMP (``at::parallel_for`` then runs the kernel on
    one thread) and, on Windows or with ``SSCONV_PORTABLE_KERNEL=1``, with the vector types as
    plain arrays (``-DSSCONV_PORTABLE``); the results are the same, only slower. Elsewhere a
    failed native build is retried portable once.
    """
    return sys.platform in ("darwin", "win32") or os.environ.get("SSCONV_PORTABLE_KERNEL") == "1"


def _flags(portable_build: bool | None = None) -> list[str]:
    if portable_build is None:
        portable_build = portable()
    if portable_build:
        if sys.platform == "win32":
            return ["/O2", "/DSSCONV_PORTABLE"]
        if sys.platform == "darwin" and os.environ.get("SSCONV_PORTABLE_KERNEL") != "1":
            return ["-O3"]  # clang has the vector extensions
        return ["-O3", "-DSSCONV_PORTABLE"]
    flags = ["-O3", "-fopenmp"]  # OpenMP: at::parallel_for is inline and needs it
    cap = torch.backends.cpu.get_cpu_capability()
    if cap in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    # ATen's AVX512 means F, VL, BW and DQ: 16-lane kernels, 32 registers. SSCONV_NO_AVX512=1
    # builds the 8-lane kernels instead (CPUs that slow their clock for 512-bit code, or A/B
    # timings); it is part of the build's key, like every flag.
    if cap == "AVX512" and not os.environ.get("SSCONV_NO_AVX512"):
        flags += ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    return flags


def _ldflags(portable_build: bool) -> list[str]:
    return [] if portable_build else ["-fopenmp"]


def _ninja_on_path() -> None:
    """Make the ``ninja`` of the ``ninja`` wheel visible when the venv is not activated."""
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


class _DropCudaHomeWarning(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." warning, which importing
    ``torch.utils.cpp_extension`` logs on every CPU-only machine with a CUDA toolkit; the fused
    kernel is a CPU build and never uses CUDA_HOME."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _import_cpp_extension():
    """``torch.utils.cpp_extension``, imported without its CUDA_HOME warning."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = _DropCudaHomeWarning()
    logger.addFilter(quiet)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.removeFilter(quiet)
    return cpp_extension


_BUILD_NOTICE = (
    "building the fused SSC kernel (once per machine, torch and kernel version, about a "
    "minute; `ssconv kernels build` builds it ahead of time, SSCONV_NO_FUSED=1 skips it)"
)


def _ninja_has_work(build_directory: str) -> bool:
    """Whether ``ninja`` would compile anything in ``build_directory`` (a dry run; True when
    the dry run itself fails, so that a real build is never silent)."""
    import subprocess

    try:
        proc = subprocess.run(
            ["ninja", "-n", "-C", str(build_directory)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return proc.returncode != 0 or "no work to do" not in proc.stdout


@contextmanager
def _build_notice(cpp_extension):
    """Log :data:`_BUILD_NOTICE` (a warning: shown on stderr where logging is not configured)
    only when ninja is about to compile: wraps the private ``_run_ninja_build`` of
    ``cpp_extension`` (it runs after ``build.ninja`` is written, so the dry run sees the current
    build rules); logs it up front where that hook is missing. Once per process, as
    :func:`_load` runs once."""
    original = getattr(cpp_extension, "_run_ninja_build", None)
    if original is None:
        log.warning(_BUILD_NOTICE)
        yield
        return

    def run_ninja_build(build_directory, *args, **kwargs):
        if _ninja_has_work(build_directory):
            log.warning(_BUILD_NOTICE)
        return original(build_directory, *args, **kwargs)

    cpp_extension._run_ninja_build = run_ninja_build
    try:
        yield
    finally:
        cpp_extension._run_ninja_build = original


def _build_spec(
    source: Path = _SOURCE, portable_build: bool | None = None
) -> tuple[str, Path, Path]:
    """Extension name, build folder and source path of the build, keyed by content.

    The name carries the CPU capability, the torch version and a hash of the source, the
    flags and the torch install's folder; the source is copied into the build folder and
    compiled from there. So the ``build.ninja`` torch writes is the same for every
    checkout of the same code in one environment (it records the source's absolute path:
    compiling each checkout's own file made ninja rebuild whenever another checkout had built
    last), and another version of the source, or another environment, gets its own folder
    instead of overwriting this one's build.
    """
    text = source.read_bytes()
    cap = torch.backends.cpu.get_cpu_capability().lower()
    tag = re.sub(r"\W", "_", torch.__version__.split("+")[0])
    # The torch install is part of the key: the build compiles against its headers, whose
    # absolute paths build.ninja records too (two virtual environments sharing one folder
    # rebuilt each other's kernel, 77 s in `ssconv demo` after a fresh-clone CI run).
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    if portable_build is None:
        portable_build = portable()
    flags = _flags(portable_build)
    digest = hashlib.sha1(text + " ".join([*flags, torch_dir]).encode()).hexdigest()[:10]
    kind = "_portable" if portable_build else ""
    name = f"ssconv_fused{kind}_{cap}_torch{tag}_{digest}"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
    )
    build_dir = Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_ssconv" / name
    return name, build_dir, build_dir / source.name


def _stage_source(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless it is there already (atomically: a concurrent
    process never compiles a half-written file; an unchanged file keeps its mtime)."""
    text = source.read_bytes()
    if target.exists() and target.read_bytes() == text:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(text)
    os.replace(tmp, target)


def _load():
    global _module, _error, _tried, _portable_loaded
    with _lock:
        if _tried:
            return _module
        _tried = True
        if os.environ.get("SSCONV_NO_FUSED"):
            _error = "disabled by SSCONV_NO_FUSED"
            return None
        modes = [True] if portable() else [False, True]
        for portable_build in modes:
            try:
                _module = _build(portable_build)
                _error = None
                _portable_loaded = portable_build
                break
            except Exception as exc:  # no compiler, no ninja, no headers, ...
                _error = _explain(exc)
                _module = None
                log.debug("fused SSC kernel build failed:\n%s", exc)
                if "compiler failed" not in _error:
                    break  # a missing tool: the portable build would fail the same way
        if _module is None:
            log.warning("fused SSC kernel unavailable: %s; using stock kernels", _error)
        elif _portable_loaded and not portable():
            log.warning(
                "fused SSC kernel: the native build failed, the portable one (no OpenMP: one "
                "thread) is used; the compiler's output is logged at DEBUG level"
            )
        return _module


_portable_loaded = False


def _build(portable_build: bool, source: Path | None = None):
    """Compile (or load) the extension; ``source``: another version of the kernel's source
    (``benchmarks/kernel_ab.py`` loads two versions side by side), by default this one's."""
    cpp_extension = _import_cpp_extension()
    _ninja_on_path()
    # One build per CPU capability, torch version (the build links against torch), source
    # version and build kind, shared by every checkout (see _build_spec).
    origin = _SOURCE if source is None else Path(source)
    name, build_dir, source = _build_spec(origin, portable_build=portable_build)
    _stage_source(origin, source)
    with warnings.catch_warnings(), _build_notice(cpp_extension):
        warnings.simplefilter("ignore")
        return cpp_extension.load(
            name=name,
            sources=[str(source)],
            build_directory=str(build_dir),
            extra_cflags=_flags(portable_build),
            extra_ldflags=_ldflags(portable_build),
            verbose=False,
        )


def vector_isa() -> str:
    """The vectors the kernel is (or would be) built for: ``"avx512"`` (16 float32 lanes,
    where ATen reports AVX512 and ``SSCONV_NO_AVX512`` is unset), ``"avx2"`` (8 lanes),
    ``"portable"`` or ``"generic"`` (what the compiler makes of the vector types). Never
    builds or loads the kernel."""
    isa = getattr(_module, "isa", None)  # a loaded build (older ones lack it)
    if callable(isa):
        return isa()
    if portable():
        return "portable"
    flags = _flags(False)
    return "avx512" if "-mavx512f" in flags else "avx2" if "-mavx2" in flags else "generic"


def is_portable_build() -> bool:
    """Whether the loaded kernel is the portable build (see :func:`portable`)."""
    return _module is not None and _portable_loaded


def _explain(exc: Exception) -> str:
    """One line on why the build failed (the full compiler output goes to the debug log)."""
    text = str(exc)
    if "Ninja is required" in text:
        return "ninja not found (pip install ninja)"
    if "Error building extension" in text:
        return (
            "the C++ compiler failed or is missing (the full output is logged at DEBUG level "
            "by 'ssconv.kernels.fused')"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


_disabled = 0


@contextmanager
def disabled():
    """Run the stock kernels inside this block (export, tracing for deployment)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch releases without the device_type argument
        return torch.is_autocast_cpu_enabled()


def can_run(x: Tensor, params: list[Tensor]) -> bool:
    """Whether a call on ``x`` may use the kernel: float32 CPU, no gradients, eager.

    ``params`` are the layer's weights (their device, dtype and ``requires_grad`` count).
    Does not build the kernel.
    """
    if _disabled or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    if torch.compiler.is_compiling() or _cpu_autocast():
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return False
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return False
    return not (
        torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
    )


def available() -> bool:
    """Whether the fused kernel is built (builds it on the first call)."""
    return _load() is not None


def build_error() -> str | None:
    """Why the kernel is not available (None when it is, or was not tried yet)."""
    return _error


@dataclass
class PackedWeight:
    """A layer's weights in the kernel's block layout (see ``ssc_fused.cpp``)."""

    w: Tensor  # (E, VB) float32
    ch: Tensor  # (E,) int32
    seg_tap: Tensor  # (S,) int32
    seg_beg: Tensor  # (S + 1,) int64
    blk_seg: Tensor  # (B + 1,) int64
    out_idx: Tensor  # (B * VB,) int32
    blk_base: Tensor  # (B,) int32
    bias: Tensor  # (B * VB,) float32
    vb: int
    in_channels: int
    out_channels: int
    executed_per_pixel: int  # entries * VB: the MACs the kernel executes per output pixel


def _block_bases(lane_rows: Tensor) -> Tensor:
    """Per block: its first channel when its lanes hold consecutive channels, else -1."""
    base = torch.full((lane_rows.shape[0],), -1, dtype=torch.int32)
    for b, row in enumerate(lane_rows.long()):
        chans = row[row >= 0]
        if chans.numel() and bool((chans == chans[0] + torch.arange(chans.numel())).all()):
            base[b] = int(chans[0])
    return base


def _block_layout(mask: Tensor, order: Tensor, vb: int):
    """Union masks (B, taps, C_in) of the blocks of ``vb`` lanes over outputs in ``order``."""
    c_out = order.numel()
    nb = -(-c_out // vb)
    pad = nb * vb - c_out
    m = mask[order]  # (C_out, C_in, taps)
    if pad:
        m = torch.cat([m, m.new_zeros(pad, *m.shape[1:])])
    union = m.view(nb, vb, *m.shape[1:]).any(1)  # (B, C_in, taps)
    return union.transpose(1, 2).contiguous(), pad


def executed_per_pixel(mask: Tensor, order: Tensor, vb: int) -> int:
    """MACs per output pixel with blocks of ``vb`` lanes (full mask ``(C_out, C_in, taps)``)."""
    union, _ = _block_layout(mask, order, vb)
    return int(union.sum()) * vb


def _choose_vb(full_mask: Tensor, order: Tensor, choices=VB_CHOICES, speed=None) -> tuple[int, int]:
    """The block width with the lowest estimated time, and its executed MACs per pixel."""
    speed = _VB_SPEED if speed is None else speed
    executed = {v: executed_per_pixel(full_mask, order, v) for v in choices}
    vb = min(choices, key=lambda v: executed[v] / speed[v])
    return vb, executed[vb]


def planned_executed(mask: Tensor, groups: int) -> int:
    """MACs per output pixel that :func:`pack` would execute for this structural mask."""
    fm = full_weight(mask.cpu().float(), groups).bool()
    return _choose_vb(fm, output_order(fm))[1]


def full_weight(weight: Tensor, groups: int) -> Tensor:
    """(C_out, C_in, taps) from a grouped (C_out, C_in/G, kh, kw) weight (zeros across groups)."""
    c_out, cin_g, kh, kw = weight.shape
    full = weight.new_zeros(c_out, cin_g * groups, kh * kw)
    cout_g = c_out // groups
    for g in range(groups):
        full[g * cout_g : (g + 1) * cout_g, g * cin_g : (g + 1) * cin_g] = weight[
            g * cout_g : (g + 1) * cout_g
        ].reshape(cout_g, cin_g, kh * kw)
    return full


def grouped_weight(full: Tensor, groups: int, kernel_size: tuple[int, int]) -> Tensor:
    """The inverse of :func:`full_weight`: the diagonal blocks, ``(C_out, C_in/G, kh, kw)``."""
    c_out, c_in, _ = full.shape
    cout_g, cin_g = c_out // groups, c_in // groups
    blocks = [
        full[g * cout_g : (g + 1) * cout_g, g * cin_g : (g + 1) * cin_g] for g in range(groups)
    ]
    return torch.cat(blocks).view(c_out, cin_g, *kernel_size)


def weights_key(tensors: list[Tensor | None]) -> tuple:
    """Identity and version of each tensor: packed weights are rebuilt when the key changes
    (in-place updates such as optimizer steps and ``load_state_dict`` bump the version).
    Inference tensors have no version counter; they are keyed by identity only."""
    return tuple(
        None if t is None else (t.data_ptr(), t.shape, -1 if t.is_inference() else t._version)
        for t in tensors
    )


def cached_pack(owner: torch.nn.Module, key: tuple, make, slot: str = "_fused_cache"):
    """``owner``'s packed weights, packed again by ``make()`` whenever ``key`` changes
    (see :func:`weights_key`). Kept outside the module's state: not saved, not moved.
    ``slot`` names the cache (one per kernel layout)."""
    cache = owner.__dict__.get(slot)
    if cache is None or cache[0] != key:
        with torch.no_grad():
            cache = owner.__dict__[slot] = (key, make())
    return cache[1]


def output_order(mask: Tensor) -> Tensor:
    """Output channels sorted so that equal supports are neighbours (stable: ties keep order)."""
    c_out = mask.shape[0]
    flat = mask.reshape(c_out, -1)
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    # Order classes by their first channel, then channels inside a class by index.
    first = torch.full((int(inverse.max()) + 1,), c_out, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(c_out), reduce="amin")
    key = first[inverse] * c_out + torch.arange(c_out)
    return torch.argsort(key)


def _index_layout(
    mask: Tensor, groups: int, transpose: bool, in_order: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Full mask ``(C_out, C_in, taps)`` and, for each of its positions, the flat index of that
    weight in the grouped weight ``(C_out, C_in/G, kh, kw)`` (``numel``, a zero, off the mask).

    ``in_order[q]``: the input channel that the weight's logical input ``q`` reads (a layer's
    channel shuffle; None: the identity). ``transpose=True`` gives the layout of the input
    gradient of a stride-1 layer, a convolution of the output gradient: inputs and outputs
    swapped and the taps flipped.
    """
    numel = mask.numel()
    fm = full_weight(mask.float(), groups).bool()
    ids = torch.arange(1, numel + 1, dtype=torch.long).view(mask.shape)
    fidx = full_weight(ids, groups) - 1
    fidx = torch.where(fm, fidx, torch.full((), numel, dtype=torch.long))
    if in_order is not None:
        order = in_order.cpu().long()
        if sorted(order.tolist()) != list(range(fm.shape[1])):
            raise ValueError(f"in_order must be a permutation of range({fm.shape[1]})")
        fm = torch.zeros_like(fm).index_copy(1, order, fm)
        fidx = torch.full_like(fidx, numel).index_copy(1, order, fidx)
    if transpose:
        fm = fm.transpose(0, 1).flip(-1)
        fidx = fidx.transpose(0, 1).flip(-1)
    return fm.contiguous(), fidx.contiguous()


@dataclass
class Plan:
    """The kernel's block layout of one structural mask, independent of the weight values.

    ``src`` maps every packed weight ``(entry, lane)`` to its flat index in the grouped weight
    ``(C_out, C_in/G, kh, kw)`` (``numel`` where the block holds a zero): :func:`gather` packs a
    weight with one differentiable index, so the optimizer's updates need no re-planning.
    """

    ch: Tensor  # (E,) int32
    seg_tap: Tensor  # (S,) int32
    seg_beg: Tensor  # (S + 1,) int64
    blk_seg: Tensor  # (B + 1,) int64
    out_idx: Tensor  # (B * VB,) int32
    blk_base: Tensor  # (B,) int32
    src: Tensor  # (E, VB) int64
    lane_src: Tensor  # (B * VB,) int64: output channel of each lane, C_out for padding lanes
    vb: int
    in_channels: int
    out_channels: int
    executed_per_pixel: int  # entries * VB: the MACs the kernel executes per output pixel
    kernel: str = "channels"  # "channels": NHWC, lanes = filters; "pixels": NCHW, lanes = pixels


@torch.no_grad()
def make_plan(
    mask: Tensor,
    groups: int,
    vb: int | None = None,
    transpose: bool = False,
    kernel: str = "channels",
    in_order: Tensor | None = None,
) -> Plan:
    """The block layout of a structural ``mask`` ``(C_out, C_in/G, kh, kw)`` (see
    ``ssc_fused.cpp``); ``transpose=True``: the layout of the stride-1 input gradient;
    ``in_order``: the input channel each logical input reads (a channel shuffle folded into
    the packed channel indices; None: the identity).

    ``kernel="channels"`` (NHWC; vector lanes are a block's VB filters) or ``"pixels"``
    (NCHW; lanes are 8 pixels of a row and a block holds VB <= 4 filters, for
    residue classes too narrow for the first). ``vb=None`` picks the block width with the
    lowest estimated time: executed MACs over the tile's measured relative throughput.
    """
    fm, fidx = _index_layout(mask.cpu().bool(), groups, transpose, in_order)
    c_out = fm.shape[0]
    order = output_order(fm)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    choices, speed = (VB_CHOICES, _VB_SPEED) if kernel == "channels" else (PIX_VB, _PIX_SPEED)
    if vb is None:
        vb = _choose_vb(fm, order, choices, speed)[0]
    if vb not in choices:
        raise ValueError(f"vb must be one of {choices}, got {vb!r}")
    union, pad = _block_layout(fm, order, vb)  # (B, taps, C_in)
    nb, taps, _ = union.shape
    b_idx, t_idx, c_idx = union.nonzero(as_tuple=True)  # sorted by (block, tap, channel)
    lanes = torch.cat([order, torch.full((pad,), -1, dtype=torch.long)])
    lane_rows = lanes.view(nb, vb)  # output channel of each lane
    hole = torch.full((1, *fidx.shape[1:]), mask.numel(), dtype=torch.long)
    fpad = torch.cat([fidx, hole])  # row c_out: the padding lanes
    rows = torch.where(lane_rows < 0, c_out, lane_rows)  # (B, VB)
    src = fpad[rows[b_idx], c_idx.unsqueeze(1), t_idx.unsqueeze(1)]  # (E, VB)
    seg_key = b_idx * taps + t_idx
    uniq, counts = torch.unique_consecutive(seg_key, return_counts=True)
    seg_beg = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    seg_blk = uniq // taps
    blk_seg = torch.searchsorted(seg_blk, torch.arange(nb + 1))
    return Plan(
        ch=c_idx.to(torch.int32).contiguous(),
        seg_tap=(uniq % taps).to(torch.int32).contiguous(),
        seg_beg=seg_beg.contiguous(),
        blk_seg=blk_seg.contiguous(),
        out_idx=lanes.to(torch.int32).contiguous(),
        blk_base=_block_bases(lane_rows),
        src=src.contiguous(),
        lane_src=torch.where(lanes < 0, c_out, lanes).contiguous(),
        vb=vb,
        in_channels=fm.shape[1],
        out_channels=c_out,
        executed_per_pixel=int(b_idx.numel()) * vb,
        kernel=kernel,
    )


def take(flat: Tensor, index: Tensor) -> Tensor:
    """``flat[index]`` for a 1-d ``flat`` (differentiable), through ``index_select``: on CPU
    PyTorch's advanced indexing took about 9 ns an element in a training step's packings,
    15x ``index_select`` (one thread, a 512 -> 512 layer at period 8 on 2 x 2 maps: 17 of
    its 36 ms a step; 3 ms with ``index_select``; docs/benchmarks.md)."""
    return flat.index_select(0, index.reshape(-1)).view(index.shape)


def gather(weight: Tensor, plan: Plan) -> Tensor:
    """``weight`` ``(C_out, C_in/G, kh, kw)`` in the plan's packed layout ``(E, VB)``
    (differentiable: its gradient flows back to ``weight``)."""
    flat = torch.cat([weight.reshape(-1), weight.new_zeros(1)])
    return take(flat, plan.src)


def lane_values(values: Tensor | None, plan: Plan, like: Tensor) -> Tensor:
    """Per-output-channel ``values`` (a bias) per lane, zeros on padding lanes (or all zeros
    when ``values`` is None); differentiable."""
    if values is None:
        return like.new_zeros(plan.out_idx.numel())
    return take(torch.cat([values.reshape(-1), values.new_zeros(1)]), plan.lane_src)


@torch.no_grad()
def pack(
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    groups: int,
    vb: int | None = None,
    in_order: Tensor | None = None,
) -> PackedWeight:
    """Pack a dense-equivalent weight ``(C_out, C_in/G, kh, kw)`` and its structural ``mask``
    (``in_order``: the input channel each logical input reads, see :func:`make_plan`).

    ``vb=None`` picks the block width (lanes) with the lowest estimated time: executed MACs
    over the tile's measured relative throughput.
    """
    weight = weight.detach().float().cpu()
    plan = make_plan(mask, groups, vb, in_order=in_order)
    bias_l = lane_values(None if bias is None else bias.detach().float().cpu(), plan, weight)
    return PackedWeight(
        w=gather(weight, plan).contiguous(),
        ch=plan.ch,
        seg_tap=plan.seg_tap,
        seg_beg=plan.seg_beg,
        blk_seg=plan.blk_seg,
        out_idx=plan.out_idx,
        blk_base=plan.blk_base,
        bias=bias_l.contiguous(),
        vb=plan.vb,
        in_channels=plan.in_channels,
        out_channels=plan.out_channels,
        executed_per_pixel=plan.executed_per_pixel,
    )


def _built():
    """The built kernel module; raises (saying why) where it cannot be built."""
    mod = _load()
    if mod is None:
        raise RuntimeError(f"the fused SSC kernel is not available: {_error}")
    return mod


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# A torch custom op, so that dispatch modes see the kernel: FlopCounterMode counts its
# executed MACs (formula below) and ssconv.profile reports them.
@torch.library.custom_op("ssconv::fused_conv2d", mutates_args=())
def _fused_op(
    x: Tensor,
    w: Tensor,
    ch: Tensor,
    seg_tap: Tensor,
    seg_beg: Tensor,
    blk_seg: Tensor,
    out_idx: Tensor,
    blk_base: Tensor,
    bias: Tensor,
    in_channels: int,
    out_channels: int,
    geometry: list[int],
    vb: int,
    relu: bool = False,
) -> Tensor:
    args = (x, w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, bias, in_channels)
    # relu only where asked: kernel_ab.py's baseline builds may predate the argument.
    extra = {"relu": True} if relu else {}
    return _built().ssc_fused_forward(*args, out_channels, *geometry, vb, **extra)


@_fused_op.register_fake
def _(x, *args, relu=False):
    *_, out_channels, geometry, vb = args[:12]  # the op's arguments before relu
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    ho = _out_size(x.shape[2], kh, sh, ph, dh)
    wo = _out_size(x.shape[3], kw, sw, pw, dw)
    y = x.new_empty((x.shape[0], out_channels, ho, wo))
    return y.contiguous(memory_format=torch.channels_last)


def _fused_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # w is (entries, lanes): entries * lanes MACs per output pixel, 2 FLOPs each.
    return 2 * w_shape[0] * w_shape[1] * out_shape[0] * out_shape[2] * out_shape[3]


def fused_conv2d(
    x: Tensor,
    packed: PackedWeight,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    channels_last: bool | None = None,
    relu: bool = False,
) -> Tensor:
    """Run the kernel (float32 CPU). Raises if it is not built.

    The output has the input's memory format, as ``F.conv2d`` gives (the kernel itself works
    in channels_last: an NCHW input costs two layout copies), or, whatever the input's,
    channels_last with ``channels_last=True`` (one copy fewer for an NCHW input) and NCHW with
    ``channels_last=False``. ``relu``: ``torch.relu`` of the output, applied in the kernel's
    store (no pass of its own).
    """
    if x.dim() != 4 or x.shape[1] != packed.in_channels:
        raise RuntimeError(
            f"fused SSC conv: expected input of shape (N, {packed.in_channels}, H, W), got "
            f"{tuple(x.shape)}"
        )
    y = _fused_op(
        x,
        packed.w,
        packed.ch,
        packed.seg_tap,
        packed.seg_beg,
        packed.blk_seg,
        packed.out_idx,
        packed.blk_base,
        packed.bias,
        packed.in_channels,
        packed.out_channels,
        [*kernel_size, *stride, *padding, *dilation],
        packed.vb,
        relu,
    )
    if channels_last is None:
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y if channels_last else y.contiguous()


# ------------------------------------------------------------------ training
@torch.library.custom_op("ssconv::fused_conv2d_wgrad", mutates_args=())
def _wgrad_op(
    x: Tensor,
    grad_out: Tensor,
    ch: Tensor,
    seg_tap: Tensor,
    seg_beg: Tensor,
    blk_seg: Tensor,
    out_idx: Tensor,
    blk_base: Tensor,
    in_channels: int,
    out_channels: int,
    geometry: list[int],
    vb: int,
) -> Tensor:
    return _built().ssc_fused_wgrad(
        x,
        grad_out,
        ch,
        seg_tap,
        seg_beg,
        blk_seg,
        out_idx,
        blk_base,
        in_channels,
        out_channels,
        *geometry,
        vb,
    )


@_wgrad_op.register_fake
def _(x, grad_out, ch, *args):
    vb = args[-1]
    return x.new_empty((ch.shape[0], vb))


def _wgrad_flops(x_shape, g_shape, ch_shape, *args, out_shape=None, **kwargs) -> int:
    # entries * lanes MACs per output pixel, as the forward.
    return 2 * out_shape[0] * out_shape[1] * g_shape[0] * g_shape[2] * g_shape[3]


@torch.library.custom_op("ssconv::pix_conv2d", mutates_args=())
def _pix_op(
    x: Tensor,
    w: Tensor,
    ch: Tensor,
    seg_tap: Tensor,
    seg_beg: Tensor,
    blk_seg: Tensor,
    out_idx: Tensor,
    blk_base: Tensor,
    bias: Tensor,
    in_channels: int,
    out_channels: int,
    geometry: list[int],
    vb: int,
    relu: bool = False,
) -> Tensor:
    args = (x, w, ch, seg_tap, seg_beg, blk_seg, out_idx, blk_base, bias, in_channels)
    # relu only where asked: kernel_ab.py's baseline builds may predate the argument.
    extra = {"relu": True} if relu else {}
    return _built().ssc_pix_forward(*args, out_channels, *geometry, vb, **extra)


@_pix_op.register_fake
def _(x, *args, relu=False):
    *_, out_channels, geometry, vb = args[:12]
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    ho = _out_size(x.shape[2], kh, sh, ph, dh)
    wo = _out_size(x.shape[3], kw, sw, pw, dw)
    return x.new_empty((x.shape[0], out_channels, ho, wo))


@torch.library.custom_op("ssconv::pix_conv2d_wgrad", mutates_args=())
def _pix_wgrad_op(
    x: Tensor,
    grad_out: Tensor,
    ch: Tensor,
    seg_tap: Tensor,
    seg_beg: Tensor,
    blk_seg: Tensor,
    out_idx: Tensor,
    blk_base: Tensor,
    in_channels: int,
    out_channels: int,
    geometry: list[int],
    vb: int,
) -> Tensor:
    return _built().ssc_pix_wgrad(
        x,
        grad_out,
        ch,
        seg_tap,
        seg_beg,
        blk_seg,
        out_idx,
        blk_base,
        in_channels,
        out_channels,
        *geometry,
        vb,
    )


@_pix_wgrad_op.register_fake
def _(x, grad_out, ch, *args):
    return x.new_empty((ch.shape[0], args[-1]))


# The raw formulas, registered once per op (register_flop_formula returns a shape-wrapped
# function: registering that one again would wrap it twice).
register_flop_formula(torch.ops.ssconv.fused_conv2d)(_fused_flops)
register_flop_formula(torch.ops.ssconv.fused_conv2d_wgrad)(_wgrad_flops)
register_flop_formula(torch.ops.ssconv.pix_conv2d)(_fused_flops)
register_flop_formula(torch.ops.ssconv.pix_conv2d_wgrad)(_wgrad_flops)

_FORWARD = {"channels": _fused_op, "pixels": _pix_op}
_WGRAD = {"channels": _wgrad_op, "pixels": _pix_wgrad_op}


def transposed_geometry(
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> list[int] | None:
    """Geometry of the input gradient of a stride-1 layer as a stride-1 convolution of the
    output gradient, or None where the layer is strided (see :class:`PhasePlans`) or padded
    beyond its reach (those use stock kernels)."""
    if tuple(stride) != (1, 1):
        return None
    pads = [d * (k - 1) - p for k, p, d in zip(kernel_size, padding, dilation)]
    if min(pads) < 0:
        return None
    return [*kernel_size, 1, 1, *pads, *dilation]


@dataclass
class PhasePlans:
    """The input gradient of a strided layer, cut by output phase: input pixel ``(i, j)``
    receives only the taps whose offsets match ``(i + padding) mod stride``, and each phase
    ``(rho_y, rho_x)`` is a stride-1 convolution of the output gradient with those taps
    (flipped, their spacing ``dilation / gcd(stride, dilation)``). So the strided input gradient
    executes the layer's effective MACs, in ``stride_y * stride_x`` calls of the kernel.

    ``plans[k]``: the transposed plan of phase ``k`` (its ``src`` indexes the layer's whole
    grouped weight), None where no weight of the pattern reaches the phase (its pixels get a
    zero gradient); ``taps[k]``: the kernel rows and columns it holds.
    """

    in_channels: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    phases: list[tuple[int, int]]
    taps: list[tuple[list[int], list[int]]]
    plans: list[Plan | None]


def _phase_taps(k: int, s: int, d: int) -> list[list[int]]:
    """Per phase ``rho`` of one dimension: the kernel taps ``t`` with ``t * d % s == rho``."""
    return [[t for t in range(k) if (t * d) % s == rho] for rho in range(s)]


def _phase_span(
    size: int, out_size: int, s: int, p: int, d: int, rho: int, taps: list[int]
) -> tuple[int, int, int, int, int]:
    """Where phase ``rho`` of one dimension lands and how to compute it: ``(first, count,
    pad, crop, step)``: its input pixels ``first, first + s, ...`` (``count`` of them) are
    output pixels ``crop ..`` of a stride-1 correlation of the output gradient (``out_size``
    long), padded by ``pad`` on both sides, with ``len(taps)`` taps ``step`` apart."""
    q = [(t * d - rho) // s for t in taps]  # output-gradient offsets of the taps
    step = q[1] - q[0] if len(q) > 1 else 1
    first = (rho - p) % s
    count = (size - 1 - first) // s + 1 if first < size else 0
    top = q[-1] - (first + p) // s
    bottom = count + (len(q) - 1) * step - top - out_size
    pad = max(top, bottom, 0)
    return first, count, pad, pad - top, step


@torch.no_grad()
def make_phase_plans(
    mask: Tensor,
    groups: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    kernel: str = "pixels",
    in_order: Tensor | None = None,
) -> PhasePlans:
    """The input-gradient plans of a strided layer with structural ``mask`` ``(C_out, C_in/G,
    kh, kw)`` (see :class:`PhasePlans`)."""
    mask = mask.cpu().bool()
    kh, kw = mask.shape[2:]
    numel = mask.numel()
    ids = torch.arange(numel, dtype=torch.long).view(mask.shape)
    rows = _phase_taps(kh, stride[0], dilation[0])
    cols = _phase_taps(kw, stride[1], dilation[1])
    phases, taps, plans = [], [], []
    for ry in range(stride[0]):
        for rx in range(stride[1]):
            ty, tx = rows[ry], cols[rx]
            phases.append((ry, rx))
            taps.append((ty, tx))
            sub = mask[:, :, ty][:, :, :, tx] if ty and tx else mask.new_zeros(0)
            if not sub.any():
                plans.append(None)
                continue
            plan = make_plan(sub, groups, transpose=True, kernel=kernel, in_order=in_order)
            # The sub-kernel's flat indices as indices into the whole grouped weight.
            lut = torch.cat([ids[:, :, ty][:, :, :, tx].reshape(-1), torch.tensor([numel])])
            plans.append(replace(plan, src=lut[plan.src].contiguous()))
    c_in = mask.shape[1] * groups
    return PhasePlans(c_in, tuple(stride), tuple(padding), tuple(dilation), phases, taps, plans)


def _phase_input_grad(gy: Tensor, weight: Tensor, pp: PhasePlans, in_size) -> Tensor:
    """The input gradient ``(N, C_in, H, W)`` of a strided layer from its output gradient, on
    the kernels (``weight``: the grouped weight, detached)."""
    n, _, ho, wo = gy.shape
    h, w = in_size
    gx = gy.new_zeros(n, pp.in_channels, h, w)
    for (ry, rx), (ty, tx), plan in zip(pp.phases, pp.taps, pp.plans):
        if plan is None:
            continue
        fy, cy, py, oy, sy = _phase_span(h, ho, pp.stride[0], pp.padding[0], pp.dilation[0], ry, ty)
        fx, cx, px, ox, sx = _phase_span(w, wo, pp.stride[1], pp.padding[1], pp.dilation[1], rx, tx)
        if cy == 0 or cx == 0:
            continue
        zero = gy.new_zeros(plan.out_idx.numel())
        geometry = [len(ty), len(tx), 1, 1, py, px, sy, sx]
        out = _run_forward(gy, gather(weight, plan).contiguous(), zero, plan, geometry)
        gx[:, :, fy :: pp.stride[0], fx :: pp.stride[1]] = out[:, :, oy : oy + cy, ox : ox + cx]
    return gx


def can_train(x: Tensor, params: list[Tensor]) -> bool:
    """Whether a gradient-needing call on ``x`` may use the kernels: float32 or float64 CPU,
    eager (not traced, scripted or compiled), no autocast."""
    if _disabled or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    if torch.compiler.is_compiling() or _cpu_autocast():
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() != 4:
        return False
    return all(p.device.type == "cpu" and p.dtype == x.dtype for p in params)


def _memory_format(t: Tensor) -> torch.memory_format:
    """channels_last for a channels_last (and not also contiguous) ``t``, else contiguous."""
    cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` in ``ref``'s memory format (the kernels work in channels_last)."""
    return t.contiguous(memory_format=_memory_format(ref))


def _out_format(x: Tensor, channels_last: bool | None) -> torch.memory_format:
    """The memory format of a training call's output: ``x``'s (None), channels_last (True) or
    NCHW (False)."""
    if channels_last is None:
        return _memory_format(x)
    return torch.channels_last if channels_last else torch.contiguous_format


def _kernel_layout(t: Tensor, plan: Plan) -> Tensor:
    """``t`` in the memory format ``plan``'s kernel reads (the channel-lane kernels work in
    channels_last): converted once where a training step's forward and weight gradient, or
    input and weight gradients, both read it."""
    if plan.kernel == "channels":
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _run_forward(
    x: Tensor, w: Tensor, bias_l: Tensor, plan: Plan, geometry: list[int], relu: bool = False
) -> Tensor:
    """The forward op of ``plan``'s kernel on packed weights and lane biases (``relu``: the
    output's ReLU in the kernel's store)."""
    return _FORWARD[plan.kernel](
        x,
        w,
        plan.ch,
        plan.seg_tap,
        plan.seg_beg,
        plan.blk_seg,
        plan.out_idx,
        plan.blk_base,
        bias_l,
        plan.in_channels,
        plan.out_channels,
        geometry,
        plan.vb,
        relu,
    )


def run_weight_grad(x: Tensor, gy: Tensor, plan: Plan, geometry: list[int]) -> Tensor:
    """The weight-gradient op of ``plan``'s kernel: the packed gradient ``(E, VB)``."""
    return _WGRAD[plan.kernel](
        x,
        gy,
        plan.ch,
        plan.seg_tap,
        plan.seg_beg,
        plan.blk_seg,
        plan.out_idx,
        plan.blk_base,
        plan.in_channels,
        plan.out_channels,
        geometry,
        plan.vb,
    )


def input_grad(
    gy: Tensor, wt: Tensor, plan_t: Plan | PhasePlans, geometry_t: list[int] | None, x: Tensor
) -> Tensor:
    """The input gradient in ``x``'s memory format: the forward of the transposed packing
    ``wt`` at stride 1, one call per phase of a strided layer (``wt``: its grouped weight)."""
    if isinstance(plan_t, PhasePlans):
        return _like(_phase_input_grad(gy, wt, plan_t, x.shape[2:]), x)
    zero = wt.new_zeros(plan_t.out_idx.numel())
    return _like(_run_forward(gy, wt, zero, plan_t, geometry_t), x)


class _FusedConvTrain(torch.autograd.Function):
    """Forward, input gradient and weight gradient on the fused kernels. ``plan_t``: the
    transposed plan of a stride-1 layer (``wt`` its packed weight), or the :class:`PhasePlans`
    of a strided one (``wt`` the grouped weight)."""

    @staticmethod
    def forward(ctx, x, w, bias_l, wt, plan, plan_t, geometry, geometry_t, channels_last):
        xk = _kernel_layout(x, plan)
        y = _run_forward(xk, w, bias_l, plan, geometry)
        ctx.save_for_backward(xk, wt)
        ctx.input_format = _memory_format(x)
        ctx.plans = (plan, plan_t)
        ctx.geometry = (geometry, geometry_t)
        return y.contiguous(memory_format=_out_format(x, channels_last))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, wt = ctx.saved_tensors
        plan, plan_t = ctx.plans
        geometry, geometry_t = ctx.geometry
        gy = _kernel_layout(gy, plan)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = input_grad(gy, wt, plan_t, geometry_t, x).contiguous(
                memory_format=ctx.input_format
            )
        if ctx.needs_input_grad[1]:
            gw = run_weight_grad(x, gy, plan, geometry)
        if ctx.needs_input_grad[2]:
            sums = gy.sum((0, 2, 3))
            gb = take(torch.cat([sums, sums.new_zeros(1)]), plan.lane_src)
        return gx, gw, gb, None, None, None, None, None, None


@dataclass
class PixelPacked:
    """A layer's weights and bias in the pixel kernel's layout (:func:`pack_pixels`)."""

    plan: Plan
    w: Tensor  # (E, VB) float32
    bias: Tensor  # (B * VB,) float32


@torch.no_grad()
def pack_pixels(weight: Tensor, bias: Tensor | None, plan: Plan) -> PixelPacked:
    """Pack a dense-equivalent weight ``(C_out, C_in/G, kh, kw)`` for :func:`pixel_conv2d`
    (``plan = make_plan(mask, groups, kernel="pixels")``)."""
    if plan.kernel != "pixels":
        raise ValueError(f"pack_pixels needs a plan of the pixel kernel, got {plan.kernel!r}")
    weight = weight.detach().float().cpu()
    b = None if bias is None else bias.detach().float().cpu()
    return PixelPacked(plan, gather(weight, plan).contiguous(), lane_values(b, plan, weight))


def pixel_conv2d(
    x: Tensor,
    packed: PixelPacked,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    relu: bool = False,
) -> Tensor:
    """Inference on the pixel-vectorised kernel (float32): one pass over the input per block
    of 1-4 filters, no zeros executed even where a residue class holds one filter. NCHW; a
    channels_last input is copied to NCHW and its output back. No gradients. ``relu``:
    ``torch.relu`` of the output, in the kernel's store."""
    plan = packed.plan
    if x.dim() != 4 or x.shape[1] != plan.in_channels:
        raise RuntimeError(
            f"fused SSC conv: expected input of shape (N, {plan.in_channels}, H, W), got "
            f"{tuple(x.shape)}"
        )
    geometry = [*kernel_size, *stride, *padding, *dilation]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = _run_forward(x.contiguous(), packed.w, packed.bias, plan, geometry, relu)
    # A channels_last input runs as NCHW and gets its output back in its own layout.
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def _train_geometry(
    x: Tensor,
    plan: Plan,
    plan_t: Plan | PhasePlans,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> list[int] | None:
    """Check a training call of the kernels (``plan_t`` suits the stride, a stride-1 layer's
    padding allows the transposed call, ``x`` has the plan's channels); return the input
    gradient's geometry, None for a strided layer (its phases carry their own)."""
    strided = tuple(stride) != (1, 1)
    if strided != isinstance(plan_t, PhasePlans):
        raise ValueError(
            f"plan_t must be the {'PhasePlans' if strided else 'transposed Plan'} of a "
            f"{'strided' if strided else 'stride-1'} layer (see input_grad_plan); got "
            f"{type(plan_t).__name__} for stride {tuple(stride)}"
        )
    geometry_t = None
    if strided:
        if (plan_t.stride, plan_t.padding, plan_t.dilation) != (
            tuple(stride),
            tuple(padding),
            tuple(dilation),
        ):
            raise ValueError("plan_t was made for another stride, padding or dilation")
    else:
        geometry_t = transposed_geometry(kernel_size, stride, padding, dilation)
        if geometry_t is None:
            raise ValueError(
                f"fused SSC training needs padding <= dilation * (kernel - 1) in a stride-1 "
                f"layer; got padding {tuple(padding)}"
            )
    if x.dim() != 4 or x.shape[1] != plan.in_channels:
        raise RuntimeError(
            f"fused SSC conv: expected input of shape (N, {plan.in_channels}, H, W), got "
            f"{tuple(x.shape)}"
        )
    return geometry_t


def fused_conv2d_train(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    plan: Plan,
    plan_t: Plan | PhasePlans,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    channels_last: bool | None = None,
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` with gradients, on the
    fused kernels, for a weight ``(C_out, C_in/G, kh, kw)`` that is zero off the plans' mask
    (``plan = make_plan(mask, groups)``; ``plan_t``: :func:`input_grad_plan`, the transposed
    plan of a stride-1 layer or the phase plans of a strided one).

    The output comes in ``x``'s memory format, or channels_last with ``channels_last=True``
    (what the channel-lane kernels write: no copy) and NCHW with ``False``; the input
    gradient always in ``x``'s. A stride-1 layer needs padding <= dilation * (kernel - 1)
    (:func:`transposed_geometry`); raises otherwise, if ``plan_t`` does not suit the stride,
    and if the kernel is not built. No double backward.
    """
    geometry_t = _train_geometry(x, plan, plan_t, kernel_size, stride, padding, dilation)
    strided = geometry_t is None
    w = gather(weight, plan)
    with torch.no_grad():
        wt = weight.detach() if strided else gather(weight.detach(), plan_t)
    bias_l = lane_values(bias, plan, w)
    geometry = [*kernel_size, *stride, *padding, *dilation]
    return _FusedConvTrain.apply(
        x, w, bias_l, wt, plan, plan_t, geometry, geometry_t, channels_last
    )


@dataclass(frozen=True)
class ParamMaps:
    """Where a layer's parameters go in the kernels' packed weights, so that a training step
    packs them with one gather each and returns their gradients with one gather
    (:func:`param_maps`, :func:`fused_conv2d_train_params`).

    Indices point into ``[0, *params[0].flatten(), *params[1].flatten(), ...]`` (0: a zero).
    """

    forward: Tensor  # (E, VB): the forward packing (plan.src's shape)
    transposed: Tensor  # the input gradient's packing, or the grouped weight of a strided layer
    inverse: Tensor  # (P,): each parameter's position in ``forward.flatten()``
    shapes: tuple[tuple[int, ...], ...]


@torch.no_grad()
def param_maps(
    dense_of: Callable[..., Tensor],
    shapes: Sequence[tuple[int, ...]],
    plan: Plan,
    plan_t: Plan | PhasePlans,
) -> ParamMaps | None:
    """The :class:`ParamMaps` of parameters of ``shapes`` whose dense-equivalent weight
    ``(C_out, C_in/G, kh, kw)`` is ``dense_of(*params)``, found by passing parameter numbers
    through it (float64, exact). None where that weight is not a placement of each parameter in
    one place (a sum or a scaling of parameters): the caller then packs through ``dense_of``."""
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    numbers = torch.arange(1, total + 1, dtype=torch.float64).split(sizes)
    dense = dense_of(*(n.view(s) for n, s in zip(numbers, shapes)))
    where = dense.round().long()
    if not torch.equal(where.double(), dense) or where.min() < 0:
        return None
    counts = torch.bincount(where.reshape(-1), minlength=total + 1)
    if counts.numel() != total + 1 or not bool((counts[1:] == 1).all()):
        return None
    flat = torch.cat([where.reshape(-1), where.new_zeros(1)])
    fwd = flat[plan.src]
    used = torch.bincount(fwd.reshape(-1), minlength=total + 1)
    if not bool((used[1:] == 1).all()):
        return None  # a parameter the packing drops or repeats
    inverse = torch.empty(total, dtype=torch.long)
    pos = torch.arange(fwd.numel())
    hit = fwd.reshape(-1) > 0
    inverse[fwd.reshape(-1)[hit] - 1] = pos[hit]
    t = where if isinstance(plan_t, PhasePlans) else flat[plan_t.src]
    return ParamMaps(fwd, t.contiguous(), inverse, tuple(tuple(s) for s in shapes))


class _FusedConvTrainParams(torch.autograd.Function):
    """:class:`_FusedConvTrain` on the layer's parameters themselves: packed inside, and the
    packed weight gradient returned to them with one gather (no autograd graph of indexing
    ops per layer and step)."""

    @staticmethod
    def forward(ctx, x, bias, maps, plan, plan_t, geometry, geometry_t, channels_last, *params):
        flat = torch.cat([params[0].new_zeros(1), *(p.reshape(-1) for p in params)])
        w = take(flat, maps.forward)
        wt = take(flat, maps.transposed)
        bias_l = lane_values(bias, plan, w)
        xk = _kernel_layout(x, plan)
        y = _run_forward(xk, w, bias_l, plan, geometry)
        ctx.save_for_backward(xk, wt)
        ctx.input_format = _memory_format(x)
        ctx.plans = (plan, plan_t)
        ctx.geometry = (geometry, geometry_t)
        ctx.maps = maps
        return y.contiguous(memory_format=_out_format(x, channels_last))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, wt = ctx.saved_tensors
        plan, plan_t = ctx.plans
        geometry, geometry_t = ctx.geometry
        maps = ctx.maps
        gy = _kernel_layout(gy, plan)
        gx = gb = None
        gparams: list[Tensor | None] = [None] * len(maps.shapes)
        if ctx.needs_input_grad[0]:
            gx = input_grad(gy, wt, plan_t, geometry_t, x).contiguous(
                memory_format=ctx.input_format
            )
        if ctx.needs_input_grad[1]:
            gb = gy.sum((0, 2, 3))
        if any(ctx.needs_input_grad[7:]):
            g = take(run_weight_grad(x, gy, plan, geometry).reshape(-1), maps.inverse)
            sizes = [math.prod(s) for s in maps.shapes]
            gparams = [a.view(s) for a, s in zip(g.split(sizes), maps.shapes)]
        return (gx, gb, None, None, None, None, None, None, *gparams)


def fused_conv2d_train_params(
    x: Tensor,
    params: Sequence[Tensor],
    maps: ParamMaps,
    bias: Tensor | None,
    plan: Plan,
    plan_t: Plan | PhasePlans,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    channels_last: bool | None = None,
) -> Tensor:
    """:func:`fused_conv2d_train` of the layer whose parameters are ``params`` and whose
    :class:`ParamMaps` is ``maps``: the same outputs and gradients, packed straight from the
    parameters (the training step's fast path)."""
    geometry_t = _train_geometry(x, plan, plan_t, kernel_size, stride, padding, dilation)
    geometry = [*kernel_size, *stride, *padding, *dilation]
    return _FusedConvTrainParams.apply(
        x, bias, maps, plan, plan_t, geometry, geometry_t, channels_last, *params
    )


def input_grad_plan(
    mask: Tensor,
    groups: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    kernel: str = "pixels",
    in_order: Tensor | None = None,
) -> Plan | PhasePlans:
    """The layout of a layer's input gradient for :func:`fused_conv2d_train`: the transposed
    plan at stride 1, the phase plans (:class:`PhasePlans`) of a strided layer."""
    if tuple(stride) == (1, 1):
        return make_plan(mask, groups, transpose=True, kernel=kernel, in_order=in_order)
    return make_phase_plans(mask, groups, stride, padding, dilation, kernel, in_order)


# ------------------------------------------------------------------ status
@dataclass(frozen=True)
class KernelStatus:
    """Whether the fused CPU kernel is built, found without building it (:func:`status`).

    ``state`` is ``"built"``, ``"not built"`` (it would compile on first use), ``"unavailable"``
    (``reason`` says why) or ``"disabled"`` (``SSCONV_NO_FUSED``).
    """

    state: str
    reason: str | None
    name: str
    build_dir: str
    cpu_capability: str
    vectors: str = ""  # the build's vectors (:func:`vector_isa`)

    @property
    def built(self) -> bool:
        return self.state == "built"

    def line(self) -> str:
        """The one-line summary ``ssconv kernels`` and ``ssconv --version`` print."""
        if self.state == "built":
            what = "built"
        elif self.state == "not built":
            what = "not built (would compile on first use, about a minute; `ssconv kernels build`)"
            if self.reason:
                what += f"; {self.reason}"
        elif self.state == "disabled":
            what = "disabled by SSCONV_NO_FUSED"
        else:
            what = f"unavailable: {self.reason}"
        return f"fused CPU kernel: {what}"

    def to_dict(self) -> dict:
        return {
            "kernel": "fused_cpu",
            "state": self.state,
            "reason": self.reason,
            "name": self.name,
            "build_dir": self.build_dir,
            "cpu_capability": self.cpu_capability,
            "vectors": self.vectors,
        }


def _missing_tool() -> str | None:
    """What :func:`_load` would miss to compile (ninja, the C++ compiler), checked cheaply."""
    import shutil

    try:
        import ninja  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        if shutil.which("ninja") is None:
            return "ninja not found (pip install ninja)"
    default = "cl" if sys.platform == "win32" else "c++"
    compiler = (os.environ.get("CXX") or default).split()[0]
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found)"
    return None


def status() -> KernelStatus:
    """The kernel's state in this process or on disk; never builds or loads it.

    Built means loaded in this process, or the extension library named by the content-keyed
    build folder (:func:`_build_spec`) is there next to an identical copy of the source.
    """
    name, build_dir, staged = _build_spec()
    cap = torch.backends.cpu.get_cpu_capability()

    def make(state: str, reason: str | None = None) -> KernelStatus:
        return KernelStatus(state, reason, name, str(build_dir), cap, vector_isa())

    if os.environ.get("SSCONV_NO_FUSED"):
        return make("disabled", "disabled by SSCONV_NO_FUSED")
    if _tried:
        return make("built") if _module is not None else make("unavailable", _error)
    missing = _missing_tool()
    if missing:  # torch's loader needs ninja even to load a finished build
        return make("unavailable", missing)
    library = build_dir / f"{name}{'.pyd' if sys.platform == 'win32' else '.so'}"
    try:
        same_source = staged.read_bytes() == _SOURCE.read_bytes()
    except OSError:
        same_source = False
    if library.is_file() and same_source:
        return make("built")
    return make("not built", _PLATFORM_NOTE if portable() else None)


_PLATFORM_NOTE = (
    "the portable build (no OpenMP, so the kernel runs on one thread; not tested on macOS or "
    "Windows by this project's CI)"
)
