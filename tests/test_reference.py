"""Colours from a reference photo (--reference): the API, the CLI for a photo, a folder and a film."""
import numpy as np
import pytest
from PIL import Image
from skimage import color, data

from colorizer import DEFAULT_MODEL, Colorizer
from colour_prior import PriorError

RED = (200, 30, 30)


@pytest.fixture(scope="module")
def colorizer() -> Colorizer:
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def grey() -> Image.Image:
    return Image.fromarray(data.astronaut()).convert("L").resize((192, 192))


def mean_ab(im: Image.Image) -> np.ndarray:
    return color.rgb2lab(np.asarray(im.convert("RGB")))[..., 1:].mean((0, 1))


def solid(rgb, size=(48, 48)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def test_a_reference_of_one_strong_colour_moves_the_colours_towards_it_and_keeps_the_grey(colorizer, grey):
    auto = colorizer.colorize(grey)
    red = colorizer.colorize(grey, reference=solid(RED))
    target = mean_ab(solid(RED))
    assert np.linalg.norm(mean_ab(red) - target) < np.linalg.norm(mean_ab(auto) - target) - 5
    # the result converted back to grey is the input (within a level of rounding)
    assert np.abs(np.asarray(red.convert("L"), int) - np.asarray(grey, int)).max() <= 1


def test_strength_zero_is_the_automatic_output_exactly_and_references_pool(colorizer, grey):
    auto = np.asarray(colorizer.colorize(grey))
    assert np.array_equal(np.asarray(colorizer.colorize(grey, reference=solid(RED), reference_strength=0)), auto)
    blue = (30, 60, 200)
    both = mean_ab(colorizer.colorize(grey, reference=[solid(RED), solid(blue)]))
    only_red, only_blue = mean_ab(colorizer.colorize(grey, reference=solid(RED))), \
        mean_ab(colorizer.colorize(grey, reference=solid(blue)))
    assert min(only_red[1], only_blue[1]) < both[1] < max(only_red[1], only_blue[1])  # b: between the two


def test_a_model_without_a_classification_head_refuses_a_reference_in_one_line(tiny_run, grey):
    regression = Colorizer.from_checkpoint(str(tiny_run / "best.pt"))
    with pytest.raises(PriorError, match="classification head"):
        regression.colorize(grey, reference=solid(RED))


def test_the_cli_uses_one_reference_for_every_photo_of_a_folder(tmp_path, run_cli, colorizer, grey):
    folder = tmp_path / "in"
    folder.mkdir()
    grey.save(folder / "a.png")
    grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.png")
    solid(RED).save(tmp_path / "red.png")
    r = run_cli("predict_color.py", "-image", folder, "-output", tmp_path / "out", "--reference", tmp_path / "red.png")
    assert r.returncode == 0, r.stderr
    prior = colorizer.reference_prior(solid(RED))
    for name in ("a.png", "b.png"):
        got = np.asarray(Image.open(tmp_path / "out" / f"Coloured_{name}"))
        want = np.asarray(colorizer.colorize(Image.open(folder / name), prior=prior))
        assert np.abs(got.astype(int) - want).max() <= 1


def test_a_bad_reference_is_one_error_line_and_no_output(tmp_path, run_cli, grey):
    grey.save(tmp_path / "g.png")
    (tmp_path / "bad.jpg").write_text("not a photo")
    r = run_cli("predict_color.py", "-image", tmp_path / "g.png", "--reference", tmp_path / "bad.jpg")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bad.jpg" in r.stderr
    assert not (tmp_path / "Coloured_g.png").exists()


def test_a_film_takes_the_reference_for_every_frame(tmp_path, colorizer):
    from video import colorize_frames
    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(data.coffee()).convert("L").resize((96, 64)), np.float64)
    frames = [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    prior = colorizer.reference_prior(solid(RED))
    auto = list(colorize_frames(colorizer, frames, None))
    steered = list(colorize_frames(colorizer, frames, None, prior=prior))
    for f, a, s in zip(frames, auto, steered):
        assert np.array_equal(s, colorizer.colorize_grey(f, prior=prior))
        assert mean_ab(Image.fromarray(s))[0] > mean_ab(Image.fromarray(a))[0] + 3  # redder: a up


def test_evaluate_scores_the_references_beside_the_automatic_decode(tmp_path, colorizer):
    import json

    import evaluate
    folder = tmp_path / "set"
    folder.mkdir()
    for name, load in (("a_astronaut", data.astronaut), ("a_coffee", data.coffee), ("b_chelsea", data.chelsea)):
        Image.fromarray(load()).resize((96, 72)).save(folder / f"{name}.png")
    assert evaluate.main(["--data", str(folder), "--model", DEFAULT_MODEL, "--reference", "self", "other",
                          "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())["set"]
    auto, own = res["colorizer"]["mean"], res["colorizer+ref self"]["mean"]
    assert own["hist_self"] < auto["hist_self"] and own["psnr"] > auto["psnr"]
    assert res["colorizer+ref other"]["mean"]["hist_other"] < auto["hist_other"]
    # a_ photos take each other as the reference; the lone b_ photo takes one of another kind
    assert evaluate.reference_paths(["x/a_1.png", "x/a_2.png", "x/b_1.png"], "other")[:2] == ["x/a_2.png", "x/a_1.png"]
