"""The inference pipeline every front end shares: Colorizer.from_checkpoint(path).colorize(PIL image).

The network runs on a resized copy of the image (short side `size`); its ab prediction is upsampled
bilinearly and merged, in strips, with the L of the original, so the result has the input's resolution.
Each colour is then moved to the nearest one whose 601 luma is the input's grey (lab.match_luma): the
result converted back to grey is the input.

Everything around the network is numpy (lab.py, hints.py); the network itself is a Runner: the ONNX
model on onnxruntime (runner_onnx.py, no torch) or a .pt checkpoint on torch (runner_torch.py). Both give
the same dict of numpy arrays, so the two paths differ only in the network's float rounding.

Memory: a 12000x9000 photo peaks at about 0.8 GB on the ONNX path (1.3 GB with torch). The grey levels
stay 8 or 16 bit until a strip of rows is merged, and the result is pasted strip
by strip into the output image, so the only full-size buffers are the grey input (1-2 bytes a pixel) and
the output. Reading and writing files is image_io's job; the command line is predict_color.py.
"""
from __future__ import annotations

import collections
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from colour_prior import (REFERENCE_STRENGTH, ColourPrior, PriorError, centred_gain, photo_histogram, pool,
                          prior_bias, reference_prior)
from decoding import Decode
from files import CheckpointError
from hints import PROPAGATION, Hint, HintError, hint_map, propagate_hints
from image_io import grey_and_alpha
from lab import PEAKS, blend_rows, lab_to_rgb, levels, levels_to_l, match_luma, upsample_cols, upsample_rows
from memory import Bank, Predictor

HERE = os.path.dirname(os.path.abspath(__file__))
# The shipped model, twice: ONNX (onnxruntime, no torch; the default) and the torch checkpoint it was
# exported from (exact torch output, and the decode flags; needs requirements-train.txt).
DEFAULT_MODEL = os.path.join(HERE, "checkpoints", "colorizer.onnx")
DEFAULT_TORCH_MODEL = os.path.join(HERE, "checkpoints", "colorizer.pt")
STRIP_PIXELS = 2 ** 19  # pixels merged at a time: bounds the float32 working set (~100 bytes a pixel)


def torch_available() -> bool:
    """Whether torch can be imported (without importing it: that alone takes seconds)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def _downscale(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grey (H, W) of any supported dtype -> (h, w) float32 in [0, 1], antialiased bilinear resize."""
    peak = PEAKS.get(grey.dtype)
    im = Image.fromarray(grey if peak else np.asarray(grey, dtype=np.float32))
    peak = peak or 1.0
    small = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.clip(np.asarray(small, dtype=np.float32) / peak, 0, 1)


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
class Runner:
    """The network with its decode, for one image: run(l, hints, bias) -> dict of numpy arrays.

    l (1, 1, h, w) float32 normalised L; hints (1, 3, h, w) (hints.hint_map) or None; bias (Q,) or (1, Q)
    or None: a per-image colour prior added to the calibrated logits (classification only; zeros: none).
    memory: with a predicted colour prior (predicts_prior; model.PriorHead), its weight: 1 on, 0 off.
    Returns "ab" (1, 2, h2, w2) in Lab units at the head's resolution (h2 = (h + 1) // 2), "embedding"
    (1, 2C): per channel the mean and standard deviation of the encoder's deepest features, and for a
    classification head "probs" (1, Q, h2, w2): softmax((logits - c log w + bias) / T).
    Subclasses (runner_onnx.OnnxRunner, runner_torch.TorchRunner) set what the numpy side needs below.
    """

    def __init__(self, model_config: dict, decode: Decode, size: int | None,
                 propagation: tuple[float, float] | None, bins: np.ndarray | None, prior: np.ndarray | None):
        self.model_config = model_config  # model.ModelConfig as a dict: normalisation, head, hints
        self.decode = decode              # the decode settings the network runs with
        self.size = size                  # the short side it was chosen for
        self.propagation = propagation    # hints.propagate_hints' (sigma_space, sigma_l), or None
        self.bins = bins                  # (Q, 2) ab centres in Lab units; None for a regression head
        self.prior = prior                # (Q,) the training colour prior; None for a regression head
        self.predicts_prior = False       # whether the graph predicts a colour prior from the photo (PriorHead)

    @property
    def takes_hints(self) -> bool:
        return bool(self.model_config.get("hints"))

    def run(self, l: np.ndarray, hints: np.ndarray | None = None, bias: np.ndarray | None = None,
            outputs: tuple[str, ...] | None = None, memory: float = 1.0) -> dict:
        """outputs: the names wanted (None: all); a runner may return only those."""
        raise NotImplementedError


def decode_overrides(args) -> dict:
    """A front end's decode flags (--temperature, --prior-correction, --gain, --spread, --evenness; None
    where not given) as Colorizer.from_checkpoint's keyword arguments."""
    return {k: getattr(args, k, None) for k in Decode.keys()}


