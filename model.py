"""The colorization networks: U-Net-style encoder-decoders from L (B, 1, H, W) to ab (B, 2, H, W).

ColorUNet learns every layer from scratch; EncoderUNet starts from an ImageNet-pretrained EfficientNet-Lite
encoder (backbones.py), whose features already tell a face from a dress from a sky. ModelConfig.encoder
chooses between them. ColorEnsemble averages the decoded colours of several such networks (the shipped model is one).
Pure modules; no I/O. The model owns its normalisation (ModelConfig -> LabNorm) and, for the
classification head, the quantised ab bins and colour prior (buffers, so they travel in the state dict).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import ENCODER_SPECS, EfficientNetLite
from colour_prior import FLOOR
from decoding import Decode  # model.Decode, as before
from hints import HINT_CHANNELS, hint_pyramid_level
from utils import LabNorm, l_to_grey, resize_like

ENCODERS = ("unet", *ENCODER_SPECS)  # learned from scratch, or one of the pretrained encoders
HEADS = ("regression", "classification", "regression_var")
LOG_VAR_MIN, LOG_VAR_MAX = -14.0, 2.0  # range of a regression_var head's log-variance (normalised ab)


EVEN_SPREAD = 0.15  # Decode.evenness's reference spread: about a typical photo's, in normalised ab


def colour_spread(ab: torch.Tensor) -> torch.Tensor:
    """ab (B, 2, H, W) -> (B,): each image's mean squared distance from its mean colour (a and b summed)."""
    return ((ab - ab.mean((2, 3), keepdim=True)) ** 2).sum(1).mean((1, 2))


def predicted_variance(out: torch.Tensor) -> torch.Tensor:
    """A regression_var head's output (B, 4, h, w) -> the variance it predicts for a and b, (B, 2, h, w)."""
    return out[:, 2:4].float().clamp(LOG_VAR_MIN, LOG_VAR_MAX).exp()


@dataclass
class ModelConfig:
    encoder: str = "unet"    # "unet": ColorUNet, learned from scratch; "efficientnet_lite0"/"_lite1": EncoderUNet
    width: int = 32          # channels of the first (decoder) level; each level below doubles them ...
    max_width: int = 256     # ... up to this cap
    depth: int = 4           # unet: downsamplings after the stem; input padded to a multiple of 2**(depth+1)
    head: str = "regression"  # "regression": 2 ab channels; "classification": logits over num_bins;
                              # "regression_var": 2 ab channels and their 2 log-variances (spread knob)
    num_bins: int = 0        # Q, the kept ab bins (classification only; set from the training data)
    l_center: float = 50.0   # L normalisation: (L - l_center) / l_scale
    l_scale: float = 50.0
    ab_scale: float = 110.0  # ab normalisation: ab / ab_scale
    hints: bool = False      # also takes a hint input (hints.py): user points of known colour

    @property
    def norm(self) -> LabNorm:
        return LabNorm(self.l_center, self.l_scale, self.ab_scale)

    def to_dict(self) -> dict:
        return asdict(self)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU; the unit of every level."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class GlobalContext(nn.Module):
    """Adds an image-wide summary (global average pool -> MLP) to every position of the bottleneck.

    Colour depends on the whole scene (sky, season, time of day), which a small receptive field misses.
    """

    def __init__(self, c: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x.mean((2, 3)))[:, :, None, None]


