"""predict_color.py: the CLI forms, every common input mode, errors a user can act on, checkpoint safety,
full resolution, memory on a huge photo and speed.

Most CLI tests call predict_color.main() in this process (a few seconds saved per test); warnings are
recorded there, since a user would see them on stderr. A few run the script in a subprocess, as a user
does, to check the real stderr (no traceback) and the cost of the imports.
The checkpoints are tiny and untrained: "grey" predicts ab = 0 exactly (its head is zero), so its output
must reproduce the input's grey levels, which pins down how every image mode is read.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import colorizer
import predict_color
import utils
from model import ModelConfig, build_model
from utils import CheckpointError

REPO = Path(__file__).resolve().parents[1]
PREDICT = REPO / "predict_color.py"


# ---------------------------------------------------------------------------------------------------
# Checkpoints and images
def save_model(path: Path, cfg: ModelConfig, seed: int = 0, zero_head: bool = False, crop_size: int = 32,
               **extra) -> Path:
    torch.manual_seed(seed)
    m = build_model(cfg)
    if cfg.head == "classification":
        centers = utils.grid_centers()
        keep = torch.randperm(len(centers))[: cfg.num_bins].sort().values
        m.bins.copy_(centers[keep])
        m.log_weights.copy_(torch.randn(cfg.num_bins) * 0.3)
    if zero_head:
        torch.nn.init.zeros_(m.head.weight)
        torch.nn.init.zeros_(m.head.bias)
    utils.save_checkpoint({"model": m.state_dict(), "model_config": cfg.to_dict(),
                           "train_config": {"crop_size": crop_size}, **extra}, str(path))
    return path


@dataclass
class Ckpts:
    tiny: Path      # regression, random weights: colourful output
    grey: Path      # regression, zero head: ab = 0, output = input grey
    cls: Path       # classification head with Q filled bins
    default: Path   # ModelConfig() (width 32, depth 4), the shipped size, untrained


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Ckpts:
    d = tmp_path_factory.mktemp("ckpts")
    small = dict(width=8, depth=2)
    return Ckpts(
        tiny=save_model(d / "tiny.pt", ModelConfig(**small)),
        grey=save_model(d / "grey.pt", ModelConfig(**small), zero_head=True),
        cls=save_model(d / "cls.pt", ModelConfig(**small, head="classification", num_bins=40), seed=1),
        default=save_model(d / "default.pt", ModelConfig(), crop_size=96),  # as the shipped run: size 120
    )


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A colourful RGB test image: gradients, a disc and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / max(w, 1), 255 * y / max(h, 1), 128 + 100 * np.sin(x / 5 + y / 7)], -1)
    img[(y - h / 2) ** 2 + (x - w / 3) ** 2 < (min(w, h) / 4) ** 2] = (250, 40, 30)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def grey_photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return photo(w, h, seed).convert("L")


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int32)


def png_with_bad_crc(path: Path, chunk: bytes) -> Path:
    """A valid PNG whose `chunk` (b"IHDR" or b"IDAT") has its CRC flipped."""
    grey_photo(20, 10).save(path)
    data = bytearray(path.read_bytes())
    pos = data.index(chunk) - 4
    length = struct.unpack(">I", data[pos:pos + 4])[0]
    crc_at = pos + 8 + length
    data[crc_at:crc_at + 4] = bytes(b ^ 0xFF for b in data[crc_at:crc_at + 4])
    path.write_bytes(bytes(data))
    return path


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels (no real pixel data: only the header is ever read)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def leftovers(folder: Path) -> list[str]:
    """Outputs or temporary files anywhere below folder."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(("Coloured_", "Histo_", ".tmp_")))


# ---------------------------------------------------------------------------------------------------
# Running the CLI
@dataclass
class Result:
    code: int
    out: str
    err: str
    warnings: list[str]


