"""Deployment: BatchNorm folding, the channel-order and channels_last passes, :func:`freeze` (an
inference copy with frozen SSC layers) and the ONNX / TorchScript exporters."""

from ssconv.deploy._freeze import freeze
from ssconv.deploy.batchnorm import fold_batchnorm
from ssconv.deploy.channel_order import chain_channels_last, fuse_relu, optimize_channel_order
from ssconv.deploy.export import ExportReport, export_onnx, export_torchscript

__all__ = [
    "ExportReport",
    "chain_channels_last",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "freeze",
    "fuse_relu",
    "optimize_channel_order",
]
