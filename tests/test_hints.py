"""Colour hints: parsing (every form and every error), the hint input maps, simulated users, propagation,
the hint model (starts as the automatic one, trains on a tiny folder), the CLI and API with the shipped
model (a hint pulls the colour near it towards its chroma and leaves the grey as it was), and checkpoints
trained without hints."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import hints as H
import train
from colorizer import DEFAULT_MODEL, Colorizer
from model import ModelConfig, build_model
from utils import load_checkpoint, rgb_to_lab, save_checkpoint

RED = (192, 57, 43)  # #c0392b


# ---------------------------------------------------------------------------------------------------
# Parsing
@pytest.mark.parametrize("text, want", [
    ("120,340,#c0392b", H.Hint(120, 340, RED)),
    ("40,20,skyblue", H.Hint(40, 20, (135, 206, 235))),
    (" 4.5,7 , #fff", H.Hint(4.5, 7, (255, 255, 255))),
    ("0,0,rgb(1,2,3)", H.Hint(0, 0, (1, 2, 3))),  # the colour may itself hold commas
])
def test_hint_forms(text, want):
    assert H.parse_hint(text) == want


@pytest.mark.parametrize("text, says", [
    ("120,340", "expected x,y,colour"),
    ("a,2,red", "must be numbers"),
    ("nan,2,red", "finite"),
    ("1,2,notacolour", "not a colour"),
    ("1,2,#12345", "not a colour"),
])
def test_bad_hints_say_why(text, says):
    with pytest.raises(H.HintError, match=says):
        H.parse_hint(text)


def test_hints_file(tmp_path):
    f = tmp_path / "h.json"
    f.write_text(json.dumps([{"x": 1, "y": 2, "color": "#c0392b"}, {"x": 3.5, "y": 4, "color": "red", "radius": 6}]))
    assert H.load_hints(str(f)) == [H.Hint(1, 2, RED), H.Hint(3.5, 4, (255, 0, 0), 6)]


def test_hints_to_json_is_what_load_hints_reads_back(tmp_path):
    hints = [H.Hint(1, 2.5, RED), H.Hint(3, 4, (0, 0, 255), 6.0)]
    f = tmp_path / "h.json"
    f.write_text(json.dumps(H.hints_to_json(hints)))
    assert H.load_hints(str(f)) == hints and H.hints_from_json(H.hints_to_json(hints), "x") == hints


@pytest.mark.parametrize("content, says", [
    (None, "cannot read"),
    ("{not json", "not a JSON file"),
    ('{"x": 1}', "expected a JSON list"),
    ('[{"x": 1, "y": 2}]', "hint 1: expected an object with x, y and color"),
    ('[{"x": 1, "y": 2, "color": "blurple"}]', "hint 1: 'blurple' is not a colour"),
    ('[{"x": 1, "y": 2, "color": "red"}, {"x": true, "y": 2, "color": "red"}]', "hint 2: x, y and radius must be numbers"),
    ('[{"x": 1, "y": 2, "color": 7}]', "color must be a string"),
    ('[{"x": 1, "y": 2, "color": "red", "radius": -1}]', "radius must not be negative"),
])
def test_bad_hints_files_say_why(tmp_path, content, says):
    f = tmp_path / "h.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(H.HintError, match=says):
        H.load_hints(str(f))


# ---------------------------------------------------------------------------------------------------
# Maps and simulated users
def test_hint_map_paints_the_chroma_at_the_networks_resolution():
    m = H.hint_map([H.Hint(10, 5, (255, 0, 0))], (100, 50), (50, 25), ab_scale=110.0)
    ab = rgb_to_lab(torch.tensor([1.0, 0, 0])[:, None, None])[1:, 0, 0] / 110
    assert m.shape == (1, 3, 25, 50)
    assert m[0, 2].sum() == 9 and m[0, 2, 1:4, 4:7].all()  # a 3x3 square around (5, 2)
    assert np.allclose(m[0, :2, 2, 5], ab.numpy(), atol=1e-5)
    assert (m[0, :2][:, m[0, 2] == 0] == 0).all()
    with pytest.raises(H.HintError, match="outside"):
        H.hint_map([H.Hint(100, 5, (255, 0, 0))], (100, 50), (50, 25), ab_scale=110.0)


def test_simulated_hints_reveal_patch_means():
    g = torch.Generator().manual_seed(0)
    ab = torch.randn(4, 2, 24, 30)
    h = H.simulate_hints(ab, g, points=5, max_side=5)
    assert h.shape == (4, 3, 24, 30)
    assert ((h[:, 2] == 0) | (h[:, 2] == 1)).all() and (h[:, 2].flatten(1).sum(1) > 0).all()
    # Redraw with the same seed and check each point's value against a brute-force patch mean.
    g = torch.Generator().manual_seed(1)
    one = torch.zeros(1, 2, 20, 20)
    one[0, 0, :10] = 1.0  # top half a = 1
    h = H.simulate_hints(one, g, points=1, max_side=1)
    y, x = h[0, 2].nonzero()[0].tolist()
    assert h[0, 0, y, x] == (1.0 if y < 10 else 0.0)
    assert (H.simulate_hints(ab, torch.Generator(), p_none=1.0) == 0).all()


def test_hint_pyramid_averages_the_hinted_pixels_only():
    h = torch.zeros(1, 3, 4, 4)
    h[0, :, 0, 0] = torch.tensor([0.5, -0.5, 1.0])
    level = H.hint_pyramid_level(h, (2, 2))
    assert torch.equal(level[0, :, 0, 0], torch.tensor([0.5, -0.5, 1.0]))  # not diluted by empty pixels
    assert (level[0, :, 1, 1] == 0).all()


def test_sample_hints_takes_the_photos_colours():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = RED
    pts = H.sample_hints(rgb, 20, np.random.default_rng(0), (60, 40))
    assert len(pts) == 20
    for p in pts:
        if p.x < 28:
            assert p.rgb == RED
        elif p.x > 32:
            assert p.rgb == (0, 0, 0)


# ---------------------------------------------------------------------------------------------------
# The hint model
def test_a_hint_model_without_hints_is_the_automatic_model():
    torch.manual_seed(0)
    for enc in ("unet", "efficientnet_lite0"):
        auto = build_model(ModelConfig(encoder=enc, width=8, depth=2, head="classification", num_bins=5)).eval()
        hint = build_model(ModelConfig(encoder=enc, width=8, depth=2, head="classification", num_bins=5,
                                       hints=True)).eval()
        missing, unexpected = hint.load_state_dict(auto.state_dict(), strict=False)
        assert not unexpected and missing and all(k.startswith("hint_in.") for k in missing)
        l = torch.randn(1, 1, 40, 50)
        some = H.simulate_hints(torch.randn(1, 2, 40, 50), torch.Generator().manual_seed(0), points=3)
        assert torch.equal(hint(l), auto(l))
        assert torch.equal(hint(l, torch.zeros(1, 3, 40, 50)), auto(l))  # mask 0 everywhere: no hint
        assert torch.equal(hint(l, some), auto(l))                         # zero-initialised hint inputs
        with torch.no_grad():
            hint.hint_in[-1].weight.normal_()
        assert not torch.equal(hint(l, some), auto(l))
        with pytest.raises(ValueError, match="without hints"):
            auto(l, some)


def test_training_with_simulated_hints_teaches_the_hint_inputs(photo_dir, tmp_path, tiny_argv):
    auto = tmp_path / "auto"
    r = train.train(train.parse_args(tiny_argv(photo_dir, auto, "--max-steps", "2", "--loss", "classification")))
    assert r["stopped"] is None
    out = tmp_path / "hints"
    r = train.train(train.parse_args(tiny_argv(photo_dir, out, "--max-steps", "4", "--loss", "classification",
                                                "--hints", "--hint-p-none", "0", "--init", auto / "last.pt")))
    assert r["stopped"] is None and "val_psnr_hints" in r["metrics"][-1]
    ck = load_checkpoint(str(out / "last.pt"))
    assert ck["model_config"]["hints"] is True
    assert all(ck["model"][f"hint_in.{i}.weight"].abs().sum() > 0 for i in range(3))  # they learned
    c = Colorizer.from_checkpoint(str(out / "last.pt"))
    grey = Image.open(next(photo_dir.glob("*.jpg"))).convert("L")
    assert c.takes_hints and c.colorize(grey, hints=[(3, 4, RED)]).size == grey.size


def test_a_checkpoint_without_hints_still_loads_and_takes_hints_through_propagation(tmp_path):
    cfg = ModelConfig(width=8, depth=2).to_dict()
    del cfg["hints"]  # as written before hints existed
    path = tmp_path / "old.pt"
    save_checkpoint({"model": build_model(ModelConfig(width=8, depth=2)).state_dict(), "model_config": cfg}, str(path))
    c = Colorizer.from_checkpoint(str(path))
    grey = Image.new("L", (30, 20), 128)
    auto = c.colorize(grey)
    assert not c.takes_hints and auto.size == (30, 20)
    hinted = c.colorize(grey, hints=[(3, 4, RED)])   # the network ignores them; propagation spreads them
    assert np.abs(np.asarray(hinted, np.int16) - np.asarray(auto, np.int16)).max() > 10
    c.propagation = None
    with pytest.raises(H.HintError, match="propagation is off"):
        c.colorize(grey, hints=[(3, 4, RED)])


# ---------------------------------------------------------------------------------------------------
# The shipped model, through the API and the CLI
@pytest.fixture(scope="module")
def shipped():
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def kodak_grey(tmp_path_factory):
    """A real photo made grey at 384x256: Kodak's kodim03 (caps) from ../shared, else the repository's sample."""
    from conftest import SHARED_DATA, REPO
    src = SHARED_DATA / "bench" / "kodak" / "kodim03.png"
    if not src.exists():
        src = next(p for p in sorted((REPO / "data").rglob("*")) if p.suffix.lower() in (".jpg", ".png"))
    path = tmp_path_factory.mktemp("grey") / "grey.png"
    with Image.open(src) as im:
        im.convert("L").resize((384, 256)).save(path)
    return path


def chroma_towards(rgb_img: Image.Image, x: int, y: int, target: tuple[int, int, int], r: int = 6) -> np.ndarray:
    """ab of the image around (x, y), and the ab of target."""
    a = torch.from_numpy(np.asarray(rgb_img, dtype=np.float32) / 255).permute(2, 0, 1)
    lab = rgb_to_lab(a[:, y - r:y + r + 1, x - r:x + r + 1])
    return lab[1:].flatten(1).mean(1).numpy()


@pytest.mark.parametrize("colour", [RED, (40, 90, 220), (60, 170, 60)])
def test_a_hint_moves_the_colour_near_it_towards_its_chroma_and_keeps_the_grey(shipped, kodak_grey, colour):
    grey = Image.open(kodak_grey)
    x, y = 190, 130
    auto = shipped.colorize(grey)
    hinted = shipped.colorize(grey, hints=[(x, y, colour)])
    want = rgb_to_lab(torch.tensor(colour, dtype=torch.float32)[:, None, None] / 255)[1:, 0, 0].numpy()
    before = np.linalg.norm(chroma_towards(auto, x, y, colour) - want)
    after = np.linalg.norm(chroma_towards(hinted, x, y, colour) - want)
    assert after < 0.6 * before, (before, after)
    # The grey of the result is the input, exactly as without hints.
    g = np.asarray(grey, dtype=np.int16)
    assert np.abs(np.asarray(hinted.convert("L"), dtype=np.int16) - g).max() <= 1
    # Far from the hint (another corner) the colours change much less than at it.
    far = np.abs(chroma_towards(hinted, 20, 20, colour) - chroma_towards(auto, 20, 20, colour)).sum()
    near = np.abs(chroma_towards(hinted, x, y, colour) - chroma_towards(auto, x, y, colour)).sum()
    assert far < near


def test_cli_hints_and_histogram(shipped, kodak_grey, tmp_path, run_cli):
    hints_file = tmp_path / "h.json"
    hints_file.write_text(json.dumps([{"x": 20, "y": 30, "color": "skyblue", "radius": 8}]))
    out = tmp_path / "out.png"
    r = run_cli("predict_color.py", "-image", kodak_grey, "-output", out, "--hint", "190,130,#c0392b",
                "--hints", hints_file, "-histo", "True")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (384, 256) and (tmp_path / "Histo_out.png").exists()


@pytest.mark.parametrize("args, says, status", [
    (["--hint", "1,2"], "expected x,y,colour", 2),
    (["--hint", "1,2,blurple"], "not a colour", 2),
    (["--hints", "missing.json"], "cannot read", 2),
    (["--hint", "384,10,red"], "outside", 1),
])
def test_cli_hint_errors_are_one_line_and_write_nothing(shipped, kodak_grey, tmp_path, run_cli, args, says, status):
    out = tmp_path / "out.png"
    r = run_cli("predict_color.py", "-image", kodak_grey, "-output", out, *args)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == status and len(lines) == 1 and says in lines[0], r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_hints_for_several_images(shipped, kodak_grey, tmp_path, run_cli):
    r = run_cli("predict_color.py", "-image", kodak_grey, kodak_grey, "-output", tmp_path, "--hint", "1,2,red")
    assert r.returncode == 2 and "single input image" in r.stderr and list(tmp_path.iterdir()) == []


def test_propagation_spreads_a_correction_over_similar_pixels_only():
    ab = np.zeros((1, 2, 20, 40), np.float32)
    l = np.full((1, 1, 20, 40), 50.0, np.float32)
    l[..., 20:] = 90.0                                     # right half much lighter
    hint = np.zeros((1, 3, 20, 40), np.float32)
    hint[0, :, 9:12, 4:7] = np.float32([0.4, -0.2, 1.0])[:, None, None]   # a (44, -22) hint on the left
    out = H.propagate_hints(ab, l, hint, 110.0, sigma_space=0.3, sigma_l=10.0)
    assert np.allclose(out[0, :, 10, 5], [44.0, -22.0], atol=0.15 * 44)       # the hinted square: nearly the hint
    assert (out[0, 0, :, 10] > 20).all()                                      # same lightness nearby: most of it
    assert np.abs(out[0, :, :, 20:]).max() < 0.5                              # another lightness: nearly untouched
    assert np.array_equal(H.propagate_hints(ab, l, np.zeros((1, 3, 20, 40), np.float32), 110.0, 0.3, 10.0), ab)