def cli(capsys, *argv) -> Result:
    """predict_color.main(argv) in this process; stdout, stderr and any warnings it raised."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = predict_color.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return Result(code, out, err, [f"{w.category.__name__}: {w.message}" for w in caught])


def script(*argv, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """python predict_color.py argv, as a user runs it."""
    return subprocess.run([sys.executable, str(PREDICT), *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_error(r, name: str, *words: str, code: int | None = None) -> str:
    """One line on stderr naming the file and the problem, a non-zero exit, no traceback or warning."""
    err = r.err if isinstance(r, Result) else r.stderr
    rc = r.code if isinstance(r, Result) else r.returncode
    lines = err.strip().splitlines()
    assert rc != 0 and (code is None or rc == code), (rc, err)
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert name in lines[0], lines[0]
    for w in words:
        assert w in lines[0].lower(), lines[0]
    if isinstance(r, Result):
        assert not r.warnings, r.warnings
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# CLI forms
def test_cli_script_writes_coloured_file_beside_input_at_full_resolution(tmp_path, ckpts):
    grey_photo(37, 53).convert("RGB").save(tmp_path / "x.jpg")
    r = script("-image", "x.jpg", "-model", ckpts.tiny, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    with Image.open(tmp_path / "Coloured_x.jpg") as out:
        assert out.size == (37, 53) and out.mode == "RGB"
    assert leftovers(tmp_path) == ["Coloured_x.jpg"]


def test_cli_script_long_flags_and_histogram(tmp_path, ckpts):
    photo(40, 30).save(tmp_path / "x.png")
    r = script("--image", "x.png", "--model", ckpts.tiny, "--histo", "True", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"Coloured_x\.png: average colour RGB\(\d+, \d+, \d+\): (warm|cool|neutral|green)\n",
                        r.stdout), r.stdout
    with Image.open(tmp_path / "Histo_Coloured_x.png") as h:
        assert h.format == "PNG" and h.width > 400
    assert leftovers(tmp_path) == ["Coloured_x.png", "Histo_Coloured_x.png"]


@pytest.mark.parametrize("flags, histo", [([], False), (["-histo", "False"], False), (["-histo", "false"], False),
                                          (["-histo", "0"], False), (["-histo", "True"], True),
                                          (["-histo"], True), (["--histo", "yes"], True)])
def test_histo_flag_means_what_it_says(tmp_path, ckpts, capsys, flags, histo):
    photo(30, 20).save(tmp_path / "x.png")
    r = cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny, *flags)
    assert r.code == 0, r.err
    assert (tmp_path / "Histo_Coloured_x.png").exists() == histo
    assert (r.out.count("average colour") == 1) == histo and len(r.out.splitlines()) == int(histo)


def test_histo_flag_rejects_nonsense(tmp_path, ckpts, capsys):
    photo(30, 20).save(tmp_path / "x.png")
    with pytest.raises(SystemExit) as e:
        predict_color.main(["-image", str(tmp_path / "x.png"), "-model", str(ckpts.tiny), "-histo", "maybe"])
    assert e.value.code == 2 and "expected True or False" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def make_album(root: Path) -> None:
    """a.png, b.jpg and album/{c.png, sub/d.gif} plus files a folder search must skip."""
    photo(30, 20, 1).save(root / "a.png")
    photo(25, 35, 2).save(root / "b.jpg")
    (root / "album" / "sub").mkdir(parents=True)
    photo(33, 22, 3).save(root / "album" / "c.png")
    photo(20, 20, 4).convert("P").save(root / "album" / "sub" / "d.gif")
    photo(20, 20, 5).save(root / "album" / "sub" / "Coloured_old.png")  # an earlier output
    photo(20, 20, 6).save(root / "album" / ".hidden.png")
    (root / "album" / "notes.txt").write_text("not an image")


def test_several_files_and_a_folder_searched_recursively(tmp_path, ckpts, capsys):
    make_album(tmp_path)
    r = cli(capsys, "-image", tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "album", "-model", ckpts.tiny)
    assert r.code == 0, r.err
    assert leftovers(tmp_path) == sorted(["Coloured_a.png", "Coloured_b.jpg", "album/Coloured_c.png",
                                          "album/sub/Coloured_d.png", "album/sub/Coloured_old.png"])
    assert "colorizing" in r.err and "4/4" in r.err  # the tqdm bar
    with Image.open(tmp_path / "album" / "sub" / "Coloured_d.png") as out:
        assert out.size == (20, 20) and out.mode == "RGB"


def test_histograms_for_a_folder_in_order(tmp_path, ckpts, capsys):
    for i in range(3):
        photo(30, 20, i).save(tmp_path / f"p{i}.png")
    r = cli(capsys, "-image", tmp_path, "-model", ckpts.tiny, "-histo", "True")
    assert r.code == 0, r.err
    assert [line.split(":")[0] for line in r.out.splitlines()] == [f"Coloured_p{i}.png" for i in range(3)]
    assert all((tmp_path / f"Histo_Coloured_p{i}.png").is_file() for i in range(3))


def test_output_file_for_one_input(tmp_path, ckpts, capsys):
    photo(31, 17).save(tmp_path / "x.png")
    r = cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny, "-output", tmp_path / "new" / "dir" / "y.jpg")
    assert r.code == 0, r.err
    assert leftovers(tmp_path) == []  # nothing beside the input
    with Image.open(tmp_path / "new" / "dir" / "y.jpg") as out:
        assert out.format == "JPEG" and out.size == (31, 17)


def test_output_folder_for_many_is_created_and_mirrors_subfolders(tmp_path, ckpts, capsys):
    make_album(tmp_path)
    out = tmp_path / "results"
    r = cli(capsys, "-image", tmp_path / "a.png", tmp_path / "album", "-model", ckpts.tiny, "-output", out)
    assert r.code == 0, r.err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [
        "Coloured_a.png", "Coloured_c.png", "sub/Coloured_d.png"]


def test_existing_folder_as_output_for_one_input(tmp_path, ckpts, capsys):
    photo(20, 10).save(tmp_path / "x.png")
    (tmp_path / "out").mkdir()
    r = cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny, "-output", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "Coloured_x.png").is_file()


def test_model_given_by_name_like_the_original_project(tmp_path, ckpts, capsys, monkeypatch):
    shutil.copy(ckpts.tiny, tmp_path / "trainedModel.pt")
    photo(20, 10).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    r = cli(capsys, "-image", "x.png", "-model", "trainedModel")
    assert r.code == 0, r.err
    assert (tmp_path / "Coloured_x.png").is_file()


def test_run_restores_process_settings(tmp_path, ckpts, capsys):
    photo(20, 10).save(tmp_path / "x.png")
    before = Image.MAX_IMAGE_PIXELS, torch.get_num_threads()
    assert cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny).code == 0
    assert (Image.MAX_IMAGE_PIXELS, torch.get_num_threads()) == before


# ---------------------------------------------------------------------------------------------------
# Inputs: every common mode. With the "grey" model the output must be the input's grey levels.
def _exif_rotated(p: Path) -> None:
    im = Image.new("L", (40, 30), 20)
    im.paste(230, (0, 0, 40, 10))  # bright stripe along the top of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(p, exif=exif, quality=95)


def _animated(p: Path) -> None:
    frames = [Image.new("L", (24, 16), 30).convert("P"), Image.new("L", (24, 16), 220).convert("P")]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_with_transparency(p: Path) -> None:
    im = photo(24, 16).quantize(16)
    im.info["transparency"] = 0
    im.save(p, transparency=0)


def _sixteen_bit(p: Path) -> None:
    Image.fromarray((np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 85)).save(p)


def _ramp(w: int, h: int) -> Image.Image:
    """An alpha channel: transparent at the top, opaque at the bottom."""
    return Image.linear_gradient("L").resize((w, h))


INPUTS = {  # name -> writer
    "grey.png": lambda p: grey_photo(32, 24).save(p),
    "rgb.png": lambda p: photo(32, 24).save(p),
    "rgba.png": lambda p: Image.merge("RGBA", (*photo(32, 24).split(), _ramp(32, 24))).save(p),
    "la.png": lambda p: Image.merge("LA", (grey_photo(32, 24), _ramp(32, 24))).save(p),
    "palette.gif": _palette_with_transparency,
    "animated.gif": _animated,
    "sixteen_bit.png": _sixteen_bit,
    "cmyk.jpg": lambda p: photo(32, 24).convert("CMYK").save(p, quality=95),
    "exif_rotated.jpg": _exif_rotated,
    "one_pixel.png": lambda p: Image.new("L", (1, 1), 99).save(p),
    "one_by_500.png": lambda p: grey_photo(1, 500).save(p),
    "500_by_one.png": lambda p: grey_photo(500, 1).save(p),
    "my photos/été 1969 à Kraków.png": lambda p: grey_photo(21, 13).save(p),
}


def expected_grey_and_alpha(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """What the input looks like to a person: upright, first frame; its grey levels and alpha (8 bit)."""
    with Image.open(p) as im:
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode == "I;16":
            return np.round(np.asarray(im) / 257.0).astype(np.int32), None
        alpha = arr(im.convert("RGBA").getchannel("A")) if im.has_transparency_data else None
        return arr(im.convert("L")), alpha


@pytest.mark.parametrize("name", list(INPUTS))
def test_every_input_mode_gives_its_grey_levels_upright_with_alpha_kept(tmp_path, ckpts, capsys, name):
    src = tmp_path / name
    src.parent.mkdir(parents=True, exist_ok=True)
    INPUTS[name](src)
    r = cli(capsys, "-image", src, "-model", ckpts.grey)
    assert r.code == 0, r.err
    assert r.err == "" and not r.warnings, (r.err, r.warnings)
    stem, ext = os.path.splitext(name)
    dst = src.parent / f"Coloured_{os.path.basename(stem)}{'.png' if ext == '.gif' else ext}"
    grey, alpha = expected_grey_and_alpha(src)
    with Image.open(dst) as out:
        assert out.size == (grey.shape[1], grey.shape[0])
        assert out.mode == ("RGBA" if alpha is not None else "RGB")
        rgb = arr(out.convert("RGB"))
        if alpha is not None:
            assert np.array_equal(arr(out.getchannel("A")), alpha)
    lossy = ext == ".jpg"  # we decode JPEG luma directly; PIL's RGB -> L round trip differs by a little
    for c in range(3):
        diff = np.abs(rgb[..., c] - grey)
        assert diff.max() <= (8 if lossy else 1), (c, diff.max())
        assert diff.mean() <= (1.5 if lossy else 0.5)


def test_exif_rotation_turns_the_content_too(tmp_path, ckpts, capsys):
    _exif_rotated(tmp_path / "r.jpg")  # stored 40x30, bright stripe at the top
    assert cli(capsys, "-image", tmp_path / "r.jpg", "-model", ckpts.grey).code == 0
    with Image.open(tmp_path / "Coloured_r.jpg") as out:
        g = arr(out.convert("L"))
    assert g.shape == (40, 30)
    assert g[:, -10:].mean() > 200 and g[:, :-10].mean() < 50  # displayed upright: the stripe is on the right


def test_animated_gif_uses_the_first_frame(tmp_path, ckpts, capsys):
    _animated(tmp_path / "a.gif")
    assert cli(capsys, "-image", tmp_path / "a.gif", "-model", ckpts.grey).code == 0
    with Image.open(tmp_path / "Coloured_a.png") as out:
        assert abs(arr(out.convert("L")).mean() - 30) <= 2


def test_dark_16_bit_image_is_not_brightened(ckpts):
    """16-bit levels are divided by 65535 even when the image is dark (all values <= 255)."""
    c = predict_color.Colorizer.from_checkpoint(str(ckpts.grey))
    im = Image.fromarray(np.full((16, 16), 200, dtype=np.uint16))
    assert im.mode == "I;16"
    assert arr(c.colorize(im)).max() <= 2


def test_colours_of_the_input_are_ignored(ckpts):
    """The same grey content as L or as a colourful RGB image gives exactly the same output."""
    c = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny))
    rgb = photo(48, 32, seed=3)
    from_rgb, from_grey = c.colorize(rgb), c.colorize(rgb.convert("L"))
    assert np.array_equal(arr(from_rgb), arr(from_grey))
    spread = arr(from_rgb)
    assert np.abs(spread[..., 0] - spread[..., 2]).mean() > 1  # it does colour (the test means something)


@pytest.mark.parametrize("which", ["tiny", "cls"])
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (1, 500), (500, 1), (641, 479)])
def test_output_has_the_input_resolution(ckpts, which, size):
    c = predict_color.Colorizer.from_checkpoint(str(getattr(ckpts, which)))
    out = c.colorize(grey_photo(*size))
    assert out.size == size and out.mode == "RGB"
    rgb = c.colorize_grey(np.asarray(grey_photo(*size), dtype=np.float32) / 255)
    assert rgb.shape == (size[1], size[0], 3) and rgb.dtype == np.uint8


def test_float_uint8_and_uint16_grey_agree(ckpts):
    """colorize_grey takes float [0, 1], uint8 or uint16 levels; the same levels give nearly the same colours."""
    c = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny))
    g8 = np.asarray(grey_photo(64, 40))
    outs = [c.colorize_grey(g).astype(np.int32) for g in (g8, g8.astype(np.float32) / 255, g8.astype(np.uint16) * 257)]
    assert np.abs(outs[0] - outs[1]).max() <= 3 and np.abs(outs[0] - outs[2]).max() <= 3


def test_classification_head_and_decode_flags(tmp_path, ckpts, capsys):
    photo(40, 30).save(tmp_path / "x.png")
    outs = []
    for t in ("0.2", "1.0"):
        r = cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.cls, "--temperature", t,
                "--prior-correction", "0.5", "--overwrite", "-output", tmp_path / f"t{t}.png")
        assert r.code == 0, r.err
        outs.append(arr(Image.open(tmp_path / f"t{t}.png")))
    assert outs[0].shape == (30, 40, 3) and not np.array_equal(*outs)  # the temperature is used


def test_the_gain_flag_and_the_checkpoints_gain_spread_the_colours(tmp_path, ckpts, capsys):
    """The checkpoint's "gain" setting doubles the network's colour spread about the photo's mean colour
    (any head); --gain overrides it."""
    ck = torch.load(str(ckpts.tiny), weights_only=True)
    utils.save_checkpoint({**ck, "inference": {"gain": 2.0}}, str(tmp_path / "g2.pt"))
    grey = np.asarray(grey_photo(40, 30))
    ab = {g: torch.from_numpy(predict_color.Colorizer.from_checkpoint(str(p)).predict_ab(grey))  # numpy (1, 2, h, w)
          for g, p in ((1, ckpts.tiny), (2, tmp_path / "g2.pt"))}
    mu = ab[1].mean((2, 3), keepdim=True)
    torch.testing.assert_close(ab[2] - mu, 2 * (ab[1] - mu), atol=1e-4, rtol=1e-4)
    assert (ab[1] - mu).abs().mean() > 0.02  # Lab units: a spread to double (far above atol), so the test can tell

    photo(40, 30).save(tmp_path / "x.png")
    outs = {}
    for name, model, flags in [("as trained", ckpts.tiny, []), ("checkpoint 2", tmp_path / "g2.pt", []),
                               ("flag 2", ckpts.tiny, ["--gain", "2"]), ("flag 1", tmp_path / "g2.pt", ["--gain", "1"])]:
        r = cli(capsys, "-image", tmp_path / "x.png", "-model", model, *flags, "--overwrite",
                "-output", tmp_path / "out.png")
        assert r.code == 0, r.err
        outs[name] = arr(Image.open(tmp_path / "out.png"))
    assert np.array_equal(outs["checkpoint 2"], outs["flag 2"]) and np.array_equal(outs["flag 1"], outs["as trained"])
    assert not np.array_equal(outs["as trained"], outs["flag 2"])


def test_a_negative_spread_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        predict_color.parse_args(["-image", "x.png", "--spread", "-1"])
    assert e.value.code == 2 and "--spread: must be >= 0" in capsys.readouterr().err
    assert predict_color.parse_args(["-image", "x.png", "--spread", "0"]).spread == 0


def test_the_evenness_flag_overrides_the_checkpoints(tmp_path, ckpts):
    """--evenness reaches the decode like every decode flag, and is refused below 0 by the parser."""
    args = predict_color.parse_args(["-image", "x.png", "--evenness", "0.5"])
    c = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny), **predict_color.decode_overrides(args))
    assert c.decode.evenness == 0.5 and c.decode.gain == 1.0
    grey = np.asarray(grey_photo(40, 30))
    assert not np.array_equal(c.predict_ab(grey), predict_color.Colorizer.from_checkpoint(str(ckpts.tiny)).predict_ab(grey))
    with pytest.raises(SystemExit):
        predict_color.parse_args(["-image", "x.png", "--evenness", "-1"])


def test_strips_and_threads_do_not_change_the_result(ckpts, monkeypatch):
    c = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny))
    g = np.asarray(grey_photo(97, 61))
    whole = c.colorize_grey(g)
    monkeypatch.setattr(colorizer, "STRIP_PIXELS", 97 * 5 + 3)  # 5-row strips, the last one short
    assert np.array_equal(c.colorize_grey(g, workers=3), whole)


# ---------------------------------------------------------------------------------------------------
# Errors: one line naming the file and the problem, non-zero exit, no traceback, nothing written
def _truncated_jpeg(p: Path) -> None:
    photo(64, 48).save(p, quality=95)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _truncated_png(p: Path) -> None:
    photo(64, 48).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


BAD_INPUTS = {  # name -> (writer or None for a missing file, words the message must contain)
    "missing.jpg": (None, ["not found"]),
    "empty.jpg": (lambda p: p.write_bytes(b""), ["empty"]),
    "text.jpg": (lambda p: p.write_text("just some notes\n"), ["not an image"]),
    "truncated.jpg": (_truncated_jpeg, ["truncated"]),
    "truncated.png": (_truncated_png, ["truncated"]),
    "bad_crc_header.png": (lambda p: png_with_bad_crc(p, b"IHDR"), ["checksum"]),
    "bad_crc_pixels.png": (lambda p: png_with_bad_crc(p, b"IDAT"), ["checksum"]),
    "giant.png": (lambda p: png_header_only(p, 20000, 20000), ["too large", "400 mpx"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(tmp_path, ckpts, capsys, name):
    write, words = BAD_INPUTS[name]
    src = tmp_path / name
    if write:
        write(src)
    r = cli(capsys, "-image", src, "-model", ckpts.tiny)
    assert_one_error(r, str(src), *words, code=1)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["missing.jpg", "truncated.jpg"])
def test_bad_input_in_the_real_cli_has_no_traceback(tmp_path, ckpts, name):
    write, words = BAD_INPUTS[name]
    if write:
        write(tmp_path / name)
    r = script("-image", name, "-model", ckpts.tiny, cwd=tmp_path)
    assert_one_error(r, name, *words)
    assert leftovers(tmp_path) == []


def test_output_over_the_input_is_refused_unless_overwrite(tmp_path, ckpts, capsys):
    src = tmp_path / "x.png"
    photo(20, 10).save(src)
    before = src.read_bytes()
    r = cli(capsys, "-image", src, "-model", ckpts.tiny, "-output", src)
    assert_one_error(r, str(src), "overwrite")
    assert src.read_bytes() == before and leftovers(tmp_path) == []
    r = cli(capsys, "-image", src, "-model", ckpts.tiny, "-output", src, "--overwrite")
    assert r.code == 0 and src.read_bytes() != before


@pytest.mark.parametrize("where", ["parent_is_file", "proc"])
def test_output_folder_that_cannot_be_written(tmp_path, ckpts, capsys, where):
    src = tmp_path / "x.png"
    photo(20, 10).save(src)
    (tmp_path / "afile").write_text("a regular file")
    dst = (tmp_path / "afile" / "sub" / "out.png" if where == "parent_is_file"
           else Path("/proc/no_such_colorize_folder/out.png"))
    r = cli(capsys, "-image", src, "-model", ckpts.tiny, "-output", dst)
    line = assert_one_error(r, str(dst), "cannot")
    if where == "parent_is_file":
        assert "is a file, not a folder" in line
    assert not dst.exists() and leftovers(tmp_path) == []


def test_unknown_output_format(tmp_path, ckpts, capsys):
    photo(20, 10).save(tmp_path / "x.png")
    assert_one_error(cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny, "-output", tmp_path / "y.xyz"),
                     "y.xyz", "unknown output format")
    assert not (tmp_path / "y.xyz").exists()


def test_batch_reports_bad_files_and_colorizes_the_rest(tmp_path, ckpts, capsys):
    photo(20, 10, 1).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not an image")
    photo(20, 10, 2).save(tmp_path / "c.png")
    r = cli(capsys, "-image", tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "missing.png", tmp_path / "c.png",
            "-model", ckpts.tiny)
    assert r.code == 1 and "Traceback" not in r.err and not r.warnings
    assert leftovers(tmp_path) == ["Coloured_a.png", "Coloured_c.png"]
    errors = [l for l in re.split(r"[\r\n]", r.err) if l.startswith("error:")]
    assert len(errors) == 3, r.err
    assert str(tmp_path / "b.jpg") in errors[0] and str(tmp_path / "missing.png") in errors[1]
    assert "2 of 4" in errors[2]


def test_two_inputs_never_write_the_same_output(tmp_path, ckpts, capsys):
    photo(20, 10, 1).save(tmp_path / "a.png")
    photo(20, 10, 2).convert("P").save(tmp_path / "a.gif")  # its output would also be Coloured_a.png
    r = cli(capsys, "-image", tmp_path / "a.png", tmp_path / "a.gif", "-model", ckpts.grey)
    assert r.code == 1 and "would also be written" in r.err
    assert np.abs(arr(Image.open(tmp_path / "Coloured_a.png").convert("L"))
                  - arr(Image.open(tmp_path / "a.png").convert("L"))).max() <= 1  # the first one's result


@pytest.mark.parametrize("device", ["nonsense", "cuda:0"])
def test_unusable_device(tmp_path, ckpts, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    photo(20, 10).save(tmp_path / "x.png")
    assert_one_error(cli(capsys, "-image", tmp_path / "x.png", "-model", ckpts.tiny, "--device", device),
                     f"--device {device}", code=2)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# Checkpoints
def _other_architecture(p: Path) -> None:
    torch.manual_seed(0)
    m = build_model(ModelConfig(width=8, depth=2))
    utils.save_checkpoint({"model": m.state_dict(), "model_config": ModelConfig(width=16, depth=3).to_dict()}, str(p))


def _classification_config_regression_weights(p: Path) -> None:
    m = build_model(ModelConfig(width=8, depth=2))
    cfg = ModelConfig(width=8, depth=2, head="classification", num_bins=40)
    utils.save_checkpoint({"model": m.state_dict(), "model_config": cfg.to_dict()}, str(p))


def _pickled_module(p: Path) -> None:
    torch.save(build_model(ModelConfig(width=8, depth=2)), str(p))  # the original project's `trainedModel`


def _truncated_checkpoint(p: Path, good: Path) -> None:
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])


BAD_CHECKPOINTS = {  # name -> (writer(path, good checkpoint) or None, words the message must contain)
    "missing.pt": (None, ["not found"]),
    "empty.pt": (lambda p, g: p.write_bytes(b""), ["empty"]),
    "truncated.pt": (_truncated_checkpoint, ["not a readable checkpoint"]),
    "random.pt": (lambda p, g: p.write_bytes(np.random.default_rng(0).bytes(5000)), ["not a readable checkpoint"]),
    "other_architecture.pt": (lambda p, g: _other_architecture(p), ["do not fit", "shape"]),
    "head_mismatch.pt": (lambda p, g: _classification_config_regression_weights(p), ["do not fit"]),
    "trainedModel": (lambda p, g: _pickled_module(p), ["pickled"]),
    "plain_dict.pt": (lambda p, g: torch.save({"epoch": 3, "lr": 0.1}, str(p)), ["not a colorizer checkpoint"]),
    "state_dict_only.pt": (lambda p, g: torch.save(build_model(ModelConfig(width=8, depth=2)).state_dict(), str(p)),
                           ["not a colorizer checkpoint"]),
    "bad_config.pt": (lambda p, g: torch.save({"model": {}, "model_config": {"width": 8, "colour": "red"}}, str(p)),
                      ["model_config"]),
    "not_tensors.pt": (lambda p, g: torch.save({"model": {"stem.0.weight": [1, 2]},
                                                "model_config": ModelConfig(width=8, depth=2).to_dict()}, str(p)),
                       ["not a state dict"]),
}


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_clear_line(tmp_path, ckpts, capsys, name):
    write, words = BAD_CHECKPOINTS[name]
    ckpt = tmp_path / name
    if write:
        write(ckpt, ckpts.tiny)
    photo(20, 10).save(tmp_path / "x.png")
    r = cli(capsys, "-image", tmp_path / "x.png", "-model", ckpt)
    assert_one_error(r, str(ckpt), *words, code=2)
    assert leftovers(tmp_path) == []
    with pytest.raises(CheckpointError):
        predict_color.Colorizer.from_checkpoint(str(ckpt))


def test_random_bytes_are_not_called_pickled_code(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError) as e:
        predict_color.Colorizer.from_checkpoint(str(tmp_path / "random.pt"))
    assert "pickled" not in str(e.value)


def test_pickled_module_by_name_in_the_real_cli(tmp_path):
    """`-model trainedModel` as in the original project, holding a whole pickled module: refused, not run."""
    _pickled_module(tmp_path / "trainedModel")
    photo(20, 10).save(tmp_path / "x.png")
    r = script("-image", "x.png", "-model", "trainedModel", cwd=tmp_path)
    assert_one_error(r, "trainedModel", "pickled", code=2)
    assert leftovers(tmp_path) == []


def test_half_precision_checkpoint_loads(tmp_path, ckpts):
    ck = torch.load(ckpts.tiny, weights_only=True)
    ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
    utils.save_checkpoint(ck, str(tmp_path / "half.pt"))
    a = predict_color.Colorizer.from_checkpoint(str(tmp_path / "half.pt")).colorize(grey_photo(30, 20))
    b = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny)).colorize(grey_photo(30, 20))
    assert np.abs(arr(a) - arr(b)).max() <= 3


@pytest.mark.parametrize("store", ["half_precision", "int8_weights"])
def test_batch_norm_statistics_beyond_float16_survive_compact_storage(store, tmp_path, ckpts):
    """A running_var above float16's 65504 (the v2 model has 17) would be stored as inf, which silences its
    channels: compact storage keeps such a tensor in float32, and the colours stay the float32 model's."""
    ck = torch.load(ckpts.tiny, weights_only=True)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()}
    key = next(k for k in sd if k.endswith("running_var"))
    # A quarter of the channels out of float16's range, their scale raised to match: the same network.
    n = max(1, len(sd[key]) // 4)
    sd[key][:n] *= 1e6
    sd[key.replace("running_var", "weight")][:n] *= 1e3
    stored = getattr(utils, store)(sd)
    assert torch.isinf(sd[key].half()).any()  # what plain float16 storage would do
    torch.testing.assert_close(utils.float_weights(stored)[key], sd[key])
    ab = []
    for name, weights in (("float32", sd), ("stored", stored)):
        utils.save_checkpoint({**ck, "model": weights}, str(tmp_path / f"{name}.pt"))
        ab.append(predict_color.Colorizer.from_checkpoint(str(tmp_path / f"{name}.pt")).predict_ab(
            np.asarray(grey_photo(48, 32))))
    assert np.abs(ab[0] - ab[1]).max() < 0.5  # Lab units


def test_an_int8_ensemble_checkpoint_loads_and_averages_its_members(tmp_path):
    cfg = ModelConfig(width=8, depth=2, head="classification", num_bins=40)
    one = [torch.load(save_model(tmp_path / f"m{i}.pt", cfg, seed=i), weights_only=True)["model"] for i in (1, 2)]
    ens = build_model(cfg, members=2)
    for net, sd in zip(ens.members, one):
        net.load_state_dict(sd)
    dec = {"inference": {"size": 24, "temperature": 0.5, "prior_correction": 0.7}}
    utils.save_checkpoint({"model": utils.int8_weights(ens.state_dict()), "members": 2,
                           "model_config": cfg.to_dict(), "train_config": {}, **dec}, str(tmp_path / "ens.pt"))
    ab = predict_color.Colorizer.from_checkpoint(str(tmp_path / "ens.pt")).predict_ab(np.asarray(grey_photo(40, 30)))
    each = []
    for i in (1, 2):
        utils.save_checkpoint({"model": one[i - 1], "model_config": cfg.to_dict(), "train_config": {}, **dec},
                              str(tmp_path / f"one{i}.pt"))
        each.append(predict_color.Colorizer.from_checkpoint(str(tmp_path / f"one{i}.pt"))
                    .predict_ab(np.asarray(grey_photo(40, 30))))
    mean = (each[0] + each[1]) / 2
    assert np.abs(ab - mean).max() < 0.05 * np.abs(mean).max()  # int8 weights: close, not equal
    assert np.abs(each[0] - each[1]).max() > 0.2 * np.abs(mean).max()

    for bad in (0, "2"):
        utils.save_checkpoint({"model": utils.int8_weights(ens.state_dict()), "members": bad,
                               "model_config": cfg.to_dict()}, str(tmp_path / "bad.pt"))
        with pytest.raises(CheckpointError, match="members"):
            predict_color.Colorizer.from_checkpoint(str(tmp_path / "bad.pt"))
    utils.save_checkpoint({"model": one[0], "members": 2, "model_config": cfg.to_dict()}, str(tmp_path / "few.pt"))
    with pytest.raises(CheckpointError, match="do not fit"):
        predict_color.Colorizer.from_checkpoint(str(tmp_path / "few.pt"))


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_the_colours_convert_back_to_the_input_grey(ckpts, mode):
    """convert("L") of a result is its input, to the rounding of the 8-bit output (601 luma is kept)."""
    grey = np.asarray(grey_photo(60, 40, seed=3))
    im = Image.fromarray(grey) if mode == "L" else Image.fromarray(grey.astype(np.uint16) * 257)
    out = predict_color.Colorizer.from_checkpoint(str(ckpts.tiny)).colorize(im)
    rgb = arr(out)
    assert (rgb.max(-1) - rgb.min(-1)).mean() > 20  # colourful, so the luma had something to keep
    assert np.abs(arr(out.convert("L")) - grey).max() <= 1


def code_files() -> list[Path]:
    """The project's own .py files, tests excluded."""
    skip = {"tests", "runs", "data"}
    out = []
    for dirpath, dirnames, files in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip and d != "__pycache__"]
        out += [Path(dirpath) / f for f in files if f.endswith(".py")]
    return out


