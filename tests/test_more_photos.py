"""experiments/more_photos.py on a tiny fake mirror: what is kept, what is dropped and why, and reruns.

The mirror is a bare Git repository made here, laid out as the Caltech-101 source expects
(101_ObjectCategories/..., with a car_side folder that must be left out); no network, no real mirrors.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import more_photos

NEAR_DUPLICATES = Path(__file__).resolve().parents[2] / "shared" / "tools" / "near_duplicates.py"
REPO_NAME = "MachineLearning2020/Homework2-Caltech101"
if not NEAR_DUPLICATES.is_file():
    pytest.skip(f"{NEAR_DUPLICATES} not found: the script uses the shared near-duplicate tool",
                allow_module_level=True)


def colourful(seed: int, w: int = 96, h: int = 96) -> Image.Image:
    """A smooth random colour image: 6x6 random colours, enlarged (a distinct hash per seed)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize((w, h), Image.BICUBIC)


def flat_copy(seed: int) -> Image.Image:
    """A photo half smooth colour ramp, half flat orange with faint noise: copies that differ in the noise
    alone have hashes far apart on all bits (the flat half's bits flip), and equal on the stable bits."""
    y, x = np.mgrid[0:96, 0:96]
    img = np.stack([x * 2.5, 255 - y * 2.5, 128 + 0 * x], -1).astype(np.float64)
    img[:, 48:] = (230, 140, 40)
    img[:, 48:] += np.random.default_rng(seed).normal(0, 0.6, (96, 48, 3))
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def mirror(tmp_path) -> dict:
    """A bare mirror of nine image files and two others, an exclude list and a train folder."""
    nd = more_photos.load_near_duplicates(NEAR_DUPLICATES)
    work = tmp_path / "work"
    d = work / "101_ObjectCategories"
    for sub in ("a", "b", "car_side"):
        (d / sub).mkdir(parents=True)
    colourful(1, 400, 300).save(d / "a" / "big.jpg", quality=95)            # kept, shrunk to 299x224
    rgba = colourful(2).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(d / "a" / "clear.png")                                          # kept (alpha over white)
    colourful(3).save(d / "a" / "c.jpg", quality=95)                          # kept
    colourful(3).resize((80, 80), Image.BICUBIC).save(d / "a" / "c_small.jpg", quality=70)  # near_dup of c.jpg
    colourful(4).convert("L").convert("RGB").save(d / "b" / "grey.jpg")       # grey
    (d / "b" / "broken.jpg").write_text("version https://git-lfs.github.com/spec/v1\n")  # undecodable
    (d / "b" / "notes.txt").write_text("not listed\n")
    colourful(5).save(d / "b" / "eval.jpg", quality=95)                       # excluded_eval
    flat_copy(1).save(d / "b" / "flat.png")                                    # excluded_eval (stable bits)
    colourful(6, 40, 32).save(d / "b" / "tiny.jpg")                           # too_small
    colourful(7).save(d / "b" / "trained.jpg", quality=95)                    # near_dup of train
    colourful(8).save(d / "car_side" / "x.jpg")                               # not listed
    git(work, "init", "-q")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "photos")
    mirrors = tmp_path / "mirrors"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(mirrors / REPO_NAME.replace("/", "+") / "repo"))
    with Image.open(d / "b" / "eval.jpg") as im:
        listed = [nd.dhash(im), nd.dhash(flat_copy(2))]  # flat.png's evaluation copy, with other noise
    (tmp_path / "exclude.txt").write_text("".join(h.tobytes().hex() + "\n" for h in listed))
    (tmp_path / "train" / "x").mkdir(parents=True)
    colourful(7, 120, 120).save(tmp_path / "train" / "x" / "seen.png")
    return {"mirrors": mirrors, "exclude": tmp_path / "exclude.txt", "train": tmp_path / "train",
            "out": tmp_path / "out", "work": work, "nd": nd}


def build(m: dict, *extra: str) -> int:
    return more_photos.main(["--mirrors", str(m["mirrors"]), "--out", str(m["out"]), "--sources", "caltech101",
                             "--exclude-list", str(m["exclude"]), "--train", str(m["train"]),
                             "--near-duplicates", str(NEAR_DUPLICATES), "--log-every", "2", *extra])


EXPECTED = {"listed": 10, "undecodable": 1, "too_small": 1, "grey": 1, "excluded_eval": 2, "near_dup": 2,
            "kept": 3, "near_dup_of_train": 1}


