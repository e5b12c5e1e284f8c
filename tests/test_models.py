"""Tests of segtutor.models: blocks against PyTorch references, every model's output contract,
parameter counts of the canonical configurations against published/hand-derived numbers, and the
model errata of DESIGN.md (freezing by attribute, SegNet's shared layers, unpadded U-Net shapes).

Small widths and inputs keep the file fast; canonical-size models are only built to count
parameters, never run.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segtutor.models import MODEL_NAMES, blocks, build_model, conv_bn_params, count_parameters

# Small configurations of every model, used wherever a model is run.
SMALL: dict[str, dict] = {
    "unet": {"base_width": 4},
    "fcn8s": {"width": 0.0625, "fc_width": 32},  # the paper's 4096-wide fc6 is far too slow here
    "segnet": {"width": 0.0625},
    "unetpp": {"base_width": 4},
    "deeplabv3": {"backbone": "resnet18", "encoder_width": 0.25, "head_width": 16},
    "deeplabv3plus": {"backbone": "resnet18", "encoder_width": 0.25, "head_width": 16},
    "pspnet": {"backbone": "resnet18", "encoder_width": 0.25, "head_width": 16},
    "resunet34": {"decoder_width": 8, "encoder_width": 0.25},
}
# Models whose training-mode output is a dict {"out", "aux", ...} with these options.
AUX_OPTIONS: dict[str, dict] = {
    "unetpp": {"deep_supervision": True},
    "deeplabv3": {"aux": True},
    "deeplabv3plus": {"aux": True},
    "pspnet": {"aux": True},
    "resunet34": {"deep_supervision": True, "classify": True},
}


def small(name: str, num_classes: int = 3, in_channels: int = 3, **extra) -> nn.Module:
    return build_model(
        name, num_classes=num_classes, in_channels=in_channels, **{**SMALL[name], **extra}
    )


def test_every_registered_name_has_a_small_config() -> None:
    assert set(SMALL) >= set(MODEL_NAMES)


# --------------------------------------------------------------------------- blocks


def test_conv_bn_relu_matches_functional_reference() -> None:
    block = blocks.ConvBNReLU(3, 5, 3, dilation=2).eval()
    x = torch.randn(2, 3, 9, 11)
    conv, bn = block[0], block[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        expected = F.relu(
            F.batch_norm(
                F.conv2d(x, conv.weight, padding=2, dilation=2),
                bn.running_mean,
                bn.running_var,
                bn.weight,
                bn.bias,
                eps=bn.eps,
            )
        )
        torch.testing.assert_close(block(x), expected)
    assert conv.bias is None  # BN follows, a bias would be redundant


def test_scse_matches_the_paper_formula() -> None:
    torch.manual_seed(1)
    se = blocks.SCSE(8, reduction=2)
    x = torch.randn(2, 8, 5, 6)
    c1, c2 = se.cse[1], se.cse[3]
    z = x.mean(dim=(2, 3))  # squeeze: [B, C]
    s = torch.sigmoid(
        F.linear(
            F.relu(F.linear(z, c1.weight[:, :, 0, 0], c1.bias)), c2.weight[:, :, 0, 0], c2.bias
        )
    )  # excitation: [B, C]
    q = torch.sigmoid(
        (x * se.sse[0].weight[0, :, 0, 0][None, :, None, None]).sum(1, keepdim=True)
        + se.sse[0].bias
    )  # spatial map: [B, 1, H, W]
    torch.testing.assert_close(se(x), x * s[:, :, None, None] + x * q)
    se_max = blocks.SCSE(8, reduction=2, mode="max")
    se_max.load_state_dict(se.state_dict())
    torch.testing.assert_close(se_max(x), torch.maximum(x * s[:, :, None, None], x * q))
    with pytest.raises(ValueError, match="mode"):
        blocks.SCSE(8, mode="mul")


def test_aspp_branches_and_image_pooling() -> None:
    aspp = blocks.ASPP(16, 8, rates=(2, 4), image_pooling=True).eval()
    assert len(aspp.branches) == 4  # 1x1, two atrous, pooling
    assert [b[0].dilation for b in aspp.branches[1:3]] == [(2, 2), (4, 4)]
    x = torch.randn(2, 16, 7, 9)
    assert aspp(x).shape == (2, 8, 7, 9)
    pooled = aspp.branches[-1](x)
    # the image-pooling branch is constant over space: one vector per image, broadcast back
    torch.testing.assert_close(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    assert len(blocks.ASPP(16, 8, rates=(2, 4), image_pooling=False).branches) == 3


def test_ppm_bins_and_output_channels() -> None:
    ppm = blocks.PPM(32, bins=(1, 2, 3, 6)).eval()
    assert ppm.out_channels == 64
    x = torch.randn(2, 32, 12, 12)
    y = ppm(x)
    assert y.shape == (2, 64, 12, 12)
    torch.testing.assert_close(y[:, :32], x)  # the input passes through unchanged
    # bin 1 is global average pooling: its branch is the 1x1 conv-BN-ReLU of the mean, broadcast
    branch = ppm.stages[0][1]
    expected = branch(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, 12, 12)
    torch.testing.assert_close(y[:, 32:40], expected)


def test_ppm_without_bins_passes_the_input_through() -> None:
    ppm = blocks.PPM(32, bins=())
    assert ppm.out_channels == 32 and len(ppm.stages) == 0
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(ppm(x), x)
    # PSPNet without its pyramid (the paper's dilated-FCN baseline) builds and runs
    model = build_model("pspnet", num_classes=3, bins=(), aux=False, **SMALL["pspnet"]).eval()
    assert model.ppm.out_channels == model.encoder.channels[4]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 40)).shape == (1, 3, 40, 40)


def test_scale_rates_keeps_the_papers_proportion() -> None:
    from segtutor.models.deeplab import PAPER_RATES, scale_rates

    assert scale_rates(33) == PAPER_RATES == (6, 12, 18)
    assert scale_rates(16) == (3, 6, 9)
    assert scale_rates(8) == (1, 3, 4)
    assert scale_rates(6) == scale_rates(2) == (1, 2, 3)  # at least 1, strictly increasing
    assert scale_rates(10, rates=(2, 4), reference_size=10) == (2, 4)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            scale_rates(bad)


def test_hypercolumn_matches_interpolate_and_cat() -> None:
    feats = [torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4), torch.randn(1, 4, 2, 2)]
    expected = torch.cat(
        [feats[0]]
        + [F.interpolate(f, size=(8, 8), mode="bilinear", align_corners=False) for f in feats[1:]],
        1,
    )
    torch.testing.assert_close(blocks.Hypercolumn()(feats), expected)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_hypercolumn_fusion_equals_1x1_conv_bn_relu_on_the_concatenation(mode: str) -> None:
    torch.manual_seed(0)
    feats = [torch.randn(2, 2, 12, 12), torch.randn(2, 3, 6, 6), torch.randn(2, 4, 3, 3)]
    fusion = blocks.HypercolumnFusion([2, 3, 4], 5, mode=mode)
    with torch.no_grad():
        fusion.bn.weight.uniform_(0.5, 1.5)
        fusion.bn.bias.uniform_(-0.5, 0.5)
    # the reference builds the full-size concatenation with PyTorch's own ops
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    stacked = torch.cat(
        [feats[0]] + [F.interpolate(f, size=(12, 12), mode=mode, **kwargs) for f in feats[1:]],
        1,
    )
    ref = F.conv2d(stacked, fusion.weight)
    for training in (True, False):  # batch statistics, then the running ones
        fusion.train(training)
        bn = F.batch_norm(
            ref,
            fusion.bn.running_mean.clone(),
            fusion.bn.running_var.clone(),
            fusion.bn.weight,
            fusion.bn.bias,
            training=training,
        )
        torch.testing.assert_close(fusion(feats), F.relu(bn), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="features"):
        fusion(feats[:2])
    with pytest.raises(ValueError, match="in_channels"):
        blocks.HypercolumnFusion([2, 0], 5)
    with pytest.raises(ValueError, match="out_channels"):
        blocks.HypercolumnFusion([2, 3], 0)
    with pytest.raises(ValueError, match="mode"):
        blocks.HypercolumnFusion([2, 3], 5, mode="bicubic")


def test_resunet34_hypercolumn_fuses_every_decoder_scale() -> None:
    from segtutor.models.resunet import ResUNet34

    model = ResUNet34(in_channels=1, encoder_width=0.125, decoder_width=8).eval()
    seen = []
    hook = model.hypercolumn.register_forward_hook(
        lambda m, i, o: seen.append(([f.shape[1:] for f in i[0]], o.shape[1:]))
    )
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    hook.remove()
    # decoder levels 1/1 .. 1/16 of widths 8, 8, 8, 16, 32 in, one 8-channel full-size map out
    assert seen == [
        (
            [(8, 64, 64), (8, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)],
            (8, 64, 64),
        )
    ]
    assert model.hypercolumn.weight.shape == (8, 72, 1, 1)


def test_bilinear_kernel_transposed_conv_equals_bilinear_interpolation() -> None:
    x = torch.randn(1, 2, 6, 6)
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(blocks.bilinear_kernel(2, 2, 4))
    y = up(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # equal away from the border (the transposed conv pads with zeros, interpolate clamps)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (5, 3)])
def test_pad_to_multiple_and_crop_are_inverse(size) -> None:
    x = torch.randn(1, 2, *size)
    padded, original = blocks.pad_to_multiple(x, 16)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert original == size
    torch.testing.assert_close(blocks.crop_to(padded, original), x)
    with pytest.raises(ValueError, match="multiple"):
        blocks.pad_to_multiple(x, 0)


@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
def test_up_block_shapes_and_channels(upsample) -> None:
    block = blocks.UpBlock(16, 8, 8, upsample=upsample, attention=True)
    y = block(torch.randn(2, 16, 4, 5), torch.randn(2, 8, 8, 10))
    assert y.shape == (2, 8, 8, 10)
    first_conv = block.conv[0][0]
    assert first_conv.in_channels == (8 if upsample == "transpose" else 16) + 8
    with pytest.raises(ValueError, match="upsample"):
        blocks.UpBlock(16, 8, 8, upsample="bicubic")


def test_center_crop_matches_slicing() -> None:
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    torch.testing.assert_close(blocks.center_crop_or_pad(x, (4, 4)), x[..., 2:6, 2:6])


# --------------------------------------------------------------------------- build_model


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        build_model("vgg_unet_deluxe")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("unet", num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("unet", in_channels=-1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_eval_output_shapes(name) -> None:
    """Logits at the input size, also for sizes that are not multiples of 32; 1 or 3 channels."""
    model = small(name, num_classes=3).eval()
    with torch.no_grad():
        for shape in [(2, 3, 128, 128), (1, 3, 96, 160), (1, 3, 45, 75)]:
            y = model(torch.randn(shape))
            assert isinstance(y, torch.Tensor), f"{name}: eval mode must return a tensor"
            assert y.shape == (shape[0], 3, *shape[2:]), (name, shape, y.shape)
        grey = small(name, num_classes=3, in_channels=1).eval()
        assert grey(torch.randn(1, 1, 33, 40)).shape == (1, 3, 33, 40)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_train_mode_backward_reaches_every_parameter(name) -> None:
    model = small(name, num_classes=2, **AUX_OPTIONS.get(name, {})).train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    if name in AUX_OPTIONS:
        assert isinstance(out, dict) and set(out) >= {"out", "aux"}, name
        aux = out["aux"] if isinstance(out["aux"], list) else [out["aux"]]
        for a in aux:
            assert a.shape == (2, 2, 64, 64)
        total = out["out"].sum() + sum(a.sum() for a in aux)
        if "cls" in out:
            assert out["cls"].shape == (2,)
            total = total + out["cls"].sum()
    else:
        assert isinstance(out, torch.Tensor)
        total = out.sum()
    main = out["out"] if isinstance(out, dict) else out
    assert main.shape == (2, 2, 64, 64)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    # auxiliary outputs exist only in training mode
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_round_trip_with_weights_only(name, tmp_path) -> None:
    model = small(name).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    clone = small(name).eval()
    clone.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


# --------------------------------------------------------------------------- U-Net


def unet_paper_parameter_count(in_ch: int, classes: int, widths=(64, 128, 256, 512, 1024)) -> int:
    """Parameters of the U-Net of Ronneberger et al. (MICCAI 2015, Fig. 1), counted by hand from
    the figure's layer list, with BN after each 3x3 conv (no conv bias, 2 BN parameters)."""

    def conv3(cin, cout):
        return 9 * cin * cout + 2 * cout

    total = conv3(in_ch, widths[0]) + conv3(widths[0], widths[0])
    for a, b in zip(widths[:-1], widths[1:]):  # contracting path
        total += conv3(a, b) + conv3(b, b)
    for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):  # expanding path
        total += 4 * a * (a // 2) + a // 2  # 2x2 up-conv halving the channels (+bias)
        total += conv3(a // 2 + b, b) + conv3(b, b)
    return total + widths[0] * classes + classes  # 1x1 classifier


def test_unet_parameter_count_matches_the_paper() -> None:
    # ~31.0M for 3 -> 2 classes: the hand count from the paper's figure (31,037,698), which is
    # also the number the widely used milesial/Pytorch-UNet reports for the same configuration.
    model = build_model("unet", num_classes=2, in_channels=3)
    n = count_parameters(model)
    assert unet_paper_parameter_count(3, 2) == 31_037_698
    assert abs(n - 31_037_698) / 31_037_698 < 0.05
    assert model.widths == [64, 128, 256, 512, 1024]


def test_unet_base_width_scales_channels() -> None:
    model = build_model("unet", num_classes=5, base_width=8)
    assert model.widths == [8, 16, 32, 64, 128]
    assert count_parameters(model) == unet_paper_parameter_count(3, 5, tuple(model.widths))


def test_unet_bilinear_decoder_builds_and_runs() -> None:
    model = build_model("unet", num_classes=2, base_width=4, upsample="bilinear").eval()
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 2, 50, 70)


def test_unet_dropout_zeroes_whole_decoder_channels_in_training_only() -> None:
    torch.manual_seed(0)
    plain = build_model("unet", num_classes=3, base_width=4, depth=2)
    dropped = build_model("unet", num_classes=3, base_width=4, depth=2, dropout=0.5)
    # the rate adds no parameters: the plain model's weights load as they are
    dropped.load_state_dict(plain.state_dict())
    seen = []
    dropped.drop.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
    x = torch.randn(2, 3, 16, 16)
    dropped.train()(x)
    assert len(seen) == 2  # one dropout per decoder block
    for before, after in seen:
        # Dropout2d: each [H, W] map is either all zero or the input scaled by 1 / (1 - p)
        zeroed = after.flatten(2).abs().amax(dim=2) == 0
        assert 0 < zeroed.sum() < zeroed.numel()
        kept = ~zeroed
        torch.testing.assert_close(after[kept], before[kept] * 2.0)
    # in eval mode dropout is the identity (the training pass moved the batch-norm statistics,
    # so both models restart from the same weights)
    dropped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x), plain.eval()(x))


