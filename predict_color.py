"""Colorize grey photos: python predict_color.py -image x.jpg [-model CKPT] [-output OUT] [-histo True]

The network runs on a resized copy of the image (short side --size); its ab prediction is upsampled
bilinearly and merged, in strips, with the L of the original, so the result has the input's resolution.
Each colour is then moved to the nearest one whose 601 luma is the input's grey (utils.match_luma): the
result converted back to grey is the input.
Only torch, numpy and PIL are imported on the way (matplotlib for -histo, tqdm for several images).

Memory: a 12000x9000 photo peaks at about 1.3 GB, half of it torch itself. The grey levels stay 8 or 16 bit until a strip of rows is
merged, JPEGs are decoded straight to their luma plane, and the result is pasted strip by strip into
the output image, so the only full-size buffers are the grey input (1-2 bytes a pixel) and the output.
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image

from model import ModelConfig, build_model
from utils import (IMAGE_EXTENSIONS, CheckpointError, float_weights, grey_to_l, lab_to_rgb, load_checkpoint,
                   match_luma, write_atomic)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "checkpoints", "colorizer.pt")
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)  # a GIF is read as its first frame
STRIP_PIXELS = 2 ** 19  # pixels merged at a time: bounds the float32 working set (~100 bytes a pixel)
# Our own limit on image size, checked from the header before anything is decoded. PIL's default
# (a warning above 89 Mpx, an error above 179 Mpx) would stop a 12000x9000 (108 Mpx) photo; the CLI
# switches PIL's check off and applies this one, with a clear message, instead.
MAX_PIXELS = 300_000_000

# EXIF orientation -> the transpose that makes the image upright (as PIL.ImageOps.exif_transpose does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class InputError(Exception):
    """An input that cannot be colorized; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------------
# From any PIL image to grey levels
def _upright(im: Image.Image) -> Image.Transpose | None:
    """The transpose its EXIF orientation asks for, or None (also for unreadable EXIF)."""
    try:
        return _UPRIGHT.get(im.getexif().get(ExifTags.Base.Orientation))
    except Exception:  # malformed EXIF in an otherwise fine photo: treat it as upright
        return None


