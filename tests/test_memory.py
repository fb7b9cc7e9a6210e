"""Colour memory: build_memory.py makes a bank from colour photos; --memory colours a photo with it."""
import numpy as np
import pytest
from PIL import Image
from skimage import color, data

from colorizer import DEFAULT_MODEL, Colorizer
from memory import Bank, Trust

RED = (200, 30, 30)


@pytest.fixture(scope="module")
def colorizer() -> Colorizer:
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def red_bank(tmp_path_factory, colorizer) -> str:
    """A bank of three red-tinted photos, built by the CLI."""
    folder = tmp_path_factory.mktemp("family")
    for i, load in enumerate((data.astronaut, data.coffee, data.chelsea)):
        rgb = np.asarray(Image.fromarray(load()).resize((128, 96))).astype(np.float64)
        Image.fromarray((0.3 * rgb + 0.7 * np.array(RED)).astype(np.uint8)).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not a photo")
    out = folder / "bank.npz"
    from build_memory import main
    assert main([str(folder), "-o", str(out)]) == 0
    return str(out)


def a_of(rgb: np.ndarray) -> float:
    return float(color.rgb2lab(rgb)[..., 1].mean())


def test_the_bank_holds_every_photo_compactly_with_the_shipped_trust(red_bank, colorizer):
    bank = Bank.load(red_bank)
    assert bank.embeddings.shape[0] == bank.hists.shape[0] == 3
    assert bank.embeddings.dtype == np.float16 and bank.hists.dtype == np.uint8
    assert bank.hists.shape[1] == len(colorizer.bins) and bank.trust.max_strength > 0


def test_a_trusted_memory_moves_the_colours_towards_the_banks_and_an_untrusted_one_changes_nothing(red_bank, colorizer):
    grey = np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((160, 160)))
    bank = Bank.load(red_bank)
    auto = colorizer.colorize_grey(grey)
    bank.trust = Trust(bias=20.0, max_strength=0.8)   # trust it fully
    trusted = colorizer.colorize_grey(grey, prior=colorizer.memory_prior(grey, bank))
    assert a_of(trusted) > a_of(auto) + 3
    bank.trust = Trust(bias=-40.0, max_strength=0.8)  # not at all
    untrusted = colorizer.colorize_grey(grey, prior=colorizer.memory_prior(grey, bank))
    assert np.abs(untrusted.astype(int) - auto).max() <= 1


def test_the_cli_colours_with_a_memory_and_refuses_what_it_cannot_use_in_one_line(tmp_path, run_cli, red_bank):
    Image.fromarray(data.coffee()).convert("L").resize((120, 90)).save(tmp_path / "g.png")
    r = run_cli("predict_color.py", "-image", tmp_path / "g.png", "--memory", red_bank)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "Coloured_g.png").exists()
    for extra in (["--memory", str(tmp_path / "g.png")], ["--memory", red_bank, "--reference", str(tmp_path / "g.png")]):
        r = run_cli("predict_color.py", "-image", tmp_path / "g.png", "-output", tmp_path / "x.png", *extra)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
        assert not (tmp_path / "x.png").exists()