@pytest.mark.parametrize("rate, error", [(1.0, ValueError), (-0.1, ValueError), (True, TypeError)])
def test_unet_rejects_bad_dropout(rate, error) -> None:
    with pytest.raises(error, match="dropout"):
        build_model("unet", base_width=4, dropout=rate)


def test_unet_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="resunet34"):
        build_model("unet", pretrained=True)


def test_erratum_unpadded_unet_shapes() -> None:
    """The paper's valid convolutions shrink the map: 572x572 in, 388x388 out (Fig. 1).

    The buggy snippet copies the paper's padding=0 convolutions and concatenates the skip as it
    is: the shapes no longer match and torch.cat fails. The paper crops the skip (our
    ``padding=False`` mode); our default pads the convolutions, so the output has the input's size.
    """
    valid = build_model("unet", num_classes=2, base_width=2, padding=False).eval()
    with torch.no_grad():
        assert valid(torch.zeros(1, 3, 572, 572)).shape == (1, 2, 388, 388)
    padded = build_model("unet", num_classes=2, base_width=2).eval()
    with torch.no_grad():
        assert padded(torch.zeros(1, 3, 572, 572)).shape == (1, 2, 572, 572)

    # the buggy snippet: valid double convs and an uncropped skip
    def double_conv(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3), nn.ReLU(), nn.Conv2d(cout, cout, 3), nn.ReLU()
        )

    enc1, enc2 = double_conv(3, 4), double_conv(4, 8)
    up, dec1 = nn.ConvTranspose2d(8, 4, 2, stride=2), double_conv(8, 4)
    x = torch.zeros(1, 3, 64, 64)
    s1 = enc1(x)  # 60x60
    bottom = enc2(F.max_pool2d(s1, 2))  # 26x26
    upsampled = up(bottom)  # 52x52, while the skip is 60x60
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        dec1(torch.cat([upsampled, s1], dim=1))
    fixed = dec1(torch.cat([upsampled, blocks.center_crop_or_pad(s1, (52, 52))], dim=1))
    assert fixed.shape[-2:] == (48, 48)


