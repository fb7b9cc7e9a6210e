"""Colour hints: a user's points of known colour, as the network's hint input (Zhang et al. 2017,
"Real-Time User-Guided Image Colorization with Learned Deep Priors").

The hint input is a (B, 3, H, W) map at the network's resolution: the hinted ab (normalised) and a mask,
zero wherever there is no hint. This module parses hints (`x,y,colour` on the command line, a JSON list
from a file), paints them into that map for one image, and, for training, simulates users: a random
number of points at random places, each revealing the mean ab of a small patch of the original. After
the network, propagate_hints spreads what the hints correct over the pixels of similar lightness nearby
(the network's own response to its hint input is still weak after a short fine-tune; measured in
experiments/README.md).
A hint's colour gives only its chroma (its ab): the brightness always stays the input's.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageColor

from lab import rgb_to_lab

HINT_CHANNELS = 3  # a, b (normalised, zero where no hint), mask
# propagate_hints' (sigma_space as a share of the image diagonal, sigma_l in L units): chosen on 30 photos of
# val/general with 1, 10 and 50 simulated hints (experiments/README.md, "Colour hints").
PROPAGATION = (0.3, 10.0)


class HintError(ValueError):
    """A hint that cannot be used (bad syntax, unknown colour, outside the image); the message says why."""


@dataclass(frozen=True)
class Hint:
    x: float                      # column, in the input's pixels at full resolution
    y: float                      # row
    rgb: tuple[int, int, int]     # the colour whose chroma (ab) the point should take
    radius: float | None = None   # half-side of the hinted square in the input's pixels (None: one
                                  # network pixel each side, the smallest patch training saw often)


def parse_colour(text: str) -> tuple[int, int, int]:
    """`#rrggbb`, `#rgb` or a CSS colour name -> (r, g, b)."""
    try:
        rgb = ImageColor.getrgb(text.strip())
    except (ValueError, AttributeError):
        raise HintError(f"{text!r} is not a colour (use #rrggbb or a CSS name such as skyblue)") from None
    return tuple(rgb[:3])


def parse_hint(text: str) -> Hint:
    """`x,y,colour` (e.g. `120,340,#c0392b` or `40,20,skyblue`) -> Hint."""
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise HintError(f"hint {text!r}: expected x,y,colour (e.g. 120,340,#c0392b)")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise HintError(f"hint {text!r}: x and y must be numbers") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise HintError(f"hint {text!r}: x and y must be finite")
    return Hint(x, y, parse_colour(parts[2]))


def load_hints(path: str) -> list[Hint]:
    """A JSON file holding a list of {"x": ..., "y": ..., "color": ..., "radius": optional} -> hints."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except OSError as e:
        raise HintError(f"{path}: cannot read hints ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HintError(f"{path}: not a JSON file ({str(e).splitlines()[0][:100]})") from None
    return hints_from_json(items, path)


def hints_from_json(items: object, source: str) -> list[Hint]:
    """Parsed JSON, a list of {"x", "y", "color", "radius": optional} objects -> hints; HintError naming
    source (a file, a request) and the hint's number for anything else."""
    if not isinstance(items, list):
        raise HintError(f"{source}: expected a JSON list of {{\"x\", \"y\", \"color\"}} objects")
    hints = []
    for i, item in enumerate(items):
        where = f"{source}: hint {i + 1}"
        if not isinstance(item, dict) or not {"x", "y", "color"} <= item.keys():
            raise HintError(f"{where}: expected an object with x, y and color")
        coords = [item["x"], item["y"]] + ([item["radius"]] if item.get("radius") is not None else [])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in coords):
            raise HintError(f"{where}: x, y and radius must be numbers")
        if not isinstance(item["color"], str):
            raise HintError(f"{where}: color must be a string such as \"#c0392b\" or \"skyblue\"")
        radius = item.get("radius")
        if radius is not None and radius < 0:
            raise HintError(f"{where}: radius must not be negative")
        try:
            rgb = parse_colour(item["color"])
        except HintError as e:
            raise HintError(f"{where}: {e}") from None
        hints.append(Hint(float(item["x"]), float(item["y"]), rgb, radius))
    return hints


def hints_to_json(hints: list[Hint]) -> list[dict]:
    """Hints -> the JSON list that load_hints reads back as the same hints (colours as #rrggbb)."""
    out = []
    for h in hints:
        item = {"x": h.x, "y": h.y, "color": "#{:02x}{:02x}{:02x}".format(*h.rgb)}
        if h.radius is not None:
            item["radius"] = h.radius
        out.append(item)
    return out