def test_counts_outputs_and_rerun(mirror, capsys):
    assert build(mirror) == 0
    folder = mirror["out"] / "caltech101"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == EXPECTED
    assert manifest["complete"] and manifest["repo"] == REPO_NAME and len(manifest["commit"]) == 40
    kept = sorted(p.name for p in folder.glob("*.webp"))
    assert kept == ["a__big.webp", "a__c.webp", "a__clear.webp"]
    with Image.open(folder / "a__big.webp") as im:
        assert im.format == "WEBP" and im.size == (299, 224)
    with Image.open(folder / "a__clear.webp") as im:
        assert im.size == (96, 96) and im.mode == "RGB"
    # Nothing kept is near an evaluation photo, as the shared tool sees the folder.
    nd = mirror["nd"]
    hashes = np.stack([nd.dhash(Image.open(p)) for p in folder.glob("*.webp")])
    assert not nd.near(hashes, nd.load_list(mirror["exclude"])).any()
    top = json.loads((mirror["out"] / "manifest.json").read_text())
    assert top["totals"]["kept"] == 3 and top["totals"]["listed"] == 10

    # A rerun skips the complete source; a run cut short carries on from its progress log.
    assert build(mirror) == 0
    assert "complete, 3 kept" in capsys.readouterr().out
    log = folder / "progress.jsonl"
    rows = log.read_text().splitlines()
    (folder / "manifest.json").unlink()
    (folder / "a__clear.webp").unlink()  # clear.png comes after big.jpg and c.jpg, so it is decided again
    log.write_text("\n".join(rows[:2]) + '\n{"path": "cut sh')
    assert build(mirror) == 0
    assert json.loads((folder / "manifest.json").read_text())["counts"] == EXPECTED
    assert sorted(p.name for p in folder.glob("*.webp")) == kept
    assert len(log.read_text().splitlines()) == 10
    with pytest.raises(SystemExit, match="other settings"):
        build(mirror, "--quality", "80")


def test_exclude_list_is_a_parameter(mirror):
    """With an empty exclude list the evaluation photo is kept; with its hash listed it is not."""
    empty = mirror["exclude"].with_name("empty.txt")
    empty.write_text("")
    shutil.rmtree(mirror["out"], ignore_errors=True)
    assert build(mirror, "--exclude-list", str(empty)) == 0
    counts = json.loads((mirror["out"] / "caltech101" / "manifest.json").read_text())["counts"]
    assert counts["excluded_eval"] == 0 and counts["kept"] == 5
    assert (mirror["out"] / "caltech101" / "b__eval.webp").is_file()


def test_stable_bits():
    """stable_bits reads the shared dhash's own thumbnail (the bits line up), and a copy whose flat half
    re-encodes differently is far on all bits, near on the stable ones."""
    nd = more_photos.load_near_duplicates(NEAR_DUPLICATES)
    a, b = flat_copy(1), flat_copy(2)
    ha, hb = nd.dhash(a), nd.dhash(b)
    g = np.asarray(a.convert("L").resize((17, 16), Image.BILINEAR), dtype=np.int16)
    assert (np.packbits((g[:, 1:] > g[:, :-1]).ravel()) == ha).all()
    assert nd.near(ha[None], hb[None]).tolist() == [False]
    stable = more_photos.stable_bits(a, 2)
    assert nd.POPCOUNT[(ha ^ hb) & stable].sum() <= 6 < nd.POPCOUNT[stable].sum()


def test_hash_index_is_exact():
    """The banded index finds exactly the hashes a brute-force search finds, at distances around 6."""
    rng = np.random.default_rng(0)
    base = [int.from_bytes(rng.bytes(32), "big") for _ in range(200)]
    index = more_photos.HashIndex(6)
    for h in base:
        index.add(h)
    for _ in range(300):
        h = base[rng.integers(len(base))]
        for bit in rng.choice(256, size=rng.integers(0, 9), replace=False):
            h ^= 1 << int(bit)
        truth = min((h ^ b).bit_count() for b in base) <= 6
        assert (index.find(h) is not None) == truth


def test_missing_mirror_is_noted(tmp_path, mirror):
    shutil.rmtree(mirror["mirrors"])
    assert build(mirror) == 0
    top = json.loads((mirror["out"] / "manifest.json").read_text())
    row = next(r for r in top["sources"] if r["name"] == "caltech101")
    assert row["status"] == "no mirror" and not row["complete"]
