"""A colour prior predicted from the photo itself (memory.Predictor): fitted by build_memory.py --predictor, put
into a model's graph by export_model.py --predictor (model.PriorHead), the same on torch and onnxruntime, and
off with --no-memory or when a reference gives the colours."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color, data

from colorizer import DEFAULT_TORCH_MODEL, Colorizer
from memory import Predictor
from model import PriorHead

RED = (200, 30, 30)


def a_of(rgb: np.ndarray) -> float:
    return float(color.rgb2lab(rgb)[..., 1].mean())


def test_the_predictor_learns_colours_from_features_and_keeps_them_through_a_file(tmp_path):
    rng = np.random.default_rng(0)
    q, e, n = 12, 8, 400
    bins = rng.normal(size=(q, 2)).astype(np.float32)
    basis = rng.dirichlet(np.ones(q), size=e)          # each feature axis stands for one palette
    mix = rng.dirichlet(np.ones(e), size=n)
    hists = mix @ basis
    raw = mix * 3 + 0.01 * rng.normal(size=mix.shape)  # features that tell the mixture
    pred = Predictor.fit(raw[:300], hists[:300], bins, lam=1e-3)
    out = pred.predict(raw[300:])
    assert out.min() >= 0 and np.allclose(out.sum(1), 1, atol=1e-5)
    tv = 0.5 * np.abs(out - hists[300:]).sum(1).mean()
    assert tv < 0.25 * 0.5 * np.abs(hists[:300].mean(0) - hists[300:]).sum(1).mean()  # far better than the mean
    pred.save(tmp_path / "p.npz")
    back = Predictor.load(str(tmp_path / "p.npz"))
    assert np.abs(back.predict(raw[300:]) - out).max() < 1e-3  # float16 weights


def test_the_graph_head_computes_the_predictors_bias():
    rng = np.random.default_rng(1)
    q, e = 10, 6
    pred = Predictor(rng.normal(size=(e, q)).astype(np.float32) * 0.1, np.full(q, 0.3, np.float32),
                     rng.normal(size=e).astype(np.float32), np.full(e, 2.0, np.float32), np.zeros((q, 2), np.float32))
    prior = rng.dirichlet(np.ones(q)).astype(np.float32)
    raw = rng.normal(size=(3, e)).astype(np.float32)
    arrays = [torch.from_numpy(getattr(pred, k)) for k in ("weights", "offset", "mean", "std")]
    for gate in (None, (2.2, 0.05)):
        head = PriorHead(*arrays, torch.from_numpy(prior), strength=0.8, correction=0.2, gate=gate)
        expected = np.stack([pred.bias(r, prior, 0.8, 0.2, gate) for r in raw])
        assert np.allclose(head(torch.from_numpy(raw)).numpy(), expected, atol=1e-4)
    full = pred.bias(raw, prior, 0.8, 0.2)
    assert np.allclose(pred.bias(raw, prior, 0.8, 0.2, (50.0, 1.0)), full, atol=1e-5)  # sure: all of it
    assert np.abs(pred.bias(raw, prior, 0.8, 0.2, (-50.0, 1.0))).max() < 1e-5         # unsure: none


@pytest.fixture(scope="module")
def red_model(tmp_path_factory) -> tuple[str, str]:
    """The shipped network with a prior fitted on red-tinted photos, at full strength, through the gate's code
    (open for every photo): (.pt, .onnx)."""
    folder = tmp_path_factory.mktemp("red")
    for i, load in enumerate((data.astronaut, data.coffee, data.chelsea, data.rocket, data.immunohistochemistry)):
        rgb = np.asarray(Image.fromarray(load()).convert("RGB").resize((128, 96))).astype(np.float64)
        Image.fromarray((0.3 * rgb + 0.7 * np.array(RED)).astype(np.uint8)).save(folder / f"p{i}.png")
    from build_memory import main as build
    assert build([str(folder), "--predictor", "-o", str(folder / "predictor.npz")]) == 0
    from export_model import main as export
    out = folder / "red.pt"
    assert export(["--onnx", DEFAULT_TORCH_MODEL, "--predictor", str(folder / "predictor.npz"),
                   "--predictor-strength", "1.0", "--predictor-gate", "99", "1",  # a gate that trusts every photo
                   "--out", str(out)]) == 0
    return str(out), str(out.with_suffix(".onnx"))


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((160, 160)))


def test_the_predicted_prior_colours_in_one_pass_alike_on_both_runners_and_is_off_when_asked(red_model, grey):
    shipped = Colorizer.from_checkpoint(DEFAULT_TORCH_MODEL)
    auto = shipped.colorize_grey(grey)
    results = {}
    for path in red_model:
        c = Colorizer.from_checkpoint(path)
        assert c.predicts_prior and not shipped.predicts_prior
        results[path] = c.colorize_grey(grey)
        assert a_of(results[path]) > a_of(auto) + 3           # towards the red photos it was fitted on
        c.memory = False                                      # --no-memory: the network's colours alone
        assert np.abs(c.colorize_grey(grey).astype(int) - auto).max() <= 1
        c.memory = True
        ref = np.asarray(Image.fromarray(data.coffee()).resize((96, 64)))
        assert np.abs(c.colorize_grey(grey, prior=c.reference_prior(ref)).astype(int)
                      - shipped.colorize_grey(grey, prior=shipped.reference_prior(ref))).max() <= 1
    pt, onnx = (results[p].astype(int) for p in red_model)
    assert np.abs(pt - onnx).max() <= 2


def test_the_cli_uses_the_models_prior_and_no_memory_turns_it_off(tmp_path, run_cli, red_model):
    Image.fromarray(data.chelsea()).convert("L").resize((120, 90)).save(tmp_path / "g.png")
    outs = {}
    for name, extra in (("with", []), ("without", ["--no-memory"]), ("shipped", ["-model", DEFAULT_TORCH_MODEL])):
        model = [] if name == "shipped" else ["-model", red_model[1]]
        r = run_cli("predict_color.py", "-image", tmp_path / "g.png", "-output", tmp_path / f"{name}.png",
                    *model, *extra)
        assert r.returncode == 0, r.stderr
        outs[name] = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).astype(int)
    assert np.abs(outs["without"] - outs["shipped"]).max() <= 2
    assert a_of(outs["with"].astype(np.uint8)) > a_of(outs["without"].astype(np.uint8)) + 3


def test_a_predictor_file_colours_through_memory_as_the_graph_does(red_model, grey, tmp_path):
    """--memory PREDICTOR (numpy, two passes) gives what the model with the same predictor in its graph gives."""
    pred = Predictor.load(str(Path(red_model[0]).parent / "predictor.npz"))
    pred.strength, pred.correction, pred.gate = 1.0, 0.1, (99.0, 1.0)  # the fixture's export setting
    pred.save(tmp_path / "red.npz")
    back = Predictor.load(str(tmp_path / "red.npz"))
    assert (back.strength, back.correction, back.gate) == (1.0, 0.1, (99.0, 1.0))
    shipped = Colorizer.from_checkpoint(DEFAULT_TORCH_MODEL)
    via_memory = shipped.colorize_grey(grey, prior=shipped.memory_prior(grey, back))
    in_graph = Colorizer.from_checkpoint(red_model[0]).colorize_grey(grey)
    assert np.abs(via_memory.astype(int) - in_graph).max() <= 2


def test_the_shipped_predictor_colours_a_photo_from_the_cli(tmp_path, run_cli):
    Image.fromarray(data.astronaut()).convert("L").resize((128, 128)).save(tmp_path / "g.png")
    for name, extra in (("auto", []), ("pred", ["--memory", "checkpoints/colour_predictor.npz"])):
        r = run_cli("predict_color.py", "-image", tmp_path / "g.png", "-output", tmp_path / f"{name}.png", *extra)
        assert r.returncode == 0, r.stderr
    auto, pred = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB")).astype(int) for n in ("auto", "pred"))
    assert np.abs(auto - pred).mean() > 0.5                             # the prior changed the colours
    grey_of = lambda rgb: np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("L")).astype(int)  # noqa: E731
    grey = np.asarray(Image.open(tmp_path / "g.png")).astype(int)
    assert np.abs(grey_of(pred) - grey).max() <= 1                     # and not the grey
