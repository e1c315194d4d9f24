"""The Triton kernels of :mod:`ssconv.kernels.triton_ssc` (imported only where triton is).

The kernel functions are plain Python here and JIT-wrapped by :func:`build`, which runs on
first use: ``triton.jit`` reads ``TRITON_INTERPRET`` when it wraps a function, so wrapping on
first use (once per mode) lets a process set the variable after importing ssconv (the
interpreter tests do) and still get interpreted kernels.

The kernels call builtins only (``tl.full``, ``tl.reduce`` with the sum combiner of
``tl.standard``), not the JIT-wrapped helpers of ``triton.language.standard`` (``tl.zeros``,
``tl.sum``, ``tl.cdiv``): those are wrapped when triton is imported, in the mode of that moment,
and a compiled helper cannot run inside an interpreted kernel.

Both kernels are implicit GEMMs over a *tile table*: tile ``t`` is a block of up to ``BLOCK_N``
rows (output channels of the forward, input channels of the input gradient) that share one
support, the ``klen[t]`` entries ``(channel, tap)`` at ``koff[t]`` of the entry arrays, with
its weights packed as rows ``koff[t] .. koff[t] + klen[t]`` of ``w`` ``(E, BLOCK_N)``.
"""

import os

import triton
import triton.language as tl
from triton import knobs