class _ColorNet(nn.Module):
    """What every network shares: the U-Net forward pass over a subclass's encode() (its skips and
    bottleneck; it also sets `stride`, `context` and the decoder blocks `up`), the 1x1 head at half
    resolution (2 ab channels, or logits over the ab bins with their centres and rebalancing weights as
    buffers), decoding and full-size prediction."""

    def _make_head(self, cfg: ModelConfig, cin: int) -> None:
        out = cfg.num_bins if cfg.head == "classification" else 2
        if cfg.head not in HEADS or out <= 0:
            raise ValueError(f"bad head {cfg.head!r} with num_bins={cfg.num_bins}")
        self.head = nn.Conv2d(cin, out, 1)
        # regression_var: a small branch that predicts the log-variance of each ab channel from the decoder's
        # features, detached, so that it learns how far off the mean is without changing the mean itself.
        self.var_head = (nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(inplace=True),
                                       nn.Conv2d(cin, 2, 1)) if cfg.head == "regression_var" else None)
        self._frozen: list[nn.Module] = []
        if cfg.head == "classification":
            # ab centres of the kept bins and log of the rebalancing weights; filled by the trainer.
            self.register_buffer("bins", torch.zeros(cfg.num_bins, 2))
            self.register_buffer("log_weights", torch.zeros(cfg.num_bins))

    def freeze(self, modules: list[nn.Module]) -> None:
        """Train everything but `modules`: they get no gradients and stay in eval mode whatever train() is
        asked (their BatchNorm statistics are kept). freeze([]) trains the whole network again."""
        for m in self._frozen:
            m.requires_grad_(True)
        self._frozen = list(modules)
        for m in self._frozen:
            m.requires_grad_(False)
        self.train(self.training)

    def freeze_mean(self) -> None:
        """regression_var: train the variance branch only. Every other module keeps its weights and BatchNorm
        statistics, so the branch learns the errors of exactly the network it will be used with."""
        if self.var_head is None:
            raise ValueError("freeze_mean needs a regression_var head")
        self.freeze([m for name, m in self.named_children() if name != "var_head"])

    @property
    def mean_frozen(self) -> bool:
        return any(m is self.head for m in self._frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def _make_hint_inputs(self, cfg: ModelConfig, channels: list[int]) -> None:
        """With cfg.hints: one 3x3 conv per decoder input (the bottleneck, then each up block's input)
        that adds the hint map, pooled to that level, to it. Zero-initialised, so a network given hints
        starts as the automatic network it is fine-tuned from; no hints (mask 0) adds exactly nothing."""
        self.hint_in = (nn.ModuleList(nn.Conv2d(HINT_CHANNELS, c, 3, padding=1, bias=False) for c in channels)
                        if cfg.hints else None)
        for conv in self.hint_in or []:
            nn.init.zeros_(conv.weight)

    def _add_hints(self, x: torch.Tensor, hints: torch.Tensor | None, level: int) -> torch.Tensor:
        if hints is None:
            return x
        return x + self.hint_in[level](hint_pyramid_level(hints, x.shape[-2:]).to(x.dtype))

    def forward(self, l_norm: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Pad to a multiple of the stride, encode (-> skips, bottleneck), add the global context, climb
        the decoder with one skip per level, and return the head's output at (H+1)//2 x (W+1)//2.

        hints (B, 3, H, W), for a network built with cfg.hints: the hint map (hints.py), added at every
        decoder level (before the global context, so a hint can also shift the whole image's colours)."""
        return self.forward_features(l_norm, hints)[0]

    def forward_features(self, l_norm: torch.Tensor, hints: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward's output, and the encoder's deepest feature map (B, C, H/stride, W/stride) before the
        hints and the global context (EncoderUNet: the encoder's last stage; ColorUNet: the bottleneck)."""
        h, w = l_norm.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        # Padded even by 0: one traced graph then serves every input size (the ONNX export's dynamic H, W).
        x = F.pad(l_norm, (0, pw, 0, ph), mode="replicate")
        if hints is not None:
            if self.hint_in is None:
                raise ValueError("this model was trained without hints")
            hints = F.pad(hints, (0, pw, 0, ph))
        skips, x = self.encode(x)
        deepest = x
        x = self.context(self._add_hints(x, hints, 0))
        for level, block in enumerate(self.up, start=1):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(self._add_hints(torch.cat([x, skip], 1), hints, level))
        x = self.head(x) if self.var_head is None else torch.cat([self.head(x), self.var_head(x.detach())], 1)
        return x[..., : (h + 1) // 2, : (w + 1) // 2], deepest

    def class_probs(self, out: torch.Tensor, settings: Decode = Decode(), bias: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Classification head output (B, Q, h, w) -> softmax((logits - c log w + bias) / T), (B, Q, h, w):
        the distribution over the ab bins whose annealed mean decode() takes."""
        logits = out.float() - settings.prior_correction * self.log_weights[None, :, None, None]
        if bias is not None:
            logits = logits + bias.to(logits)[:, :, None, None]
        return torch.softmax(logits / settings.temperature, dim=1)

    def decode(self, out: torch.Tensor, settings: Decode = Decode(), bias: torch.Tensor | None = None,
               probs: torch.Tensor | None = None) -> torch.Tensor:
        """Head output -> normalised ab at the head's resolution, with the knobs of `settings`.

        Classification: the annealed mean (Zhang et al. 2016) of softmax((logits - c log w) / T), where
        c in [0, 1] undoes the rebalancing that training applied (c = 1: the calibrated posterior; lower
        T: more vivid). Regression: the output as it is. Then, for either head, the centred gain:
        mu + gain (ab - mu), mu each image's mean ab (1: as decoded; above 1: more vivid around the same
        mean colour). For a posterior mean this is the least-squared-error answer under a constraint on the
        colours' spread (experiments/decode_study.py), so it is the vividness knob of a regression head.

        regression_var: the mean, and with spread s > 0 each image's gain is multiplied by sqrt(1 + s V / D),
        V the predicted variance and D the spread of the mean colours, both averaged over the image: s = 1
        gives the prediction the colourfulness the network expects the original to have, so an image the
        network is unsure of is stretched more than one it is sure of.

        evenness a: each image's gain is also multiplied by (EVEN_SPREAD / r)^a, r the root mean square
        distance of its decoded colours from their mean (normalised ab): 0 leaves the gain alone, 1 gives
        every image the same spread (EVEN_SPREAD x gain), so washed-out predictions are stretched more
        than vivid ones, without a variance head.

        bias (B, Q), classification only: a per-image colour prior added to the calibrated logits before the
        temperature, e.g. s (log h - log p) to trade the training prior p for a histogram h (colour_prior.py).
        probs: class_probs(out, settings, bias), if the caller has it already (InferenceGraph).
        """
        if bias is not None and self.cfg.head != "classification":
            raise ValueError("a colour prior (bias) needs a classification head")
        gain, spread = settings.gain, settings.spread
        stretch = torch.full((len(out),), gain, device=out.device)  # per image, about its mean colour
        stretched = gain != 1.0
        if self.cfg.head == "regression_var":
            ab = out[:, :2].float()
            if spread:
                v = predicted_variance(out).sum(1).mean((1, 2))
                stretch = stretch * (1 + spread * v / colour_spread(ab).clamp_min(1e-8)).sqrt()
                stretched = True
        elif self.cfg.head == "regression":
            ab = out.float()
        else:
            p = self.class_probs(out, settings, bias) if probs is None else probs
            ab = self.cfg.norm.ab(torch.einsum("bqhw,qc->bchw", p, self.bins))
        if settings.evenness:
            r = colour_spread(ab).clamp_min(1e-6).sqrt()
            stretch = stretch * (EVEN_SPREAD / r) ** settings.evenness
            stretched = True
        if stretched:
            mu = ab.mean((2, 3), keepdim=True)
            ab = mu + stretch[:, None, None, None] * (ab - mu)
        return ab

    def predict_ab(self, l_norm: torch.Tensor, hints: torch.Tensor | None = None,
                   settings: Decode = Decode()) -> torch.Tensor:
        """Normalised L (B,1,H,W) (and optionally the hint map (B,3,H,W)) -> normalised ab (B,2,H,W)."""
        ab = self.decode(self(l_norm, hints), settings)
        return resize_like(ab, tuple(l_norm.shape[-2:]))


class ColorUNet(_ColorNet):
    """L -> ab. A stride-2 stem (ab is smooth, so full-resolution features buy little), `depth` levels
    down and up with skip connections, a global-context bottleneck, and a 1x1 head at half resolution.

    forward(l_norm (B,1,H,W)) -> regression: ab_norm (B,2,H/2,W/2); classification: logits (B,Q,H/2,W/2).
    predict_ab(l_norm) -> ab_norm (B,2,H,W) for any H, W (bilinear upsampling of the head's output).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = [min(cfg.width * 2 ** i, cfg.max_width) for i in range(cfg.depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True), conv_block(widths[0], widths[0]))
        self.down = nn.ModuleList(conv_block(widths[i], widths[i + 1]) for i in range(cfg.depth))
        self.context = GlobalContext(widths[-1])
        self.up = nn.ModuleList(conv_block(widths[i + 1] + widths[i], widths[i])
                                for i in reversed(range(cfg.depth)))
        self._make_head(cfg, widths[0])
        self._make_hint_inputs(cfg, [widths[-1]] + [b[0].in_channels for b in self.up])

    @property
    def stride(self) -> int:
        return 2 ** (self.cfg.depth + 1)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(F.max_pool2d(x, 2))
        return skips, x


class EncoderUNet(_ColorNet):
    """L -> ab with an ImageNet-pretrained EfficientNet-Lite encoder (Tan and Le 2019; the recipe of
    DeOldify's and DDColor's pretrained U-Nets). L becomes the grey RGB image of that lightness in [-1, 1],
    the range the weights were trained on; the decoder climbs from stride 32 to stride 2 with a skip from
    every encoder stage (strides 16, 8, 4, 2), after a global-context bottleneck, and ends in the head.

    Same contract as ColorUNet: forward(l_norm (B,1,H,W)) -> head output at (H+1)//2 x (W+1)//2.
    cfg.width is the decoder's width at stride 2 (doubling per level up to cfg.max_width); cfg.depth is unused.
    """

    stride = 32

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = EfficientNetLite(cfg.encoder)
        enc = EfficientNetLite.FEATURE_CHANNELS                           # strides 2, 4, 8, 16, 32
        dec = [min(cfg.width * 2 ** i, cfg.max_width) for i in range(4)]  # strides 2, 4, 8, 16
        self.context = GlobalContext(enc[-1])
        self.up = nn.ModuleList(conv_block(cin + enc[i], dec[i])
                                for i, cin in zip(range(3, -1, -1), [enc[-1]] + dec[:0:-1]))
        self._make_head(cfg, dec[0])
        self._make_hint_inputs(cfg, [enc[-1]] + [b[0].in_channels for b in self.up])

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Train the decoder only: no encoder gradients, and its BatchNorm keeps the ImageNet statistics."""
        self.freeze([self.encoder] if frozen else [])

    def encoder_input(self, l_norm: torch.Tensor) -> torch.Tensor:
        """Normalised L (B,1,H,W) -> the grey sRGB image of that lightness, (B,3,H,W) in [-1, 1]."""
        grey = l_to_grey(self.cfg.norm.l_inv(l_norm.float())) * 2 - 1
        return grey.to(l_norm.dtype).expand(-1, 3, -1, -1)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        *skips, x = self.encoder(self.encoder_input(x))
        return skips, x


class ColorEnsemble(nn.Module):
    """Several networks of one config whose decoded colours are averaged: a snapshot ensemble (checkpoints
    of one training run, Huang et al. 2017). Averaging ab, not weights: the weight average of two snapshots
    was measured worse than either.

    forward(l_norm) -> the members' head outputs stacked, (M, B, C, H/2, W/2);
    decode(out, ...) -> the mean of the members' decoded ab (each with its own bins and prior).
    """

    def __init__(self, cfg: ModelConfig, members: int):
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {members}")
        self.cfg = cfg
        self.members = nn.ModuleList(network(cfg) for _ in range(members))

    def forward(self, l_norm: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([m(l_norm, hints) for m in self.members])

    def forward_features(self, l_norm: torch.Tensor, hints: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' head outputs and deepest feature maps, each stacked: (M, B, ...)."""
        outs, deepest = zip(*(m.forward_features(l_norm, hints) for m in self.members))
        return torch.stack(outs), torch.stack(deepest)

    def class_probs(self, out: torch.Tensor, settings: Decode = Decode(), bias: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The mean of the members' bin distributions (they share the bins: one training run's snapshots)."""
        return torch.stack([m.class_probs(o, settings, bias) for m, o in zip(self.members, out)]).mean(0)

    def decode(self, out: torch.Tensor, settings: Decode = Decode(), bias: torch.Tensor | None = None
               ) -> torch.Tensor:
        return torch.stack([m.decode(o, settings, bias) for m, o in zip(self.members, out)]).mean(0)

    predict_ab = _ColorNet.predict_ab  # decode(forward(l)), upsampled: nothing in it is per network


def network(cfg: ModelConfig) -> ColorUNet | EncoderUNet:
    """The network cfg.encoder names (its encoder untrained: the trainer loads the ImageNet weights)."""
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; known: {', '.join(ENCODERS)}")
    return ColorUNet(cfg) if cfg.encoder == "unet" else EncoderUNet(cfg)


def build_model(cfg: ModelConfig | dict, members: int = 1) -> ColorUNet | EncoderUNet | ColorEnsemble:
    """One network (members = 1) or an ensemble of `members` networks of this config."""
    if isinstance(cfg, dict):
        cfg = ModelConfig(**cfg)
    return network(cfg) if members == 1 else ColorEnsemble(cfg, members)


def pooled_embedding(deepest: torch.Tensor) -> torch.Tensor:
    """The encoder's deepest feature map (..., C, h, w) -> the embedding (..., 2C): per channel its mean and
    standard deviation over the image (what memory.py's banks and predictors read)."""
    deepest = deepest.float()
    return torch.cat([deepest.mean((-2, -1)), deepest.std((-2, -1), unbiased=False)], -1)


class PriorHead(nn.Module):
    """A colour prior predicted from the photo itself (memory.Predictor, in the graph): the embedding (B, E) ->
    bias (B, Q) = s (log h - log p) - c log p, h a ridge regression's square-rooted histogram clipped at 0,
    squared, normalised and mixed with `floor` of the training prior p. Fixed weights, fitted outside torch.
    gate (t, w) or None: the bias times sigmoid((t - H) / w), H the entropy of the unmixed h."""

    def __init__(self, weights: torch.Tensor, offset: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 prior: torch.Tensor, strength: float, correction: float = 0.0, floor: float = FLOOR,
                 gate: tuple[float, float] | None = None):
        super().__init__()
        self.gate = None if gate is None else (float(gate[0]), float(gate[1]))
        for name, value in (("weights", weights), ("offset", offset), ("mean", mean), ("std", std)):
            self.register_buffer(name, value.float())
        self.register_buffer("log_prior", prior.double().clamp_min(1e-12).log().float())
        self.strength, self.correction, self.floor = float(strength), float(correction), float(floor)

    def predict(self, embedding: torch.Tensor) -> torch.Tensor:
        """The embedding (B, E) -> the predicted histogram (B, Q), summing to 1 (memory.Predictor.predict)."""
        y = (((embedding - self.mean) / self.std) @ self.weights + self.offset).clamp_min(0) ** 2
        return y / y.sum(-1, keepdim=True).clamp_min(1e-12)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        pred = self.predict(embedding)
        h = (1 - self.floor) * pred + self.floor * self.log_prior.exp()
        bias = self.strength * (h.log() - self.log_prior) - self.correction * self.log_prior
        if self.gate is not None:
            entropy = -(pred * pred.clamp_min(1e-12).log()).sum(-1, keepdim=True)
            bias = bias * torch.sigmoid((self.gate[0] - entropy) / self.gate[1])
        return bias


class InferenceGraph(nn.Module):
    """What inference runs, in one graph (the torch runner's network, and what export_model.py writes as
    ONNX): the network, its decode with fixed settings, and the outputs other tools read.

    forward(l (1, 1, h, w) normalised L, bias (1, Q) or None, hints (1, 3, h, w) or None, memory (1,) or None)
    -> ab (1, 2, h2, w2): the decoded colour in Lab units at the head's resolution (h2 = (h + 1) // 2);
      embedding (1, 2C): per channel the mean and standard deviation over the image of the encoder's
        deepest feature map (forward_features; an ensemble's members averaged);
      probs (1, Q, h2, w2), classification only: softmax((logits - c log w + bias) / T).
    bias: a per-image colour prior added to the calibrated logits (classification only; zeros change nothing).
    predictor: a PriorHead, or None. With one, its bias from the embedding, times memory (1: on, 0: off;
    None: on), is added to `bias`, in the same pass.
    """

    def __init__(self, model: nn.Module, settings: Decode = Decode(), predictor: PriorHead | None = None):
        super().__init__()
        self.model, self.settings, self.predictor = model, settings, predictor
        self.classification = model.cfg.head == "classification"
        if predictor is not None and not self.classification:
            raise ValueError("a predicted colour prior needs a classification head")

    def forward(self, l: torch.Tensor, bias: torch.Tensor | None = None, hints: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out, deepest = self.model.forward_features(l, hints)
        embedding = pooled_embedding(deepest)
        if embedding.dim() == 3:  # an ensemble's (M, B, 2C)
            embedding = embedding.mean(0)
        if self.predictor is not None:
            predicted = self.predictor(embedding)
            if memory is not None:
                predicted = predicted * memory.reshape(-1, 1)
            bias = predicted if bias is None else bias + predicted
        probs = None
        if self.classification:
            probs = self.model.class_probs(out, self.settings, bias)
        if isinstance(self.model, ColorEnsemble):  # each member decodes its own distribution
            ab = self.model.decode(out, self.settings, bias)
        else:
            ab = self.model.decode(out, self.settings, bias, probs)
        ab = self.model.cfg.norm.ab_inv(ab)
        return (ab, embedding) if probs is None else (ab, embedding, probs)