def test_checkpoints_are_never_loaded_with_weights_only_false():
    files = code_files()
    assert PREDICT in files and REPO / "utils.py" in files
    assert [str(f) for f in files if "weights_only=False" in f.read_text()] == []
    for f in files:  # and every torch.load call says weights_only=True explicitly
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{f}:{node.lineno}: torch.load without weights_only=True"


# ---------------------------------------------------------------------------------------------------
# Speed and memory, measured on a child process. The machine may be shared (the project trains in the
# background), so the limits are on CPU time, which sharing barely changes; wall times are printed (-s).
def child_usage(argv: list, cwd=None) -> tuple[subprocess.CompletedProcess, float, float, int]:
    """Run python predict_color.py argv in a fresh child: (result, wall s, CPU s (user + sys), peak RSS bytes).

    A small wrapper process runs it, so that RUSAGE_CHILDREN sees that one child only.
    """
    wrapper = ("import resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss * 1024, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", wrapper, sys.executable, str(PREDICT), *map(str, argv)],
                       cwd=cwd, capture_output=True, text=True, timeout=600)
    *rest, last = r.stderr.rstrip("\n").split("\n")
    wall, cpu, rss = last.split()
    r.stderr = "\n".join(rest)
    return r, float(wall), float(cpu), int(rss)