def load_runner(path: str, device: str = "cpu", **decode: float | None) -> Runner:
    """The runner a model file needs: .onnx on onnxruntime, anything else as a torch checkpoint.
    decode: settings that override a checkpoint's (torch only: an ONNX graph holds its decode)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.lower().endswith(".onnx"):
        given = [k for k, v in decode.items() if v is not None]
        if given:
            raise CheckpointError(f"{path}: --{given[0].replace('_', '-')} needs a torch checkpoint: an ONNX model's "
                                  "decode is fixed when it is exported (use -model checkpoints/colorizer.pt)")
        if device != "cpu":
            raise CheckpointError(f"{path}: --device {device}: the ONNX model runs on the CPU "
                                  "(use -model checkpoints/colorizer.pt for a GPU)")
        from runner_onnx import OnnxRunner
        return OnnxRunner(path)
    if not torch_available():
        raise CheckpointError(f"{path}: a torch checkpoint needs torch (pip install -r requirements-train.txt), "
                              "or export it to ONNX with export_model.py and pass the .onnx file")
    from runner_torch import TorchRunner
    runner = TorchRunner.from_checkpoint(path, device)
    if any(v is not None for v in decode.values()):
        runner = runner.with_decode(runner.decode.override(**decode))
    return runner


class Colorizer:
    """The inference pipeline shared by every front end (CLI, evaluation, export).

    Colorizer.from_checkpoint(path).colorize(PIL image) -> PIL image (RGB, or RGBA if the input had alpha)
    Colorizer(torch model, size, decode) wraps a network in memory (export_model.py's selection grid).
    """

    def __init__(self, model, size: int, decode: Decode | None = None, device="cpu",
                 propagation: tuple[float, float] | None = PROPAGATION):
        if isinstance(model, Runner):
            self.runner = model
        else:  # a torch network
            from runner_torch import TorchRunner
            self.runner = TorchRunner(model, decode or Decode(), device, size, propagation)
        self.model = getattr(self.runner, "model", None)  # the torch network, if it runs on torch
        cfg = self.runner.model_config
        self.l_center, self.l_scale = cfg.get("l_center", 50.0), cfg.get("l_scale", 50.0)
        self.ab_scale = cfg.get("ab_scale", 110.0)
        self.size = size      # short side the network sees
        # Hints: after the network, what they correct is spread over similar pixels (hints.propagate_hints
        # with these (sigma_space, sigma_l)); None: the network's answer to its hint input only.
        self.propagation = propagation
        # A model with a predicted colour prior (memory.Predictor in its graph) uses it unless this is False
        # (--no-memory) or a prior is given (a reference, a memory bank).
        self.memory = True

    @classmethod
    def from_checkpoint(cls, path: str = DEFAULT_MODEL, device: str = "cpu", size: int | None = None,
                        **decode: float | None) -> "Colorizer":
        """Load a model: .onnx (onnxruntime) or a torch checkpoint (weights_only, strict); any problem is a
        one-line CheckpointError naming it. decode: model.Decode settings (temperature=..., gain=...) that
        override the checkpoint's; None keeps it (an ONNX model's are fixed: giving one is an error)."""
        runner = load_runner(path, device, **decode)
        return cls(runner, int(size or runner.size), propagation=runner.propagation)

    @property
    def decode(self) -> Decode:
        """The head's decode settings (model.Decode)."""
        return self.runner.decode

    @property
    def bins(self) -> np.ndarray | None:
        """(Q, 2) ab centres of a classification head's bins, Lab units; None for a regression head."""
        return self.runner.bins

    @property
    def prior(self) -> np.ndarray | None:
        """(Q,) the training colour prior over the bins; None for a regression head."""
        return self.runner.prior

    def reference_prior(self, references: Image.Image | np.ndarray | list, strength: float = REFERENCE_STRENGTH
                        ) -> ColourPrior:
        """One or more reference photos (PIL images or 8-bit RGB arrays; several pool their colours) -> the
        colour prior that steers the decode towards their colours (colour_prior.reference_prior)."""
        self.check_prior(True)
        refs = references if isinstance(references, (list, tuple)) else [references]
        rgbs = [np.asarray(r.convert("RGB")) if isinstance(r, Image.Image) else r for r in refs]
        return reference_prior(pool([photo_histogram(r, self.bins) for r in rgbs]), self.prior, strength)

    def memory_prior(self, grey: np.ndarray, memory: Bank | Predictor) -> ColourPrior:
        """A colour prior for this grey photo from a memory (memory.py): a bank of colour photos, whose
        neighbours give a histogram and whose trust a strength, or a predictor, whose histogram from the
        photo's embedding is used at the file's own setting. The network runs once for the embedding and its
        own colours (predict_ab then runs it again with the prior)."""
        self.check_prior(True)
        bins = memory.bins
        if bins.shape != self.bins.shape or not np.allclose(bins, self.bins):
            raise PriorError("the memory was built for another model's colour bins (build_memory.py -model)")
        predictor = isinstance(memory, Predictor)  # needs only the embedding; a bank also the network's colours
        out = self.run(self.network_input(grey), bias=np.zeros(len(self.bins), np.float32),
                       outputs=("embedding",) if predictor else ("embedding", "probs"))  # no predicted prior
        if predictor:
            return ColourPrior(memory.prior_bias(out["embedding"][0], self.prior))
        look = memory.lookup(out["embedding"][0], out["probs"][0].mean((1, 2)))
        return ColourPrior(prior_bias(look.hist, self.prior, look.strength))

    @property
    def predicts_prior(self) -> bool:
        """Whether the model predicts a colour prior from each photo (model.PriorHead; --no-memory: off)."""
        return self.runner.predicts_prior

    @property
    def takes_hints(self) -> bool:
        """Whether the network itself was trained with a hint input (hints.py). Hints work with every model:
        what they correct is spread by hints.propagate_hints after the network (unless propagation is None)."""
        return self.runner.takes_hints

    def net_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the network sees: short side `size`, long side at most 4 x size."""
        s = min(self.size / min(width, height), 4 * self.size / max(width, height))
        return max(1, round(width * s)), max(1, round(height * s))

    def run(self, l_small: np.ndarray, hints: np.ndarray | None = None, bias: np.ndarray | None = None,
            outputs: tuple[str, ...] | None = None) -> dict:
        """The network on L (1, 1, h, w) in [0, 100] at its size: the runner's dict ("ab", "embedding",
        "probs"; see Runner). hints: the (1, 3, h, w) hint map; bias: (Q,) colour prior or None (one given
        turns the model's predicted prior off, as does memory = False: --no-memory);
        outputs: the names wanted (None: all; a runner may skip copying the others)."""
        l_norm = (np.asarray(l_small, dtype=np.float32) - np.float32(self.l_center)) / np.float32(self.l_scale)
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float32).reshape(1, -1)
        # A given prior (a reference, a memory bank) replaces the model's own predicted one.
        return self.runner.run(l_norm, hints, bias, outputs, memory=float(self.memory and bias is None))

    def predict_ab(self, grey: np.ndarray, hints: list[Hint] | None = None, prior: ColourPrior | None = None
                   ) -> np.ndarray:
        """Grey (H, W) (uint8, uint16 or float in [0, 1]) -> ab in Lab units at the network's resolution,
        (1, 2, h, w) float32. hints: points of known colour in the grey's pixels, given to the network if it
        takes them and then propagated (HintError for a hint outside the image); prior: a colour prior for
        this photo (colour_prior.ColourPrior, e.g. a reference photo's colours; classification heads).
        The steps around the network are public (network_input, hint_input, finish_ab) so that a front end
        that keeps the network's output (the editor) redoes exactly what comes after it."""
        self.check_prior(prior)
        hint_input = self.hint_input(hints, grey.shape)
        l_small = self.network_input(grey)
        out = self.run(l_small, hint_input if self.takes_hints else None, prior and prior.bias, outputs=("ab",))
        return self.finish_ab(out["ab"], l_small, hint_input, prior)

    def check_prior(self, prior: ColourPrior | bool | None) -> None:
        """PriorError (one line) for a colour prior (or True: one to be made) on a model that cannot take one
        (a regression head)."""
        if prior is not None and self.bins is None:
            raise PriorError("colours from a reference or a memory need a model with a classification head; "
                             "this one has a regression head")

    def network_input(self, grey: np.ndarray) -> np.ndarray:
        """Grey (H, W) -> the L (1, 1, h, w) in [0, 100] of the copy the network sees (net_size): run's input,
        and the lightness the hints are propagated with."""
        h, w = grey.shape
        return levels_to_l(_downscale(grey, self.net_size(w, h)))[None, None]

    def hint_input(self, hints: list[Hint] | None, shape: tuple[int, int]) -> np.ndarray | None:
        """Hints in the pixels of a grey of shape (H, W) -> the (1, 3, h, w) hint map at the network's size,
        or None without hints. HintError for a hint outside the image or a model that cannot use hints."""
        if not hints:
            return None
        if not (self.takes_hints or self.propagation):
            raise HintError("this model was trained without a hint input and hint propagation is off")
        h, w = shape
        return hint_map(hints, (w, h), self.net_size(w, h), self.ab_scale)

    def finish_ab(self, out_ab: np.ndarray, l_small: np.ndarray, hint_input: np.ndarray | None = None,
                  prior: ColourPrior | None = None) -> np.ndarray:
        """What predict_ab does after the network: its ab output (1, 2, h2, w2) (run(...)["ab"]) -> ab
        (1, 2, h, w) at the size of l_small (network_input): the prior's gain, the upsampling, and the hints'
        correction spread over similar pixels (hint_input as from hint_input; None: no hints)."""
        ab = centred_gain(out_ab, prior.gain) if prior else out_ab
        nh, nw = l_small.shape[-2:]
        ab = upsample_rows(ab[0], 0, nh, nh, nw)[None]
        if hint_input is not None and self.propagation:
            ab = propagate_hints(ab, l_small, hint_input, self.ab_scale, *self.propagation)
        return ab

    def _merge_rows(self, grey: np.ndarray, wide: np.ndarray, y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 of the result: the original L with the upsampled ab -> RGB (y1 - y0, W, 3) uint8.
        wide: ab (2, h, W) already upsampled to the full width (lab.upsample_cols)."""
        rgb = lab_to_rgb(levels_to_l(grey[y0:y1]), blend_rows(wide, y0, y1, grey.shape[0]))
        luma, tol = levels(grey[y0:y1])
        rgb = match_luma(rgb, luma, tol)
        return np.rint(rgb * 255).astype(np.uint8).transpose(1, 2, 0).copy()

    def _strips(self, grey: np.ndarray, ab: np.ndarray, workers: int) -> Iterator[tuple[int, np.ndarray]]:
        """(y0, RGB rows from y0) covering the image: ab (1, 2, h, w) merged with grey on `workers` threads."""
        h, w = grey.shape
        wide = upsample_cols(ab[0], w)  # (2, h_net, W): a few MB even for a 12000-pixel-wide photo
        rows = max(1, STRIP_PIXELS // w)
        starts = range(0, h, rows)
        merged = ordered_map(lambda y0: self._merge_rows(grey, wide, y0, min(h, y0 + rows)), starts, workers)
        return zip(starts, merged)

    def colorize_grey(self, grey: np.ndarray, workers: int = 1, hints: list[Hint] | None = None,
                      prior: ColourPrior | None = None) -> np.ndarray:
        """Grey (H, W) (float in [0, 1], or uint8 / uint16 levels) -> RGB (H, W, 3) uint8 at full resolution."""
        return self.colorize_grey_with_ab(grey, self.predict_ab(grey, hints, prior), workers)

    def colorize_grey_with_ab(self, grey: np.ndarray, ab: np.ndarray, workers: int = 1) -> np.ndarray:
        """As colorize_grey, with the colour given: ab (1, 2, h, w) in Lab units, as from predict_ab (e.g.
        smoothed over a video's frames), upsampled and merged with grey's full-resolution L."""
        out = np.empty((*grey.shape, 3), dtype=np.uint8)
        for y0, rgb in self._strips(grey, ab, workers):
            out[y0:y0 + len(rgb)] = rgb
        return out

    def colorize(self, image: Image.Image, workers: int = 1,
                 hints: list[Hint | tuple[float, float, tuple[int, int, int]]] | None = None,
                 prior: ColourPrior | None = None,
                 reference: Image.Image | list[Image.Image] | None = None,
                 reference_strength: float = REFERENCE_STRENGTH) -> Image.Image:
        """PIL image of any mode -> colorized PIL image of the same (upright) size, alpha kept.

        hints: points of known colour, [(x, y, (r, g, b)), ...] or Hint objects, in the image's pixels;
        each gives its chroma to the colours around it (the brightness stays the image's).
        reference: one or more colour photos whose colours steer the decode (pooled), at reference_strength
        (0: the automatic colours exactly); or prior: a colour_prior.ColourPrior made beforehand (as from
        reference_prior, once for a whole folder or film). Hints still win where they are given."""
        hints = [h if isinstance(h, Hint) else Hint(float(h[0]), float(h[1]), tuple(h[2])) for h in hints or []]
        if reference is not None:
            prior = self.reference_prior(reference, reference_strength)
        return self.colorize_to_image(*grey_and_alpha(image), workers=workers, hints=hints, prior=prior)

    def colorize_to_image(self, grey: np.ndarray, alpha: Image.Image | None = None,
                          workers: int = 1, hints: list[Hint] | None = None,
                          prior: ColourPrior | None = None) -> Image.Image:
        """Grey (H, W) as from grey_and_alpha, alpha (mode L) or None -> RGB or RGBA PIL image (W x H).

        The strips are pasted straight into the output image: no second full-size copy of the result.
        """
        out = Image.new("RGB" if alpha is None else "RGBA", (grey.shape[1], grey.shape[0]))
        for y0, rgb in self._strips(grey, self.predict_ab(grey, hints, prior), workers):
            out.paste(Image.fromarray(rgb), (0, y0))
        if alpha is not None:
            out.putalpha(alpha)
        return out