def check_inside(hints: list[Hint], width: int, height: int, name: str = "the image") -> None:
    """Every hint must lie on the image (pixel centres from 0 to width - 1, height - 1)."""
    for h in hints:
        if not (0 <= h.x <= width - 1 and 0 <= h.y <= height - 1):
            raise HintError(f"hint at ({h.x:g}, {h.y:g}) is outside {name} ({width}x{height} pixels)")


def hint_map(hints: list[Hint], size: tuple[int, int], net_size: tuple[int, int], ab_scale: float
             ) -> np.ndarray:
    """Hints in full-resolution pixels of an image of size (W, H) -> the (1, 3, h, w) float32 hint input
    for the network's resolution net_size (w, h): each hint fills a square of side 2r + 1 network pixels
    with its normalised ab. Overlapping squares average their colours."""
    (width, height), (nw, nh) = size, net_size
    check_inside(hints, width, height)
    out = np.zeros((1, HINT_CHANNELS, nh, nw), dtype=np.float32)
    if not hints:
        return out
    rgb = np.array([h.rgb for h in hints], dtype=np.float32).T.astype(np.float64) / 255
    ab = (rgb_to_lab(rgb)[1:].T / ab_scale).astype(np.float32)                    # (n, 2)
    sx, sy = nw / width, nh / height
    total = np.zeros((2, nh, nw), dtype=np.float32)
    count = np.zeros((nh, nw), dtype=np.float32)
    for h, c in zip(hints, ab):
        cx, cy = int((h.x + 0.5) * sx), int((h.y + 0.5) * sy)
        r = 1 if h.radius is None else int(round(h.radius * sx))
        ys, xs = slice(max(0, cy - r), cy + r + 1), slice(max(0, cx - r), cx + r + 1)
        total[:, ys, xs] += c[:, None, None]
        count[ys, xs] += 1
    hit = count > 0
    out[0, :2] = np.where(hit, total / np.maximum(count, 1), 0)
    out[0, 2] = hit
    return out


def simulate_hints(ab_n: torch.Tensor, generator: torch.Generator, p_none: float = 0.4,
                   p_geometric: float = 1 / 8, max_points: int = 48, max_side: int = 9,
                   points: int | None = None) -> torch.Tensor:
    """Simulated users for training: ab_n (B, 2, H, W) normalised target -> hint input (B, 3, H, W).

    Per image: no hints with probability p_none, else a Geometric(p_geometric) number of points (at
    least 1, capped at max_points) at uniformly random places, each revealing the mean ab of the square
    patch of random odd side 1 .. max_side around it (as in Zhang et al. 2017). The draws come from the
    CPU generator, so a seed gives the same hints on any device. points: exactly that many per image."""
    import torch  # training only: colorizing (hint_map, propagate_hints) needs no torch
    import torch.nn.functional as F
    b, _, h, w = ab_n.shape
    dev = ab_n.device
    if points is not None:
        n = torch.full((b,), points)
    else:
        u = torch.rand(b, generator=generator, dtype=torch.float64).clamp_min(1e-12)
        n = (torch.log(u) / math.log(1 - p_geometric)).floor().long() + 1         # Geometric, >= 1
        n = torch.where(torch.rand(b, generator=generator) < p_none, 0, n.clamp(max=max_points))
    k = int(n.max())
    if k == 0:
        return torch.zeros(b, HINT_CHANNELS, h, w, device=dev)
    ys = torch.randint(0, h, (b, k), generator=generator)
    xs = torch.randint(0, w, (b, k), generator=generator)
    r = torch.randint(0, (max_side - 1) // 2 + 1, (b, k), generator=generator)
    valid = torch.arange(k)[None] < n[:, None]
    ys, xs, r, valid = (t.to(dev) for t in (ys, xs, r, valid))
    # Patch means from an integral image: O(1) per point whatever its size.
    pad = F.pad(ab_n.float(), (1, 0, 1, 0)).cumsum(2).cumsum(3)                   # (B, 2, H+1, W+1)
    y0, y1 = (ys - r).clamp(min=0), (ys + r + 1).clamp(max=h)
    x0, x1 = (xs - r).clamp(min=0), (xs + r + 1).clamp(max=w)

    def at(yy, xx):  # pad[b, :, yy[b, k], xx[b, k]] -> (B, 2, K)
        flat = pad.flatten(2)
        return flat.gather(2, (yy * (w + 1) + xx)[:, None].expand(-1, 2, -1))

    area = ((y1 - y0) * (x1 - x0)).float()[:, None]
    mean = (at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)) / area           # (B, 2, K)
    # Paint each point's patch: (B, K, H, W) membership, averaged where patches overlap.
    gy = torch.arange(h, device=dev)[None, None, :, None]
    gx = torch.arange(w, device=dev)[None, None, None, :]
    inside = ((gy >= y0[..., None, None]) & (gy < y1[..., None, None]) & (gx >= x0[..., None, None])
              & (gx < x1[..., None, None]) & valid[..., None, None]).float()
    count = inside.sum(1)                                                        # (B, H, W)
    ab = torch.einsum("bck,bkhw->bchw", mean, inside)
    hit = count > 0
    ab = torch.where(hit[:, None], ab / count.clamp_min(1)[:, None], 0)
    return torch.cat([ab, hit[:, None].float()], 1).to(ab_n.dtype)