def test_single_image_imports_nothing_it_does_not_use(tmp_path, ckpts):
    photo(64, 48).save(tmp_path / "x.png")
    r = subprocess.run([sys.executable, "-X", "importtime", str(PREDICT), "-image", "x.png", "-model", ckpts.default],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and "PIL.Image" in imported  # the parse works
    heavy = {m.split(".")[0] for m in imported} & {"torchvision", "skimage", "scipy", "matplotlib", "pandas", "cv2"}
    assert not heavy, heavy


def test_a_folder_of_full_size_photos_gets_every_output(tmp_path, ckpts):
    """A folder of 768x512 photos: one output each, at full size. (Speed is bench_inference.py's job.)"""
    n = 4
    (tmp_path / "many").mkdir()
    for i in range(n):
        photo(768, 512, seed=i).save(tmp_path / "many" / f"p{i:02d}.jpg", quality=90)
    r, *_ = child_usage(["-image", tmp_path / "many", "-model", ckpts.default])
    assert r.returncode == 0, r.stderr
    outs = sorted((tmp_path / "many").glob("Coloured_*.jpg"))
    assert len(outs) == n
    with Image.open(outs[0]) as im:
        assert im.size == (768, 512)


@pytest.mark.slow
def test_huge_image_full_resolution_under_2_gb(tmp_path, ckpts, monkeypatch):
    """A 12000x9000 (108 Mpx) RGB JPEG: colorized at full resolution, no PIL bomb warning, peak RSS < 2 GB."""
    w, h = 12000, 9000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # this test's own PIL calls; the CLI runs apart
    big = Image.merge("RGB", [Image.linear_gradient("L").resize((w, h)),
                              Image.linear_gradient("L").rotate(90).resize((w, h)),
                              grey_photo(120, 90).resize((w, h))])
    big.save(tmp_path / "huge.jpg", quality=85)
    del big
    r, wall, cpu, rss = child_usage(["-image", "huge.jpg", "-model", ckpts.tiny], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()  # the size announced up front (image_io.LARGE_PIXELS), and no DecompressionBombWarning
    assert len(lines) == 1 and lines[0].startswith("note: huge.jpg: 12000x9000 pixels (108 Mpx, "), r.stderr
    with Image.open(tmp_path / "Coloured_huge.jpg") as out:
        assert out.size == (w, h)
    print(f"\n12000x9000 JPEG: wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss / 2**30:.2f} GiB")
    assert rss < 2e9
