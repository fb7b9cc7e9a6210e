"""image_io and the CLI around it, for the cases of issue 14: a PNG without pixel data, text that C
libraries print, Pillow's warnings, non-finite float TIFFs, inputs without an image extension, very
large images and --max-pixels, and signals mid-write.

The CLI runs in this process with capfd, which captures file descriptor 2 itself, so text printed by C
libraries (libtiff) is seen as a user would see it; warnings are recorded, since a user would see them.
"""
from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import image_io
import predict_color
import utils
from model import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """'tiny': random weights; 'grey': a zero head (ab = 0), so the output is the input's grey levels."""
    folder = tmp_path_factory.mktemp("image_io_models")
    out = {}
    for name in ("tiny", "grey"):
        torch.manual_seed(0)
        cfg = ModelConfig(width=8, depth=2)
        m = build_model(cfg)
        if name == "grey":
            torch.nn.init.zeros_(m.head.weight)
            torch.nn.init.zeros_(m.head.bias)
        out[name] = folder / f"{name}.pt"
        utils.save_checkpoint({"model": m.state_dict(), "model_config": cfg.to_dict(),
                               "train_config": {"crop_size": 32}}, str(out[name]))
    return out


def cli(capfd, *argv) -> tuple[int, str, list[str]]:
    """predict_color.main(argv) here: (exit status, everything on fd 2, warnings it let out)."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = predict_color.main([str(a) for a in argv])
    return code, capfd.readouterr().err, [str(w.message) for w in caught]


def error_lines(err: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", err) if line.startswith("error: ")]


def photo(w: int = 48, h: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 5 + y / 7)], -1) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_without_pixels(path: Path, *extra: bytes) -> Path:
    """IHDR, the extra chunks and IEND: a PNG with no IDAT."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 10, 8, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(extra) + png_chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------------
# 1. Anything Pillow raises is one line, on the single-file and the folder path alike
def test_png_without_pixel_data_is_one_line_and_the_folder_goes_on(tmp_path, models, capfd):
    photo(seed=1).save(tmp_path / "a.png")
    png_without_pixels(tmp_path / "b.png")
    png_without_pixels(tmp_path / "c.png", png_chunk(b"tEXt", b"Comment\0hello"))
    photo(seed=2).save(tmp_path / "d.png")
    code, err, caught = cli(capfd, "-image", tmp_path, "-model", models["tiny"])
    assert code == 1 and "Traceback" not in err and not caught
    assert sorted(p.name for p in tmp_path.glob("Coloured_*")) == ["Coloured_a.png", "Coloured_d.png"]
    errors = error_lines(err)
    assert len(errors) == 3, err
    for name, line in zip("bc", errors):
        assert line.startswith(f"error: {tmp_path / name}.png: cannot read image (damaged PNG file"), line
    assert errors[2] == "error: 2 of 4 image(s) could not be colorized"

    code, err, _ = cli(capfd, "-image", tmp_path / "b.png", "-model", models["tiny"])
    assert code == 1 and err.count("\n") == 1 and "damaged PNG file" in err


def test_a_reader_tripping_over_damaged_data_is_named(tmp_path):
    png_without_pixels(tmp_path / "x.png")
    with pytest.raises(image_io.InputError, match=r"x\.png: cannot read image \(damaged PNG file: its reader failed "
                                                  r"with IndexError"):
        image_io.read_grey(str(tmp_path / "x.png"))


# ---------------------------------------------------------------------------------------------------
# 4. What libtiff prints and what Pillow warns end up in our one line, or nowhere
def fax_compressed_8_bit_tiff(path: Path) -> Path:
    """An 8-bit TIFF whose compression tag says CCITT group 4 (a 1-bit-only fax code): libtiff complains."""
    buf = io.BytesIO()
    photo().convert("L").save(buf, format="TIFF", compression="raw")
    data = bytearray(buf.getvalue())
    at = data.find(struct.pack("<HHI", 259, 3, 1))
    data[at + 8:at + 10] = struct.pack("<H", 4)
    path.write_bytes(bytes(data))
    return path


