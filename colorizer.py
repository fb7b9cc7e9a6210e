"""The inference pipeline every front end shares: Colorizer.from_checkpoint(path).colorize(PIL image).

The network runs on a resized copy of the image (short side `size`); its ab prediction is upsampled
bilinearly and merged, in strips, with the L of the original, so the result has the input's resolution.
Each colour is then moved to the nearest one whose 601 luma is the input's grey (utils.match_luma): the
result converted back to grey is the input.

Memory: a 12000x9000 photo peaks at about 1.3 GB, half of it torch itself. The grey levels stay 8 or 16
bit until a strip of rows is merged, and the result is pasted strip by strip into the output image, so
the only full-size buffers are the grey input (1-2 bytes a pixel) and the output. Reading and writing files is image_io's job; the command line is predict_color.py.
"""
from __future__ import annotations

import collections
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hints import PROPAGATION, Hint, HintError, hint_map, propagate_hints
from image_io import grey_and_alpha
from model import Decode, ModelConfig, build_model
from utils import CheckpointError, float_weights, grey_to_l, lab_to_rgb, load_checkpoint, match_luma

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "colorizer.pt")
STRIP_PIXELS = 2 ** 19  # pixels merged at a time: bounds the float32 working set (~100 bytes a pixel)


@functools.lru_cache(maxsize=None)
def _l_table(levels: int) -> np.ndarray:
    """L (float32, [0, 100]) of every grey level 0 .. levels - 1: a lookup replaces the sRGB/cube-root maths."""
    return grey_to_l(torch.arange(levels, dtype=torch.float64) / (levels - 1)).float().numpy()


def _grey_to_l(grey: np.ndarray) -> torch.Tensor:
    """Grey (h, W) uint8, uint16 or float in [0, 1] -> L (h, W) float32 tensor in [0, 100]."""
    if grey.dtype == np.uint8:
        return torch.from_numpy(_l_table(256)[grey])
    if grey.dtype == np.uint16:
        return torch.from_numpy(_l_table(65536)[grey])
    return grey_to_l(torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32)).clamp(0, 1))


# The grey level of white for the integer grey types; float greys are in [0, 1].
_PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _levels(grey: np.ndarray) -> tuple[torch.Tensor, float]:
    """Grey (h, W) -> (its values in [0, 1] as a float32 tensor, half a quantisation step: the tolerance
    of a grey made by rounding a luma to these levels)."""
    peak = _PEAKS.get(grey.dtype)
    if peak is None:
        return torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32)).clamp(0, 1), 0.0
    return torch.from_numpy(grey.astype(np.float32)).div_(peak), 0.5 / peak


def _downscale(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grey (H, W) of any supported dtype -> (h, w) float32 in [0, 1], antialiased bilinear resize."""
    peak = _PEAKS.get(grey.dtype)
    im = Image.fromarray(grey if peak else np.asarray(grey, dtype=np.float32))
    peak = peak or 1.0
    small = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.clip(np.asarray(small, dtype=np.float32) / peak, 0, 1)


def _sample_rows(ab: torch.Tensor, y0: int, y1: int, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of ab (1,2,h,w) to rows y0:y1 of a (height, width) image."""
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * 2 / height - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * 2 / width - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None].to(ab.device)
    return F.grid_sample(ab, grid, mode="bilinear", padding_mode="border", align_corners=False)


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """map(fn, items) on `workers` threads, results in order, at most 2 x workers queued (bounds memory).

    torch, numpy and PIL release the GIL in their heavy loops, so threads run in parallel; with torch's
    own intra-op threads set to 1 there is no OpenMP team to stall when the machine is busy.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ---------------------------------------------------------------------------------------------------
def _state_dict_mismatch(expected: dict, got: dict) -> str | None:
    """None if `got` has exactly the keys and shapes of `expected`, else a short description."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if shaped:
        k = shaped[0]
        parts.append(f"{len(shaped)} of another shape, e.g. {k} {list(got[k].shape)} "
                     f"where the model has {list(expected[k].shape)}")
    return "; ".join(parts) or None


