"""``SSCLinear``: the SSC pattern of a 1 x 1 layer, on the last dimension (``nn.Linear``'s).

A fully connected layer is a 1 x 1 convolution over tokens, and SSC on a 1 x 1 kernel has no
spatial kernels (``period=None``): what is left is its grouped point part, a block-diagonal
weight of ``groups`` blocks, read in ShuffleNet's shuffled input order when ``shuffle`` is set so
that stacked grouped layers (a transformer MLP's ``fc1`` / ``fc2``, ConvNeXt's pointwise
``nn.Linear`` pair) mix their groups. It is exactly :class:`ssconv.SSConv2d` with
``kernel_size=1, period=None`` applied to ``x.movedim(-1, 1)``, and what :func:`ssconv.convert`
turns ``nn.Linear`` layers into when the convolutions cannot carry a budget (ConvNeXt's 1 x 1
layers, MobileNetV3's classifier).

It executes exactly its nonzero weights: one batched matrix product over the groups (``G = 1``:
``F.linear``); no mask, no dense weight in ``forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssconv.layers.ssconv import INIT_SCALES, init_variance

__all__ = ["SSCLinear"]


class SSCLinear(nn.Module):
    """A block-diagonal (grouped) linear layer with an optional channel shuffle.

    ``y = x[..., in_index] @ W.T + b``, where ``W`` is ``(out_features, in_features)`` with only
    its ``groups`` diagonal blocks ``(out_features / G, in_features / G)`` nonzero, and
    ``in_index`` is the identity, or with ``shuffle`` (and ``G > 1``) ShuffleNet's channel
    shuffle: logical input ``h * (in_features / G) + j`` reads feature ``j * G + h``, as in
    :class:`ssconv.SSConv2d`.

    Args:
        in_features, out_features: as ``nn.Linear``; ``groups`` divides both.
        groups: the blocks ``G`` (1: a dense linear layer in SSC form).
        bias: learn an additive bias.
        shuffle: read the input in shuffled order (only with ``groups > 1``).
        init_scale: the fan-in of the initialization (``nn.Linear``'s uniform
            ``+-1/sqrt(fan)``, the same variance rule as ``SSConv2d``'s ``init_scale``): the
            nonzero fan-in ``in_features / G`` (``"effective"``, default), the dense
            ``in_features`` (``"dense"``, as pruning at initialization masks a dense init) or
            their geometric mean (``"balanced"``).

    The nonzero weights are stored as ``weight_point``, ``(out_features, in_features / G)``,
    the same layout as the point weights of ``SSConv2d(kernel_size=1, period=None)``;
    :meth:`to_dense` and :meth:`to_linear` give the equivalent dense weight and layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        groups: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        shuffle: bool = False,
        init_scale: str = "effective",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("groups", groups),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_features % groups or out_features % groups:
            raise ValueError(
                f"groups={groups} must divide in_features={in_features} and "
                f"out_features={out_features}"
            )
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if init_scale not in INIT_SCALES:
            raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
        if device is None:  # the ambient default, e.g. of a `with torch.device("meta")` block
            device = torch.empty(0).device
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.groups = groups
        #: Whether the input is read in shuffled order (only with groups > 1).
        self.shuffle = shuffle and groups > 1
        self.init_scale = init_scale
        self.weight_point = nn.Parameter(
            torch.empty(out_features, in_features // groups, **factory)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        with torch.device("cpu"):
            if self.shuffle:
                index = torch.arange(in_features).view(in_features // groups, groups).t()
                index = index.reshape(-1)
            else:
                index = torch.arange(in_features)
        self.register_buffer("in_index", index.to(device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s uniform init over the fan-in :attr:`init_scale` names."""
        if self.weight_point.is_meta:
            return
        nonzero = self.in_features // self.groups
        fan = 2.0 / init_variance(nonzero, self.in_features, self.init_scale)
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            self.weight_point.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    # ------------------------------------------------------------- counting
    @property
    def num_params(self) -> int:
        """Nonzero weights (bias excluded): ``out_features * in_features / groups``."""
        return self.out_features * (self.in_features // self.groups)

    @property
    def dense_weight_count(self) -> int:
        """Weights of the dense ``nn.Linear`` this layer stands for."""
        return self.out_features * self.in_features

    @property
    def density(self) -> float:
        return 1.0 / self.groups

    def ssconv_weight_counts(self) -> tuple[int, int]:
        """``(nonzero, dense)`` weights, read by :func:`ssconv.sparsity.counting.weight_counts`."""
        return self.num_params, self.dense_weight_count

    def ssconv_describe(self) -> str:
        """The settings column of ``ssconv.profile`` / ``ssconv summary``."""
        return f"linear G={self.groups}" + (", shuffled" if self.shuffle else "")

    # ------------------------------------------------------------- forward
    #: A leaf of :class:`ssconv.SSCTracer` (freeze's BatchNorm folding, channel order): one
    #: ``call_module`` node, as ``nn.Linear`` is for ``torch.fx``.
    _fx_leaf = True

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy):
            raise TypeError(
                "SSCLinear reshapes by its input's shape, which torch.fx cannot trace: trace "
                "it as a leaf module, with ssconv.symbolic_trace(model) or ssconv.SSCTracer"
            )
        if not torch.jit.is_tracing() and x.shape[-1] != self.in_features:
            raise ValueError(
                f"SSCLinear expects inputs with in_features={self.in_features} in the last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        if self.groups == 1:
            return F.linear(x, self.weight_point, self.bias)
        if self.shuffle:
            x = shuffle_features(x, self.groups, self.in_features)
        g = self.groups
        lead = x.shape[:-1]
        # (M, G, in/G) -> (G, M, in/G) @ (G, in/G, out/G) -> (G, M, out/G) -> (M, out)
        xg = x.reshape(-1, g, self.in_features // g).transpose(0, 1)
        w = self.weight_point.view(g, self.out_features // g, self.in_features // g)
        y = torch.bmm(xg, w.transpose(1, 2)).transpose(0, 1).reshape(*lead, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y

    # ------------------------------------------------------------- dense views
    def to_dense(self) -> Tensor:
        """The ``(out_features, in_features)`` weight over the logical inputs (block-diagonal;
        differentiable). With ``shuffle`` use :meth:`to_linear` for the input as it comes."""
        g = self.groups
        cin_g, cout_g = self.in_features // g, self.out_features // g
        blocks = self.weight_point.view(g, cout_g, cin_g)
        return torch.block_diag(*blocks.unbind(0))

    def to_linear(self) -> nn.Linear:
        """The equivalent dense ``nn.Linear`` (the shuffle folded into its weight)."""
        w = self.weight_point
        linear = nn.Linear(
            self.in_features, self.out_features, self.bias is not None, w.device, w.dtype
        )
        with torch.no_grad():
            dense = self.to_dense()
            if self.shuffle:
                dense = dense.new_zeros(dense.shape).index_copy(1, self.in_index, dense)
            linear.weight.copy_(dense)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        groups: int = 1,
        shuffle: bool = False,
        copy_weights: bool = False,
        init_scale: str = "effective",
    ) -> SSCLinear:
        """An SSC layer with the shape of ``linear``; ``copy_weights=True`` keeps its weights
        on the block-diagonal pattern (read through the shuffle), otherwise fresh weights."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            groups,
            linear.bias is not None,
            device=w.device,
            dtype=w.dtype,
            shuffle=shuffle,
            init_scale=init_scale,
        )
        if copy_weights:
            layer.load_dense_weight(w.detach())
            if linear.bias is not None:
                with torch.no_grad():
                    layer.bias.copy_(linear.bias)
        return layer

    @torch.no_grad()
    def load_dense_weight(self, weight: Tensor) -> None:
        """Copy the values of a dense ``(out_features, in_features)`` weight (the input as it
        comes, as ``nn.Linear`` stores it) on the pattern; the others are dropped."""
        expected = (self.out_features, self.in_features)
        if tuple(weight.shape) != expected:
            raise ValueError(f"weight must have shape {expected}, got {tuple(weight.shape)}")
        weight = weight.index_select(1, self.in_index.to(weight.device))
        g = self.groups
        cin_g, cout_g = self.in_features // g, self.out_features // g
        blocks = weight.reshape(g, cout_g, g, cin_g).diagonal(dim1=0, dim2=2)  # (cout_g, cin_g, G)
        self.weight_point.copy_(blocks.permute(2, 0, 1).reshape(self.out_features, cin_g))

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}"
        s += f", groups={self.groups}, bias={self.bias is not None}"
        if self.shuffle:
            s += ", shuffle=True"
        if self.init_scale != "effective":
            s += f", init_scale={self.init_scale}"
        return s + f", density={self.density:.3g}"


def shuffle_features(x: Tensor, groups: int, features: int) -> Tensor:
    """ShuffleNet's channel shuffle on the last dimension: ``x[..., in_index]`` of a shuffled
    :class:`SSCLinear` (a transpose, whose gradient is a transpose too)."""
    lead = x.shape[:-1]
    return x.reshape(*lead, features // groups, groups).transpose(-1, -2).reshape(*lead, features)
