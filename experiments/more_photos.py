"""Build a folder of extra training photos from public photo collections held as bare Git mirrors (issue 28).

python -m experiments.more_photos --mirrors /work/.mirror --out /work/more_photos

Each source in SOURCES is read from MIRRORS/<owner>+<name>/repo (a bare Git directory, or one holding .git) at
its HEAD: the image files under the source's folders are streamed out of Git (`git cat-file --batch`), decoded
(upright RGB, transparency over white), shrunk so the short side is at most --max-side (Lanczos, never
enlarged) and kept as WebP when they pass, in this order:
  too_small      short side under --min-side;
  grey           colourfulness (Hasler and Suesstrunk 2003, evaluate.colourfulness) under --min-colourfulness:
                 black-and-white and toned photos, which would teach the colorizer to predict grey;
  excluded_eval  16x16 difference hash (../shared/tools/near_duplicates.py) near a hash of --exclude-list (the
                 evaluation photos), checked on the decoded original and on the WebP kept;
  near_dup       hash near that of a photo of --train, or within --max-bits of a photo already kept (any
                 source; near_dup_of_train counts the first kind apart).
"Near" is the shared tool's rule (within --max-bits of 256 bits, its near()) or the same count over the photo's
stable bits only: those whose two pixels in the hash's 17x16 grey thumbnail differ by more than --margin grey
levels. The plain rule misses re-encoded copies with flat regions (skies, walls), whose hash bits flip from
copy to copy: 23 of the 100 Imagenette photos of ../shared/data/val/general are 7 to 31 bits from their copies
in the Imagenette mirror, yet 0 bits on their stable bits (margin 2), while none of 1,500 faces, rooms or pets
each came within 9 stable bits of an evaluation photo.
Files that do not decode (broken, truncated, Git LFS pointers, blobs absent from the snapshot) count as
undecodable. Photos land in OUT/<source>/<stable name>.webp beside OUT/<source>/manifest.json (repository, the
commit read, folders, counts); OUT/manifest.json sums them up.

Rerunnable: a source whose manifest says complete is skipped, and a source cut short carries on from
OUT/<source>/progress.jsonl (one line per file decided); a source whose mirror is missing is noted and left for
a later run. A run with settings other than those OUT was built with stops (delete OUT, or use another).
The search among kept photos is exact: the 256 hash bits are cut into max_bits + 1 bands, and two
hashes within max_bits bits agree exactly on at least one band (pigeonhole), so only hashes sharing a band with
the query are compared.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageOps

from evaluate import colourfulness

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COUNTS = ("listed", "undecodable", "too_small", "grey", "excluded_eval", "near_dup", "kept")


@dataclass(frozen=True)
class Source:
    name: str                    # the output subfolder
    repo: str                    # owner/name on GitHub
    folders: tuple[str, ...]     # folders of the repository to read, recursively
    skip: tuple[str, ...] = ()   # folders under those to leave out
    what: str = ""
    licence: str = ""


# In priority order: a build cut short is most useful with the first ones done. Counts and caveats of each are
# in ../shared/data/README.md ("More photos").
SOURCES = (
    Source("utkface", "xerow03/UTKFace", ("data",),
           what="aligned faces of every age and ethnicity", licence="non-commercial research"),
    Source("rooms", "SilviuBR24/room-classification", ("dataset/train", "dataset/eval"),
           what="Places365 indoor rooms", licence="Places365 terms (non-commercial research)"),
    Source("pets", "karemsaeed21/cat_vs_dog_classification_CNN", ("PetImages",), skip=("PetImages/cleaned",),
           what="cats and dogs (Microsoft Asirra)", licence="Microsoft / Kaggle terms (research)"),
    # car_side is all grey; Faces_easy holds the same 435 faces as Faces, cropped tighter.
    Source("caltech101", "MachineLearning2020/Homework2-Caltech101", ("101_ObjectCategories",),
           skip=("101_ObjectCategories/car_side", "101_ObjectCategories/Faces_easy"),
           what="Caltech-101 objects and web photos", licence="CC BY 4.0 (CaltechDATA)"),
    Source("houses", "emanhamed/Houses-dataset", ("Houses Dataset",),
           what="house listings: rooms and fronts", licence="research; cite arXiv:1609.08399"),
    Source("face_mask", "chandrikadeb7/Face-Mask-Detection", ("dataset",),
           what="faces with and without masks", licence="MIT (repository); photos of mixed origin"),
    Source("flowers", "jcraffi/aipnd-project", ("flowers",),
           what="Oxford 102 Flowers", licence="Oxford VGG, research use"),
    Source("imagenette", "thunderInfy/imagenette", ("train", "val"),
           what="Imagenette photos not already in train/general", licence="ImageNet terms (non-commercial research)"),
    Source("natural_images", "gmgl21/Machine-Learning-Project-Natural-Images-with-8-classes",
           ("Project images/natural_images",),
           what="airplanes, cars, cats, dogs, flowers, fruit, motorbikes, people", licence="unspecified"),
    Source("cats_dogs", "chanakya2734/Image-classification-using-CNN", ("dataset",),
           what="cats and dogs, breeds", licence="Kaggle sources, no licence"),
)


def load_near_duplicates(path: Path) -> ModuleType:
    """The shared near-duplicate tool (dhash, load_list, near, PHOTOS), imported from its file."""
    spec = importlib.util.spec_from_file_location("near_duplicates", path)
    if spec is None or not path.is_file():
        raise SystemExit(f"{path}: near-duplicate tool not found (--near-duplicates)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class HashIndex:
    """Exact search for 256-bit hashes (Python ints) within max_bits of any hash added so far."""

    def __init__(self, max_bits: int = 6, bits: int = 256):
        self.max_bits = max_bits
        edges = np.linspace(0, bits, max_bits + 2).round().astype(int)  # max_bits + 1 bands of ~37 bits
        self.bands = [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
        self.tables: list[dict] = [{} for _ in self.bands]  # band value -> id, or list of ids
        self.hashes: list[int] = []

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, h: int) -> int | None:
        """The id of a stored hash within max_bits of h, or None."""
        for table, (lo, mask) in zip(self.tables, self.bands):
            ids = table.get((h >> lo) & mask)
            for i in ids if isinstance(ids, list) else (() if ids is None else (ids,)):
                if (self.hashes[i] ^ h).bit_count() <= self.max_bits:
                    return i
        return None

    def add(self, h: int) -> int:
        i = len(self.hashes)
        self.hashes.append(h)
        for table, (lo, mask) in zip(self.tables, self.bands):
            key = (h >> lo) & mask
            old = table.get(key)
            if old is None:
                table[key] = i
            elif isinstance(old, list):
                old.append(i)
            else:
                table[key] = [old, i]
        return i


def as_int(h: np.ndarray) -> int:
    return int.from_bytes(h.tobytes(), "big")


class BlobReader:
    """One `git cat-file --batch` process over a bare repository: blob id -> bytes (None if absent)."""

    def __init__(self, git_dir: Path):
        self.proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def read(self, oid: str) -> bytes | None:
        self.proc.stdin.write(oid.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()  # "<oid> blob <size>" or "<oid> missing"
        if len(header) != 3:
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)  # the newline after the content
        return data if header[1] == b"blob" else None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def find_git_dir(mirrors: Path, repo: str) -> Path | None:
    """MIRRORS/<owner>+<name>/repo, as a bare repository or a folder holding .git; None if not there."""
    base = mirrors / repo.replace("/", "+") / "repo"
    for d in (base, base / ".git"):
        if (d / "HEAD").is_file() and (d / "objects").is_dir():
            return d
    return None


def git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True).stdout


def list_images(git_dir: Path, src: Source, extensions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, blob id) of each image file under src.folders at HEAD, less src.skip, sorted by path."""
    out = []
    for entry in git(git_dir, "ls-tree", "-r", "-z", "HEAD", "--", *src.folders).split(b"\0"):
        if not entry:
            continue
        meta, raw = entry.split(b"\t", 1)
        _, kind, oid = meta.split()
        path = raw.decode("utf-8", "replace")
        inside = any(path.startswith(f + "/") for f in src.folders)
        skipped = any(path.startswith(s + "/") for s in src.skip)
        if kind == b"blob" and inside and not skipped and path.lower().endswith(extensions):
            out.append((path, oid.decode()))
    return sorted(out)