def _to_array(im: Image.Image) -> np.ndarray:
    """PIL image (L, I;16* or F) -> numpy (H, W), copied a strip of rows at a time.

    np.asarray(im) would hold the pixels three times at once (image, a list of chunks, the joined bytes).
    """
    dtype = {"L": np.uint8, "F": np.float32}.get(im.mode, np.uint16)
    out = np.empty((im.height, im.width), dtype)
    rows = max(1, STRIP_PIXELS // max(1, im.width))
    for y0 in range(0, im.height, rows):
        out[y0:y0 + rows] = np.asarray(im.crop((0, y0, im.width, min(im.height, y0 + rows))))
    return out


def _grey_image(im: Image.Image) -> Image.Image:
    """Any PIL image -> its grey levels as a PIL image: L (8 bit), I;16 (16 bit) or F (in [0, 1])."""
    if im.mode in ("L", "I;16", "I;16L", "I;16B", "I;16N"):
        return im
    if im.mode in ("I", "F"):  # 32-bit TIFFs and the like: guess the range from the values
        a = np.asarray(im, dtype=np.float32)
        peak = a.max(initial=0.0)
        scale = 1.0 if im.mode == "F" and peak <= 1 else 255.0 if peak <= 255 else 65535.0
        return Image.fromarray(np.clip(a / scale, 0, 1).astype(np.float32))
    return im.convert("L")  # RGB, CMYK, YCbCr, P, LA, ...: ITU-R 601 luma; the colours are ignored


def grey_and_alpha(im: Image.Image) -> tuple[np.ndarray, Image.Image | None]:
    """Any PIL image -> (grey levels (H, W), alpha (PIL mode L) or None), both upright (EXIF applied).

    grey: uint8 in [0, 255] for 8-bit images, uint16 in [0, 65535] for 16-bit ones, float32 in [0, 1]
    for 32-bit ones. An RGB image gives exactly the grey of its convert("L").
    """
    turn = _upright(im)
    alpha = None
    if im.has_transparency_data:
        alpha = (im if im.mode in ("RGBA", "LA", "PA") else im.convert("RGBA")).getchannel("A")
        alpha = alpha.transpose(turn) if turn is not None else alpha
    grey = _grey_image(im)
    grey = grey.transpose(turn) if turn is not None else grey
    return _to_array(grey), alpha


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


class Colorizer:
    """The inference pipeline shared by every front end (CLI, evaluation, export).

    Colorizer.from_checkpoint(path).colorize(PIL image) -> PIL image (RGB, or RGBA if the input had alpha)
    """

    def __init__(self, model, size: int, temperature: float, prior_correction: float, device="cpu"):
        self.model = model.eval().to(device)
        self.norm = model.cfg.norm
        self.size, self.temperature, self.prior_correction = size, temperature, prior_correction
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str = DEFAULT_MODEL, device: str = "cpu", size: int | None = None,
                        temperature: float | None = None, prior_correction: float | None = None
                        ) -> "Colorizer":
        """Load a checkpoint (weights_only, strict); any problem is a one-line CheckpointError naming it."""
        ckpt = load_checkpoint(path)
        model = _model_from_checkpoint(ckpt, path)
        # Decode settings: the checkpoint's own (tuned on held-out images), unless overridden.
        inf = ckpt.get("inference") or {}
        tc = ckpt.get("train_config") or {}
        size = size or inf.get("size") or tc.get("resize") or round(tc.get("crop_size", 128) * 1.25)
        temperature = temperature if temperature is not None else inf.get("temperature", 0.38)
        prior_correction = (prior_correction if prior_correction is not None
                            else inf.get("prior_correction", 0.0))
        return cls(model, int(size), float(temperature), float(prior_correction), device)

    def net_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the network sees: short side `size`, long side at most 4 x size."""
        s = min(self.size / min(width, height), 4 * self.size / max(width, height))
        return max(1, round(width * s)), max(1, round(height * s))

    @torch.inference_mode()
    def predict_ab(self, grey: np.ndarray) -> torch.Tensor:
        """Grey (H, W) (uint8, uint16 or float in [0, 1]) -> ab in Lab units at the network's resolution,
        (1, 2, h, w) float32 on self.device."""
        h, w = grey.shape
        nw, nh = self.net_size(w, h)
        l_small = _grey_to_l(_downscale(grey, (nw, nh)))[None, None].to(self.device)
        ab_n = self.model.decode(self.model(self.norm.l(l_small)), temperature=self.temperature,
                                 prior_correction=self.prior_correction)
        ab_n = F.interpolate(ab_n, size=(nh, nw), mode="bilinear", align_corners=False)
        return self.norm.ab_inv(ab_n).float()

    @torch.inference_mode()
    def _merge_rows(self, grey: np.ndarray, ab: torch.Tensor, y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 of the result: the original L with the upsampled ab -> RGB (y1 - y0, W, 3) uint8."""
        h, w = grey.shape
        L = _grey_to_l(grey[y0:y1]).to(self.device)[None, None]
        lab = torch.cat([L, _sample_rows(ab, y0, y1, h, w)], dim=1)
        luma, tol = _levels(grey[y0:y1])
        rgb = match_luma(lab_to_rgb(lab)[0], luma.to(self.device), tol)
        return rgb.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()

    def _strips(self, grey: np.ndarray, workers: int) -> Iterator[tuple[int, np.ndarray]]:
        """(y0, RGB rows from y0) covering the image, merged on `workers` threads."""
        h, w = grey.shape
        ab = self.predict_ab(grey)
        rows = max(1, STRIP_PIXELS // w)
        starts = range(0, h, rows)
        merged = ordered_map(lambda y0: self._merge_rows(grey, ab, y0, min(h, y0 + rows)), starts, workers)
        return zip(starts, merged)

    def colorize_grey(self, grey: np.ndarray, workers: int = 1) -> np.ndarray:
        """Grey (H, W) (float in [0, 1], or uint8 / uint16 levels) -> RGB (H, W, 3) uint8 at full resolution."""
        out = np.empty((*grey.shape, 3), dtype=np.uint8)
        for y0, rgb in self._strips(grey, workers):
            out[y0:y0 + len(rgb)] = rgb
        return out

    def colorize(self, image: Image.Image, workers: int = 1) -> Image.Image:
        """PIL image of any mode -> colorized PIL image of the same (upright) size, alpha kept."""
        return self.colorize_to_image(*grey_and_alpha(image), workers=workers)

    def colorize_to_image(self, grey: np.ndarray, alpha: Image.Image | None = None,
                          workers: int = 1) -> Image.Image:
        """Grey (H, W) as from grey_and_alpha, alpha (mode L) or None -> RGB or RGBA PIL image (W x H).

        The strips are pasted straight into the output image: no second full-size copy of the result.
        """
        out = Image.new("RGB" if alpha is None else "RGBA", (grey.shape[1], grey.shape[0]))
        for y0, rgb in self._strips(grey, workers):
            out.paste(Image.fromarray(rgb), (0, y0))
        if alpha is not None:
            out.putalpha(alpha)
        return out


# ---------------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


_SIGNATURES = [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF")]


def _why_unidentified(path: str) -> str:
    """PIL says only 'cannot identify image file'; for a file that starts like a known format, ask that
    format's reader what is wrong (a damaged header, a bad checksum, ...)."""
    with open(path, "rb") as f:
        head = f.read(16)
    fmt = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    if fmt is None:
        return "not an image file, or a format PIL cannot read"
    Image.init()
    try:
        with open(path, "rb") as f:
            Image.OPEN[fmt][0](f, path)
    except (SyntaxError, OSError, ValueError, IndexError, TypeError, EOFError, struct.error) as e:
        return f"damaged {fmt} file: {_first_line(e)}"
    return f"damaged {fmt} file"


def open_image(path: str, grey: bool = False, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (first frame of an animation); every problem becomes InputError.

    grey=True lets the JPEG decoder return only the luma plane (a third of the memory and faster), for
    callers that ignore colour, like the Colorizer. PNG checksums are verified (PIL skips those of the
    pixel data). Images above max_pixels are refused from their header, before decoding.
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder with no images")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
    try:
        if max_pixels:
            with Image.open(path) as im:  # the header only
                if im.width * im.height > max_pixels:
                    raise InputError(f"{path}: image too large ({im.width}x{im.height} = "
                                     f"{im.width * im.height / 1e6:.0f} Mpx; the limit is {max_pixels / 1e6:.0f} Mpx)")
                if im.format == "PNG":
                    im.verify()  # all chunk checksums; the file must then be opened again
        with Image.open(path) as im:  # leaving the block closes the file (animations keep it open)
            im.seek(0)
            if grey and im.format == "JPEG":
                im.draft("L", im.size)
            im.load()
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image too large for PIL's safety limit (Image.MAX_IMAGE_PIXELS)") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: cannot read image ({_why_unidentified(path)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot read image ({_first_line(e)})") from None
    return im


def output_path(src: str, output: str | None, many: bool, subfolder: str = "") -> str:
    """Where the result of src goes: Coloured_<name> beside it, into a folder (keeping the subfolder of
    a searched input folder), or the given file."""
    stem, ext = os.path.splitext(os.path.basename(src))
    if ext.lower() in (".gif",):  # palette formats would throw the colours away
        ext = ".png"
    coloured = f"Coloured_{stem}{ext}"
    if output is None:
        return os.path.join(os.path.dirname(src), coloured)
    if many or os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]:
        return os.path.join(output, subfolder, coloured)
    return output


def _prepare_folder(path: str) -> str:
    """Create the folder of an output file; a clear InputError if it cannot be."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        parent = folder
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        why = f"{parent} is a file, not a folder" if os.path.isfile(parent) else (e.strerror or str(e))
        raise InputError(f"{path}: cannot create output folder ({why})") from None
    return folder


def _write_atomic(path: str, write: Callable[[BinaryIO], None]) -> None:
    """utils.write_atomic, with its folder created first and failures as one InputError: no partial file."""
    _prepare_folder(path)
    try:
        write_atomic(path, write)
    except (OSError, ValueError, KeyError) as e:
        why = (e.strerror if isinstance(e, OSError) else None) or _first_line(e)
        raise InputError(f"{path}: cannot write ({why})") from None


def output_format(path: str) -> str:
    """PIL format name for an output file, from its extension."""
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise InputError(f"{path}: unknown output format {ext!r} (use .jpg, .png, .tif, .webp, ...)")
    return fmt


def save_image(im: Image.Image, path: str) -> None:
    """Write atomically (temporary file, then rename): a failure leaves no partial file."""
    fmt = output_format(path)
    if fmt in ("JPEG", "BMP") and im.mode == "RGBA":
        im = im.convert("RGB")  # these formats have no alpha
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 3}}.get(fmt, {})
    _write_atomic(path, lambda f: im.save(f, format=fmt, **options))


def mood(hist: list[int]) -> str:
    """From a 768-bin RGB histogram: the average colour and its lean, e.g. 'average colour RGB(121, 110, 96): warm'."""
    counts = np.asarray(hist[:768], dtype=np.float64).reshape(3, 256)
    r, g, b = (counts * np.arange(256)).sum(1) / max(1.0, counts[0].sum())
    lean = "warm" if r > b + 4 else "cool" if b > r + 4 else "neutral"
    if g > max(r, b) + 4:
        lean = "green"
    return f"average colour RGB({r:.0f}, {g:.0f}, {b:.0f}): {lean}"


def save_histogram(im: Image.Image, path: str) -> str:
    """Total, R, G and B histograms of a colorized image as a PNG; returns a one-line colour summary.

    PIL counts the levels (no per-pixel copy, so a huge image costs nothing extra); matplotlib only
    draws, through a Figure of its own (pyplot's global state is not safe to share between threads).
    """
    from matplotlib.figure import Figure

    hist = (im if im.mode in ("RGB", "RGBA") else im.convert("RGB")).histogram()
    r, g, b = (np.asarray(hist[i * 256:(i + 1) * 256]) for i in range(3))
    fig = Figure(figsize=(14, 3))
    axes = fig.subplots(1, 4)
    for ax, (title, counts, colour) in zip(axes, [("total", r + g + b, "black"), ("red", r, "red"),
                                                  ("green", g, "green"), ("blue", b, "blue")]):
        ax.stairs(counts, np.arange(257), color=colour, fill=True, alpha=0.8)
        ax.set_title(title), ax.set_xlim(0, 255), ax.set_yticks([])
    fig.suptitle(os.path.basename(path))
    fig.tight_layout()
    _write_atomic(path, lambda f: fig.savefig(f, dpi=80, format="png"))
    return mood(hist)


def find_inputs(items: list[str]) -> list[tuple[str, str]]:
    """(file, subfolder) pairs: files as given (subfolder ''); folders searched recursively for images,
    skipping our own Coloured_/Histo_ outputs and hidden files; subfolder is the path below the folder."""
    out = []
    for item in items:
        if not os.path.isdir(item):
            out.append((item, ""))
            continue
        found = []
        for dirpath, dirnames, files in os.walk(item):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, item)
            found += [(os.path.join(dirpath, f), "" if rel == "." else rel) for f in sorted(files)
                      if f.lower().endswith(INPUT_EXTENSIONS)
                      and not f.startswith(("Coloured_", "Histo_Coloured_", "."))]
        out += found if found else [(item, "")]  # an empty folder is reported as an error
    return out


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given; folders searched recursively for images (skipping our own Coloured_/Histo_ files)."""
    return [path for path, _ in find_inputs(items)]


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "t", "yes", "y", "1", "on"):
        return True
    if v.lower() in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def _positive(kind: type) -> Callable[[str], int | float]:
    def parse(v: str):
        x = kind(v)
        if not x > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {v!r}")
        return x
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-image", "--image", nargs="+", required=True, help="image files and/or folders (searched recursively)")
    p.add_argument("-model", "--model", default=DEFAULT_MODEL,
                   help="checkpoint file, or a name found as NAME.pt or in checkpoints/ (default: the shipped model)")
    p.add_argument("-output", "--output", help="output file (one input) or folder; default: Coloured_<name> beside each input")
    p.add_argument("-histo", "--histo", type=str2bool, nargs="?", const=True, default=False,
                   help="True/False: also write Histo_Coloured_<name>.png (total, R, G, B) and print the mood")
    p.add_argument("--size", type=_positive(int), help="short side of the copy the network sees (default: the checkpoint's)")
    p.add_argument("--temperature", type=_positive(float), help="classification models: annealed-mean T; lower is more vivid")
    p.add_argument("--prior-correction", type=float, help="classification models: 0 = as trained (rebalanced, vivid), 1 = calibrated (safer)")
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace its input")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0,
                   help="images (or strips of one image) worked on at once, one CPU thread each (0: one per core)")
    return p.parse_args(argv)


def resolve_model(path: str) -> str:
    """Accept the original project's style too: `-model trainedModel` finds trainedModel.pt or checkpoints/."""
    for cand in (path, path + ".pt", path + ".pth", os.path.join(HERE, "checkpoints", path),
                 os.path.join(HERE, "checkpoints", path + ".pt")):
        if os.path.isfile(cand):
            return cand
    return path


def _device_error(device: str) -> str | None:
    """Why --device cannot be used, or None."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device}: not a device (use cpu, cuda or cuda:N)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: no CUDA GPU is available here (use --device cpu)"
    return None


def _plan(inputs: list[tuple[str, str]], args: argparse.Namespace, many: bool) -> list[tuple[str, str | None, str | None]]:
    """(src, dst, error) for every input: refuses up front outputs that would replace their input, or
    that two inputs would both write."""
    plan, taken = [], {}
    for src, sub in inputs:
        dst = output_path(src, args.output, many, sub)
        error = None
        key = os.path.normcase(os.path.abspath(dst))
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst) and not args.overwrite:
            error = f"{src}: output would overwrite the input (use --overwrite to allow it)"
        elif key in taken:
            error = f"{src}: its output {dst} would also be written for {taken[key]}; skipped"
        else:
            taken[key] = src
        plan.append((src, dst, error))
    return plan


def colorize_file(colorizer: Colorizer, src: str, dst: str, histo: bool, workers: int = 1) -> str | None:
    """Colorize src into dst (and its histogram); returns the mood line with -histo. Raises InputError."""
    output_format(dst)  # an unknown output format fails before the work, not after
    grey, alpha = grey_and_alpha(open_image(src, grey=True))  # the decoded image is freed here
    out = colorizer.colorize_to_image(grey, alpha, workers=workers)
    del grey, alpha
    save_image(out, dst)
    if histo:
        stem = os.path.splitext(os.path.basename(dst))[0]
        summary = save_histogram(out, os.path.join(os.path.dirname(dst), f"Histo_{stem}.png"))
        return f"{os.path.basename(dst)}: {summary}"
    return None


def run(args: argparse.Namespace) -> int:
    """The CLI on parsed arguments; returns the exit status. Process-wide settings are restored after."""
    pil_limit, torch_threads = Image.MAX_IMAGE_PIXELS, torch.get_num_threads()
    # The CLI colorizes photos of any size: our own MAX_PIXELS check in open_image replaces PIL's
    # decompression-bomb limit (which would refuse a 12000x9000 photo), with a message naming the file.
    Image.MAX_IMAGE_PIXELS = None
    # Parallel work is done by our threads (several images, or the strips of one); torch's intra-op
    # OpenMP threads spin-wait and stall badly when the cores are shared with other jobs.
    torch.set_num_threads(1)
    try:
        return _run(args, workers=args.threads or len(os.sched_getaffinity(0)))
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
        torch.set_num_threads(torch_threads)


def _load_colorizer(args: argparse.Namespace) -> Colorizer:
    """The Colorizer the flags ask for; CheckpointError (one line) for a bad device or checkpoint."""
    device_error = _device_error(args.device)
    if device_error:
        raise CheckpointError(device_error)
    try:
        return Colorizer.from_checkpoint(resolve_model(args.model), device=args.device, size=args.size,
                                         temperature=args.temperature, prior_correction=args.prior_correction)
    except CheckpointError as e:
        if args.model == DEFAULT_MODEL and not os.path.exists(DEFAULT_MODEL):
            raise CheckpointError(f"{e} (train one with train.py, or pass -model CKPT)") from None
        raise


def _colorize_one(colorizer: Colorizer, item: tuple[str, str, str | None], histo: bool, workers: int
                  ) -> tuple[str | None, str | None]:
    """One planned (src, dst, error) -> (mood line or None, error message or None); never raises."""
    src, dst, error = item
    if error:
        return None, error
    try:
        return colorize_file(colorizer, src, dst, histo, workers=workers), None
    except InputError as e:
        return None, str(e)
    except (OSError, ValueError, RuntimeError, MemoryError) as e:  # unforeseen: still one line, batch goes on
        return None, f"{src}: {type(e).__name__}: {_first_line(e)}"


def _run(args: argparse.Namespace, workers: int) -> int:
    try:
        colorizer = _load_colorizer(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inputs = find_inputs(args.image)
    many = len(inputs) > 1 or any(os.path.isdir(i) for i in args.image)
    if many and args.output and os.path.isfile(args.output):
        print(f"error: {args.output}: is a file, but several inputs need an output folder", file=sys.stderr)
        return 2
    bar = None
    if len(inputs) > 1:
        from tqdm import tqdm
        bar = tqdm(total=len(inputs), desc="colorizing", unit="img")
    say = bar.write if bar else print
    # Several images: one per thread, each merged on that thread. One image: its strips share the threads.
    job = functools.partial(_colorize_one, colorizer, histo=args.histo, workers=1 if many else workers)
    failed = 0
    for summary, error in ordered_map(job, _plan(inputs, args, many), workers if many else 1):
        failed += error is not None
        if error:
            say(f"error: {error}", file=sys.stderr)
        elif summary:
            say(summary, file=sys.stdout)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    if failed and many:
        print(f"error: {failed} of {len(inputs)} image(s) could not be colorized", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
