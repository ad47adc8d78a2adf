import math

import pytest
import torch

from semisup.models import MODELS, build_model, default_model_name
from semisup.models.inputs import to_model_input
from semisup.models.wideresnet import WideResNet, count_parameters


@pytest.mark.parametrize(
    ("name", "channels", "size", "params"),
    [("wrn28_2", 3, 32, 1_469_642), ("wrn37_2", 3, 96, 5_933_770), ("cnn", 1, 28, 72_666)],
)
def test_models_give_logits_and_features(name, channels, size, params):
    model = build_model(name, num_classes=10, in_channels=channels)
    assert count_parameters(model) == params
    x = torch.randn(2, channels, size, size)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(features), model(x))


def test_wrn_follows_the_original_code():
    model = WideResNet(num_classes=10)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.momentum == 0.001 and bn.eps == 1e-3 for bn in bns)
    # He fan-out init: std = 1/sqrt(0.5 k² out) for the stem (k=3, 16 channels).
    assert model.stem.weight.std().item() == pytest.approx(1 / math.sqrt(0.5 * 9 * 16), rel=0.1)
    assert model.stem.bias is not None and not model.stem.bias.any()
    glorot = math.sqrt(2 / (128 + 10))  # truncated normal keeps the variance
    assert model.fc.weight.std().item() == pytest.approx(glorot, rel=0.15)
    widths = [
        b.conv2.conv.out_channels if hasattr(b.conv2, "conv") else b.conv2.out_channels
        for b in model.blocks
    ]
    assert widths == [32] * 4 + [64] * 4 + [128] * 4
    assert model.blocks[0].activate_before_residual and not model.blocks[1].activate_before_residual


def test_strided_conv_pads_like_tensorflow_same():
    # TF 'same' with stride 2 on an even size pads only after: the kernel centres on odd pixels.
    block = WideResNet(num_classes=2).blocks[4]
    conv = block.conv1
    x = torch.zeros(1, 32, 8, 8)
    x[0, :, 1, 1] = 1.0  # an odd pixel is the centre of output (0, 0)
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[:, :, 1, 1] = 1.0
        conv.conv.bias.zero_()
        out = conv(x)
    assert out.shape[-2:] == (4, 4)
    assert out[0, 0, 0, 0] == 32 and out[0, 0].sum() == 32


def test_registry_and_defaults():
    assert {"cnn", "wrn28_2", "wrn28_8", "wrn37_2"} <= set(MODELS.names())
    assert default_model_name(8) == "cnn" and default_model_name(28) == "cnn"
    assert default_model_name(32) == "wrn28_2" and default_model_name(96) == "wrn37_2"


def test_model_input_scales_to_minus_one_one():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).reshape(1, 1, 1, 3)
    assert torch.allclose(to_model_input(x), torch.tensor([-1.0, 1.0, -0.6]).reshape(1, 1, 1, 3))