def stable_names(paths: list[str], folders: tuple[str, ...]) -> list[str]:
    """A file name per path: the path below its source folder, '/' -> '__', odd characters -> '_', no
    extension; a name met twice (a.jpg beside a.png) gets a counter."""
    names, seen = [], set()
    for p in paths:
        rel = next((p[len(f) + 1:] for f in folders if p.startswith(f + "/")), p)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(rel)[0].replace("/", "__")).strip(".") or "photo"
        name, n = stem, 0
        while name.lower() in seen:  # case-insensitive: the folder may live on such a file system
            n += 1
            name = f"{stem}_{n}"
        seen.add(name.lower())
        names.append(name)
    return names


def decode(data: bytes, max_side: int) -> Image.Image:
    """Image file bytes -> upright RGB (transparency over white). A JPEG larger than needed is decoded at 1/2,
    1/4 or 1/8 scale with a short side still >= max_side. Raises on a file that does not decode in full."""
    im = Image.open(io.BytesIO(data))
    short = min(im.size)
    if im.format == "JPEG" and short > max_side:
        s = max_side / short
        im.draft(None, (int(np.ceil(im.size[0] * s)), int(np.ceil(im.size[1] * s))))
    im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert("RGB")


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Short side at most max_side (Lanczos); never enlarged."""
    w, h = im.size
    if min(w, h) <= max_side:
        return im
    s = max_side / min(w, h)
    return im.resize((max(max_side, round(w * s)), max(max_side, round(h * s))), Image.LANCZOS)


@dataclass
class Settings:
    max_side: int = 224             # short side of the kept photos at most (never enlarged)
    min_side: int = 64              # photos whose short side is smaller are dropped (too_small)
    quality: int = 85               # WebP quality
    min_colourfulness: float = 8.0  # grey and toned photos under this are dropped
    max_bits: int = 6               # near-duplicate: hashes within this many of 256 bits
    margin: int = 2                 # a hash bit is stable where its two thumbnail pixels differ by more


def stable_bits(im: Image.Image, margin: int) -> np.ndarray:
    """(32,) uint8, packed as near_duplicates.dhash packs its bits: 1 where the hash bit is stable, i.e. the two
    neighbouring pixels it compares (in the same 17x16 bilinear grey thumbnail) differ by more than margin grey
    levels, so that resizing or re-encoding the photo will hardly flip it."""
    g = np.asarray(im.convert("L").resize((17, 16), Image.BILINEAR), dtype=np.int16)
    return np.packbits((np.abs(g[:, 1:] - g[:, :-1]) > margin).ravel())


def as_words(hashes: np.ndarray) -> np.ndarray:
    """(n, 32) or (32,) uint8 hashes -> (n, 4) or (4,) uint64, for fast XOR and bit counts."""
    return np.ascontiguousarray(hashes).view(np.uint64)


class Checker:
    """Decides each photo: holds the settings, the evaluation and train hashes and the index of kept photos."""

    def __init__(self, cfg: Settings, nd: ModuleType, excluded: np.ndarray, train: np.ndarray):
        self.cfg, self.nd = cfg, nd
        self.excluded, self.excluded_words = excluded, as_words(excluded)
        self.train_words = as_words(train)
        self.index = HashIndex(cfg.max_bits)

    def stable_near(self, words: np.ndarray, versions: list[tuple[Image.Image, np.ndarray]]) -> bool:
        """Is some version (a photo, its dhash) within max_bits of a hash of words (n, 4) on the version's
        stable bits? This takes in every hash within max_bits on all bits (the shared rule), and more."""
        for im, h in versions:
            diff = (words ^ as_words(h)) & as_words(stable_bits(im, self.cfg.margin))
            if (np.bitwise_count(diff).sum(1, dtype=np.int32) <= self.cfg.max_bits).any():
                return True
        return False

    def judge(self, data: bytes | None) -> tuple[str, bytes | None, int | None]:
        """One file -> (outcome, WebP bytes if kept, the kept WebP's hash as an int if kept)."""
        cfg, nd = self.cfg, self.nd
        if data is None:
            return "undecodable", None, None
        try:
            original = decode(data, cfg.max_side)
        except Exception:  # broken, truncated, an LFS pointer: whatever Pillow cannot read in full
            return "undecodable", None, None
        im = shrink(original, cfg.max_side)
        if min(im.size) < cfg.min_side:
            return "too_small", None, None
        if colourfulness(np.asarray(im)) < cfg.min_colourfulness:
            return "grey", None, None
        buf = io.BytesIO()
        im.save(buf, "WEBP", quality=cfg.quality)
        webp = buf.getvalue()
        with Image.open(io.BytesIO(webp)) as kept:  # hash what the tool will hash when it checks the folder
            kept.load()
            versions = [(original, nd.dhash(original)), (kept, nd.dhash(kept))]
            hashes = np.stack([h for _, h in versions])
            if (self.nd.near(hashes, self.excluded, cfg.max_bits).any()  # the rule, as the shared tool checks it
                    or self.stable_near(self.excluded_words, versions)):
                return "excluded_eval", None, None
            if self.stable_near(self.train_words, versions):
                return "near_dup_of_train", None, None
        h = as_int(versions[1][1])
        if self.index.find(h) is not None:
            return "near_dup", None, None
        return "kept", webp, h


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def read_progress(path: Path) -> list[dict]:
    """The decisions already made for a source; a last line cut short by a crash is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def train_hashes(train: Path, cache: Path, nd: ModuleType) -> np.ndarray:
    """(n, 32) uint8: the dhash of every photo under train; cached in `cache` (hash, size, mtime, path per line)."""
    known = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            h, size, mtime, rel = line.split("\t", 3)
            known[(rel, int(size), int(mtime))] = h
    rows, fresh = [], 0
    for p in sorted(p for p in train.rglob("*") if p.suffix.lower() in nd.PHOTOS and p.is_file()):
        st, rel = p.stat(), str(p.relative_to(train))
        h = known.get((rel, st.st_size, st.st_mtime_ns))
        if h is None:
            with Image.open(p) as im:
                h = nd.dhash(im).tobytes().hex()
            fresh += 1
        rows.append(f"{h}\t{st.st_size}\t{st.st_mtime_ns}\t{rel}")
    if fresh or not cache.is_file():
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        os.replace(tmp, cache)
    print(f"train: {len(rows)} photos under {train} ({fresh} newly hashed)", flush=True)
    return np.frombuffer(bytes.fromhex("".join(r[:64] for r in rows)), dtype=np.uint8).reshape(-1, 32)


def build_source(src: Source, git_dir: Path, out: Path, check: Checker, log_every: int) -> dict:
    """Process (or carry on with) one source; returns its manifest."""
    folder = out / src.name
    folder.mkdir(parents=True, exist_ok=True)
    commit = git(git_dir, "rev-parse", "HEAD").decode().strip()
    files = list_images(git_dir, src, check.nd.PHOTOS)
    names = stable_names([p for p, _ in files], src.folders)
    counts = dict.fromkeys(COUNTS, 0) | {"listed": len(files), "near_dup_of_train": 0}
    progress_path = folder / "progress.jsonl"
    done = {row["path"]: row for row in read_progress(progress_path)}
    # Rewrite the log from what was read, so that a line cut short is not followed by good ones.
    with open(progress_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in done.values())
    t0, n_new = time.time(), 0
    reader = BlobReader(git_dir)
    try:
        with open(progress_path, "a") as log:
            for (path, oid), name in zip(files, names):
                row = done.get(path)
                if row is None:  # not decided in an earlier run
                    outcome, webp, h = check.judge(reader.read(oid))
                    row = {"path": path, "oid": oid, "outcome": outcome}
                    if webp is not None:
                        tmp = folder / f"{name}.webp.tmp"
                        tmp.write_bytes(webp)
                        os.replace(tmp, folder / f"{name}.webp")
                        row |= {"file": f"{name}.webp", "dhash16": f"{h:064x}"}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    n_new += 1
                add_row(counts, check.index, row)
                if row is not done.get(path) and n_new % log_every == 0:
                    print(f"{src.name}: {sum(counts[k] for k in COUNTS[1:])}/{len(files)} "
                          f"({1000 * (time.time() - t0) / n_new:.1f} ms/photo this run) {json.dumps(counts)}",
                          flush=True)
    finally:
        reader.close()
    seconds = time.time() - t0
    manifest = {"name": src.name, "repo": src.repo, "commit": commit, "folders": list(src.folders),
                "skipped_folders": list(src.skip), "what": src.what, "licence": src.licence,
                "counts": counts, "complete": True, "seconds_this_run": round(seconds, 1),
                "ms_per_photo_this_run": round(1000 * seconds / n_new, 2) if n_new else None,
                "settings": asdict(check.cfg)}
    write_json(folder / "manifest.json", manifest)
    return manifest


def add_row(counts: dict | None, index: HashIndex, row: dict) -> None:
    """Count one decision (a near_dup_of_train is also a near_dup), and index the photo if it was kept."""
    if counts is not None:
        of_train = row["outcome"] == "near_dup_of_train"
        counts["near_dup" if of_train else row["outcome"]] += 1
        counts["near_dup_of_train"] += of_train
    if row["outcome"] == "kept":
        index.add(int(row["dhash16"], 16))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mirrors", type=Path, default=REPO.parent / ".mirror",
                   help="folder of mirrors: <owner>+<name>/repo, each a bare Git directory")
    p.add_argument("--out", type=Path, default=REPO.parent / "more_photos", help="output folder (created)")
    p.add_argument("--sources", nargs="*", default=None, metavar="NAME",
                   help=f"build only these, in this order (default: all: {', '.join(s.name for s in SOURCES)})")
    p.add_argument("--exclude-list", type=Path, default=SHARED / "data" / "exclude_dhash16.txt",
                   help="hashes of the evaluation photos: nothing near them is kept")
    p.add_argument("--train", type=Path, default=SHARED / "data" / "train",
                   help="photos already trained on: near-duplicates of them are dropped ('' for none)")
    p.add_argument("--near-duplicates", type=Path, default=SHARED / "tools" / "near_duplicates.py",
                   help="the shared near-duplicate tool, whose dhash, near() and list reader are used")
    p.add_argument("--log-every", type=int, default=1000, help="print progress every N photos")
    for k, v in asdict(Settings()).items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = p.parse_args(argv)
    cfg = Settings(**{k: getattr(a, k) for k in asdict(Settings())})
    by_name = {s.name: s for s in SOURCES}
    unknown = [n for n in a.sources or () if n not in by_name]
    if unknown:
        p.error(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    if not a.exclude_list.is_file():
        p.error(f"{a.exclude_list}: exclude list not found")
    chosen = [by_name[n] for n in a.sources] if a.sources else list(SOURCES)

    a.out.mkdir(parents=True, exist_ok=True)
    settings_path = a.out / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != asdict(cfg):
        sys.exit(f"{a.out} was built with other settings ({' '.join(settings_path.read_text().split())}): "
                 "delete it or choose another --out")
    write_json(settings_path, asdict(cfg))
    nd = load_near_duplicates(a.near_duplicates)
    has_train = str(a.train) not in ("", ".")
    train = train_hashes(a.train, a.out / "train_dhash16.tsv", nd) if has_train else np.zeros((0, 32), np.uint8)
    check = Checker(cfg, nd, nd.load_list(a.exclude_list), train)

    def complete(s: Source) -> dict | None:
        path = a.out / s.name / "manifest.json"
        m = json.loads(path.read_text()) if path.is_file() else None
        return m if m and m.get("complete") else None

    # What earlier runs kept (complete sources, and any not chosen now) goes into the index first, so that a
    # rerun decides as one run would; a source being carried on re-adds its own as it reads its log.
    for s in SOURCES:
        if complete(s) or s not in chosen:
            for row in read_progress(a.out / s.name / "progress.jsonl"):
                add_row(None, check.index, row)
    print(f"checking against {len(train)} train hashes, {len(check.excluded)} evaluation hashes and "
          f"{len(check.index)} photos kept earlier", flush=True)
    summary = []
    for s in chosen:
        git_dir = find_git_dir(a.mirrors, s.repo)
        m = complete(s)
        if m is not None:
            head = git(git_dir, "rev-parse", "HEAD").decode().strip() if git_dir else None
            note = "" if head in (None, m["commit"]) else f" (the mirror is now at {head}: delete the folder to rebuild)"
            print(f"{s.name}: complete, {m['counts']['kept']} kept from {s.repo}@{m['commit'][:10]}{note}", flush=True)
        elif git_dir is None:
            print(f"{s.name}: no mirror of {s.repo} under {a.mirrors}; skipped for now", flush=True)
            m = {"name": s.name, "repo": s.repo, "complete": False, "status": "no mirror"}
        else:
            print(f"{s.name}: reading {s.repo} ({', '.join(s.folders)})", flush=True)
            m = build_source(s, git_dir, a.out, check, a.log_every)
            print(f"{s.name}: done {json.dumps(m['counts'])}", flush=True)
        summary.append(m)
        write_summary(a.out, summary, cfg, a)
    return 0


def write_summary(out: Path, summary: list[dict], cfg: Settings, a) -> None:
    """OUT/manifest.json: every source's state and counts, the totals, and the settings."""
    rows = []
    for s in SOURCES:
        m = next((m for m in summary if m["name"] == s.name), None)
        path = out / s.name / "manifest.json"
        if m is None and path.is_file():
            m = json.loads(path.read_text())
        rows.append(m or {"name": s.name, "repo": s.repo, "complete": False, "status": "not built yet"})
    totals = {k: sum(m.get("counts", {}).get(k, 0) for m in rows) for k in COUNTS}
    write_json(out / "manifest.json", {
        "built_by": "python -m experiments.more_photos", "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": asdict(cfg), "exclude_list": str(a.exclude_list), "train": str(a.train),
        "totals": totals, "sources": rows})


if __name__ == "__main__":
    sys.exit(main())