# --------------------------------------------------------------------------- freezing


def _sgd_step(model: nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    out = model(x)
    out = out["out"] if isinstance(out, dict) else out
    out.square().mean().backward()
    opt.step()


def test_freezing_with_requires_grad_(tmp_path) -> None:
    model = build_model("unet", num_classes=2, base_width=4).train()
    encoder = nn.ModuleList([model.inc, model.downs])
    encoder.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _sgd_step(model, torch.randn(2, 3, 32, 32))
    after = model.state_dict()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        frozen = name.startswith(("inc.", "downs."))
        assert changed != frozen, (name, changed)


def test_freeze_keeps_batch_norm_statistics_fixed_through_train_mode() -> None:
    import copy
    import pickle

    from segtutor.models.encoders import freeze

    torch.manual_seed(0)
    model = build_model("resunet34", num_classes=1, **SMALL["resunet34"]).train()
    keys = list(model.state_dict())
    freeze(model.encoder)
    model.train()  # what every training loop calls each epoch
    bns = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(m.training for m in model.center.modules())  # the rest still trains
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    _sgd_step(model, x)
    for key, value in model.encoder.state_dict().items():  # weights and running stats alike
        assert torch.equal(value, before[key]), key
    # a frozen layer computes with its running statistics, as in eval mode
    bn = bns[0]
    y = torch.randn(2, bn.num_features, 5, 5)
    expected = F.batch_norm(
        y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
    )
    torch.testing.assert_close(bn(y), expected)
    assert list(model.state_dict()) == keys  # same names: checkpoints unaffected
    pickle.loads(pickle.dumps(copy.deepcopy(model)))
    # unfrozen: trainable, and back in training mode with the module
    freeze(model.encoder, frozen=False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in bns) and type(bns[0]) is nn.BatchNorm2d
    model.eval()
    assert not any(m.training for m in bns)


def test_erratum_freezing_by_attribute_freezes_nothing() -> None:
    """``module.requires_grad = False`` sets a plain Python attribute on the Module; its
    parameters keep ``requires_grad=True`` and the optimizer still updates them."""
    model = build_model("unet", num_classes=2, base_width=4).train()
    model.inc.requires_grad = False  # the buggy snippet
    assert all(p.requires_grad for p in model.inc.parameters())
    before = model.inc[0][0].weight.detach().clone()
    _sgd_step(model, torch.randn(2, 3, 32, 32))
    assert not torch.equal(before, model.inc[0][0].weight)  # it trained anyway


# --------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("arch", ["vgg16_bn", "resnet18"])
def test_encoder_loads_torchvision_weights_and_matches_its_features(arch) -> None:
    """Same layer names as torchvision: its state dict loads strictly, and the features equal
    torchvision's own ``IntermediateLayerGetter`` outputs."""
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter

    from segtutor.models.encoders import Encoder

    ref = getattr(torchvision.models, arch)().eval()
    enc = Encoder(arch).eval()
    enc.load_state_dict(
        {k: v for k, v in ref.state_dict().items() if not k.startswith(("fc.", "classifier."))},
        strict=True,
    )
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x)
        if arch.startswith("vgg"):
            pools = [i for i, m in enumerate(ref.features) if isinstance(m, nn.MaxPool2d)]
            getter = IntermediateLayerGetter(ref.features, {str(i): str(i) for i in pools})
        else:
            getter = IntermediateLayerGetter(ref, {f"layer{i}": str(i) for i in range(1, 5)})
        expected = list(getter(x).values())
    for ours, theirs in zip(feats[-len(expected) :], expected):
        torch.testing.assert_close(ours, theirs)
    assert [f.shape[1] for f in feats] == enc.channels
    assert [32 // f.shape[-1] for f in feats] == enc.reductions == [2, 4, 8, 16, 32]


@pytest.mark.parametrize("output_stride", [8])
def test_encoder_dilation_matches_torchvision_replace_stride_with_dilation(output_stride) -> None:
    # output stride 16 dilates layer4 only, a subset of what 8 checks (layer3 and layer4);
    # test_dilated_models_keep_output_stride covers 16 for the models
    import torchvision

    from segtutor.models.encoders import Encoder

    ref = torchvision.models.resnet50(
        replace_stride_with_dilation=[False, output_stride == 8, True]
    ).eval()
    enc = Encoder("resnet50", output_stride=output_stride).eval()
    enc.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_out = torchvision.models._utils.IntermediateLayerGetter(ref, {"layer4": "o"})(x)["o"]
        torch.testing.assert_close(enc(x)[-1], ref_out)
    assert enc.reductions[-1] == output_stride and ref_out.shape[-1] == 64 // output_stride
    # BasicBlock ResNets too (torchvision refuses dilation there; the encoder sets it itself)
    small_enc = Encoder("resnet18", output_stride=output_stride)
    assert small_enc(x)[-1].shape[-1] == 64 // output_stride


def test_encoder_rejects_bad_arguments() -> None:
    from segtutor.models.encoders import Encoder

    with pytest.raises(ValueError, match="encoder name"):
        Encoder("alexnet")
    with pytest.raises(ValueError, match="output_stride"):
        Encoder("resnet18", output_stride=4)
    with pytest.raises(ValueError, match="output_stride"):
        Encoder("vgg16", output_stride=16)
    with pytest.raises(ValueError, match="width=1"):
        Encoder("resnet18", width=0.5, pretrained=True)


def test_pretrained_without_cached_weights_names_file_and_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = os.path.join(str(tmp_path), "hub", "checkpoints")
    with pytest.raises(FileNotFoundError) as err:
        build_model("fcn8s", num_classes=2, pretrained=True)
    assert "vgg16-397923af.pth" in str(err.value) and folder in str(err.value)
    assert not os.path.exists(os.path.join(folder, "vgg16-397923af.pth"))  # nothing downloaded


def test_pretrained_loads_a_cached_file_offline(tmp_path, monkeypatch) -> None:
    """A file placed where the error message says is used (here a stand-in with random weights,
    so no download is needed); a one-channel input gets the sum of the RGB filters."""
    import torchvision

    from segtutor.models.encoders import Encoder, checkpoint_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    filename, folder = checkpoint_path("resnet18")
    assert filename == "resnet18-f37072fd.pth"
    os.makedirs(folder)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), os.path.join(folder, filename))
    enc = Encoder("resnet18", pretrained=True)
    torch.testing.assert_close(enc.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    grey = Encoder("resnet18", in_channels=1, pretrained=True)
    torch.testing.assert_close(grey.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


# --------------------------------------------------------------------------- FCN-8s


def test_fcn8s_parameter_count_matches_the_paper() -> None:
    # Long et al. (CVPR 2015), Table 1: FCN-VGG16 has 134M parameters (21 PASCAL classes).
    n = count_parameters(build_model("fcn8s", num_classes=21))
    assert abs(n - 134e6) / 134e6 < 0.05


def test_fcn8s_fc6_matmul_equals_convolution() -> None:
    from segtutor.models.fcn import MatmulConv2d

    conv = MatmulConv2d(6, 5, 7, padding=3)
    x = torch.randn(2, 6, 4, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=3))
    strided = MatmulConv2d(3, 4, 3, stride=2, padding=2, dilation=2)
    x = torch.randn(1, 3, 9, 8)
    torch.testing.assert_close(
        strided(x), F.conv2d(x, strided.weight, strided.bias, stride=2, padding=2, dilation=2)
    )


@pytest.mark.parametrize("variant", ["32s", "16s"])
def test_fcn_variants_fuse_fewer_skips(variant) -> None:
    model = build_model("fcn8s", num_classes=2, variant=variant, **SMALL["fcn8s"]).eval()
    assert (model.score_pool4 is None) == (variant == "32s") and model.score_pool3 is None
    assert model.up8.stride == ((32, 32) if variant == "32s" else (16, 16))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 72)).shape == (1, 2, 40, 72)
    with pytest.raises(ValueError, match="variant"):
        build_model("fcn8s", variant="4s")
    bn = build_model("fcn8s", num_classes=2, batch_norm=True, **SMALL["fcn8s"])
    assert bn.encoder.name == "vgg16_bn"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 13


