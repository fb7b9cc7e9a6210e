"""Colour maths, normalisation, ab quantisation and checkpoint I/O.

Everything here is pure torch/numpy and importable without side effects. The sRGB <-> CIE Lab (D65)
conversion is defined once, here, and used for the model input, the training target and inference, so
that the L the model sees is exactly the L of the image whose ab it must predict.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Torch-free file helpers (files.py), imported from here by older code too.
from files import IMAGE_EXTENSIONS, CheckpointError, remove_temporaries_on_signals, write_atomic  # noqa: F401

# sRGB (linear) -> XYZ, the matrix scikit-image uses, and the D65 white point (2 degree observer).
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
# Fold the white point into the matrices so each conversion is one 3x3 product.
_RGB_TO_XYZN = (_RGB_TO_XYZ / _WHITE_D65[:, None]).float()
_XYZN_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ / _WHITE_D65[:, None]).float()
_EPS = 0.008856  # (6/29)^3, the CIE linear/cube-root switch as scikit-image writes it
_KAPPA = 7.787
# Lab from f = (fx, fy, fz), the companded XYZ / white: L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz).
_F_TO_LAB = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
_F_TO_LAB_BIAS = torch.tensor([-16.0, 0.0, 0.0])
_LINE_OFFSET = torch.tensor(16 / 116)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).clamp_min(0) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


# 256-entry table of the sRGB curve: uint8 input skips the pow() entirely (the CPU data path's hot spot).
_SRGB_LUT = _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255).float()
_ON_DEVICE: dict = {}


def _on(t: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A module constant on device, copied there once: a fresh host->GPU copy on every call would also
    wait for the GPU to finish its queued work, stalling the training loop."""
    if device.type == "cpu" and t.dtype == dtype:
        return t
    key = (id(t), device, dtype)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = t.to(device, dtype)
    return _ON_DEVICE[key]


