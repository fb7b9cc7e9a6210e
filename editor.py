"""The colour editor's session: one photo, the network's answer for it (computed once), and previews of edits.

EditorSession.open(colorizer, "x.jpg", "Coloured_x.png") reads the photo and runs the network once (its
colours and, for a classification head, its distribution, which the suggested colours come from); each
edit then only redoes what comes after the network, with the very steps Colorizer.predict_ab takes
(Colorizer.hint_input and finish_ab: the hint map, the upsampling, the hints' correction spread by
propagate_hints), and the merge with the grey, on a copy of the photo whose long side is at most
PREVIEW_SIDE. Saving goes through the normal pipeline (Colorizer.colorize_to_image with the hints, at full
resolution), so the saved photo is the one the CLI writes with `--hints` on the saved hints file.

Pure numpy around Colorizer.run: it works on either runner (ONNX without torch, or a torch checkpoint).
An optional colour prior (colour_prior.ColourPrior, e.g. from a reference photo) shapes the automatic
colours, the suggestions and the saved photo as it shapes the CLI's. The HTTP front end is
editor_server.py; undo and redo live in the page, which sends the whole list of hints with every request.
Every method may be called from several threads: the model and the caches are used under one lock.
"""
from __future__ import annotations

import io
import json
import math
import os
import threading
from typing import NamedTuple

import numpy as np
from PIL import Image

from colorizer import Colorizer
from colour_prior import ColourPrior, centred_gain
from hints import Hint, HintError, check_inside, hints_to_json
from image_io import MAX_PIXELS, read_grey, save_image, write_file
from lab import lab_to_rgb, levels_to_l, rgb_to_lab

PREVIEW_SIDE = 1024   # long side of the preview, in pixels (a larger photo is previewed scaled down)
MAX_HINTS = 500       # more points than anyone clicks; bounds the work a request can ask for
SUGGESTIONS = 8       # colours offered at a point
MERGE_DE = 6.0        # suggested colours closer than this (Lab distance, at the point's lightness) are one
REGRESSION_TURNS = (0, 30, -30, 60, -60, 120, -120, 180)  # hue turns (degrees) offered around a regression
MIN_CHROMA = 20.0     # ... prediction, at least this far from grey so that a grey prediction offers colours


def hints_path(output: str) -> str:
    """Where the hints of a saved result go: beside it, `Coloured_x.png` -> `Coloured_x.hints.json`."""
    return os.path.splitext(output)[0] + ".hints.json"


def _unit_grey(grey: np.ndarray) -> np.ndarray:
    """Grey (H, W) uint8, uint16 or float in [0, 1] -> float32 in [0, 1]."""
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(grey.dtype, 1.0)
    return np.clip(np.asarray(grey, dtype=np.float32) / np.float32(peak), 0, 1)


