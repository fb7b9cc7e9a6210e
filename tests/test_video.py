"""Films: video_io round trips in every container, the CLI on a short clip made here (a known pan, then a
cut), the stabiliser lowering the measured flicker against per-frame colorization in the same test, and
damaged, truncated and undecodable files giving one error line and no output.

The clip is 96x64 and 9 frames, made with PyAV from scikit-image's photos, so the whole file runs in
seconds; it is colorized with the shipped model, as a user's film would be.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av  # in requirements.txt: a missing PyAV fails here rather than skipping every film test
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage import data

import predict_color
import video_io
from colorizer import DEFAULT_MODEL, Colorizer
from image_io import InputError
from temporal import Stabilizer
from utils import rgb_to_lab
from video import colorize_frames

REPO = Path(__file__).resolve().parents[1]
W, H, RATE, SHIFT = 96, 64, 12, 3   # frame size, frames per second, pan in pixels per frame
PAN, AFTER_CUT = 6, 3               # frames of the first shot and of the second


def grey_photo(which: str, width: int) -> np.ndarray:
    """A scikit-image photo's grey (uint8), resized to `width` columns."""
    im = Image.fromarray(getattr(data, which)()).convert("L")
    return np.asarray(im.resize((width, round(im.height * width / im.width)), Image.BICUBIC))


def clip_frames(grain: float = 8.0) -> list[np.ndarray]:
    """The clip's grey frames: a pan of SHIFT px per frame over one photo, then a cut to another; with
    film grain (Gaussian, `grain` levels), which makes per-frame colorization flicker as on old films."""
    a, b = grey_photo("astronaut", 200), grey_photo("coffee", 200)
    first = [a[30:30 + H, 20 + SHIFT * t: 20 + SHIFT * t + W] for t in range(PAN)]
    frames = first + [b[40:40 + H, 40 + SHIFT * t: 40 + SHIFT * t + W] for t in range(AFTER_CUT)]
    rng = np.random.default_rng(0)
    return [np.clip(f + rng.normal(0, grain, f.shape), 0, 255).round().astype(np.uint8) for f in frames]


def write_clip(path: Path, frames: list[np.ndarray], audio: str | None = "aac", codec: str = "libx264",
               rotation: int = 0) -> Path:
    """A film of grey frames (RATE fps; H.264 with B-frames) with a 440 Hz tone (audio: its codec, or None),
    written with PyAV directly; rotation: a display rotation in degrees counter-clockwise, as phones store."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=RATE)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if rotation:
            s.set_display_rotation(rotation)
        s.options = {"crf": "18"} if codec == "libx264" else {}
        a = c.add_stream(audio, rate=44100) if audio else None
        for g in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(g), format="gray")))
        c.mux(s.encode())
        if a is not None:
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(44100 * len(frames) // RATE) / 44100)).astype(np.float32)
            fmt = a.codec_context.format.name  # the sample format the encoder takes
            if fmt.startswith("s16"):
                tone = (tone * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(tone[None], format=fmt, layout="mono")
            frame.sample_rate = 44100
            c.mux(a.encode(frame))
            c.mux(a.encode())
    return path


def describe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        audio = [s.codec_context.name for s in c.streams.audio]
        return {"size": (v.codec_context.width, v.codec_context.height), "frames": frames,
                "rate": v.average_rate, "audio": audio}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("film") / "clip.mp4", clip_frames())


@pytest.fixture(scope="module")
def colorizer() -> Colorizer:
    torch.set_num_threads(1)
    return Colorizer.from_checkpoint(DEFAULT_MODEL)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp_", "Coloured_")))


# ---------------------------------------------------------------------------------------------------
# video_io
@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".avi", ".webm"])
def test_every_container_round_trips_size_frames_and_rate(tmp_path, ext):
    rgb = [np.repeat(g[..., None], 3, 2) for g in clip_frames(grain=0)]
    info = video_io.VideoInfo(W, H, Fraction(RATE), Fraction(1, RATE), len(rgb))
    out = tmp_path / f"x{ext}"
    video_io.write_video(str(out), info, lambda w: [w.write(f) for f in rgb])
    assert describe(out) == {"size": (W, H), "frames": len(rgb), "rate": RATE, "audio": []}
    with video_io.VideoReader(str(out)) as r:
        greys = [g for g, _ in r.frames()]
    # the grey survives encoding (BT.601 luma both ways), to codec noise
    assert np.abs(np.stack(greys).astype(int) - np.stack(clip_frames(grain=0))).mean() < 2


def test_reader_keeps_timestamps_and_passes_audio_packets(clip):
    with video_io.VideoReader(str(clip)) as r:
        assert (r.info.width, r.info.height, r.info.rate, r.info.frames) == (W, H, RATE, PAN + AFTER_CUT)
        kinds = []
        pts = [p for _, p in r.frames(audio=lambda packet: kinds.append(packet.stream.type))]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert kinds and set(kinds) == {"audio"}


def remux(src: Path, dst: Path) -> None:
    """src through video_io into dst, frames unchanged: the CLI's path without the model."""
    with video_io.VideoReader(str(src)) as r:
        def fill(writer):
            for grey, pts in r.frames(audio=writer.copy_audio):
                writer.write(np.repeat(grey[..., None], 3, 2), pts)
        video_io.write_video(str(dst), r.info, fill, audio=r.audio)


