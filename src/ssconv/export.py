"""The old home of freeze and the exporters (``from ssconv.export import export_onnx, freeze``,
as the README shows), kept as re-exports: they live in :mod:`ssconv.deploy`, the frozen layer
and the channel order in :mod:`ssconv.layers`."""

from ssconv.deploy import (
    ExportReport,
    export_onnx,
    export_torchscript,
    fold_batchnorm,
    freeze,
    optimize_channel_order,
)
from ssconv.layers.channel_order import ChannelOrder, residue_permutation
from ssconv.layers.inference import SSConv2dInference

__all__ = [
    "ChannelOrder",
    "ExportReport",
    "SSConv2dInference",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "freeze",
    "optimize_channel_order",
    "residue_permutation",
]