def resize_grey(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grey (H, W) -> (h, w) at size (w, h), antialiased bilinear (as Colorizer resizes for the network):
    uint8 stays uint8, anything else becomes float32 in [0, 1]."""
    if grey.dtype == np.uint8:
        return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    small = Image.fromarray(_unit_grey(grey)).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.clip(np.asarray(small, dtype=np.float32), 0, 1)


def preview_grey(grey: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """The grey the previews are made from: the photo itself, or scaled so that its long side is `side`."""
    h, w = grey.shape
    if max(h, w) <= side:
        return grey
    s = side / max(h, w)
    return resize_grey(grey, (max(1, round(w * s)), max(1, round(h * s))))


# ---------------------------------------------------------------------------------------------------
# Suggested colours
class ColourField(NamedTuple):
    """What the network thinks of every place, at its head's resolution (h, w):
    probs (h, w, Q) float32, each row a distribution over the ab bins (the runner's "probs": the mean of an
    ensemble's members), or None for a regression head; bins (Q, 2) their ab in Lab units (None for
    regression); ab (h, w, 2) the decoded colour in Lab units; gain and centre: a colour prior's centred
    gain on the decoded colours (centre + gain (ab - centre)), applied to the bins offered too."""
    probs: np.ndarray | None
    bins: np.ndarray | None
    ab: np.ndarray
    gain: float = 1.0
    centre: tuple[float, float] = (0.0, 0.0)


def field_from_output(colorizer: Colorizer, out: dict, prior: ColourPrior | None = None) -> ColourField:
    """Colorizer.run's output (with "ab" and, for a classification head, "probs") -> its ColourField.
    probs is softmax((logits - c log w + bias) / T) with the model's decode settings (and the prior's bias,
    if run was given it); prior: the same prior, for its gain."""
    ab = out["ab"]
    gain, centre = 1.0, (0.0, 0.0)
    if prior is not None and prior.gain != 1.0:
        gain, centre = float(prior.gain), tuple(float(v) for v in ab[0].mean((-2, -1)))
        ab = centred_gain(ab, prior.gain)
    probs = out.get("probs") if colorizer.bins is not None else None
    probs = None if probs is None else probs[0].transpose(1, 2, 0)  # a view: no copy of the (Q, h, w) array
    return ColourField(probs, colorizer.bins, ab[0].transpose(1, 2, 0), gain, centre)


def colour_field(colorizer: Colorizer, grey: np.ndarray, prior: ColourPrior | None = None) -> ColourField:
    """The network's colour distribution over the photo grey (H, W), as its decode settings (and prior)
    shape it. One network run; EditorSession keeps the one it makes when it opens the photo."""
    colorizer.check_prior(prior)
    out = colorizer.run(colorizer.network_input(grey), None, prior and prior.bias, outputs=("ab", "probs"))
    return field_from_output(colorizer, out, prior)


def _ab_to_rgb(ab: np.ndarray, lightness: float) -> np.ndarray:
    """ab (n, 2) at Lab lightness -> sRGB (n, 3) uint8 (out-of-gamut colours clipped)."""
    ab = np.asarray(ab, dtype=np.float32)
    L = np.full((1, len(ab)), lightness, dtype=np.float32)
    rgb = lab_to_rgb(L, ab.T[:, None, :])[:, 0].T
    return np.rint(rgb * 255).astype(np.uint8)


def _candidates(field: ColourField, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(ab (n, 2), weight (n,)) of the colours to offer at head pixel (i, j), most likely first."""
    if field.probs is None:  # regression: turns of the prediction's hue, at (at least) MIN_CHROMA
        a, b = field.ab[i, j]
        chroma, hue = max(math.hypot(a, b), MIN_CHROMA), math.atan2(b, a)
        turns = np.radians(REGRESSION_TURNS) + hue
        ab = np.stack([chroma * np.cos(turns), chroma * np.sin(turns)], 1)
        ab[0] = (a, b)  # the prediction itself first
        return ab.astype(np.float32), np.linspace(1, 0.5, len(ab))
    p = field.probs[i, j]
    order = np.argsort(-p)[: 8 * SUGGESTIONS]
    ab = field.bins[order]
    if field.gain != 1.0:  # the colours the decode would give these bins under the prior's gain
        centre = np.asarray(field.centre, dtype=np.float32)
        ab = centre + np.float32(field.gain) * (ab - centre)
    return ab, p[order]


def top_colours(field: ColourField, fx: float, fy: float, lightness: float, k: int = SUGGESTIONS) -> list[str]:
    """The k likeliest colours (#rrggbb, most likely first) at the relative position (fx, fy) in [0, 1]
    of the photo, shown at the point's Lab lightness. Colours that look alike there (within MERGE_DE after
    clipping to sRGB, e.g. neighbouring bins, or bins that clip to one colour) are merged, their
    probabilities added."""
    h, w = field.ab.shape[:2]
    i, j = min(int(fy * h), h - 1), min(int(fx * w), w - 1)
    ab, weight = _candidates(field, i, j)
    rgb = _ab_to_rgb(ab, lightness)
    lab = rgb_to_lab(rgb.T / 255.0).T
    centres, mass, colours = [], [], []
    for c, p, colour in zip(lab, weight, rgb):
        near = [n for n, d in enumerate(centres) if np.linalg.norm(d - c) < MERGE_DE]
        if near:
            mass[near[0]] += p
        else:
            centres.append(c), mass.append(p), colours.append(colour)
    order = sorted(range(len(colours)), key=lambda n: -mass[n])[:k]
    return ["#{:02x}{:02x}{:02x}".format(*map(int, colours[n])) for n in order]


