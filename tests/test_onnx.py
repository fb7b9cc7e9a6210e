"""Colorizing without torch: the shipped ONNX model against the torch checkpoint it was exported from
(same photos within one level, hints too, the same runner outputs), the numpy colour maths against torch's
and scikit-image's, the export of a small hint model, and the CLI in a process where torch cannot be
imported (a photo, a folder, hints, -histo, a film, the --edit editor's API; a .pt fails with one line)."""
from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color

import lab
import utils
from colour_prior import ColourPrior
from colorizer import DEFAULT_MODEL, DEFAULT_TORCH_MODEL, Colorizer
from conftest import REPO, SHARED_DATA, editor_process, subprocess_env
from export_model import export_onnx
from model import ModelConfig, build_model
from runner_torch import TorchRunner

KODAK = SHARED_DATA / "bench" / "kodak"


@pytest.fixture(scope="module")
def both() -> tuple[Colorizer, Colorizer]:
    torch.set_num_threads(1)
    return Colorizer.from_checkpoint(DEFAULT_TORCH_MODEL), Colorizer.from_checkpoint(DEFAULT_MODEL)


def kodak_greys(n: int = 3, width: int = 384) -> list[np.ndarray]:
    """The first n Kodak photos, grey, downscaled (the network sees 192 rows either way)."""
    paths = sorted(KODAK.glob("*.png"))[:n]
    if not paths:
        pytest.skip(f"{KODAK} not found")
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("L").resize((width, round(im.height * width / im.width)))))
    return out


# ---------------------------------------------------------------------------------------------------
# The two paths agree
def test_onnx_and_torch_give_the_same_photos_within_one_level(both):
    pt, ox = both
    for grey in kodak_greys():
        a, b = pt.colorize_grey(grey).astype(int), ox.colorize_grey(grey).astype(int)
        assert np.abs(a - b).max() <= 1


def test_onnx_and_torch_agree_on_a_hinted_photo(both):
    pt, ox = both
    grey = kodak_greys(1)[0]
    hints = [(190, 130, (192, 57, 43)), (40, 30, (40, 90, 220))]
    a = np.asarray(pt.colorize(Image.fromarray(grey), hints=hints), dtype=int)
    b = np.asarray(ox.colorize(Image.fromarray(grey), hints=hints), dtype=int)
    assert np.abs(a - b).max() <= 1
    assert np.abs(a - np.asarray(pt.colorize(Image.fromarray(grey)), dtype=int)).max() > 10  # the hints acted