def greys_of(path: Path) -> np.ndarray:
    with video_io.VideoReader(str(path)) as r:
        return np.stack([g for g, _ in r.frames()]).astype(int)


@pytest.mark.parametrize("ext", [".avi", ".mp4"])
def test_an_avi_with_b_frames_keeps_its_frame_rate_and_order(tmp_path, ext):
    """AVI stores no presentation times; with B-frames FFmpeg's guesses come out of order."""
    src = write_clip(tmp_path / "film.avi", clip_frames(grain=0), audio=None)
    remux(src, tmp_path / f"out{ext}")
    assert describe(tmp_path / f"out{ext}") == {"size": (W, H), "frames": PAN + AFTER_CUT, "rate": RATE, "audio": []}
    assert np.abs(greys_of(tmp_path / f"out{ext}") - greys_of(src)).mean() < 2  # same frames, same order


@pytest.mark.parametrize("audio, ext, expected", [("aac", ".mkv", "aac"), ("pcm_s16le", ".mp4", "aac"),
                                                  ("pcm_s16le", ".webm", "opus"), ("pcm_s16le", ".mov", "pcm_s16le")])
def test_audio_is_copied_or_reencoded_for_the_container(tmp_path, audio, ext, expected):
    src = write_clip(tmp_path / "film.mkv", clip_frames(grain=0)[:4], audio=audio)
    remux(src, tmp_path / f"out{ext}")
    assert describe(tmp_path / f"out{ext}")["audio"] == [expected]
    with av.open(str(tmp_path / f"out{ext}")) as c:  # and it lasts as long as the input's
        assert sum(f.samples for f in c.decode(audio=0)) / 44100 == pytest.approx(4 / RATE, abs=0.05)


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="writing a display rotation needs PyAV >= 18")
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_film_with_a_display_rotation_is_read_and_coloured_upright(tmp_path, rotation):
    """A phone's portrait film is stored landscape with a display rotation: frames come out as shown."""
    stored = clip_frames(grain=0)[:3]
    film = write_clip(tmp_path / "phone.mp4", stored, audio=None, rotation=rotation)
    shown = [np.rot90(f, rotation // 90) for f in stored]
    with video_io.VideoReader(str(film)) as r:
        size = (r.info.width, r.info.height)
        greys = np.stack([g for g, _ in r.frames()]).astype(int)
    assert size == (shown[0].shape[1], shown[0].shape[0])
    assert np.abs(greys - np.stack(shown)).mean() < 2
    out = tmp_path / "coloured.mp4"
    assert predict_color.main(["-image", str(film), "-output", str(out), "--no-stabilize"]) == 0
    assert describe(out)["size"] == size
    with video_io.VideoReader(str(out)) as r:
        assert r.turns == 0  # written upright, with no rotation left to apply
        assert np.abs(np.stack([g for g, _ in r.frames()]).astype(int) - np.stack(shown)).mean() < 3


def test_missing_pyav_is_one_line_naming_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(InputError, match=r"film.mp4: videos need PyAV, which is not installed \(pip install av\)"):
        video_io.VideoReader(str(tmp_path / "film.mp4"))


# ---------------------------------------------------------------------------------------------------
# The command line
def test_cli_colours_a_film_keeping_size_frames_rate_audio_and_grey(clip, tmp_path):
    out = tmp_path / "out" / "coloured.mp4"
    assert predict_color.main(["-image", str(clip), "-output", str(out)]) == 0
    assert describe(out) == {**describe(clip), "audio": ["aac"]}
    greys = {}
    for name, path in [("in", clip), ("out", out)]:
        with video_io.VideoReader(str(path)) as r:
            greys[name] = np.stack([g for g, _ in r.frames()]).astype(int)
    rgb = np.stack(list(video_io.read_frames(str(out))))
    assert np.abs(greys["out"] - greys["in"]).mean() < 3  # the film's grey is kept, to codec noise
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).mean() > 2  # and it has colour
    assert leftovers(out.parent) == []


def test_default_output_is_coloured_name_beside_the_film(clip, tmp_path):
    film = tmp_path / "film.mkv"
    write_clip(film, clip_frames()[:3], audio=None)
    assert predict_color.main(["-image", str(film), "--no-stabilize", "--crf", "30"]) == 0
    assert leftovers(tmp_path) == ["Coloured_film.mkv"]
    assert describe(tmp_path / "Coloured_film.mkv")["frames"] == 3


def ab_lowpassed(rgb: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    ab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].numpy()
    return np.stack([gaussian_filter(c, sigma, mode="nearest") for c in ab])


def pan_flicker(frames: list[np.ndarray]) -> float:
    """Mean |change of low-passed ab| between consecutive frames of the pan, after undoing it."""
    m = 6
    abs_ = [ab_lowpassed(f) for f in frames[:PAN]]
    return float(np.mean([np.linalg.norm(cur[:, m:-m, m:W - SHIFT - m] - prev[:, m:-m, m + SHIFT:W - m], axis=0).mean()
                          for prev, cur in zip(abs_, abs_[1:])]))


def test_stabilizing_lowers_the_flicker_and_keeps_the_cut(clip, colorizer):
    with video_io.VideoReader(str(clip)) as r:
        greys = [g for g, _ in r.frames()]
    per_frame = list(colorize_frames(colorizer, greys, None))
    stabilizer = Stabilizer()
    stable = list(colorize_frames(colorizer, greys, stabilizer, workers=2))  # predictions run ahead
    assert pan_flicker(stable) < 0.5 * pan_flicker(per_frame)
    assert stabilizer.cuts == [0, PAN]
    assert np.array_equal(stable[PAN], per_frame[PAN])  # the second shot starts with its own colours


def run_cli_on(path: Path, capsys, *extra) -> tuple[int, list[str]]:
    code = predict_color.main(["-image", str(path), *extra])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_corrupt_file_is_one_error_line_and_no_output(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a film at all\n" * 20)
    code, err = run_cli_on(bad, capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {bad}: cannot read video (not a video file"), err
    assert leftovers(tmp_path) == []


def test_a_truncated_film_is_one_error_line_and_no_output(clip, tmp_path, capsys):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # the index (moov) is at the end
    code, err = run_cli_on(cut, capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {cut}: cannot read video (damaged or truncated MP4/MOV file"), err
    assert leftovers(tmp_path) == []


def test_a_codec_without_decoder_is_one_error_line_and_no_output(tmp_path, capsys):
    film = write_clip(tmp_path / "ffv1.avi", clip_frames()[:2], audio=None, codec="ffv1")
    data_ = film.read_bytes()
    assert data_.count(b"FFV1") >= 1
    film.write_bytes(data_.replace(b"FFV1", b"ZZZ9"))  # a fourcc no decoder knows
    code, err = run_cli_on(film, capsys)
    assert code == 1 and len(err) == 1
    assert err[0] == f"error: {film}: cannot read video (its video codec is unknown to PyAV's FFmpeg: no decoder)", err
    assert leftovers(tmp_path) == []


def test_an_unknown_output_container_fails_before_the_work(clip, tmp_path, capsys):
    code, err = run_cli_on(clip, capsys, "-output", str(tmp_path / "x.flv"))
    assert code == 1 and len(err) == 1 and "unknown video output format '.flv'" in err[0]
    assert not (tmp_path / "x.flv").exists()


def test_an_interrupted_run_leaves_nothing_under_the_final_name(tmp_path):
    film = write_clip(tmp_path / "long.mp4", clip_frames() * 8, audio=None)  # 72 frames: seconds of work
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "predict_color.py"), "-image", str(film), "--threads", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not any(p.name.startswith(".tmp_") for p in tmp_path.iterdir()):  # encoding has started
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert "interrupted (SIGTERM)" in err.decode()
    assert leftovers(tmp_path) == []