def test_fcn8s_learned_upsampling_starts_as_bilinear() -> None:
    model = build_model("fcn8s", num_classes=2, **SMALL["fcn8s"])
    x = torch.randn(1, 2, 8, 8)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.up2(x)[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    fixed = build_model("fcn8s", num_classes=2, upsample="bilinear", **SMALL["fcn8s"])
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fixed.modules())


# --------------------------------------------------------------------------- SegNet


def test_segnet_parameter_count_matches_the_paper() -> None:
    # Badrinarayanan et al. (TPAMI 2017), Table 6: SegNet has 29.5M trainable parameters.
    n = count_parameters(build_model("segnet", num_classes=11))
    assert abs(n - 29.5e6) / 29.5e6 < 0.05


def test_segnet_unpools_to_the_argmax_positions() -> None:
    """Max unpooling puts each value back where the max came from and zeros elsewhere."""
    x = torch.randn(1, 1, 4, 4)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    un = F.max_unpool2d(pooled, idx, 2, 2)
    mask = un != 0
    assert mask.sum() == 4
    torch.testing.assert_close(un[mask], x[mask])


def test_erratum_segnet_decoder_with_repeated_list_shares_weights() -> None:
    """``[conv, bn, relu] * n`` repeats the same module objects: three 'layers' with one set of
    weights. ``decoder_stage`` builds a new module per layer."""
    from segtutor.models.segnet import decoder_stage

    conv, bn, relu = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
    buggy = nn.Sequential(*[conv, bn, relu] * 3)
    fixed = decoder_stage(8, 8, 3)
    assert len(buggy) == 9 and buggy[0] is buggy[3] is buggy[6]
    one_layer = count_parameters(nn.Sequential(conv, bn))
    assert count_parameters(buggy) == one_layer  # 3 layers, 1 layer's parameters
    assert count_parameters(fixed) == 3 * (9 * 8 * 8 + 2 * 8)
    convs = [m for m in fixed.modules() if isinstance(m, nn.Conv2d)]
    assert len({id(c.weight) for c in convs}) == 3
    # and in the whole model: 13 encoder + 13 decoder convolutions, all distinct
    model = build_model("segnet", num_classes=2, **SMALL["segnet"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 26 and len({id(c.weight) for c in convs}) == 26


# --------------------------------------------------------------------------- U-Net++


def test_unetpp_parameter_count_matches_the_paper() -> None:
    # Zhou et al. (DLMIA 2018), Table 1: U-Net++ with deep supervision has 9.04M parameters
    # (widths 32, 64, 128, 256, 512).
    with torch.device("meta"):
        model = build_model("unetpp", num_classes=1, deep_supervision=True)
    assert model.widths == [32, 64, 128, 256, 512]
    assert abs(count_parameters(model) - 9.04e6) / 9.04e6 < 0.05
    assert len(model.heads) == 4


def test_unetpp_pruned_inference_is_the_kth_head_and_ignores_deeper_levels() -> None:
    model = build_model("unetpp", num_classes=2, base_width=4, deep_supervision=True)
    x = torch.randn(2, 3, 32, 32)
    # train mode with frozen BN statistics: the same arithmetic as eval, but all four heads out
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        heads = model(x)
        heads = heads["aux"] + [heads["out"]]
    model.eval()
    for k in (1, 2, 3, 4):
        model.set_prune_level(k)
        with torch.no_grad():
            torch.testing.assert_close(model(x), heads[k - 1])
    # the pruned L^2 network never touches levels 3 and 4
    model.set_prune_level(2)
    with torch.no_grad():
        before = model(x)
        for name in ("3_0", "4_0", "2_1", "3_1"):
            for p in model.nodes[name].parameters():
                p.add_(1.0)
        torch.testing.assert_close(model(x), before)
    with pytest.raises(ValueError, match="deep_supervision"):
        build_model("unetpp", base_width=4, prune_level=2)
    with pytest.raises(ValueError, match="prune_level"):
        build_model("unetpp", base_width=4, deep_supervision=True, prune_level=5)


# --------------------------------------------------------------------------- DeepLab, PSPNet


def test_deeplabv3_parameter_count_equals_torchvision() -> None:
    """Same architecture as torchvision's DeepLabV3-ResNet50 (ASPP 256, 3x3 head), counted
    side by side: 39,638,869 parameters for 21 classes without the auxiliary head."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    with torch.device("meta"):
        ours = count_parameters(build_model("deeplabv3", num_classes=21))
        theirs = count_parameters(
            deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
        )
        ours_aux = count_parameters(build_model("deeplabv3", num_classes=21, aux=True))
        theirs_aux = count_parameters(
            deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        )
    assert abs(ours - theirs) / theirs < 0.05 and theirs == 39_638_869
    assert abs(ours_aux - theirs_aux) / theirs_aux < 0.05


@pytest.mark.parametrize(("cin", "cout", "k"), [(3, 5, 1), (4, 6, 3), (304, 256, 3)])
def test_conv_bn_params_counts_a_bias_free_conv_and_its_bn(cin, cout, k) -> None:
    layer = nn.Sequential(nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout))
    assert conv_bn_params(cin, cout, k) == count_parameters(layer)


def test_deeplabv3plus_parameter_count_from_the_paper_decoder() -> None:
    """v3+ = v3 minus its 3x3 head conv, plus the decoder of Chen et al. (ECCV 2018, Sec. 3.1):
    1x1 conv 256 -> 48 on the low-level features, two 3x3 convs (256+48 -> 256, 256 -> 256)."""
    conv = conv_bn_params
    v3 = 39_638_869
    expected = v3 - conv(256, 256, 3) + conv(256, 48, 1) + conv(304, 256, 3) + conv(256, 256, 3)
    with torch.device("meta"):
        n = count_parameters(build_model("deeplabv3plus", num_classes=21))
    assert abs(n - expected) / expected < 0.05


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus", "pspnet"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_models_keep_output_stride(name, output_stride) -> None:
    model = small(name, output_stride=output_stride).eval()
    assert model.encoder(torch.zeros(1, 3, 64, 64))[-1].shape[-1] == 64 // output_stride
    if name != "pspnet":
        rates = [b[0].dilation[0] for b in model.aspp.branches[1:4]]
        assert rates == ([6, 12, 18] if output_stride == 16 else [12, 24, 36])
    with pytest.raises(ValueError, match="output_stride"):
        small(name, output_stride=32)
    with pytest.raises(ValueError, match="backbone must be one of resnet18, resnet34, resnet50"):
        small(name, backbone="vgg16")


def test_logits_to_input_upsamples_then_crops_the_padding() -> None:
    from segtutor.models.blocks import logits_to_input, pad_to_multiple

    x, size = pad_to_multiple(torch.zeros(1, 3, 50, 70), 16)  # padded to 64 x 80
    logits = torch.randn(1, 5, 8, 10)
    ref = F.interpolate(logits, size=(64, 80), mode="bilinear", align_corners=False)
    assert torch.equal(logits_to_input(logits, x.shape[-2:], size), ref[..., :50, :70])


def test_pspnet_parameter_count_from_the_paper_layers() -> None:
    """Zhao et al. (CVPR 2017): ResNet-50 trunk (torchvision, no fc: 23,508,032), PPM with four
    1x1 convs 2048 -> 512, a 3x3 conv 4096 -> 512, a 1x1 classifier, and the auxiliary head on
    layer3 (3x3 conv 1024 -> 256, 1x1 classifier)."""
    k = 21
    expected = (
        23_508_032
        + 4 * (2048 * 512 + 2 * 512)
        + 9 * 4096 * 512
        + 2 * 512
        + 512 * k
        + k
        + 9 * 1024 * 256
        + 2 * 256
        + 256 * k
        + k
    )
    with torch.device("meta"):
        n = count_parameters(build_model("pspnet", num_classes=k))
    assert abs(n - expected) / expected < 0.05


def test_pspnet_aux_head_only_in_training() -> None:
    model = small("pspnet", num_classes=2)
    calls = []
    model.aux_head.register_forward_hook(lambda *a: calls.append(1))
    assert set(model.train()(torch.randn(2, 3, 64, 64))) == {"out", "aux"}
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1
    assert isinstance(small("pspnet", aux=False).train()(torch.randn(2, 3, 32, 32)), torch.Tensor)


# --------------------------------------------------------------------------- ResNet34 U-Net


def test_resunet34_encoder_is_resnet34_and_extras() -> None:
    import torchvision

    with torch.device("meta"):
        model = build_model("resunet34", num_classes=1)
        resnet34 = torchvision.models.resnet34()
    fc = count_parameters(resnet34.fc)
    assert count_parameters(model.encoder) == count_parameters(resnet34) - fc == 21_284_672
    grey = small(
        "resunet34", num_classes=1, in_channels=1, classify=True, deep_supervision=True
    ).train()
    out = grey(torch.randn(2, 1, 101, 101))
    assert out["out"].shape == (2, 1, 101, 101) and out["cls"].shape == (2,)
    assert len(out["aux"]) == 4
    assert sum(isinstance(m, blocks.SCSE) for m in grey.modules()) == 5
    # eval mode: the logits alone, or with the empty-image head from the same pass; the head's
    # output equals the classification head applied to the deepest encoder map
    grey.eval()
    x = torch.randn(2, 1, 64, 64)  # a multiple of 32: no padding inside
    with torch.no_grad():
        both = grey(x, return_cls=True)
        assert torch.equal(both["out"], grey(x))
        assert torch.allclose(both["cls"], grey.classification_head(grey.encoder(x)[-1]).squeeze(1))
    plain = small("resunet34", attention=False, hypercolumn=False)
    assert not any(isinstance(m, blocks.SCSE) for m in plain.modules())
    with pytest.raises(ValueError, match="classify=True"):
        plain.eval()(torch.randn(1, 3, 32, 32), return_cls=True)


def test_resunet34_full_res_skip_feeds_a_conv_of_the_input_to_the_last_block() -> None:
    model = small("resunet34", in_channels=1, full_res_skip=True, attention=False).eval()
    plain = small("resunet34", in_channels=1, attention=False).eval()
    assert plain.full_res is None
    seen = []
    hook = model.decoder[4].register_forward_hook(lambda m, i, o: seen.append(i))
    x = torch.randn(2, 1, 50, 45)  # padded inside to 64x64
    with torch.no_grad():
        model(x)
        padded, _ = blocks.pad_to_multiple(x, 32)
        expected = model.full_res(padded)
    hook.remove()
    ((y, skip),) = seen
    assert skip.shape == (2, model.full_res[0].out_channels, 64, 64)
    torch.testing.assert_close(skip, expected)
    assert y.shape[-1] == 32  # the 1/2 map, upsampled inside the block
    # the extra parameters: the 3x3 conv-BN on the input, and the block's wider first conv
    w = model.full_res[0].out_channels
    extra = count_parameters(model) - count_parameters(plain)
    assert extra == (1 * w * 9 + 2 * w) + (w * w * 9)


def test_resunet34_zero_init_residual_starts_every_block_as_the_identity() -> None:
    from torchvision.models.resnet import BasicBlock

    model = small("resunet34", zero_init_residual=True).eval()
    plain = small("resunet34").eval()
    c = model.encoder.channels[1]  # the blocks of layer1 keep this width
    x = torch.randn(2, c, 8, 8)
    with torch.no_grad():
        for net, identity in ((model, True), (plain, False)):
            same = [
                torch.equal(b(x), torch.relu(x))
                for b in net.encoder.modules()
                if isinstance(b, BasicBlock) and b.downsample is None and b.conv1.in_channels == c
            ]
            assert same and all(s == identity for s in same)
    with pytest.raises(ValueError, match="pretrained=False"):
        build_model("resunet34", pretrained=True, zero_init_residual=True)
    with pytest.raises(TypeError, match="full_res_skip"):
        small("resunet34", full_res_skip=1)


# --------------------------------------------------------------------------- summary


def test_summary_counts_flops_like_the_formula() -> None:
    from segtutor.models.summary import summary

    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    s = summary(conv, (2, 3, 16, 16), repeats=1)
    assert s.params == 3 * 8 * 9
    assert s.flops == 2 * (2 * 16 * 16) * 8 * 3 * 9  # 2 FLOPs per multiply-add
    assert s.output_stride == 1
    model = small("unet")
    s = summary(model, (2, 3, 32, 32), repeats=1)
    assert s.output_stride == 16 and s.params == count_parameters(model)
    assert s.forward_ms > 0 and s.backward_ms > 0 and model.training
    assert all(p.grad is None for p in model.parameters())
    assert "params" in str(s)
    with pytest.raises(ValueError, match="input_size"):
        summary(model, (3, 32, 32))


# --------------------------------------------------------------------------- diagrams


def test_diagram_traces_the_unet_shapes() -> None:
    import matplotlib.pyplot as plt

    from segtutor.models.diagram import draw_blocks, trace_shapes

    model = small("unet")
    taps = ["inc"] + [f"downs.{i}" for i in range(4)] + [("head", "scores")]
    nodes = trace_shapes(model, torch.zeros(1, 3, 32, 32), taps)
    assert [(n.channels, n.height, n.stride) for n in nodes] == [
        (4, 32, 1),
        (8, 16, 2),
        (16, 8, 4),
        (32, 4, 8),
        (64, 2, 16),
        (3, 32, 1),
    ]
    assert nodes[-1].label == "scores" and model.training  # mode restored
    ax = draw_blocks(nodes, skips=[(0, 5)])
    assert len(ax.patches) == len(nodes) + (len(nodes) - 1) + 1  # boxes, arrows, skip
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not found"):
        trace_shapes(model, torch.zeros(1, 3, 32, 32), ["nope"])


# --------------------------------------------------------------------------- separable conv


@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, 2), (2, 1)])
def test_separable_conv_equals_the_dense_conv_of_the_factor_product(stride, dilation) -> None:
    torch.manual_seed(0)
    sep = blocks.SeparableConv2d(5, 7, kernel_size=3, stride=stride, dilation=dilation, bias=True)
    x = torch.randn(2, 5, 11, 13)
    dw = sep.depthwise.weight[:, 0]  # [C_in, k, k]
    pw = sep.pointwise.weight[:, :, 0, 0]  # [C_out, C_in]
    # reference 1: one dense conv whose kernel is the product of the factors
    dense = torch.einsum("oi,ikl->oikl", pw, dw)
    want = F.conv2d(
        x, dense, sep.pointwise.bias, stride=stride, padding=dilation, dilation=dilation
    )
    torch.testing.assert_close(sep(x), want, rtol=1e-5, atol=1e-5)
    # reference 2: filter each channel on its own, then mix the channels with a matrix product
    per_channel = torch.cat(
        [
            F.conv2d(
                x[:, i : i + 1],
                dw[i][None, None],
                stride=stride,
                padding=dilation,
                dilation=dilation,
            )
            for i in range(5)
        ],
        1,
    )
    mixed = torch.einsum("oi,bihw->bohw", pw, per_channel) + sep.pointwise.bias[:, None, None]
    torch.testing.assert_close(sep(x), mixed, rtol=1e-5, atol=1e-5)
    assert sep(x).shape == (2, 7, -(-11 // stride), -(-13 // stride))


def test_separable_conv_parameter_count() -> None:
    for cin, cout, k in [(8, 16, 3), (32, 32, 5), (3, 1, 1)]:
        sep = blocks.SeparableConv2d(cin, cout, kernel_size=k)
        assert count_parameters(sep) == k * k * cin + cin * cout
    assert count_parameters(blocks.SeparableConv2d(4, 6, bias=True)) == 9 * 4 + 4 * 6 + 6


def test_separable_conv_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        blocks.SeparableConv2d(0, 4)
    with pytest.raises(ValueError, match="dilation"):
        blocks.SeparableConv2d(4, 4, dilation=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel_size"):
        blocks.SeparableConv2d(4, 4, kernel_size=True)  # type: ignore[arg-type]


def test_default_conv_init_gives_pytorchs_uniform_bound_and_leaves_batch_norm_alone():
    """After ``default_conv_init`` every convolution's weights lie within PyTorch's documented
    bound 1/sqrt(fan_in) (fan_in = in_channels / groups * kH * kW; for a transposed convolution
    torch counts the weight's dim 1, out_channels / groups, as fan_in), where He init had
    exceeded it; batch norm keeps the values it had."""
    from segtutor.models import default_conv_init

    torch.manual_seed(0)
    net = build_model("segnet", num_classes=3, width=0.125)
    net.add_module("up", nn.ConvTranspose2d(8, 4, 2, stride=2))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    bounds = [1 / (m.weight[0].numel()) ** 0.5 for m in convs]  # weight[0]: [dim1, kH, kW]
    # He init (fan_out) is wider than the uniform bound on most layers
    assert sum(m.weight.abs().max().item() > b for m, b in zip(convs, bounds)) > len(convs) // 2
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)][0]
    bn.weight.data.fill_(2.0)
    assert default_conv_init(net) is net
    for m, b in zip(convs, bounds):
        assert m.weight.abs().max().item() <= b + 1e-7
        assert m.weight.abs().max().item() > 0.5 * b  # a uniform draw fills the interval
    assert torch.all(bn.weight == 2.0)
