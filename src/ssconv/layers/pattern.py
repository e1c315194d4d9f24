"""The SSC kernel-type pattern: one pure function of a layer's arguments.

Follows "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma, Mehta, Si,
Henao, Carin, WACV 2023, arXiv:2210.12818) as formalized in the project's specification
(``docs/ssc.md``). Every (output channel ``o``, input channel ``i``) pair of a layer gets one
kernel type:

* ``S`` (spatial): a K x K kernel (all taps, or a checkerboard subset),
* ``P`` (point): a single weight on the centre tap,
* ``E`` (empty): nothing.

Inside a channel group, with local indices ``i'`` and ``o'``, the pair is ``S`` when
``(i' - o') mod period == 0``; the other in-group pairs are ``P`` when ``pointwise`` else ``E``;
pairs across groups are ``E``. With ``point_groups`` ``G1`` (a multiple of ``groups``), the 1 x 1
part is split finer: a non-spatial pair is ``P`` only when ``o`` and ``i`` also lie in the same
of ``G1`` point groups (the spatial pairs are unchanged).

Index conventions used by the execution paths (all "absolute", no per-forward gathers needed for
``spatial="full"``):

* A filter ``o`` (local ``o' = b * period + s``) holds ``A = C_in / (groups * period)`` spatial
  kernels, the ``a``-th one on local input ``i' = a * period + s``.
* Its ``j``-th spatial kernel in the specification's sense (counted from the first one, which
  shifts by one from filter to filter) is ``j = (a - b) mod A``.
* Its point weights lie on the in-group inputs that are not ``S`` (inside its point group when
  ``point_groups > groups``), in increasing ``i'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch

__all__ = [
    "DEPTHWISE_PERIOD",
    "SPATIAL_MODES",
    "Decomposition",
    "SSCPattern",
    "KernelType",
    "checkerboard_taps",
    "resolve_period",
]

SPATIAL_MODES = ("full", "checkerboard")
#: ``period`` value of the model-level tools (``convert``, ``SSCFactory``, the solver, configs):
#: the period equals each layer's group width, so every filter has one spatial kernel
#: (``A = 1``) and the spatial part is a shifted depthwise convolution.
DEPTHWISE_PERIOD = "depthwise"


def resolve_period(period, in_channels: int, groups: int):
    """``period`` for a layer of ``in_channels`` inputs in ``groups`` groups: its group width
    for :data:`DEPTHWISE_PERIOD`, else ``period`` unchanged."""
    return in_channels // groups if period == DEPTHWISE_PERIOD else period


class KernelType:
    """Integer codes of the kernel-type map returned by :meth:`SSCPattern.type_map`."""

    EMPTY = 0
    POINT = 1
    SPATIAL = 2
    NAMES = {EMPTY: "E", POINT: "P", SPATIAL: "S"}


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def checkerboard_taps(kernel_size: tuple[int, int], parity: int) -> torch.Tensor:
    """Boolean (kh, kw) mask of the taps ``(u, v)`` with ``(u + v) % 2 == parity``."""
    kh, kw = kernel_size
    u = torch.arange(kh).view(kh, 1)
    v = torch.arange(kw).view(1, kw)
    return (u + v) % 2 == parity


class Decomposition(NamedTuple):
    """How a pattern runs as stock convolutions: the static structure that :class:`ssconv.SSConv2d`
    and its frozen twin read in ``forward`` (plain Python values: TorchScript-friendly)."""

    has_spatial: bool
    has_point: bool
    period: int  # P; 1 without spatial kernels (period=None)
    spatial_per_filter: int  # A
    outputs_per_residue: int  # m
    identity_perm: bool  # P = 1 or None: the spatial part is one grouped convolution as is
    pad_rows: bool  # the group's filters do not fill the residue classes evenly
    checkerboard: bool


@dataclass(frozen=True)
class SSCPattern:
    """The fixed structure of one SSC layer (validated on construction).

    Args:
        in_channels, out_channels: channel counts ``C_in``, ``C_out``.
        kernel_size: odd kernel size (int or pair).
        groups: channel groups ``G`` (divides both channel counts).
        period: HetConv's "part" ``P`` (divides ``C_in / G``), or ``None`` for no spatial kernel.
        pointwise: whether in-group pairs that are not spatial get a 1 x 1 weight.
        spatial: ``"full"`` (all taps) or ``"checkerboard"`` (taps of one parity, alternating).
        point_groups: channel groups ``G1`` of the 1 x 1 part (``None``: ``groups``). A
            multiple of ``groups`` that divides both channel counts, with ``period`` dividing
            ``C_in / G1`` (so every filter holds the same number of 1 x 1 weights). A thinner
            1 x 1 part leaves weights for more spatial kernels at the same budget.
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int = 1
    period: int | None = 1
    pointwise: bool = True
    spatial: str = "full"
    point_groups: int | None = None

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        if any(k < 1 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(
                f"kernel_size must be odd (1, 3, 5, ...) so that the centre tap exists, "
                f"got {self.kernel_size}"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        if not isinstance(self.pointwise, bool):
            raise ValueError(f"pointwise must be True or False, got {self.pointwise!r}")
        if self.spatial not in SPATIAL_MODES:
            raise ValueError(f"spatial must be one of {SPATIAL_MODES}, got {self.spatial!r}")
        if self.period is None:
            if not self.pointwise:
                raise ValueError(
                    "period=None (no spatial kernel) needs pointwise=True, otherwise the layer "
                    "has no weights; allowed: period=None with pointwise=True, or an int period"
                )
        else:
            if not isinstance(self.period, int) or isinstance(self.period, bool) or self.period < 1:
                raise ValueError(f"period must be a positive int or None, got {self.period!r}")
            if self.in_per_group % self.period:
                divisors = [
                    d for d in range(1, self.in_per_group + 1) if self.in_per_group % d == 0
                ]
                raise ValueError(
                    f"period={self.period} must divide the group width in_channels/groups="
                    f"{self.in_per_group}; allowed periods: {divisors} or None"
                )
        self._check_point_groups()
        if self.spatial == "checkerboard" and self.kernel_size == (1, 1):
            raise ValueError(
                "spatial='checkerboard' needs kernel_size >= 3 (a 1 x 1 kernel has one tap); "
                "use spatial='full'"
            )

    def _check_point_groups(self) -> None:
        g1 = self.point_groups
        if g1 is None or not self.has_point:
            # No 1 x 1 part: the value has no meaning; normalise (equal patterns compare equal).
            object.__setattr__(self, "point_groups", self.groups)
            return
        if not isinstance(g1, int) or isinstance(g1, bool) or g1 < 1:
            raise ValueError(f"point_groups must be a positive int or None, got {g1!r}")
        allowed = [
            d
            for d in range(self.groups, self.in_channels + 1, self.groups)
            if self.in_channels % d == 0
            and self.out_channels % d == 0
            and (self.period is None or (self.in_channels // d) % self.period == 0)
        ]
        if g1 not in allowed:
            raise ValueError(
                f"point_groups={g1} must be a multiple of groups={self.groups} dividing "
                f"in_channels={self.in_channels} and out_channels={self.out_channels}"
                + (
                    ""
                    if self.period is None
                    else f", with period={self.period} dividing in_channels/point_groups"
                )
                + f"; allowed: {allowed} or None"
            )

    # ----------------------------------------------------------------- sizes
    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def has_spatial(self) -> bool:
        return self.period is not None

    @property
    def has_point(self) -> bool:
        return self.pointwise and (self.period is None or self.period > 1)

    @property
    def spatial_per_filter(self) -> int:
        """``A``: spatial kernels per filter."""
        return 0 if self.period is None else self.in_per_group // self.period

    @property
    def in_per_point_group(self) -> int:
        """``w1 = C_in / G1``: the inputs each filter's 1 x 1 part may read."""
        return self.in_channels // self.point_groups

    @property
    def point_per_filter(self) -> int:
        """1 x 1 weights per filter: its point group's inputs that are not spatial pairs."""
        if not self.has_point:
            return 0
        w1 = self.in_per_point_group
        return w1 if self.period is None else w1 - w1 // self.period

    @property
    def taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def centre(self) -> tuple[int, int]:
        return (self.kernel_size[0] // 2, self.kernel_size[1] // 2)

    @property
    def outputs_per_residue(self) -> int:
        """``m``: filters per residue class ``o' mod P`` after padding to a uniform count."""
        if self.period is None:
            return 0
        return math.ceil(self.out_per_group / self.period)

    def decomposition(self) -> Decomposition:
        """The static structure of the decomposed execution (see :class:`Decomposition`)."""
        p = 1 if self.period is None else self.period
        return Decomposition(
            has_spatial=self.has_spatial,
            has_point=self.has_point,
            period=p,
            spatial_per_filter=self.spatial_per_filter,
            outputs_per_residue=self.outputs_per_residue,
            identity_perm=self.period is None or self.period == 1,
            pad_rows=self.has_spatial and self.out_per_group % p != 0,
            checkerboard=self.spatial == "checkerboard" and self.has_spatial,
        )

    # ------------------------------------------------------------- structure
    def spatial_parity(self) -> torch.Tensor:
        """(C_out, A) long: checkerboard parity of each spatial kernel, ``(j + o') mod 2``."""
        a_count = self.spatial_per_filter
        o_local = torch.arange(self.out_channels) % self.out_per_group  # (C_out,)
        b = o_local // self.period
        a = torch.arange(a_count)
        j = (a.view(1, -1) - b.view(-1, 1)) % a_count  # (C_out, A)
        return (j + o_local.view(-1, 1)) % 2

    @cached_property
    def spatial_tap_mask(self) -> torch.Tensor:
        """(C_out, A, kh, kw) bool: the taps each spatial kernel uses."""
        shape = (self.out_channels, self.spatial_per_filter, *self.kernel_size)
        if self.spatial == "full" or self.spatial_per_filter == 0:
            return torch.ones(shape, dtype=torch.bool)
        parity = self.spatial_parity()  # (C_out, A)
        masks = torch.stack([checkerboard_taps(self.kernel_size, p) for p in (0, 1)])
        return masks[parity]

    @cached_property
    def num_spatial_weights(self) -> int:
        """Taps of all spatial kernels, in closed form (checkerboard counted exactly).

        Filter ``o'`` meets every ``j`` in ``[0, A)`` once, so it holds ``ceil(A/2)`` kernels of
        parity 0 when ``o'`` is even and ``floor(A/2)`` when odd.
        """
        a_count = self.spatial_per_filter
        if self.spatial == "full" or a_count == 0:
            return self.out_channels * a_count * self.taps
        n0 = int(checkerboard_taps(self.kernel_size, 0).sum())
        n1 = self.taps - n0
        even_filters = (self.out_per_group + 1) // 2
        odd_filters = self.out_per_group // 2
        per_group = even_filters * (n0 * ((a_count + 1) // 2) + n1 * (a_count // 2))
        per_group += odd_filters * (n0 * (a_count // 2) + n1 * ((a_count + 1) // 2))
        return self.groups * per_group

    @property
    def executed_params(self) -> int:
        """Weights the decomposed path multiplies per output pixel (zero taps included)."""
        spatial = 0
        if self.period is not None:
            spatial = self.groups * self.period * self.outputs_per_residue
            spatial *= self.spatial_per_filter * self.taps
        point = self.out_channels * self.in_per_point_group if self.has_point else 0
        return spatial + point

    @property
    def fan_in_channels(self) -> int:
        """Input channels each filter reads (spatial kernels plus 1 x 1 weights)."""
        return self.spatial_per_filter + self.point_per_filter

    @property
    def spatial_coverage(self) -> float:
        """Fraction of input channels that receive a spatial kernel from some filter."""
        if not self.has_spatial:
            return 0.0
        return min(self.period, self.out_per_group) / self.period

    @property
    def num_point_weights(self) -> int:
        return self.out_channels * self.point_per_filter

    @property
    def num_params(self) -> int:
        """Nonzero weights of the layer (no bias): the spec's parameter formula, exact."""
        return self.num_spatial_weights + self.num_point_weights

    @property
    def dense_params(self) -> int:
        return self.out_channels * self.in_channels * self.taps

    @property
    def density(self) -> float:
        return self.num_params / self.dense_params

    def type_map(self) -> torch.Tensor:
        """(C_out, C_in) int8 map of kernel types (:class:`KernelType` codes)."""
        o = torch.arange(self.out_channels).view(-1, 1)
        i = torch.arange(self.in_channels).view(1, -1)
        same_group = (o // self.out_per_group) == (i // self.in_per_group)
        o_loc, i_loc = o % self.out_per_group, i % self.in_per_group
        if self.period is None:
            is_s = torch.zeros_like(same_group)
        else:
            is_s = same_group & ((i_loc - o_loc) % self.period == 0)
        out = torch.full(same_group.shape, KernelType.EMPTY, dtype=torch.int8)
        if self.pointwise:
            w1 = self.in_per_point_group
            same_point_group = (o // (self.out_channels // self.point_groups)) == (i // w1)
            out[same_group & same_point_group] = KernelType.POINT
        out[is_s] = KernelType.SPATIAL
        return out

    def dense_mask(self) -> torch.Tensor:
        """(C_out, C_in/G, kh, kw) bool: nonzero taps of the equivalent grouped dense weight."""
        kh, kw = self.kernel_size
        cin_g = self.in_per_group
        mask = torch.zeros(self.out_channels, cin_g, kh, kw, dtype=torch.bool)
        if self.has_point:
            mask[:, :, self.centre[0], self.centre[1]] = self.point_group_mask()
        if self.has_spatial:
            p = self.period
            o_res = (torch.arange(self.out_channels) % self.out_per_group) % p
            view = mask.view(self.out_channels, self.spatial_per_filter, p, kh, kw)
            rows = torch.arange(self.out_channels)
            view[rows, :, o_res] = self.spatial_tap_mask
        return mask

    def point_group_mask(self) -> torch.Tensor:
        """(C_out, C_in/G) bool: the in-group inputs each filter's point group covers (all of
        them when ``point_groups == groups``)."""
        cin_g, w1 = self.in_per_group, self.in_per_point_group
        r = self.point_groups // self.groups  # point groups per group
        o_sub = (torch.arange(self.out_channels) % self.out_per_group) // (self.out_per_group // r)
        i_sub = torch.arange(cin_g) // w1
        return o_sub.view(-1, 1) == i_sub.view(1, -1)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``G=1 P=4 pw full`` (``Gp=N`` when the 1 x 1 part
        has its own group count)."""
        period = "None" if self.period is None else str(self.period)
        pw = "pw" if self.pointwise else "no-pw"
        gp = f" Gp={self.point_groups}" if self.point_groups != self.groups else ""
        return f"G={self.groups} P={period} {pw}{gp} {self.spatial}"
