"""The colour editor without a browser: the session (previews from the cached network output equal the full
pipeline's result, suggested colours, saving), and its JSON API through the standard library's HTTP client
against a server started here: every endpoint, every refusal, concurrent requests, the saved result equal
to the CLI's `--hints` result, and `predict_color.py --edit` started and stopped with Ctrl-C."""
import http.client
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import editor
from colorizer import DEFAULT_MODEL, DEFAULT_TORCH_MODEL, Colorizer
from conftest import editor_process
from colour_prior import ColourPrior, PriorError
from editor import ColourField, EditorSession, colour_field, top_colours
from editor_server import MAX_BODY, EditorServer
from hints import Hint, load_hints, parse_colour
from model import ModelConfig, build_model
from utils import save_checkpoint

W, H = 192, 128
RED = "#c0392b"


@pytest.fixture(scope="module")
def shipped():
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def grey_path(tmp_path_factory):
    """The project's sample photo, grey, at 192x128."""
    from conftest import REPO
    path = tmp_path_factory.mktemp("photo") / "grey.png"
    with Image.open(REPO / "data" / "sample_grey.jpg") as im:
        im.convert("L").resize((W, H), Image.BICUBIC).save(path)
    return path


@pytest.fixture(scope="module")
def session(shipped, grey_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "Coloured_grey.png"
    return EditorSession.open(shipped, str(grey_path), str(out))


@pytest.fixture(scope="module")
def server(session):
    srv = EditorServer(session, 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv, method, path, body=None, headers=None, host=None):
    """One request -> (status, headers, body bytes). body: an object (sent as JSON) or bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    sized = {"Content-Type": "application/json", "Content-Length": str(len(body))} if body is not None else {}
    hdrs = {"Host": host or f"127.0.0.1:{srv.port}", **sized, **(headers or {})}
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in hdrs.items():
        if v is not None:
            conn.putheader(k, v)
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r, data


def png(data: bytes) -> np.ndarray:
    import io
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------------
# The session
@pytest.mark.parametrize("model", [DEFAULT_MODEL, DEFAULT_TORCH_MODEL], ids=["onnx", "torch"])
def test_previews_from_the_cached_network_output_equal_the_full_pipeline(model, shipped, grey_path, tmp_path):
    """Without and with hints, the preview (here at full size) is exactly what Colorizer.colorize gives, on
    either runner; so are its suggestions' distributions."""
    c = shipped if model == DEFAULT_MODEL else Colorizer.from_checkpoint(model)
    session = EditorSession.open(c, str(grey_path), str(tmp_path / "o.png"))
    grey = Image.open(grey_path)
    assert np.array_equal(session.preview([]), np.asarray(c.colorize(grey)))
    hints = [Hint(60, 40, (192, 57, 43)), Hint(150, 100, (40, 90, 220), radius=6)]
    assert np.array_equal(session.preview(hints), np.asarray(c.colorize(grey, hints=hints)))
    assert np.allclose(session._field.probs.sum(-1), 1, atol=1e-4) and len(session.suggest(60, 40)) >= 3
    assert session.state()["head"] == "classification"


def test_a_colour_prior_shapes_preview_suggestions_and_save(shipped, grey_path, tmp_path):
    """With a prior (as --reference makes), the automatic preview, hinted previews and the saved photo are
    Colorizer.colorize's with that prior, and the suggestions come from the biased distribution."""
    rng = np.random.default_rng(0)
    ref = np.zeros((64, 64, 3), np.uint8)
    ref[..., 2] = 200 + rng.integers(0, 40, (64, 64))  # a blue photo
    ref[..., 1] = 90
    prior = shipped.reference_prior(Image.fromarray(ref))
    plain = EditorSession.open(shipped, str(grey_path), str(tmp_path / "p.png"))
    s = EditorSession.open(shipped, str(grey_path), str(tmp_path / "o.png"), prior=prior)
    grey = Image.open(grey_path)
    assert np.array_equal(s.preview([]), np.asarray(shipped.colorize(grey, prior=prior)))
    assert not np.array_equal(s.preview([]), plain.preview([]))
    hints = [Hint(60, 40, (192, 57, 43))]
    assert np.array_equal(s.preview(hints), np.asarray(shipped.colorize(grey, hints=hints, prior=prior)))
    assert s._field.gain == prior.gain and not np.allclose(s._field.probs, plain._field.probs)
    field = colour_field(shipped, s.grey, prior)
    assert np.array_equal(field.probs, s._field.probs) and field.centre == s._field.centre
    assert 3 <= len(s.suggest(60, 40)) <= editor.SUGGESTIONS
    s.save(hints)
    assert np.array_equal(np.asarray(Image.open(s.output)),
                          np.asarray(shipped.colorize(grey, hints=hints, prior=prior)))


def test_a_large_photo_is_previewed_scaled_down(shipped, grey_path, tmp_path):
    s = EditorSession.open(shipped, str(grey_path), str(tmp_path / "o.png"), preview_side=96)
    assert s.preview([Hint(10, 10, (255, 0, 0))]).shape == (64, 96, 3)
    assert s.state()["preview_width"] == 96 and s.state()["width"] == W


def test_top_colours_most_likely_first_with_alike_bins_merged():
    bins = np.array([[0, 0], [40, 40], [42, 41], [-30, 20]], np.float32)
    probs = np.array([0.3, 0.25, 0.2, 0.25], np.float32)[None, None]     # one place, four bins
    field = ColourField(probs, bins, np.zeros((1, 1, 2), np.float32))
    colours = top_colours(field, 0.5, 0.5, lightness=60.0)
    # The two near-identical reds merge (0.45) and come first; then grey (0.3), then the green (0.25).
    assert len(colours) == 3 and colours[1] == "#919191"
    r, g, b = (int(colours[0][i:i + 2], 16) for i in (1, 3, 5))
    assert r > g and r > b


def test_suggestions_of_the_shipped_model_come_from_its_distribution(shipped, session):
    field = colour_field(shipped, session.grey)
    assert field.probs is not None and np.allclose(field.probs.sum(-1), 1, atol=1e-4)
    colours = session.suggest(60, 40)
    assert 3 <= len(colours) <= editor.SUGGESTIONS and len(set(colours)) == len(colours)
    assert all(len(c) == 7 and c[0] == "#" for c in colours)


def test_a_regression_model_offers_colours_around_its_prediction(tmp_path, grey_path):
    path = tmp_path / "reg.pt"
    cfg = ModelConfig(width=8, depth=2)
    save_checkpoint({"model": build_model(cfg).state_dict(), "model_config": cfg.to_dict()}, str(path))
    c = Colorizer.from_checkpoint(str(path))
    s = EditorSession.open(c, str(grey_path), str(tmp_path / "o.png"))
    field = colour_field(c, s.grey)
    assert field.probs is None and s.state()["head"] == "regression"
    colours = s.suggest(50, 50)
    assert len(colours) >= 4 and len(set(colours)) == len(colours)
    assert np.array_equal(s.preview([Hint(50, 50, (200, 30, 30))]),
                          c.colorize_grey(s.grey, hints=[Hint(50, 50, (200, 30, 30))]))
    with pytest.raises(PriorError, match="classification head"):
        EditorSession.open(c, str(grey_path), str(tmp_path / "o.png"), prior=ColourPrior(np.zeros(3)))


# ---------------------------------------------------------------------------------------------------
# The API
def test_state_and_the_page(server, session):
    status, _, data = call(server, "GET", "/api/state")
    state = json.loads(data)
    assert status == 200 and (state["width"], state["height"]) == (W, H) and state["hints"] == []
    assert state["output"] == session.output and state["hints_output"].endswith("Coloured_grey.hints.json")
    status, r, data = call(server, "GET", "/")
    assert status == 200 and b"/editor.js" in data and r.getheader("Content-Type").startswith("text/html")
    assert "default-src 'self'" in r.getheader("Content-Security-Policy")
    for path, kind in [("/editor.js", "text/javascript"), ("/editor.css", "text/css")]:
        status, r, data = call(server, "GET", path)
        assert status == 200 and r.getheader("Content-Type").startswith(kind) and len(data) > 500
    for path in ("/", "/editor.js", "/editor.css"):  # nothing is fetched from the network (no CDN)
        assert b"http://" not in call(server, "GET", path)[2] and b"https://" not in call(server, "GET", path)[2]
    status, _, data = call(server, "GET", "/api/grey")
    assert status == 200 and png(data).shape == (H, W, 3)


def test_colorize_returns_the_preview_png(server, shipped, grey_path):
    hints = [{"x": 60, "y": 40, "color": RED}]
    status, r, data = call(server, "POST", "/api/colorize", {"hints": hints})
    assert status == 200 and r.getheader("Content-Type") == "image/png"
    want = shipped.colorize(Image.open(grey_path), hints=[Hint(60, 40, (192, 57, 43))])
    assert np.array_equal(png(data), np.asarray(want))


def test_suggest_returns_colours(server, session):
    status, _, data = call(server, "GET", "/api/suggest?x=60&y=40")
    assert status == 200 and json.loads(data) == {"colors": session.suggest(60, 40)}


def test_saved_result_equals_the_cli_hints_result(server, session, grey_path, tmp_path, run_cli):
    hints = [{"x": 60, "y": 40, "color": RED}, {"x": 150.5, "y": 100, "color": "skyblue", "radius": 5}]
    status, _, data = call(server, "POST", "/api/save", {"hints": hints})
    paths = json.loads(data)
    assert status == 200 and paths == {"image": session.output, "hints": session.hints_output}
    assert load_hints(paths["hints"]) == [Hint(60, 40, (192, 57, 43)), Hint(150.5, 100, (135, 206, 235), 5)]
    out = tmp_path / "cli.png"
    r = run_cli("predict_color.py", "-image", grey_path, "-output", out, "--hints", paths["hints"])
    assert r.returncode == 0, r.stderr
    saved, cli = np.asarray(Image.open(paths["image"])), np.asarray(Image.open(out))
    assert saved.shape == (H, W, 3) and np.array_equal(saved, cli)


def test_every_refusal_is_one_line_and_the_server_stays_up(server):
    good = {"hints": [{"x": 1, "y": 2, "color": "red"}]}
    cases = [  # (method, path, body, headers, host) -> (status, words in the reason)
        (("GET", "/api/state", None, None, "evil.example:80"), (403, "Host")),
        (("GET", "/api/state", None, None, f"localhost.evil.example:{server.port}"), (403, "Host")),
        (("POST", "/api/colorize", good, {"Origin": "http://evil.example"}, None), (403, "other sites")),
        (("POST", "/api/save", good, {"Content-Type": "text/plain"}, None), (415, "application/json")),
        (("POST", "/api/colorize", b"{not json", None, None), (400, "not JSON")),
        (("POST", "/api/colorize", b"\xff\xfe", None, None), (400, "not JSON")),
        (("POST", "/api/colorize", [1, 2], None, None), (400, "expected a JSON object")),
        (("POST", "/api/colorize", {"hints": {"x": 1}}, None, None), (400, "expected a JSON list")),
        (("POST", "/api/colorize", {"hints": [{"x": W, "y": 2, "color": "red"}]}, None, None), (400, "outside")),
        (("POST", "/api/save", {"hints": [{"x": -1, "y": 2, "color": "red"}]}, None, None), (400, "outside")),
        (("POST", "/api/colorize", {"hints": [{"x": 1, "y": 2, "color": "blurple"}]}, None, None), (400, "not a colour")),
        (("POST", "/api/colorize", {"hints": [{"x": 1, "y": 2, "color": 7}]}, None, None), (400, "color must be")),
        (("POST", "/api/colorize", {"hints": [{"x": "1", "y": 2, "color": "red"}]}, None, None), (400, "numbers")),
        (("POST", "/api/colorize", {"hints": [good["hints"][0]] * (editor.MAX_HINTS + 1)}, None, None), (400, "at most")),
        (("POST", "/api/colorize", b" " * (MAX_BODY + 1), None, None), (413, "over")),
        (("POST", "/api/colorize", None, {"Content-Type": "application/json"}, None), (411, "Content-Length")),
        (("GET", "/api/suggest?x=1", None, None, None), (400, "y must be")),
        (("GET", "/api/suggest?x=nan&y=1", None, None, None), (400, "x must be")),
        (("GET", "/api/suggest?x=1e9&y=1", None, None, None), (400, "outside")),
        (("GET", "/api/suggest?x=1&x=2&y=1", None, None, None), (400, "x must be")),
        (("POST", "/api/nothing", good, None, None), (404, "no such")),
        (("GET", "/../editor_server.py", None, None, None), (404, "no such")),
        (("GET", "/editor_static/editor.js", None, None, None), (404, "no such")),
        (("GET", "/%2e%2e/%2e%2e/etc/passwd", None, None, None), (404, "no such")),
        (("GET", "/editor.py", None, None, None), (404, "no such")),
    ]
    for (method, path, body, headers, host), (want, says) in cases:
        status, r, data = call(server, method, path, body, headers, host)
        text = data.decode()
        assert status == want and text.count("\n") == 1 and says in json.loads(text)["error"], (path, body, text)
    assert call(server, "GET", "/api/state")[0] == 200


def test_concurrent_requests_get_their_own_answers(server, session):
    colours = ["red", "blue", "green", "orange"]

    def hints(i):
        return [{"x": 10 + 15 * i, "y": 20 + 10 * i, "color": colours[i % 4]}]

    def colorize(i):
        return call(server, "POST", "/api/colorize", {"hints": hints(i)})

    def suggest(i):
        return call(server, "GET", f"/api/suggest?x={10 * i}&y={5 * i}")

    with ThreadPoolExecutor(8) as pool:  # 16 requests at once, previews and suggestions mixed
        previews = [pool.submit(colorize, i) for i in range(8)]
        suggestions = [pool.submit(suggest, i) for i in range(8)]
        previews, suggestions = [f.result() for f in previews], [f.result() for f in suggestions]
    for i, (status, _, data) in enumerate(previews):
        want = session.preview([Hint(h["x"], h["y"], parse_colour(h["color"])) for h in hints(i)])
        assert status == 200 and np.array_equal(png(data), want)
    for i, (status, _, data) in enumerate(suggestions):
        assert status == 200 and json.loads(data)["colors"] == session.suggest(10 * i, 5 * i)


# ---------------------------------------------------------------------------------------------------
# The command line
def test_cli_edit_starts_from_hints_and_stops_cleanly_on_ctrl_c(grey_path, tmp_path, repo):
    hints_file = tmp_path / "h.json"
    hints_file.write_text(json.dumps([{"x": 60, "y": 40, "color": RED}]))
    out = tmp_path / "result" / "edited.png"
    argv = [sys.executable, str(repo / "predict_color.py"), "-image", str(grey_path), "--edit", "--no-browser",
            "--port", "0", "--hints", str(hints_file), "-output", str(out)]
    with editor_process(argv, tmp_path) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/state")
        state = json.loads(conn.getresponse().read())
        assert state["hints"] == [{"x": 60.0, "y": 40.0, "color": RED}] and state["output"] == str(out)
        conn.close()
    assert not out.exists()  # nothing saved, nothing half-written


@pytest.mark.parametrize("extra, says, status", [
    (["--hint", f"{W},1,red"], "outside", 1),
    (["--video"], "--edit opens one photo", 2),
])
def test_cli_edit_refusals_are_one_line(grey_path, tmp_path, run_cli, extra, says, status):
    r = run_cli("predict_color.py", "-image", grey_path, "--edit", "--no-browser", "-output", tmp_path / "o.png", *extra)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == status and len(lines) == 1 and says in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_edit_refuses_a_folder(grey_path, run_cli):
    r = run_cli("predict_color.py", "-image", grey_path.parent, "--edit", "--no-browser")
    assert r.returncode == 2 and "--edit opens one photo" in r.stderr


def test_cli_edit_on_a_port_in_use_is_one_line(grey_path, tmp_path, run_cli, capsys):
    import socket

    import predict_color
    with pytest.raises(SystemExit):
        predict_color.parse_args(["-image", "x.jpg", "--edit", "--port", "70000"])
    assert "from 0 to 65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("predict_color.py", "-image", grey_path, "--edit", "--no-browser", "--port", port,
                    "-output", tmp_path / "o.png")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and f"--port {port}: cannot listen" in lines[0], r.stderr