# ---------------------------------------------------------------------------------------------------
def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> PNG file contents (fast compression: previews are sent, not kept)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class EditorSession:
    """One photo being edited. preview(hints) -> RGB at preview size; suggest(x, y) -> colours; save(hints).

    x, y and hints are in the photo's own pixels (full resolution); HintError for a hint outside it.
    prior: a colour prior for this photo (colour_prior.ColourPrior, e.g. Colorizer.reference_prior), used
    as the CLI uses it (classification heads; PriorError otherwise); None: the automatic colours.
    """

    def __init__(self, colorizer: Colorizer, grey: np.ndarray, alpha: Image.Image | None, output: str,
                 hints: list[Hint] = (), name: str = "the photo", preview_side: int = PREVIEW_SIDE,
                 workers: int = 1, prior: ColourPrior | None = None):
        colorizer.check_prior(prior)
        self.colorizer, self.grey, self.alpha, self.prior = colorizer, grey, alpha, prior
        self.height, self.width = grey.shape
        self.name, self.output, self.hints_output = name, output, hints_path(output)
        self.workers = workers
        self.check(list(hints))
        self.start_hints = list(hints)
        self.lock = threading.Lock()  # the model, its threads and the caches: one request at a time
        self.small_grey = preview_grey(grey, preview_side)
        with self.lock:
            # The network's answer without hints, once: its colours (every edit starts from them) and its
            # distribution (the suggestions), from one run, as Colorizer.predict_ab runs it.
            self._l_small = colorizer.network_input(grey)
            out = colorizer.run(self._l_small, None, prior and prior.bias, outputs=("ab", "probs"))
            self._net_ab = out["ab"]
            self._auto_ab = colorizer.finish_ab(self._net_ab, self._l_small, None, prior)
            self._field = field_from_output(colorizer, out, prior)
        self._auto_png: bytes | None = None

    @classmethod
    def open(cls, colorizer: Colorizer, src: str, output: str, hints: list[Hint] = (),
             max_pixels: int | None = MAX_PIXELS, **kw) -> "EditorSession":
        """Read src (image_io.read_grey: InputError, one line, for a bad file) and start a session on it."""
        grey, alpha = read_grey(src, max_pixels)
        try:
            return cls(colorizer, grey, alpha, output, hints, name=src, **kw)
        except HintError as e:
            raise HintError(f"{src}: {e}") from None

    def check(self, hints: list[Hint]) -> None:
        """HintError (one line) for too many hints or one outside the photo."""
        if len(hints) > MAX_HINTS:
            raise HintError(f"{len(hints)} hints: at most {MAX_HINTS} at a time")
        check_inside(hints, self.width, self.height, "the photo")

    def state(self) -> dict:
        """What the page needs to start: sizes, the starting hints, where Save writes."""
        ph, pw = self.small_grey.shape
        return {"name": os.path.basename(self.name), "width": self.width, "height": self.height,
                "preview_width": pw, "preview_height": ph, "hints": hints_to_json(self.start_hints),
                "output": self.output, "hints_output": self.hints_output,
                "head": "regression" if self.colorizer.bins is None else "classification"}

    def ab(self, hints: list[Hint]) -> np.ndarray:
        """The hinted ab (1, 2, h, w) at the network's resolution, from the cached network output as
        Colorizer.predict_ab finishes it (a network that itself takes hints reruns)."""
        self.check(hints)
        if not hints:
            return self._auto_ab
        with self.lock:
            if self.colorizer.takes_hints:
                return self.colorizer.predict_ab(self.grey, hints, self.prior)
            hint_input = self.colorizer.hint_input(hints, self.grey.shape)
            return self.colorizer.finish_ab(self._net_ab, self._l_small, hint_input, self.prior)

    def preview(self, hints: list[Hint]) -> np.ndarray:
        """The photo coloured with these hints at preview size: RGB (h, w, 3) uint8."""
        ab = self.ab(hints)
        with self.lock:
            return self.colorizer.colorize_grey_with_ab(self.small_grey, ab, self.workers)

    def preview_png(self, hints: list[Hint]) -> bytes:
        if hints:
            return png_bytes(self.preview(hints))
        if self._auto_png is None:  # the automatic colours: asked for often (the page's switch)
            self._auto_png = png_bytes(self.preview([]))
        return self._auto_png

    def grey_png(self) -> bytes:
        """The grey input at preview size, as PNG."""
        return png_bytes(np.round(_unit_grey(self.small_grey) * 255).astype(np.uint8))

    def lightness(self, x: float, y: float) -> float:
        """Lab L of the photo at pixel (x, y)."""
        i, j = int(round(y)), int(round(x))
        return float(levels_to_l(self.grey[i:i + 1, j:j + 1])[0, 0])

    def suggest(self, x: float, y: float, k: int = SUGGESTIONS) -> list[str]:
        """The network's likeliest colours at pixel (x, y), most likely first, as #rrggbb at its lightness."""
        self.check([Hint(x, y, (0, 0, 0))])
        return top_colours(self._field, (x + 0.5) / self.width, (y + 0.5) / self.height, self.lightness(x, y), k)

    def save(self, hints: list[Hint]) -> dict:
        """The full-resolution result with these hints, as the CLI colours it, to self.output, and the hints
        to self.hints_output (both atomically; InputError if either cannot be written). Returns the paths."""
        self.check(hints)
        with self.lock:
            out = self.colorizer.colorize_to_image(self.grey, self.alpha, workers=self.workers, hints=hints,
                                                   prior=self.prior)
            save_image(out, self.output)
            text = json.dumps(hints_to_json(hints), indent=1) + "\n"
            write_file(self.hints_output, lambda f: f.write(text.encode("utf-8")))
        return {"image": self.output, "hints": self.hints_output}
