"""A seeded fuzz run of the CLI's folder path: damaged, odd and hostile files, and the promise that every
one of them gets its output or exactly one error line naming it, with no traceback, no other stderr
text (C libraries and Pillow warnings included), no temporary file left and a non-zero exit at the end.

The corpus: small photos in every format the CLI reads, each mutated (byte flips, truncation, a zeroed
tail, a duplicated chunk or slice), plus hand-made cases (PNGs without pixel data, decompression bombs,
fax-compressed 8-bit TIFFs, non-finite float TIFFs, odd EXIF, a 0-frame APNG, swapped extensions,
non-images). The fast test makes ~50 files from synthetic photos; the slow one ~300 from Kodak photos.
The CLI runs in a child process, as a user runs it, so that text C libraries print to fd 2 is seen.
"""
from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict_color
import utils
from model import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "bench" / "kodak"
FORMATS = {".png": {}, ".jpg": {"quality": 90}, ".gif": {}, ".bmp": {}, ".tif": {"compression": "tiff_lzw"},
           ".webp": {"quality": 80}}
MAX_PIXELS = 4_000_000  # the run's --max-pixels: the bombs below are refused from their header, quickly


# ---------------------------------------------------------------------------------------------------
# The corpus: (name, bytes, expected) with expected "ok", "error" or None (either is fine)
def encode(im: Image.Image, ext: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=Image.registered_extensions()[ext], **{**FORMATS.get(ext, {}), **kw})
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each as its raw bytes (length, type, body, CRC); the signature left out."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        end = pos + 12 + struct.unpack(">I", data[pos:pos + 4])[0]
        out.append(data[pos:end])
        pos = end
    return out


