"""Reading and writing the CLI's images: any file -> grey levels (+ alpha), and results -> files, atomically.

Every problem with an input becomes one InputError whose message names the file and says what is wrong.
Damaged files make Pillow and its plugins raise almost anything (OSError, SyntaxError, IndexError,
struct.error, ...), warn (UserWarning) and let C libraries such as libtiff print to the process's stderr,
so all decoding goes through one guard, _guarded: it turns any exception into InputError and folds
the C libraries' text into that one line. Warnings and file descriptor 2 are process-wide state, so
decodes hold a lock (STDERR_LOCK) while they are redirected; the colorizing itself still runs in parallel.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import ExifTags, Image

from files import IMAGE_EXTENSIONS, write_atomic

INPUT_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)  # a GIF is read as its first frame
# Our own limit on image size, checked from the header before anything is decoded (the CLI's
# --max-pixels). PIL's default (a warning above 89 Mpx, an error above 179 Mpx) would stop a 12000x9000
# (108 Mpx) photo; the CLI switches PIL's check off and applies this one, with a clear message, instead.
MAX_PIXELS = 300_000_000
# Above this many pixels the CLI says how large an image is before the long decode starts: a 30 KB
# file can declare 16000x16000 pixels, about a minute and 2 GB of work.
LARGE_PIXELS = 50_000_000
# A CLI run's peak memory, roughly: torch and the model, plus so much a pixel (measured with the shipped
# model: 0.73 GB for a tiny image, 0.88 GB at 25 Mpx; 1.3 GB at 108 Mpx and 2.2 GB at 256 Mpx reported).
BASE_BYTES, BYTES_PER_PIXEL = 0.7e9, 6
COPY_PIXELS = 2 ** 19  # pixels copied from PIL to numpy at a time
# Held while a decode has file descriptor 2 redirected (and warnings caught); hold it to print to stderr
# while other threads may be reading images, or the line would land in their capture.
STDERR_LOCK = threading.RLock()

# EXIF orientation -> the transpose that makes the image upright (as PIL.ImageOps.exif_transpose does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class InputError(Exception):
    """An input that cannot be colorized or an output that cannot be written; the message names the file
    and the problem."""


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
    rows = max(1, COPY_PIXELS // max(1, im.width))
    for y0 in range(0, im.height, rows):
        out[y0:y0 + rows] = np.asarray(im.crop((0, y0, im.width, min(im.height, y0 + rows))))
    return out


def finite_levels(a: np.ndarray) -> np.ndarray:
    """Float pixels with their non-finite values treated as missing data (float TIFFs use NaN for "no
    data" and +-inf for saturation): NaN -> 0 (black), +inf / -inf -> the largest / smallest finite value,
    so that they neither poison the result nor set its range. Finite input is returned as it is."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    finite = a[~bad]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    return np.nan_to_num(a, nan=0.0, posinf=hi, neginf=lo)


def _grey_image(im: Image.Image) -> Image.Image:
    """Any PIL image -> its grey levels as a PIL image: L (8 bit), I;16 (16 bit) or F (in [0, 1])."""
    if im.mode in ("L", "I;16", "I;16L", "I;16B", "I;16N"):
        return im
    if im.mode in ("I", "F"):  # 32-bit TIFFs and the like: guess the range from the values
        a = finite_levels(np.asarray(im, dtype=np.float32))
        peak = a.max(initial=0.0)
        scale = 1.0 if im.mode == "F" and peak <= 1 else 255.0 if peak <= 255 else 65535.0
        return Image.fromarray(np.clip(a / scale, 0, 1).astype(np.float32))
    return im.convert("L")  # RGB, CMYK, YCbCr, P, LA, ...: ITU-R 601 luma; the colours are ignored


def grey_and_alpha(im: Image.Image) -> tuple[np.ndarray, Image.Image | None]:
    """Any PIL image -> (grey levels (H, W), alpha (PIL mode L) or None), both upright (EXIF applied).

    grey: uint8 in [0, 255] for 8-bit images, uint16 in [0, 65535] for 16-bit ones, float32 in [0, 1]
    for 32-bit ones (non-finite values as in finite_levels). An RGB image gives exactly the grey of its
    convert("L").
    """
    turn = _upright(im)
    alpha = None
    if im.has_transparency_data:
        alpha = (im if im.mode in ("RGBA", "LA", "PA") else im.convert("RGBA")).getchannel("A")
        alpha = alpha.transpose(turn) if turn is not None else alpha
    grey = _grey_image(im)
    grey = grey.transpose(turn) if turn is not None else grey
    return _to_array(grey), alpha


# ---------------------------------------------------------------------------------------------------
# Reading: every problem becomes one InputError
def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


# (offset, bytes, name): image formats, then other common files a user might pass by mistake.
_SIGNATURES = [(0, b"\x89PNG\r\n\x1a\n", "PNG"), (0, b"\xff\xd8\xff", "JPEG"), (0, b"GIF8", "GIF"),
               (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (8, b"WEBP", "WEBP")]
_OTHER_FILES = [(0, b"PK\x03\x04", "a ZIP archive"), (0, b"%PDF", "a PDF document"),
                (0, b"\x1f\x8b", "gzip-compressed data"), (0, b"\x7fELF", "a program")]


def _sniff(head: bytes, table: list[tuple[int, bytes, str]]) -> str | None:
    return next((name for at, sig, name in table if head[at:at + len(sig)] == sig), None)


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(512)


# What Pillow raises for a file it understands to be damaged, with a message meant for people; anything
# else (IndexError, struct.error, ...) is a format's reader tripping over damaged data.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def _describe(e: Exception) -> str:
    if isinstance(e, _PILLOW_ERRORS):
        return first_line(e)
    return f"its reader failed with {type(e).__name__}: {first_line(e)}"


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 text (perhaps cut inside its last character) of printable characters and white space."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return False
        text = head[:e.start].decode("utf-8")
    return all(c.isprintable() or c.isspace() for c in text)


def _why_unidentified(path: str) -> str:
    """PIL says only 'cannot identify image file'; say what the file is instead, and for a file that
    starts like a known image format, ask that format's reader what is wrong with it."""
    head = _head(path)
    fmt = _sniff(head, _SIGNATURES)
    if fmt is None:
        kind = _sniff(head, _OTHER_FILES)
        if kind is None and _looks_like_text(head):
            kind = "a text file"
        return f"not an image file ({kind})" if kind else "not an image file, or a format PIL cannot read"
    Image.init()
    try:
        with open(path, "rb") as f:
            Image.OPEN[fmt][0](f, path)
    except Exception as e:  # as in _guarded: the plugins raise many types for damaged headers
        return f"damaged {fmt} file: {_describe(e)}"
    return f"damaged {fmt} file"


def _chatter_line(text: str) -> str:
    """The line that says most of what a C library printed: its last error, else its last warning."""
    # libtiff starts some lines with the file's name, which for Pillow is always "tempfile.tif"
    lines = [line.strip().removeprefix("tempfile.tif: ").rstrip(".") for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "warning" not in line.lower()]
    return (errors or lines or [""])[-1][:200]


def _reason(path: str, e: Exception, chatter: str) -> str:
    """One clause saying why path could not be read, from the exception and what C libraries printed."""
    if isinstance(e, Image.DecompressionBombError):
        return "image too large for PIL's safety limit (Image.MAX_IMAGE_PIXELS)"
    if isinstance(e, MemoryError):
        return "not enough memory to decode it"
    if isinstance(e, Image.UnidentifiedImageError):
        return f"cannot read image ({_why_unidentified(path)})"
    fmt = _sniff(_head(path), _SIGNATURES)
    if chatter:  # e.g. libtiff's "Fax3SetupState: Bits/sample must be 1 ..." says more than "decoder error -2"
        why = f"{fmt or 'image'} decoder: {_chatter_line(chatter)}"
    else:
        why = _describe(e) if isinstance(e, _PILLOW_ERRORS) else f"damaged {fmt or 'image'} file: {_describe(e)}"
    return f"cannot read image ({why})"


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """For the block, file descriptor 2 (where C libraries print) goes to a temporary file; yields a
    function that returns what was written there. Without a usable fd 2, nothing is redirected."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no sys.stderr, or no fd 2
        yield lambda: ""
        return
    try:
        with tempfile.TemporaryFile() as f:
            os.dup2(f.fileno(), 2)

            def text() -> str:
                f.seek(0)
                return f.read().decode(errors="replace")
            yield text
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _guarded(path: str, read: Callable[[], object]) -> object:
    """read() with every failure as one InputError naming path; the one place where decoding is guarded.

    Pillow's warnings (a malformed APNG, EXIF with a bad offset, ...) and anything a C library prints
    while read() runs are about this file: folded into the message if read() fails, dropped if it works
    (they concern metadata we do not use), so a bad file costs exactly one line on stderr.
    """
    with STDERR_LOCK, _stderr_captured() as chatter, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")  # recorded into catch_warnings' list, never shown
        try:
            return read()
        except InputError:
            raise
        except Exception as e:  # Pillow's plugins raise nearly any type on damaged data
            problem = _reason(path, e, chatter())
    raise InputError(f"{path}: {problem}")


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder with no images")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")


def _mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.3g} Mpx"


def _header(path: str, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) from the header, with PNG chunk checksums verified (PIL skips those of the pixel
    data) and images above max_pixels refused before anything is decoded."""
    with Image.open(path) as im:
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise InputError(f"{path}: image too large ({w}x{h} = {_mpx(w * h)}; the limit is "
                             f"{_mpx(max_pixels)}, see --max-pixels)")
        if im.format == "PNG":
            im.verify()  # the file must then be opened again
    return w, h


def _decode(path: str, grey: bool) -> Image.Image:
    """The first frame, fully decoded; grey=True lets a JPEG decode only its luma plane."""
    with Image.open(path) as im:  # leaving the block closes the file (animations keep it open)
        im.seek(0)
        if grey and im.format == "JPEG":
            im.draft("L", im.size)
        im.load()
    return im


def open_image(path: str, grey: bool = False, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (first frame of an animation); every problem becomes InputError.

    grey=True lets the JPEG decoder return only the luma plane (a third of the memory and faster), for
    callers that ignore colour, like the Colorizer. Images above max_pixels are refused from their header.
    """
    _check_file(path)
    _guarded(path, lambda: _header(path, max_pixels))
    return _guarded(path, lambda: _decode(path, grey))


def read_grey(path: str, max_pixels: int | None = MAX_PIXELS, notify: Callable[[str], None] | None = None
              ) -> tuple[np.ndarray, Image.Image | None]:
    """A file -> grey_and_alpha of its (upright) first frame; every problem becomes InputError.

    Above LARGE_PIXELS, notify (e.g. print) gets one line saying how large the image is, before the
    long decode starts. The decoded image is freed before returning: only the grey levels are kept.
    """
    _check_file(path)
    w, h = _guarded(path, lambda: _header(path, max_pixels))
    if notify and w * h > LARGE_PIXELS:
        notify(f"{path}: {w}x{h} pixels ({_mpx(w * h)}, from a {os.path.getsize(path) / 1e3:,.0f} KB file): "
               f"this one takes a while and about {(BASE_BYTES + w * h * BYTES_PER_PIXEL) / 1e9:.1f} GB of memory")
    return _guarded(path, lambda: grey_and_alpha(_decode(path, grey=True)))


# ---------------------------------------------------------------------------------------------------
# Writing: atomically (temporary file, then rename), so a failure or a signal leaves no partial file
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


def write_file(path: str, write: Callable[[BinaryIO], None]) -> None:
    """utils.write_atomic, with its folder created first and failures as one InputError: no partial file
    (also on SIGINT / SIGTERM under utils.remove_temporaries_on_signals)."""
    _prepare_folder(path)
    try:
        write_atomic(path, write)
    except (OSError, ValueError, KeyError) as e:
        why = (e.strerror if isinstance(e, OSError) else None) or first_line(e)
        raise InputError(f"{path}: cannot write ({why})") from None


def format_for_extension(ext: str) -> str | None:
    """The PIL format that writes files with this extension ('.jpg' -> 'JPEG'), or None."""
    fmt = Image.registered_extensions().get(ext.lower())
    return fmt if fmt in Image.SAVE else None


def output_format(path: str) -> str:
    """PIL format name for an output file, from its extension."""
    ext = os.path.splitext(path)[1]
    fmt = format_for_extension(ext)
    if fmt is None:
        raise InputError(f"{path}: unknown output format {ext.lower()!r} (use .jpg, .png, .tif, .webp, ...)")
    return fmt


def save_image(im: Image.Image, path: str) -> None:
    """Write atomically (temporary file, then rename): a failure leaves no partial file."""
    fmt = output_format(path)
    if fmt in ("JPEG", "BMP") and im.mode == "RGBA":
        im = im.convert("RGB")  # these formats have no alpha
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 3}}.get(fmt, {})
    write_file(path, lambda f: im.save(f, format=fmt, **options))


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
    write_file(path, lambda f: fig.savefig(f, dpi=80, format="png"))
    return mood(hist)