def test_both_runners_return_the_same_dict(both):
    pt, ox = both
    grey = kodak_greys(1)[0]
    l = lab.levels_to_l(grey[::2, ::2].astype(np.float32) / 255)[None, None]  # 128 x 192 at the net's size
    bias = np.random.default_rng(0).normal(0, 1, len(ox.bins)).astype(np.float32)
    for b in (None, bias):
        want, got = pt.run(l, None, b), ox.run(l, None, b)
        assert sorted(want) == sorted(got) == ["ab", "embedding", "probs"]
        assert got["ab"].shape == (1, 2, 64, 96) and got["embedding"].shape == (1, 640)
        assert got["probs"].shape == (1, len(ox.bins), 64, 96)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=2e-3 * max(1.0, np.abs(want[k]).max()))
    # probs are the distribution ab is the annealed mean of; zero bias is no bias
    got = ox.run(l)
    np.testing.assert_allclose(got["probs"].sum(1), 1, atol=1e-4)
    np.testing.assert_allclose(np.einsum("bqhw,qc->bchw", got["probs"], ox.bins), got["ab"], atol=1e-2)
    np.testing.assert_array_equal(ox.run(l, None, np.zeros(len(ox.bins)))["ab"], got["ab"])
    assert not np.allclose(ox.run(l, None, bias)["ab"], got["ab"], atol=0.5)
    # bins and prior travel in the ONNX metadata
    ckpt = utils.load_checkpoint(DEFAULT_TORCH_MODEL)
    np.testing.assert_allclose(ox.bins, ckpt["ab_prior"]["bins"].numpy())
    np.testing.assert_allclose(ox.prior, ckpt["ab_prior"]["prior"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(pt.prior, ox.prior, rtol=1e-6)
    assert ox.decode == pt.decode and ox.size == pt.size and ox.propagation == pt.propagation


def test_a_colour_prior_reaches_the_photo_through_the_api(both):
    _, ox = both
    grey = kodak_greys(1)[0]
    towards_blue = np.where(ox.bins[:, 1] < -30, 4.0, 0.0).astype(np.float32)
    plain, biased = ox.predict_ab(grey), ox.predict_ab(grey, prior=ColourPrior(towards_blue))
    assert biased[:, 1].mean() < plain[:, 1].mean() - 5


def test_the_onnx_file_is_small_and_has_the_interface(both):
    import onnx
    proto = onnx.load(str(DEFAULT_MODEL))
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["l", "bias"]
    assert [o.name for o in proto.graph.output] == ["ab", "embedding", "probs"]
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert {"model_config", "decode", "size", "hint_propagation", "bins", "prior"} <= meta.keys()
    assert 6e6 < (REPO / "checkpoints" / "colorizer.onnx").stat().st_size < 12e6


def test_a_hint_model_exports_and_runs_the_same(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(width=8, depth=2, head="regression", hints=True)
    model = build_model(cfg).eval()
    for conv in model.hint_in:  # a trained hint input, not the zero-initialised one
        torch.nn.init.normal_(conv.weight, std=0.3)
    runner = TorchRunner(model, size=24)
    export_onnx(runner, str(tmp_path / "h.onnx"))
    ox = Colorizer.from_checkpoint(str(tmp_path / "h.onnx"))
    assert ox.takes_hints and ox.bins is None and ox.prior is None
    assert [i.name for i in ox.runner.session.get_inputs()] == ["l", "hints"]
    pt = Colorizer(model, 24)
    grey = (np.random.default_rng(0).random((30, 45)) * 255).astype(np.uint8)
    hints = [(10, 10, (200, 30, 30))]
    for h in (None, hints):
        a = pt.colorize(Image.fromarray(grey), hints=h)
        b = ox.colorize(Image.fromarray(grey), hints=h)
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert sorted(ox.run(np.full((1, 1, 20, 28), 50, np.float32))) == ["ab", "embedding"]


# ---------------------------------------------------------------------------------------------------
# The numpy colour maths against torch's (utils) and scikit-image's
def test_numpy_lab_to_rgb_and_grey_to_l_match_torch_and_scikit_image():
    rng = np.random.default_rng(0)
    lab_img = np.stack([rng.uniform(0, 100, (20, 30)), rng.uniform(-100, 100, (20, 30)),
                        rng.uniform(-100, 100, (20, 30))]).astype(np.float32)
    ours = lab.lab_to_rgb(lab_img[0], lab_img[1:])
    theirs = utils.lab_to_rgb(torch.from_numpy(lab_img)).numpy()
    sk = np.clip(color.lab2rgb(lab_img.transpose(1, 2, 0).astype(np.float64)), 0, 1).transpose(2, 0, 1)
    assert np.abs(ours - theirs).max() < 1e-5 and np.abs(ours - sk).max() < 1e-4
    rgb = rng.random((3, 20, 30))
    assert np.abs(lab.rgb_to_lab(rgb) - color.rgb2lab(rgb.transpose(1, 2, 0)).transpose(2, 0, 1)).max() < 1e-3
    levels = np.arange(256) / 255
    np.testing.assert_allclose(lab.l_table(256), utils.grey_to_l(torch.from_numpy(levels)).float().numpy(), atol=1e-5)
    sk_l = color.rgb2lab(np.repeat(levels[:, None, None], 3, 2))[..., 0, 0]
    assert np.abs(lab.l_table(256) - sk_l).max() < 1e-3
    floats = rng.random((7, 9)).astype(np.float32)
    assert np.abs(lab.levels_to_l(floats) - utils.grey_to_l(torch.from_numpy(floats)).numpy()).max() < 1e-4


def test_numpy_match_luma_is_torchs():
    rng = np.random.default_rng(1)
    rgb = rng.random((3, 16, 16)).astype(np.float32)
    luma = rng.random((16, 16)).astype(np.float32)
    ours = lab.match_luma(rgb.copy(), luma, 0.002)
    theirs = utils.match_luma(torch.from_numpy(rgb.copy()), torch.from_numpy(luma), 0.002).numpy()
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.abs(np.tensordot(lab.LUMA, ours, 1) - luma).max() <= 0.002 + 1e-5


def test_numpy_bilinear_upsampling_is_torchs_interpolate_and_grid_sample():
    ab = np.random.default_rng(2).normal(0, 30, (2, 7, 11)).astype(np.float32)
    t = torch.from_numpy(ab)[None]
    want = F.interpolate(t, size=(13, 22), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(lab.upsample_rows(ab, 0, 13, 13, 22), want, atol=1e-4)
    ys = (torch.arange(5, 40, dtype=torch.float32) + 0.5) * 2 / 40 - 1
    xs = (torch.arange(57, dtype=torch.float32) + 0.5) * 2 / 57 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None]
    want = F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].numpy()
    np.testing.assert_allclose(lab.upsample_rows(ab, 5, 40, 40, 57), want, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# The CLI with torch made unimportable
NO_TORCH = ("import sys; sys.modules['torch'] = None; sys.modules['skimage'] = None; "
            "sys.argv[0] = 'predict_color.py'; import predict_color; sys.exit(predict_color.main(sys.argv[1:]))")


def run_without_torch(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def greys_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("greys")
    for i, g in enumerate(kodak_greys(2, width=192)):
        Image.fromarray(g).save(folder / f"g{i}.png")
    return folder


def test_cli_without_torch_photo_hints_and_histogram(greys_dir, tmp_path):
    out = tmp_path / "one.png"
    r = run_without_torch("-image", greys_dir / "g0.png", "-output", out, "--hint", "60,40,#c0392b",
                          "-histo", "True", "--threads", "2")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (192, 128) and (tmp_path / "Histo_one.png").exists()


def test_cli_without_torch_folder(greys_dir, tmp_path):
    r = run_without_torch("-image", greys_dir, "-output", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Coloured_g0.png", "Coloured_g1.png"]


def test_cli_without_torch_shipped_colour_predictor(greys_dir, tmp_path):
    r = run_without_torch("-image", greys_dir / "g0.png", "-output", tmp_path / "p.png",
                          "--memory", "checkpoints/colour_predictor.npz")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "p.png").size == (192, 128)


def test_cli_without_torch_film(greys_dir, tmp_path):
    src, dst = tmp_path / "film.mp4", tmp_path / "Coloured_film.mp4"
    grey = np.asarray(Image.open(greys_dir / "g0.png"))[:96, :160]
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 160 - 16, 96, "yuv420p"
        for t in range(6):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(grey[:, 2 * t:2 * t + 144]), format="gray")))
        c.mux(s.encode())
    r = run_without_torch("-image", src, "-output", dst)
    assert r.returncode == 0, r.stderr
    with av.open(str(dst)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_cli_editor_without_torch(greys_dir, tmp_path):
    """--edit in a process without torch: the state, suggestions and a hinted preview (the ONNX pipeline's
    photo), then Ctrl-C stops it cleanly."""
    import http.client
    import io
    src, out = greys_dir / "g0.png", tmp_path / "edited.png"
    argv = [sys.executable, "-c", NO_TORCH, "-image", str(src), "--edit", "--no-browser", "--port", "0",
            "-output", str(out)]
    with editor_process(argv, REPO) as port:
        def call(method, path, body=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request(method, path, body and json.dumps(body), {"Content-Type": "application/json"} if body else {})
            r = conn.getresponse()
            data = r.read()
            conn.close()
            return r.status, data
        status, data = call("GET", "/api/state")
        state = json.loads(data)
        assert status == 200 and (state["width"], state["height"]) == (192, 128)
        assert state["head"] == "classification" and state["output"] == str(out)
        status, data = call("GET", "/api/suggest?x=60&y=40")
        colours = json.loads(data)["colors"]
        assert status == 200 and len(colours) >= 3 and all(c.startswith("#") and len(c) == 7 for c in colours)
        status, data = call("POST", "/api/colorize", {"hints": [{"x": 60, "y": 40, "color": "#c0392b"}]})
        assert status == 200
        want = Colorizer.from_checkpoint(DEFAULT_MODEL).colorize(Image.open(src), hints=[(60, 40, (192, 57, 43))])
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), np.asarray(want))
    assert not out.exists()


def test_a_torch_checkpoint_without_torch_is_one_line(greys_dir, tmp_path):
    r = run_without_torch("-image", greys_dir / "g0.png", "-output", tmp_path / "x.png", "-model", DEFAULT_TORCH_MODEL)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "requirements-train.txt" in lines[0] and "export_model.py" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_the_default_model_is_the_onnx_one_unless_a_decode_flag_needs_torch(tmp_path):
    import predict_color
    from colorizer import load_runner
    from utils import CheckpointError
    assert predict_color.default_model(predict_color.parse_args(["-image", "x.png"])) == DEFAULT_MODEL
    with_flag = predict_color.parse_args(["-image", "x.png", "--temperature", "0.4"])
    assert predict_color.default_model(with_flag) == DEFAULT_TORCH_MODEL  # torch is installed here
    with pytest.raises(CheckpointError, match="--temperature needs a torch checkpoint"):
        load_runner(str(DEFAULT_MODEL), temperature=0.4)
    with pytest.raises(CheckpointError, match="runs on the CPU"):
        load_runner(str(DEFAULT_MODEL), device="cuda")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="bad.onnx: not a readable ONNX model"):
        load_runner(str(tmp_path / "bad.onnx"))
