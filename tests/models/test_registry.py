import pytest
import torch

from ssconv import SSCFactory, SSConv2d
from ssconv.models import create_model, list_models, model_info, register_model

# Published parameter counts of the dense models.
PUBLISHED = {
    # He et al. 2016, Table 6 (option A): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    "cifar_resnet20": (269_722, 0.27e6),
    "cifar_resnet32": (464_154, 0.46e6),
    "cifar_resnet44": (658_586, 0.66e6),
    "cifar_resnet56": (853_018, 0.85e6),
    "cifar_resnet110": (1_727_962, 1.7e6),
    # VGG-19-BN for CIFAR-10 as in SNIP / GraSP / SynFlow: 20.0M.
    "vgg19_bn": (20_035_018, 20.0e6),
    # torchvision model cards.
    "resnet18": (11_689_512, 11_689_512),
    "resnet34": (21_797_672, 21_797_672),
    "resnet50": (25_557_032, 25_557_032),
    "mobilenet_v2": (3_504_872, 3_504_872),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_dense_parameter_counts_are_pinned(name):
    exact, published = PUBLISHED[name]
    n = sum(p.numel() for p in create_model(name).parameters())
    assert n == exact
    digits = 2 if published < 1e6 else 3
    assert float(f"{n:.{digits}g}") == pytest.approx(published, rel=0.03)


def test_vgg_counts():
    assert sum(p.numel() for p in create_model("vgg11_bn").parameters()) == 9_228_362
    assert sum(p.numel() for p in create_model("vgg16_bn").parameters()) == 14_724_042


@pytest.mark.parametrize("name", list_models("cifar_resnet[23]*") + list_models("vgg*"))
def test_small_models_forward_backward_grey_and_ssc(name):
    model = create_model(name, num_classes=7, in_channels=1, conv_layer=SSCFactory(period=4))
    assert any(isinstance(m, SSConv2d) for m in model.modules())
    for size in (32, 64) if name.startswith("vgg11") else (32,):
        x = torch.randn(2, 1, size, size)
        out = model(x)
        assert out.shape == (2, 7)
        out.sum().backward()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_imagenet_models_take_factory_and_grey_input(name):
    # MobileNetV2's 3x3 convs are depthwise: SSC goes on its 1x1 convs.
    factory = SSCFactory(period=4, convert_pointwise=name == "mobilenet_v2")
    model = create_model(name, num_classes=5, in_channels=1, conv_layer=factory)
    assert any(isinstance(m, SSConv2d) for m in model.modules())
    out = model(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 5)
    out.sum().backward()


def test_registry_errors_and_listing():
    with pytest.raises(ValueError, match="did you mean 'vgg19_bn'"):
        create_model("vgg19")
    assert list_models("cifar_resnet*") == sorted(
        ["cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "cifar_resnet110"]
    )
    assert model_info("resnet50").input_size == (3, 224, 224)
    with pytest.raises(ValueError, match="already registered"):
        register_model(family="x", name="vgg19_bn")(lambda **kw: None)


def test_resnet_options():
    b = create_model("cifar_resnet20", shortcut="B")
    assert sum(p.numel() for p in b.parameters()) > 269_722
    with pytest.raises(ValueError, match="shortcut"):
        create_model("cifar_resnet20", shortcut="C")


def test_factory_depthwise_period_gives_one_spatial_kernel_per_filter():
    model = create_model("cifar_resnet20", conv_layer=SSCFactory(period="depthwise", groups=2))
    layers = [m for m in model.modules() if isinstance(m, SSConv2d)]
    assert len(layers) == 18
    assert all(m.pattern.decomposition().spatial_per_filter == 1 for m in layers)
    assert {m.period for m in layers} == {8, 16, 32}