def _mix(x: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a 3x3 matrix (and add bias (3,), if given) along dim -3 of (..., 3, H, W); contiguous output.

    One batched matrix product over (N, 3, H*W) planes, a single pass over memory.
    """
    flat = x.reshape(-1, 3, x.shape[-2] * x.shape[-1])
    m = _on(m, x.device, x.dtype)
    if bias is None:
        return torch.matmul(m, flat).view(x.shape)
    n = flat.shape[0]
    bias = _on(bias, x.device, x.dtype)[:, None].expand(n, 3, 1)
    return torch.baddbmm(bias, m.expand(n, 3, 3), flat).view(x.shape)


def _xyzn_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """XYZ / white (..., 3, H, W) -> Lab (..., 3, H, W); float32 xyz is left unchanged.

    f(t) = t^(1/3) above _EPS and the line _KAPPA t + 16/116 below it. That line is the tangent of t^(1/3)
    at _EPS (to the rounding of the constants), and the concave cube root lies below its tangents, so
    f = min(cbrt(max(t, _EPS)), line): in-place passes instead of torch.where over two full branches.
    """
    line = torch.add(_on(_LINE_OFFSET, xyz.device), xyz, alpha=_KAPPA)  # 16/116 + _KAPPA xyz, one pass
    f = xyz.clamp_min(_EPS).log_().mul_(1 / 3).exp_()  # cube root; exp/log are vectorised, pow(1/3) is slower
    torch.minimum(f, line, out=f)
    return _mix(f, _F_TO_LAB, _F_TO_LAB_BIAS)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) -> Lab (..., 3, H, W), float32, contiguous, on rgb's device.

    Input: float in [0, 1], or uint8 in [0, 255] (converted through a lookup table; faster).
    Output: L in [0, 100], a and b roughly in [-110, 110]. Agrees with skimage.color.rgb2lab.
    """
    if rgb.dtype == torch.uint8:
        # int32 indices into the table (index_select takes them; lut[rgb.long()] builds an int64 copy
        # 8x the size of the image and is ~10x slower on the CPU). The cast also makes the planes
        # contiguous, whatever rgb's layout (random_crop_flip returns a channels-last view).
        idx = rgb.to(torch.int32, memory_format=torch.contiguous_format)
        lin = _on(_SRGB_LUT, rgb.device).index_select(0, idx.view(-1)).view(idx.shape)
    else:
        lin = _srgb_to_linear(rgb.float())
    return _xyzn_to_lab(_mix(lin, _RGB_TO_XYZN))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (..., 3, H, W) -> sRGB float32 in [0, 1] (out-of-gamut colours clipped), like skimage lab2rgb."""
    lab = lab.float()
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, (fy - b / 200).clamp_min(0)], dim=-3)
    xyz = torch.where(f ** 3 > _EPS, f ** 3, (f - 16 / 116) / _KAPPA)
    return _linear_to_srgb(_mix(xyz, _XYZN_TO_RGB)).clamp_(0, 1)


_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2 luma: PIL's convert("L") and most grey conversions


def match_luma(rgb: torch.Tensor, luma: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Make a colorized result convert back to its grey input: the nearest colour (Euclidean in sRGB) to each
    pixel of rgb (3, H, W) in [0, 1] whose 601 luma is within tol of luma (H, W), inside [0, 1]^3. In place.

    Lab L = the input's L is not enough: Lab's lightness follows linear luminance (other weights, before
    the gamma), so a saturated colour added at the grey's L comes back from convert("L") a few levels
    darker or lighter. The nearest point of a convex set (here the slab |luma(x) - y| <= tol inside the
    RGB cube) is never farther than before from any point of that set, so when the grey was made from
    a colour original by 601 luma, as PIL does, no pixel moves away from the original.

    The nearest point is clip(rgb - s * w) for the one s that meets the slab (w the luma weights, all
    positive, so every channel moves the same way): each pass below solves for s over the channels not
    yet at a bound, and a channel that hits one stays there, so three passes are exact.
    """
    w = _on(_LUMA, rgb.device)[:, None, None]
    for _ in range(3):
        y = (rgb * w).sum(0)
        excess = y - y.clamp(luma - tol, luma + tol)
        free = torch.where(excess > 0, rgb > 0, rgb < 1)  # channels that can still move the needed way
        step = excess / (w.square() * free).sum(0).clamp_min(1e-12)
        rgb.sub_(step * w * free).clamp_(0, 1)
    return rgb


def grey_to_l(grey: torch.Tensor) -> torch.Tensor:
    """Grey levels (..., H, W) in [0, 1] (R = G = B) -> Lab L in [0, 100] (a = b = 0 exactly)."""
    y = _srgb_to_linear(grey.float())
    return torch.where(y > _EPS, 116 * y.clamp_min(_EPS) ** (1 / 3) - 16, 116 * _KAPPA * y)


def l_to_grey(L: torch.Tensor) -> torch.Tensor:
    """Lab L in [0, 100] -> the sRGB grey level in [0, 1] of that lightness (the inverse of grey_to_l)."""
    fy = (L.float() + 16) / 116
    y = torch.where(fy ** 3 > _EPS, fy ** 3, (fy - 16 / 116) / _KAPPA)
    return _linear_to_srgb(y).clamp(0, 1)


@dataclass(frozen=True)
class LabNorm:
    """The one place where L and ab are scaled for the network; the model's config carries its values.

    L in [0, 100] -> (L - l_center) / l_scale in [-1, 1]; ab -> ab / ab_scale, roughly in [-1, 1].
    """
    l_center: float = 50.0
    l_scale: float = 50.0
    ab_scale: float = 110.0

    def l(self, L: torch.Tensor) -> torch.Tensor:
        return (L - self.l_center) / self.l_scale

    def ab(self, ab: torch.Tensor) -> torch.Tensor:
        return ab / self.ab_scale

    def ab_inv(self, ab_n: torch.Tensor) -> torch.Tensor:
        return ab_n * self.ab_scale

    def l_inv(self, l_n: torch.Tensor) -> torch.Tensor:
        return l_n * self.l_scale + self.l_center

    def split(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB batch (B, 3, H, W), uint8 or float in [0, 1] -> normalised (L (B,1,H,W), ab (B,2,H,W))."""
        lab = rgb_to_lab(rgb)
        return self.l(lab[..., :1, :, :]), self.ab(lab[..., 1:, :, :])

    def merge(self, l_n: torch.Tensor, ab_n: torch.Tensor) -> torch.Tensor:
        """Normalised L and ab -> sRGB float in [0, 1]."""
        return lab_to_rgb(torch.cat([self.l_inv(l_n), self.ab_inv(ab_n)], dim=-3))


# ---------------------------------------------------------------------------------------------------
# ab quantisation (Zhang, Isola and Efros 2016): a 10-unit grid over [-110, 110]^2; the bins kept are
# those the training data actually uses, and the empirical prior over them drives class rebalancing.
AB_GRID_STEP = 10.0
AB_GRID_MAX = 110.0
AB_GRID_N = int(2 * AB_GRID_MAX / AB_GRID_STEP) + 1  # 23 values per axis


def ab_grid_index(ab: torch.Tensor) -> torch.Tensor:
    """ab in Lab units (..., 2, H, W) -> index of the nearest cell of the full 23x23 grid (..., H, W)."""
    q = torch.round((ab.clamp(-AB_GRID_MAX, AB_GRID_MAX) + AB_GRID_MAX) / AB_GRID_STEP).long()
    return q[..., 0, :, :] * AB_GRID_N + q[..., 1, :, :]


def grid_centers() -> torch.Tensor:
    """(529, 2) ab centres of the full grid, in grid-index order."""
    v = torch.arange(AB_GRID_N, dtype=torch.float32) * AB_GRID_STEP - AB_GRID_MAX
    return torch.stack(torch.meshgrid(v, v, indexing="ij"), -1).reshape(-1, 2)


def prior_from_counts(counts: np.ndarray, sigma: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Full-grid histogram (529,) -> (kept grid indices (Q,), smoothed prior over them (Q,), sums to 1)."""
    keep = np.flatnonzero(counts > 0)
    centers = grid_centers().numpy()[keep]
    p = counts[keep] / counts[keep].sum()
    d2 = ((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * sigma ** 2))
    smooth = kernel @ p
    return keep, smooth / smooth.sum()


def rebalance_weights(prior: torch.Tensor, lam: float) -> torch.Tensor:
    """w proportional to ((1 - lam) p + lam / Q)^-1, scaled so that the expected weight sum_q p_q w_q = 1."""
    w = 1.0 / ((1 - lam) * prior + lam / prior.numel())
    return w / (prior * w).sum()


def prior_from_weights(log_weights: torch.Tensor, lam: float) -> torch.Tensor:
    """Invert rebalance_weights: the smoothed prior p behind weights w = 1 / (Z ((1 - lam) p + lam / Q)).

    sum_q p_q w_q = 1 fixes Z = sum_q 1 / w_q, so the checkpoint's weights and lambda determine p exactly.
    """
    inv = torch.exp(-log_weights.double())  # Z ((1 - lam) p + lam / Q)
    z = inv.sum()
    if lam >= 1:
        return torch.full_like(inv, 1.0 / inv.numel()).float()
    return ((inv / z - lam / inv.numel()) / (1 - lam)).clamp_min(0).float()


def soft_encode(ab: torch.Tensor, grid_to_bin: torch.Tensor, bins: torch.Tensor,
                sigma: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets over kept bins: a Gaussian (sigma) over the 3x3 grid neighbourhood of each pixel.

    ab (B, 2, H, W) in Lab units -> (indices (B, 9, H, W) into the Q kept bins, weights (B, 9, H, W)
    summing to 1 per pixel). Neighbours that are not kept bins get weight 0; a pixel none of whose
    neighbours is kept falls back to its nearest kept bin (grid_to_bin maps every grid cell to it).
    """
    qa = torch.round((ab[:, 0].clamp(-AB_GRID_MAX, AB_GRID_MAX) + AB_GRID_MAX) / AB_GRID_STEP).long()
    qb = torch.round((ab[:, 1].clamp(-AB_GRID_MAX, AB_GRID_MAX) + AB_GRID_MAX) / AB_GRID_STEP).long()
    idx, logw = [], []
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            na = (qa + da).clamp(0, AB_GRID_N - 1)
            nb = (qb + db).clamp(0, AB_GRID_N - 1)
            cell = na * AB_GRID_N + nb
            centre_a = na * AB_GRID_STEP - AB_GRID_MAX
            centre_b = nb * AB_GRID_STEP - AB_GRID_MAX
            d2 = (ab[:, 0] - centre_a) ** 2 + (ab[:, 1] - centre_b) ** 2
            b = grid_to_bin[cell]
            exact = (bins[b, 0] == centre_a) & (bins[b, 1] == centre_b)  # a kept bin, not a fallback
            idx.append(b)
            logw.append(torch.where(exact, -d2 / (2 * sigma ** 2), torch.full_like(d2, -math.inf)))
    idx, logw = torch.stack(idx, 1), torch.stack(logw, 1)
    none_kept = torch.isinf(logw).all(1, keepdim=True)
    logw = torch.where(none_kept & (torch.arange(9, device=ab.device) == 4)[None, :, None, None],
                       torch.zeros_like(logw), logw)
    return idx, torch.softmax(logw, dim=1)


# ---------------------------------------------------------------------------------------------------
# Checkpoints: a dict of state dicts, config and counters; never a pickled module.
def half_precision(state_dict: dict) -> dict:
    """A state dict with its floating-point tensors in float16 (for shipping; loading casts them back).

    A tensor with values beyond float16's range stays float32: a BatchNorm running_var above 65504 would
    become inf and silence its channels (the v2 model's first decoder block has 17 such channels)."""
    return {k: _half_if_in_range(v) if v.is_floating_point() else v for k, v in state_dict.items()}


def _half_if_in_range(v: torch.Tensor) -> torch.Tensor:
    h = v.half()
    return h if bool((torch.isfinite(h) | ~torch.isfinite(v)).all()) else v.float()


INT8_SCALE = ".int8_scale"  # key suffix of the per-channel scales of an int8-stored weight


def _per_channel(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """Scales (C,) shaped to broadcast over a weight (C, ...) of ndim dimensions."""
    return scale.view(-1, *[1] * (ndim - 1))


def int8_weights(state_dict: dict) -> dict:
    """A state dict for shipping at a quarter of float32's size: every conv / linear weight (a `.weight` of
    ndim >= 2) as int8 with one float32 scale per output channel (symmetric, absmax / 127: an error of at
    most half a step, 0.4% of the channel's largest weight), the other floating-point tensors (biases,
    batch-norm statistics, the colour bins) as float16. float_weights() undoes it."""
    out = half_precision(state_dict)
    for k, v in state_dict.items():
        if v.is_floating_point() and v.ndim >= 2 and k.endswith(".weight"):
            v = v.float()
            scale = v.abs().amax(dim=tuple(range(1, v.ndim))).clamp_min(1e-30) / 127
            out[k] = (v / _per_channel(scale, v.ndim)).round_().to(torch.int8)
            out[k + INT8_SCALE] = scale
    return out


def float_weights(state_dict: dict) -> dict:
    """Any stored state dict (float32, float16 or int8_weights') -> float32 tensors, ready to load."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith(INT8_SCALE) and k[: -len(INT8_SCALE)] in state_dict:
            continue
        scale = state_dict.get(k + INT8_SCALE)
        if v.dtype == torch.int8 and scale is not None:
            out[k] = v.float() * _per_channel(scale.float(), v.ndim)
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out


def save_checkpoint(obj: dict, path: str) -> None:
    """Write atomically and durably (fsync before the rename); see write_atomic."""
    write_atomic(path, lambda f: torch.save(obj, f), fsync=True)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load with weights_only=True (never executes pickled code); errors become CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: checkpoint is empty")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated, corrupt or pickled-module files
        if "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: holds pickled code (e.g. a whole saved module), not a state-dict "
                                  "checkpoint; refusing to load it") from None
        reason = "truncated or corrupt" if isinstance(e, (RuntimeError, EOFError)) else "not a torch file"
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path}: not a colorizer checkpoint (no 'model' and 'model_config' entries)")
    return ckpt


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resize_like(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to size=(H, W) (ab upsampling; never nearest-neighbour)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