def hint_pyramid_level(hints: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The hint input (B, 3, H, W) at a coarser feature resolution `size` (h, w), H and W multiples of
    them: per cell the mean hinted ab over its hinted pixels (0 if none) and whether it holds a hint."""
    import torch  # the network's (model.py); colorizing with the ONNX model needs no torch
    import torch.nn.functional as F
    # Python ints: the ratio of a level to the (padded) input is fixed, so an ONNX trace may keep it constant.
    k = int(hints.shape[-2]) // int(size[0]), int(hints.shape[-1]) // int(size[1])
    if k == (1, 1):
        return hints
    ab_sum = F.avg_pool2d(hints[:, :2] * hints[:, 2:], k)
    frac = F.avg_pool2d(hints[:, 2:], k)
    hit = frac > 0
    return torch.cat([torch.where(hit, ab_sum / frac.clamp_min(1e-8), 0), hit.to(hints.dtype)], 1)


def sample_hints(rgb: np.ndarray, n: int, rng: np.random.Generator, net_size: tuple[int, int]) -> list[Hint]:
    """n hints at uniformly random pixels of a colour photo rgb (H, W, 3) uint8, each with the photo's
    mean colour over the square a default hint covers (3 x 3 network pixels at net_size (w, h)): what a
    user who knows the true colours would give. rng: a numpy Generator."""
    h, w = rgb.shape[:2]
    half_x, half_y = 1.5 * w / net_size[0], 1.5 * h / net_size[1]
    out = []
    for x, y in zip(rng.integers(0, w, n), rng.integers(0, h, n)):
        x0, x1 = max(0, int(x - half_x)), min(w, int(x + half_x) + 1)
        y0, y1 = max(0, int(y - half_y)), min(h, int(y + half_y) + 1)
        mean = rgb[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64).mean(0)
        out.append(Hint(float(x), float(y), tuple(int(round(c)) for c in mean)))
    return out


def propagate_hints(ab: np.ndarray, l: np.ndarray, hints: np.ndarray, ab_scale: float,
                    sigma_space: float, sigma_l: float) -> np.ndarray:
    """Spread what the hints correct over the pixels like them (a joint bilateral splat): ab (1, 2, h, w)
    and l (1, 1, h, w) in Lab units at the network's resolution, hints the (1, 3, h, w) hint input.

    Each hinted pixel k corrects the prediction there by r_k = hint ab - predicted ab; every pixel p gets
    sum_k w_k(p) r_k / (sum_k w_k(p) + 1) with w_k(p) = exp(-|p - p_k|^2 / 2 sigma_space^2
    - (L(p) - L(p_k))^2 / 2 sigma_l^2): the hinted square itself takes (nearly) the hint's colour, pixels
    of similar lightness nearby most of the correction, and pixels far away or of another lightness keep
    the network's colour. sigma_space is a share of the image's diagonal, sigma_l in L units."""
    ys, xs = np.nonzero(hints[0, 2] > 0)
    if not len(ys):
        return ab
    h, w = ab.shape[-2:]
    r = hints[0, :2, ys, xs].T * np.float32(ab_scale) - ab[0, :, ys, xs].T      # (2, K)
    s = sigma_space * math.hypot(h, w)
    gy, gx = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    # Separable spatial weights: (K, h) x (K, w); the lightness term over all pixels: (K, h, w).
    wy = np.exp(-(gy[None] - ys[:, None]) ** 2 / np.float32(2 * s * s))
    wx = np.exp(-(gx[None] - xs[:, None]) ** 2 / np.float32(2 * s * s))
    lk = l[0, 0, ys, xs]
    wk = wy[:, :, None] * wx[:, None, :] * np.exp(-(l[0, 0][None] - lk[:, None, None]) ** 2
                                                   / np.float32(2 * sigma_l ** 2))
    corr = np.einsum("ck,khw->chw", r, wk) / (wk.sum(0) + 1)
    return (ab + corr[None]).astype(np.float32)