def _model_from_checkpoint(ckpt: dict, path: str) -> torch.nn.Module:
    """Build the checkpoint's model (no random init: built on the meta device) and load it strictly."""
    sd = ckpt["model"]
    members = ckpt.get("members", 1)
    try:
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive integer, not {members!r}")
        cfg = ModelConfig(**ckpt["model_config"])
        with torch.device("meta"):
            model = build_model(cfg, members)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad model_config ({str(e).strip()[:160]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    # Shipped checkpoints may be half precision or int8 (utils.int8_weights); inference runs in float32.
    sd = float_weights(sd)
    problem = _state_dict_mismatch(model.state_dict(), sd)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the model its model_config describes ({problem})")
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def decode_overrides(args) -> dict:
    """A front end's decode flags (--temperature, --prior-correction, --gain, --spread, --evenness; None
    where not given) as Colorizer.from_checkpoint's keyword arguments."""
    return {k: getattr(args, k, None) for k in Decode.keys()}


class Colorizer:
    """The inference pipeline shared by every front end (CLI, evaluation, export).

    Colorizer.from_checkpoint(path).colorize(PIL image) -> PIL image (RGB, or RGBA if the input had alpha)
    """

    def __init__(self, model, size: int, decode: Decode = Decode(), device="cpu",
                 propagation: tuple[float, float] | None = PROPAGATION):
        self.model = model.eval().to(device)
        self.norm = model.cfg.norm
        self.size = size      # short side the network sees
        self.decode = decode  # the head's decode knobs (model.Decode)
        self.device = torch.device(device)
        # Hints: after the network, what they correct is spread over similar pixels (hints.propagate_hints
        # with these (sigma_space, sigma_l)); None: the network's answer to its hint input only.
        self.propagation = propagation

    @classmethod
    def from_checkpoint(cls, path: str = DEFAULT_MODEL, device: str = "cpu", size: int | None = None,
                        **decode: float | None) -> "Colorizer":
        """Load a checkpoint (weights_only, strict); any problem is a one-line CheckpointError naming it.
        decode: model.Decode settings (temperature=..., gain=...) that override the checkpoint's; None keeps it."""
        ckpt = load_checkpoint(path)
        model = _model_from_checkpoint(ckpt, path)
        # Decode settings: the checkpoint's own (tuned on held-out images), unless overridden.
        inf = ckpt.get("inference") or {}
        tc = ckpt.get("train_config") or {}
        size = size or inf.get("size") or tc.get("resize") or round(tc.get("crop_size", 128) * 1.25)
        propagation = tuple(inf.get("hint_propagation", PROPAGATION))
        return cls(model, int(size), Decode.from_dict(inf).override(**decode), device, propagation)

    @property
    def takes_hints(self) -> bool:
        """Whether the network itself was trained with a hint input (hints.py). Hints work with every model:
        what they correct is spread by hints.propagate_hints after the network (unless propagation is None)."""
        return bool(self.model.cfg.hints)

    def net_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the network sees: short side `size`, long side at most 4 x size."""
        s = min(self.size / min(width, height), 4 * self.size / max(width, height))
        return max(1, round(width * s)), max(1, round(height * s))

    @torch.inference_mode()
    def predict_ab(self, grey: np.ndarray, hints: list[Hint] | None = None) -> torch.Tensor:
        """Grey (H, W) (uint8, uint16 or float in [0, 1]) -> ab in Lab units at the network's resolution,
        (1, 2, h, w) float32 on self.device. hints: points of known colour in the grey's pixels, given to
        the network if it takes them and then propagated (HintError for a hint outside the image)."""
        h, w = grey.shape
        nw, nh = self.net_size(w, h)
        hint_input = None
        if hints:
            if not (self.takes_hints or self.propagation):
                raise HintError("this model was trained without a hint input and hint propagation is off")
            hint_input = hint_map(hints, (w, h), (nw, nh), self.norm.ab_scale).to(self.device)
        l_small = _grey_to_l(_downscale(grey, (nw, nh)))[None, None].to(self.device)
        out = self.model(self.norm.l(l_small), hint_input if self.takes_hints else None)
        ab_n = self.model.decode(out, self.decode)
        ab_n = F.interpolate(ab_n, size=(nh, nw), mode="bilinear", align_corners=False)
        ab = self.norm.ab_inv(ab_n).float()
        if hint_input is not None and self.propagation:
            ab = propagate_hints(ab, l_small, hint_input, self.norm.ab_scale, *self.propagation)
        return ab

    @torch.inference_mode()
    def _merge_rows(self, grey: np.ndarray, ab: torch.Tensor, y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 of the result: the original L with the upsampled ab -> RGB (y1 - y0, W, 3) uint8."""
        h, w = grey.shape
        L = _grey_to_l(grey[y0:y1]).to(self.device)[None, None]
        lab = torch.cat([L, _sample_rows(ab, y0, y1, h, w)], dim=1)
        luma, tol = _levels(grey[y0:y1])
        rgb = match_luma(lab_to_rgb(lab)[0], luma.to(self.device), tol)
        return rgb.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()

    def _strips(self, grey: np.ndarray, ab: torch.Tensor, workers: int) -> Iterator[tuple[int, np.ndarray]]:
        """(y0, RGB rows from y0) covering the image: ab (1, 2, h, w) merged with grey on `workers` threads."""
        h, w = grey.shape
        ab = ab.to(self.device, torch.float32)
        rows = max(1, STRIP_PIXELS // w)
        starts = range(0, h, rows)
        merged = ordered_map(lambda y0: self._merge_rows(grey, ab, y0, min(h, y0 + rows)), starts, workers)
        return zip(starts, merged)

    def colorize_grey(self, grey: np.ndarray, workers: int = 1, hints: list[Hint] | None = None) -> np.ndarray:
        """Grey (H, W) (float in [0, 1], or uint8 / uint16 levels) -> RGB (H, W, 3) uint8 at full resolution."""
        return self.colorize_grey_with_ab(grey, self.predict_ab(grey, hints), workers)

    def colorize_grey_with_ab(self, grey: np.ndarray, ab: torch.Tensor, workers: int = 1) -> np.ndarray:
        """As colorize_grey, with the colour given: ab (1, 2, h, w) in Lab units, as from predict_ab (e.g.
        smoothed over a video's frames), upsampled and merged with grey's full-resolution L."""
        out = np.empty((*grey.shape, 3), dtype=np.uint8)
        for y0, rgb in self._strips(grey, ab, workers):
            out[y0:y0 + len(rgb)] = rgb
        return out

    def colorize(self, image: Image.Image, workers: int = 1,
                 hints: list[Hint | tuple[float, float, tuple[int, int, int]]] | None = None) -> Image.Image:
        """PIL image of any mode -> colorized PIL image of the same (upright) size, alpha kept.

        hints: points of known colour, [(x, y, (r, g, b)), ...] or Hint objects, in the image's pixels;
        each gives its chroma to the colours around it (the brightness stays the image's)."""
        hints = [h if isinstance(h, Hint) else Hint(float(h[0]), float(h[1]), tuple(h[2])) for h in hints or []]
        return self.colorize_to_image(*grey_and_alpha(image), workers=workers, hints=hints)

    def colorize_to_image(self, grey: np.ndarray, alpha: Image.Image | None = None,
                          workers: int = 1, hints: list[Hint] | None = None) -> Image.Image:
        """Grey (H, W) as from grey_and_alpha, alpha (mode L) or None -> RGB or RGBA PIL image (W x H).

        The strips are pasted straight into the output image: no second full-size copy of the result.
        """
        out = Image.new("RGB" if alpha is None else "RGBA", (grey.shape[1], grey.shape[0]))
        for y0, rgb in self._strips(grey, self.predict_ab(grey, hints), workers):
            out.paste(Image.fromarray(rgb), (0, y0))
        if alpha is not None:
            out.putalpha(alpha)
        return out

