"""Shared fixtures: small folders of photos, corrupt files, and one tiny training run that other tests reuse.

Photos come from ../shared/data (the project's data folder, beside the repository) when it is there, resized
to 48-64 px so that everything runs in seconds on a CPU; otherwise synthetic colour images stand in, so the
core tests always run. Tests that need real photos use `real_photo_dir`, which skips with the reason.
Run from the repository root: python -m pytest -q tests
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Shapes (w, h) the photos are resized to, in turn: landscape, portrait and square, all >= the 40 px that
# a 32 px crop is taken from.
SHAPES = [(64, 48), (48, 64), (56, 56)]
TINY = ["--batch-size", "4", "--crop-size", "32", "--width", "8", "--depth", "2", "--cache-dir", "",
        "--workers", "0", "--no-progress", "--threads", "1"]


def real_sources(n: int) -> list[Path]:
    """n photos from ../shared/data/train (half landscape, half scenes across its classes), or []."""
    land = SHARED_DATA / "train" / "landscape"
    scenes = SHARED_DATA / "train" / "scenes"
    if not (land.is_dir() and scenes.is_dir()):
        return []
    picked = sorted(land.glob("*.jpg"))[: n - n // 2]
    classes = sorted(p for p in scenes.iterdir() if p.is_dir())
    per_class = [sorted(c.glob("*.jpg")) for c in classes]
    for i in range(n // 2):  # round-robin over the classes
        files = per_class[i % len(per_class)]
        if i // len(per_class) < len(files):
            picked.append(files[i // len(per_class)])
    return picked if len(picked) == n else []


def synthetic_photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth, colourful stand-in photo: two random colour gradients plus a random disc."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1, c2 = rng.uniform(0, 255, (3, 3))
    t = (x / w * rng.uniform(0.3, 1) + y / h * rng.uniform(0.3, 1))[..., None] / 2
    img = c0 * (1 - t) + c1 * t
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r ** 2] = c2
    img += rng.normal(0, 4, img.shape)  # some texture
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_photos(folder: Path, n: int = 24, real: bool | None = None, seed: int = 0) -> list[Path]:
    """Write n small RGB JPEGs into folder: real photos when available (real=None) or required (True),
    synthetic ones otherwise. Returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = real_sources(n) if real is not False else []
    if real and not sources:
        pytest.skip(f"{SHARED_DATA}/train not found: this test needs the project's real photos")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = SHAPES[i % len(SHAPES)]
        if sources:
            with Image.open(sources[i]) as im:
                im = im.convert("RGB").resize((w, h), Image.BICUBIC)
        else:
            im = synthetic_photo(rng, w, h)
        path = folder / f"photo_{i:03d}.jpg"
        im.save(path, quality=95)
        out.append(path)
    return out


def add_corrupt(folder: Path, good: Path) -> list[Path]:
    """Add two broken files to folder: text named .jpg, and the first half of a real JPEG (its header
    reads fine, decoding fails). Returns their paths."""
    text = folder / "notes_not_an_image.jpg"
    text.write_text("this is not a JPEG\n")
    truncated = folder / "truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [text, truncated]


def tiny_args(data, out, *extra) -> list[str]:
    """train.py arguments for a tiny, fast run on the CPU."""
    return ["--data", str(data), "--out", str(out), *TINY, *map(str, extra)]


def subprocess_env() -> dict:
    """The environment for child processes: one thread each (the tests run side by side with other work),
    and none of torchrun's variables, which would make train.py join a process group."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@contextlib.contextmanager
def editor_process(argv: list[str], cwd) -> Iterator[int]:
    """predict_color.py --edit started with argv as a child process: yields the port it prints; on leaving the
    block, Ctrl-C, then it must have stopped cleanly (exit 0, "stopped", nothing on stderr)."""
    p = subprocess.Popen(argv, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, p.stderr.read() if p.poll() is not None else "")
        yield int(line.split("http://127.0.0.1:")[1].split("/")[0])
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "stopped" in stdout and stderr == "", stderr


def run_script(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would, from the repository root."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """24 small photos (real if ../shared/data is there, else synthetic); read-only for tests."""
    folder = tmp_path_factory.mktemp("photos")
    make_photos(folder)
    return folder


@pytest.fixture(scope="session")
def real_photo_dir(tmp_path_factory) -> Path:
    """24 small real photos from ../shared/data; skips (with the reason) where that folder is absent."""
    folder = tmp_path_factory.mktemp("real_photos")
    make_photos(folder, real=True)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, photo_dir) -> Path:
    """The run folder of a 12-step training run on photo_dir (a checkpoint for other tests to reuse)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    r = run_script("train.py", "--data", photo_dir, "--out", out, "--max-steps", "12", "--batch-size", "4",
                   "--crop-size", "32", "--width", "8", "--depth", "2", "--cache-dir", "", "--workers", "0",
                   "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


# The helpers above, as fixtures (test modules do not import conftest).
@pytest.fixture
def make_photo_folder():
    return make_photos


@pytest.fixture
def corrupt_files():
    return add_corrupt


@pytest.fixture
def tiny_argv():
    return tiny_args


@pytest.fixture
def run_cli():
    return run_script


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def child_env() -> dict:
    return subprocess_env()