def ihdr(w: int, h: int, bits: int = 8, colour: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def flip_bytes(rng, data: bytes) -> bytes:
    b = bytearray(data)
    for at in rng.integers(0, len(b), rng.integers(1, 9)):
        b[at] ^= int(rng.integers(1, 256))
    return bytes(b)


def truncate(rng, data: bytes) -> bytes:
    return data[:rng.integers(1, len(data))]


def zero_tail(rng, data: bytes) -> bytes:
    cut = int(rng.integers(len(data) // 4, len(data)))
    return data[:cut] + bytes(len(data) - cut)


def duplicate(rng, data: bytes) -> bytes:
    """A PNG gets one of its chunks twice in a row; other files a slice of their bytes."""
    if data.startswith(PNG_SIGNATURE):
        chunks = png_chunks(data)
        i = int(rng.integers(0, len(chunks)))
        return PNG_SIGNATURE + b"".join(chunks[:i + 1] + chunks[i:])
    a = int(rng.integers(0, len(data) - 1))
    b = int(rng.integers(a + 1, min(len(data), a + 256) + 1))
    return data[:b] + data[a:b] + data[b:]


MUTATIONS = [flip_bytes, truncate, zero_tail, duplicate]


def tiff_compression(im: Image.Image, code: int) -> bytes:
    """An uncompressed 8-bit TIFF whose compression tag claims `code` (3, 4: CCITT fax, 1-bit only)."""
    data = bytearray(encode(im.convert("L"), ".tif", compression="raw"))
    at = data.find(struct.pack("<HHI", 259, 3, 1))
    data[at + 8:at + 10] = struct.pack("<H", code)
    return bytes(data)


def jpeg_declaring(im: Image.Image, w: int, h: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims w x h."""
    data = bytearray(encode(im, ".jpg"))
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def one_bit_bomb(w: int, h: int) -> bytes:
    """A real 1-bit PNG of w x h white pixels: a few tens of KB that decode to w*h bytes."""
    rows = zlib.compressobj(9)
    row = b"\0" + b"\xff" * ((w + 7) // 8)
    body = b"".join(rows.compress(row * 1000) for _ in range(h // 1000)) + rows.compress(row * (h % 1000))
    return PNG_SIGNATURE + ihdr(w, h, 1, 0) + png_chunk(b"IDAT", body + rows.flush()) + png_chunk(b"IEND", b"")


def with_exif(im: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, ".jpg", exif=exif)


def exif_bad_offset(im: Image.Image) -> bytes:
    data = bytearray(with_exif(im, 6))
    at = data.find(b"Exif\0\0") + 6
    data[at + 4:at + 8] = struct.pack("<I" if data[at:at + 2] == b"II" else ">I", 0xFFFFFF)
    return bytes(data)


def apng_zero_frames(im: Image.Image) -> bytes:
    frames = [im.convert("L"), im.convert("L").rotate(180)]
    data = bytearray(encode(frames[0], ".png", save_all=True, append_images=frames[1:]))
    at = data.find(b"acTL")
    body = struct.pack(">II", 0, 0)
    data[at + 4:at + 16] = body + struct.pack(">I", zlib.crc32(b"acTL" + body))
    return bytes(data)


def float_tiff(im: Image.Image) -> bytes:
    a = np.asarray(im.convert("L"), dtype=np.float32) / 255
    a[: a.shape[0] // 4] = np.nan
    a[-1, :] = np.inf
    a[:, -1] = -np.inf
    return encode(Image.fromarray(a), ".tif", compression="raw")


def zip_file() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", b"not really")
    return buf.getvalue()


def special_cases(im: Image.Image, rng) -> list[tuple[str, bytes, str | None]]:
    """The hand-made cases, from one photo."""
    png = encode(im, ".png")
    ok = [("swapped_png.jpg", png), ("swapped_jpg.tif", encode(im, ".jpg")), ("swapped_gif.bmp", encode(im, ".gif")),
          ("sixteen_bit.png", encode(Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257), ".png")),
          ("rgba.png", encode(im.convert("RGBA"), ".png")), ("apng_zero_frames.png", apng_zero_frames(im)),
          ("float_nan_inf.tif", float_tiff(im)), ("exif_bad_offset.jpg", exif_bad_offset(im))]
    ok += [(f"exif_orientation_{o}.jpg", with_exif(im, o)) for o in (0, 9, 65535)]
    error = [("no_idat.png", PNG_SIGNATURE + ihdr(*im.size) + png_chunk(b"IEND", b"")),
             ("no_idat_text.png", PNG_SIGNATURE + ihdr(*im.size) + png_chunk(b"tEXt", b"k\0v") + png_chunk(b"IEND", b"")),
             ("header_only_16000.png", PNG_SIGNATURE + ihdr(16000, 16000) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
              + png_chunk(b"IEND", b"")),
             ("bomb_1bit_17000.png", one_bit_bomb(17000, 17000)), ("bomb_16000.jpg", jpeg_declaring(im, 16000, 16000)),
             ("fax3_8bit.tif", tiff_compression(im, 3)), ("fax4_8bit.tif", tiff_compression(im, 4)),
             ("text.png", b"just some notes\n"), ("archive.jpg", zip_file()), ("empty.png", b""),
             ("random.tif", rng.bytes(3000)), ("html.gif", b"<!doctype html><title>404</title>\n"),
             ("signature_only.png", PNG_SIGNATURE), ("jpeg_markers_only.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\0\xff\xd9")]
    return [(n, d, "ok") for n, d in ok] + [(n, d, "error") for n, d in error]


def corpus(photos: list[Image.Image], seed: int) -> list[tuple[str, bytes, str | None]]:
    """Every photo in every format, each with one random mutation per kind, and the special cases."""
    rng = np.random.default_rng(seed)
    files = special_cases(photos[0], rng)
    for i, im in enumerate(photos):
        for ext in FORMATS:
            data = encode(im, ext)
            files += [(f"p{i:02d}_{mutate.__name__}{ext}", mutate(rng, data), None) for mutate in MUTATIONS]
    return [(f"{k:03d}_{name}", data, expected) for k, (name, data, expected) in enumerate(files)]


def synthetic_photo(rng, w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 5 + y / 7)], -1) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------------
# The run and the promise
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(width=8, depth=2)
    path = tmp_path_factory.mktemp("fuzz_model") / "tiny.pt"
    utils.save_checkpoint({"model": build_model(cfg).state_dict(), "model_config": cfg.to_dict(),
                           "train_config": {"crop_size": 32}}, str(path))
    return path


def fuzz_folder(folder: Path, files: list[tuple[str, bytes, str | None]], model: Path) -> int:
    """Write the corpus, colorize the folder into folder/out, check the promise for every file; returns
    how many were refused."""
    src = folder / "in"
    src.mkdir()
    for name, data, _ in files:
        (src / name).write_bytes(data)
    out = folder / "out"
    argv = ["-image", src, "-output", out, "-model", model, "--max-pixels", MAX_PIXELS, "--threads", 2]
    r = subprocess.run([sys.executable, str(REPO / "predict_color.py"), *map(str, argv)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [s.strip() for s in re.split(r"[\r\n]", r.stderr) if s.strip()]
    errors = [s for s in lines if s.startswith("error: ")]
    other = [s for s in lines if not s.startswith(("error: ", "colorizing"))]  # tqdm's bar: "colorizing: ..."
    assert not other, other  # nothing from libtiff, no warning
    failed = 0
    for name, _, expected in files:
        path = src / name
        dst = Path(predict_color.output_path(str(path), str(out), True))
        naming = [s for s in errors if s.startswith(f"error: {path}: ")]
        assert len(naming) == (0 if dst.exists() else 1), (name, naming)
        assert expected is None or expected == ("ok" if dst.exists() else "error"), (name, naming)
        failed += not dst.exists()
        if dst.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's, about the damaged inputs the CLI read quietly
                with Image.open(dst) as res, Image.open(path) as im:
                    assert sorted(res.size) == sorted(im.size), name  # full resolution (EXIF may turn it)
    assert errors[-1] == f"error: {failed} of {len(files)} image(s) could not be colorized"
    assert len(errors) == failed + 1
    assert not [p for p in folder.rglob(".tmp_*")]
    return failed


def test_fuzzed_folder_one_result_or_one_line_each(tmp_path, tiny_model):
    rng = np.random.default_rng(14)
    photos = [synthetic_photo(rng, 48, 32), synthetic_photo(rng, 40, 56)]
    files = corpus(photos, seed=14)
    assert len(files) >= 40
    failed = fuzz_folder(tmp_path, files, tiny_model)
    assert 20 <= failed < len(files)  # the corpus exercises both outcomes


@pytest.mark.slow
def test_fuzzed_kodak_corpus(tmp_path, tiny_model):
    """~300 files from 12 Kodak photos (downscaled to 192x128 / 128x192): the larger corpus of issue 14."""
    if not KODAK.is_dir():
        pytest.skip(f"{KODAK} not found")
    photos = []
    for p in sorted(KODAK.glob("*.png"))[:12]:
        with Image.open(p) as im:
            photos.append(im.convert("RGB").resize((192, 128) if im.width > im.height else (128, 192)))
    files = corpus(photos, seed=340)
    assert len(files) >= 300
    fuzz_folder(tmp_path, files, tiny_model)