def test_what_libtiff_prints_is_folded_into_the_one_line(tmp_path, models, capfd):
    src = fax_compressed_8_bit_tiff(tmp_path / "fax.tif")
    code, err, caught = cli(capfd, "-image", src, "-model", models["tiny"])
    assert code == 1 and not caught
    assert err.splitlines() == [f"error: {src}: cannot read image (TIFF decoder: Fax3SetupState: Bits/sample "
                                "must be 1 for Group 3/4 encoding/decoding)"]


def zero_frame_apng(path: Path) -> Path:
    frames = [photo().convert("L"), photo(seed=1).convert("L")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    data = bytearray(path.read_bytes())
    at = data.find(b"acTL")
    body = struct.pack(">II", 0, 0)
    data[at + 4:at + 16] = body + struct.pack(">I", zlib.crc32(b"acTL" + body))
    path.write_bytes(bytes(data))
    return path


def exif_with_bad_offset(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6
    photo().save(path, exif=exif)
    data = bytearray(path.read_bytes())
    at = data.find(b"Exif\0\0") + 6
    data[at + 4:at + 8] = struct.pack("<I" if data[at:at + 2] == b"II" else ">I", 0xFFFFFF)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make", [zero_frame_apng, exif_with_bad_offset])
def test_pillow_warnings_about_a_readable_file_are_not_shown(tmp_path, models, capfd, make):
    src = make(tmp_path / ("x.png" if make is zero_frame_apng else "x.jpg"))
    with warnings.catch_warnings(record=True) as pillow:  # the file does make Pillow warn
        warnings.simplefilter("always")
        Image.open(src).load()
        Image.open(src).getexif()
    assert pillow
    code, err, caught = cli(capfd, "-image", src, "-model", models["tiny"])
    assert (code, err, caught) == (0, "", [])
    assert (tmp_path / f"Coloured_x{src.suffix}").is_file()


# ---------------------------------------------------------------------------------------------------
# 5. Non-finite float pixels are missing data, not a reason for a black image
def test_finite_levels():
    a = np.array([[0.2, np.nan, 0.8], [np.inf, -np.inf, 0.5]], dtype=np.float32)
    assert np.array_equal(image_io.finite_levels(a), np.float32([[0.2, 0.0, 0.8], [0.8, 0.2, 0.5]]))
    assert np.array_equal(image_io.finite_levels(np.full((2, 2), np.nan, np.float32)), np.zeros((2, 2)))
    finite = np.ones((2, 2), np.float32)
    assert image_io.finite_levels(finite) is finite


def test_float_tiff_with_nan_and_inf_keeps_its_picture(tmp_path, models, capfd):
    levels = np.asarray(photo(64, 48).convert("L"), dtype=np.float32) / 255
    a = levels.copy()
    a[:12] = np.nan  # a band of missing data
    a[20, 10], a[30, 40] = np.inf, -np.inf
    Image.fromarray(a).save(tmp_path / "f.tif")
    code, err, _ = cli(capfd, "-image", tmp_path / "f.tif", "-model", models["grey"])
    assert code == 0 and err == ""
    grey = np.asarray(Image.open(tmp_path / "Coloured_f.tif").convert("L"), dtype=np.float32)
    finite = np.isfinite(a)
    assert np.abs(grey[finite] - 255 * levels[finite]).max() <= 1  # the picture, as it was
    assert grey[:12].max() == 0  # NaN: missing, black
    assert abs(grey[20, 10] - 255 * levels[finite].max()) <= 1 and abs(grey[30, 40] - 255 * levels[finite].min()) <= 1


# ---------------------------------------------------------------------------------------------------
# 3. Inputs named without an image extension
def test_a_photo_without_an_extension_is_written_as_png(tmp_path, models, capfd):
    photo().save(tmp_path / "scan", format="JPEG")
    code, err, _ = cli(capfd, "-image", tmp_path / "scan", "-model", models["tiny"])
    assert code == 0 and err == ""
    with Image.open(tmp_path / "Coloured_scan.png") as out:
        assert out.format == "PNG" and out.size == (48, 32)


@pytest.mark.parametrize("name, data, why", [("notes.txt", b"shopping: milk, eggs\n", "(a text file)"),
                                             ("photos.zip", b"PK\x03\x04" + bytes(40), "(a ZIP archive)")])
def test_a_non_image_given_by_name_is_refused_for_what_it_is(tmp_path, models, capfd, name, data, why):
    (tmp_path / name).write_bytes(data)
    code, err, _ = cli(capfd, "-image", tmp_path / name, "-model", models["tiny"])
    assert code == 1
    assert err.splitlines() == [f"error: {tmp_path / name}: cannot read image (not an image file {why})"]
    assert not list(tmp_path.glob("Coloured_*"))


# ---------------------------------------------------------------------------------------------------
# 6. Very large images: said before the long work starts, and the limit is a flag
def test_max_pixels_flag(tmp_path, models, capfd):
    photo(64, 48).save(tmp_path / "x.png")
    code, err, _ = cli(capfd, "-image", tmp_path / "x.png", "-model", models["tiny"], "--max-pixels", "3e3")
    assert code == 1 and err.splitlines() == [f"error: {tmp_path / 'x.png'}: image too large (64x48 = 0.00307 Mpx; "
                                              "the limit is 0.003 Mpx, see --max-pixels)"]
    code, err, _ = cli(capfd, "-image", tmp_path / "x.png", "-model", models["tiny"], "--max-pixels", "0")
    assert code == 0 and err == "" and (tmp_path / "Coloured_x.png").is_file()
    with pytest.raises(SystemExit) as e:
        predict_color.main(["-image", str(tmp_path / "x.png"), "--max-pixels", "lots"])
    assert e.value.code == 2 and "expected a number of pixels" in capfd.readouterr().err


def test_a_large_image_is_announced_before_it_is_decoded(tmp_path, models, capfd, monkeypatch):
    monkeypatch.setattr(image_io, "LARGE_PIXELS", 1000)
    photo(64, 48).save(tmp_path / "x.png")
    photo(20, 10).save(tmp_path / "y.png")
    code, err, _ = cli(capfd, "-image", tmp_path / "x.png", tmp_path / "y.png", "-model", models["tiny"])
    notes = [line for line in re.split(r"[\r\n]", err) if line.startswith("note: ")]
    assert code == 0 and len(notes) == 1, err
    assert notes[0].startswith(f"note: {tmp_path / 'x.png'}: 64x48 pixels (0.00307 Mpx, from a ") and "GB of memory" in notes[0]
    assert (tmp_path / "Coloured_x.png").is_file() and (tmp_path / "Coloured_y.png").is_file()


# ---------------------------------------------------------------------------------------------------
# 2. A signal mid-write leaves no temporary file (in the main thread and in a worker)
SIGNAL_CHILD = """
import os, signal, sys, time
from PIL import Image
import predict_color

save = Image.Image.save
def save_then_signal(self, fp, *args, **kw):  # the output is in its temporary file now
    save(self, fp, *args, **kw)
    print("written:", sorted(f for f in os.listdir(os.environ["OUT"]) if f.startswith(".tmp_")), flush=True)
    os.kill(os.getpid(), signal.{name})
    time.sleep(60)  # a worker thread waits here while the main thread's handler ends the process
Image.Image.save = save_then_signal
sys.exit(predict_color.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name, several", [("SIGTERM", True), ("SIGINT", False)])
def test_a_signal_while_writing_leaves_no_temporary_file(tmp_path, models, name, several):
    """SIGTERM during a folder run (the writes happen on worker threads), SIGINT during a single image
    (on the main thread): the process ends by that signal, with no partial file left behind."""
    out = tmp_path / "out"
    for i in range(2 if several else 1):
        photo(seed=i).save(tmp_path / f"p{i}.png")
    inputs = [tmp_path] if several else [tmp_path / "p0.png"]
    argv = ["-image", *inputs, "-output", out / ("" if several else "c.png"), "-model", models["tiny"], "--threads", "2"]
    r = subprocess.run([sys.executable, "-c", SIGNAL_CHILD.format(name=name), *map(str, argv)], cwd=REPO,
                       env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=300)
    signum = getattr(signal, name)
    assert r.returncode == -signum, (r.returncode, r.stderr)
    assert re.search(r"'\.tmp_\w+\.png'", r.stdout), r.stdout  # the test did catch a write mid-way
    assert f"interrupted ({name})" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == []


def test_the_cli_restores_the_signal_handlers(tmp_path, models, capfd):
    photo().save(tmp_path / "x.png")
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    assert cli(capfd, "-image", tmp_path / "x.png", "-model", models["tiny"])[0] == 0
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == before
