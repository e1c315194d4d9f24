"""Model registry and architectures (CIFAR ResNets, VGG-BN, torchvision / timm models by name),
and loading dense weights into them."""

from ssconv.models import cifar_resnet, imagenet, vgg  # noqa: F401  (register the models)
from ssconv.models.registry import (
    PretrainedWeightsError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from ssconv.models.weights import WeightsError, load_init_checkpoint, read_state_dict

__all__ = [
    "PretrainedWeightsError",
    "WeightsError",
    "create_model",
    "list_models",
    "load_init_checkpoint",
    "model_info",
    "read_state_dict",
    "register_model",
]