# Interpreted kernels run on CPU tensors, slowly: one small configuration, no timing runs.
_INTERPRET_CONFIGS = [triton.Config({"BLOCK_M": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
# Never measured on a GPU yet (docs/benchmarks.md): a small list for the autotuner to try.
_CONV_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_K": 32}, num_warps=2, num_stages=3),
]
_WGRAD_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
]


def _conv(
    src,  # (N, C_src, H_src, W_src), any strides
    w,  # (E, BLOCK_N) packed weights
    bias,  # (T * BLOCK_N,) float32 lane biases (read when HAS_BIAS)
    dst,  # (N, C_dst, H_dst, W_dst), any strides
    ent_ch,  # (E,) int32: source channel of each entry
    ent_tap,  # (E,) int32: tap kh * KW + kw of each entry
    t_koff,  # (T,) int32
    t_klen,  # (T,) int32
    t_ph,  # (T,) int32: stride phase (row) of the tile's pixels (TRANSPOSED)
    t_pw,  # (T,) int32: stride phase (column)
    out_idx,  # (T * BLOCK_N,) int32: destination channel of each lane, -1 for padding
    M,  # pixels of the grid: N * HM * WM
    HM,
    WM,
    H_src,
    W_src,
    H_dst,
    W_dst,
    s_n,
    s_c,
    s_h,
    s_w,
    d_n,
    d_c,
    d_h,
    d_w,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    KW,
    KMAX,  # autotune key only
    TRANSPOSED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,
    UPCAST: tl.constexpr,  # bfloat16 on the interpreter, whose dot reads it as raw bits
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One program: BLOCK_M pixels x the BLOCK_N lanes of tile ``program_id(1)``.

    Forward (``TRANSPOSED=False``): ``dst[n, o, oh, ow] = sum_e src[n, ch_e, oh * SH - PH +
    kh_e * DH, ow * SW - PW + kw_e * DW] * w[e, o]``. Input gradient (``TRANSPOSED=True``,
    ``src`` the output gradient): the pixels ``(ih, iw) = (ph + i * SH, pw + j * SW)`` of the
    tile's stride phase, reading ``src[n, ch_e, (ih + PH - kh_e * DH) / SH, ...]``; the tile
    holds only the taps whose division is exact for its phase, so no zero is multiplied.
    """
    pid_m = tl.program_id(0)
    t = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    j = offs_m % WM
    rest = offs_m // WM
    i = rest % HM
    n = (rest // HM).to(tl.int64)
    if TRANSPOSED:
        oh = tl.load(t_ph + t) + i * SH
        ow = tl.load(t_pw + t) + j * SW
        m_ok = m_ok & (oh < H_dst) & (ow < W_dst)
        base_h = oh + PH
        base_w = ow + PW
    else:
        oh = i
        ow = j
        base_h = oh * SH - PH
        base_w = ow * SW - PW
    koff = tl.load(t_koff + t)
    klen = tl.load(t_klen + t)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    src_pix = src + n * s_n  # (BLOCK_M,) pointers
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, klen, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < klen
        ch = tl.load(ent_ch + koff + kk, mask=k_ok, other=0)
        tap = tl.load(ent_tap + koff + kk, mask=k_ok, other=0)
        kh = tap // KW
        kw = tap % KW
        if TRANSPOSED:
            # Exact divisions (the tile's taps fit its phase): truncation = floor here.
            ih = (base_h[:, None] - kh[None, :] * DH) // SH
            iw = (base_w[:, None] - kw[None, :] * DW) // SW
        else:
            ih = base_h[:, None] + kh[None, :] * DH
            iw = base_w[:, None] + kw[None, :] * DW
        ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H_src) & (iw >= 0) & (iw < W_src)
        a = tl.load(
            src_pix[:, None] + ch[None, :] * s_c + ih * s_h + iw * s_w, mask=ok, other=0.0
        )  # (BLOCK_M, BLOCK_K)
        b = tl.load(
            w + (koff + kk)[:, None] * BLOCK_N + offs_n[None, :], mask=k_ok[:, None], other=0.0
        )  # (BLOCK_K, BLOCK_N)
        if USE_DOT:
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        else:
            prod = a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :]
            acc += tl.reduce(prod, 1, tl.standard._sum_combine)
    oc = tl.load(out_idx + t * BLOCK_N + offs_n)
    n_ok = oc >= 0
    if HAS_BIAS:
        acc += tl.load(bias + t * BLOCK_N + offs_n)[None, :]
    dst_pix = dst + n * d_n + oh * d_h + ow * d_w
    ptr = dst_pix[:, None] + tl.where(n_ok, oc, 0)[None, :] * d_c
    tl.store(ptr, acc.to(dst.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _wgrad(
    x,  # (N, C_in, H, W), any strides
    gy,  # (N, C_out, HO, WO), any strides
    part,  # (SPLIT, E, BLOCK_N) float32: partial sums over each split's pixels
    ent_ch,
    ent_tap,
    t_koff,
    t_klen,
    out_idx,
    M,  # N * HO * WO
    HO,
    WO,
    H,
    W,
    s_n,
    s_c,
    s_h,
    s_w,
    g_n,
    g_c,
    g_h,
    g_w,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    KW,
    E,
    SPLIT,
    KMAX,  # autotune key only
    USE_DOT: tl.constexpr,
    UPCAST: tl.constexpr,  # bfloat16 on the interpreter, whose dot reads it as raw bits
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One program: the packed weight gradient of BLOCK_K entries x BLOCK_N lanes of tile
    ``program_id(1)``, summed over split ``program_id(2)`` of the pixels:
    ``part[s, e, o] = sum_pixels x[n, ch_e, oh * SH - PH + kh_e * DH, ...] * gy[n, o, oh, ow]``.
    """
    kb = tl.program_id(0)
    t = tl.program_id(1)
    sp = tl.program_id(2)
    koff = tl.load(t_koff + t)
    klen = tl.load(t_klen + t)
    if kb * BLOCK_K >= klen:
        return
    kk = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = kk < klen
    ch = tl.load(ent_ch + koff + kk, mask=k_ok, other=0)
    tap = tl.load(ent_tap + koff + kk, mask=k_ok, other=0)
    kh = tap // KW
    kw = tap % KW
    offs_n = tl.arange(0, BLOCK_N)
    oc = tl.load(out_idx + t * BLOCK_N + offs_n)
    n_ok = oc >= 0
    oc = tl.where(n_ok, oc, 0)
    per = ((M + BLOCK_M - 1) // BLOCK_M + SPLIT - 1) // SPLIT * BLOCK_M
    m_lo = sp * per
    m_hi = tl.minimum(m_lo + per, M)
    acc = tl.full((BLOCK_K, BLOCK_N), 0.0, tl.float32)
    for m0 in range(m_lo, m_hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < m_hi
        ow = offs_m % WO
        rest = offs_m // WO
        oh = rest % HO
        n = (rest // HO).to(tl.int64)
        ih = (oh * SH - PH)[:, None] + kh[None, :] * DH
        iw = (ow * SW - PW)[:, None] + kw[None, :] * DW
        ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(
            x + (n * s_n)[:, None] + ch[None, :] * s_c + ih * s_h + iw * s_w, mask=ok, other=0.0
        )  # (BLOCK_M, BLOCK_K)
        g = tl.load(
            gy + (n * g_n + oh * g_h + ow * g_w)[:, None] + oc[None, :] * g_c,
            mask=m_ok[:, None] & n_ok[None, :],
            other=0.0,
        )  # (BLOCK_M, BLOCK_N)
        if USE_DOT:
            if UPCAST:
                a = a.to(tl.float32)
                g = g.to(tl.float32)
            acc = tl.dot(tl.trans(a), g, acc, input_precision=PRECISION)
        else:
            prod = a.to(tl.float32)[:, :, None] * g.to(tl.float32)[:, None, :]
            acc += tl.reduce(prod, 0, tl.standard._sum_combine)
    ptr = part + sp * E * BLOCK_N + (koff + kk)[:, None] * BLOCK_N + offs_n[None, :]
    tl.store(ptr, acc, mask=k_ok[:, None])


# The broadcast-FMA tiles hold a (BLOCK_M, BLOCK_K, BLOCK_N) product in registers: at most this.
_FMA_MAX_PRODUCT = 8192


def _prune(configs, named_args, **kwargs):
    """Drop the configurations whose FMA product would not fit in registers (keep the smallest
    where none would)."""
    if kwargs.get("USE_DOT", True):
        return configs
    bn = kwargs["BLOCK_N"]

    def size(c):
        return c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_K"] * bn

    fit = [c for c in configs if size(c) <= _FMA_MAX_PRODUCT]
    return fit or [min(configs, key=size)]


_built: dict[tuple[bool, bool], tuple] = {}


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return bool(knobs.runtime.interpret)  # what triton.jit reads


def autotuning() -> bool:
    """Whether compiled kernels autotune (``SSCONV_TRITON_AUTOTUNE=0``: the first configuration
    of each list only, e.g. for tests and short GPU checks, where each configuration's compile
    and timing runs would dominate)."""
    return os.environ.get("SSCONV_TRITON_AUTOTUNE", "1") != "0"


def build() -> tuple:
    """``(conv, wgrad)``: the autotuned kernels for the current mode (compiled or interpreted,
    autotuned or not)."""
    mode = (interpreting(), autotuning())
    kernels = _built.get(mode)
    if kernels is None:
        interpret, tune = mode
        conv_configs = _INTERPRET_CONFIGS if interpret else _CONV_CONFIGS[: None if tune else 1]
        wgrad_configs = _INTERPRET_CONFIGS if interpret else _WGRAD_CONFIGS[: None if tune else 1]
        prune = {"early_config_prune": _prune}
        conv = triton.autotune(
            configs=conv_configs,
            key=["M", "KMAX", "BLOCK_N", "TRANSPOSED", "USE_DOT", "UPCAST"],
            prune_configs_by=prune,
        )(triton.jit(_conv))
        wgrad = triton.autotune(
            configs=wgrad_configs,
            key=["M", "KMAX", "BLOCK_N", "USE_DOT", "UPCAST"],
            prune_configs_by=prune,
        )(triton.jit(_wgrad))
        kernels = _built[mode] = (conv, wgrad)
    return kernels
