"""File discovery, the streaming dataset, the decoded-image cache and the batched crop."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import (ColorDataset, DataError, ImageCache, center_crop, find_images, load_rgb, random_crop_flip,
                     random_resized_crop_flip, resize_short_side)
from utils import LabNorm

CROP, RESIZE = 32, 40


def find_window(src: np.ndarray, crop: np.ndarray):
    """(y, x, flipped) of a window of src (H, W, 3) equal to crop (c, c, 3), possibly mirrored; or None."""
    c = crop.shape[0]
    for flipped, target in ((False, crop), (True, crop[:, ::-1])):
        for y in range(src.shape[0] - c + 1):
            for x in range(src.shape[1] - c + 1):
                if np.array_equal(src[y:y + c, x:x + c], target):
                    return y, x, flipped
    return None


def resized(path) -> np.ndarray:
    return np.asarray(resize_short_side(load_rgb(str(path)), RESIZE))


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------------
def test_find_images_is_recursive_and_ignores_extension_case(tmp_path):
    im = Image.new("RGB", (4, 4), (10, 200, 30))
    wanted = ["a.JPG", "b.png", "c.JpEg", "sub/d.tif", "sub/deeper/e.WEBP", "f.bmp"]
    for name in wanted:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_bytes((tmp_path / "a.JPG").read_bytes())
    (tmp_path / ".git").mkdir()
    im.save(tmp_path / ".git" / "g.png")
    found = find_images(str(tmp_path))
    assert found == sorted(str(tmp_path / n) for n in wanted)


def test_missing_or_empty_folder_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match="no_such_folder"):
        find_images(str(missing))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty_folder"):
        find_images(str(empty))


def test_16_bit_photos_are_scaled_by_their_bit_depth_not_their_content(tmp_path):
    ramp = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    for name, a, peak in (("dark.png", ramp % 200, 199 / 257), ("bright.png", ramp * 16, 255)):
        Image.fromarray(a).save(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.mode.startswith("I")
        rgb = np.asarray(load_rgb(str(tmp_path / name)))
        assert rgb.shape == (64, 64, 3) and abs(int(rgb.max()) - peak) <= 1


def test_color_dataset_shapes_and_ranges(photo_dir):
    paths = find_images(str(photo_dir))
    ds = ColorDataset(paths, CROP, train=True, resize=RESIZE)
    assert len(ds) == len(paths)
    for i in range(4):
        l_n, ab_n = ds[i]
        assert l_n.shape == (1, CROP, CROP) and ab_n.shape == (2, CROP, CROP)
        assert l_n.dtype == ab_n.dtype == torch.float32
        assert l_n.min() >= -1 and l_n.max() <= 1
        assert ab_n.abs().max() <= 1.2
    rgb = ColorDataset(paths, CROP, train=True, resize=RESIZE, lab=False)[0]
    assert rgb.shape == (3, CROP, CROP) and rgb.dtype == torch.uint8


def test_val_crop_is_the_deterministic_centre_and_l_and_ab_belong_together(photo_dir):
    """merge(L, ab) of a validation item gives back the centre crop of the resized photo, computed here
    independently, within a few 8-bit levels: L and ab come from the same pixels."""
    paths = find_images(str(photo_dir))
    ds = ColorDataset(paths, CROP, train=False, resize=RESIZE)
    norm = LabNorm()
    for i in (0, 1, 2):  # landscape, portrait and square sources
        src = resized(paths[i])
        h, w = src.shape[:2]
        top, left = int(round((h - CROP) / 2)), int(round((w - CROP) / 2))
        expected = src[top:top + CROP, left:left + CROP].astype(np.float32)
        l_n, ab_n = ds[i]
        again = ds[i]
        assert torch.equal(l_n, again[0]) and torch.equal(ab_n, again[1])
        rgb = hwc(norm.merge(l_n[None], ab_n[None])[0]) * 255
        assert np.abs(rgb - expected).max() <= 3


def test_train_crops_are_random_windows_of_the_photo_and_sometimes_flipped(photo_dir):
    paths = find_images(str(photo_dir))
    ds = ColorDataset(paths, CROP, train=True, resize=RESIZE, lab=False)
    src = resized(paths[0])
    torch.manual_seed(0)
    seen = [find_window(src, hwc(ds[0])) for _ in range(16)]
    assert all(s is not None for s in seen), "a training crop is not a window of the resized photo"
    assert len({(y, x) for y, x, _ in seen}) > 1, "the crop position never changes"
    assert {f for _, _, f in seen} == {True, False}, "crops are never, or always, flipped"


def test_a_corrupt_file_is_skipped_reported_once_and_never_stops_iteration(tmp_path, make_photo_folder,
                                                                           corrupt_files, capsys):
    good = make_photo_folder(tmp_path, n=6)
    bad = corrupt_files(tmp_path, good[0])
    ds = ColorDataset(find_images(str(tmp_path)), CROP, train=True, resize=RESIZE, lab=False)
    assert len(ds) == 7  # the text file fails the header check; the truncated JPEG's header is fine
    for _ in range(3):  # three epochs: every item comes back, the broken one replaced by a readable one
        items = [ds[i] for i in range(len(ds))]
        assert all(x.shape == (3, CROP, CROP) for x in items)
    err = capsys.readouterr().err
    for p in bad:
        assert err.count(p.name) == 1, err
    assert ds.skipped == 2


def test_decoding_failures_seen_by_loader_workers_reach_the_main_process(tmp_path, make_photo_folder,
                                                                         corrupt_files):
    good = make_photo_folder(tmp_path, n=5)
    corrupt_files(tmp_path, good[0])
    ds = ColorDataset(find_images(str(tmp_path)), CROP, train=False, resize=RESIZE, lab=False, report=False)
    for _ in range(2):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
        assert sum(len(b) for b in loader) == len(ds)
    assert ds.skipped == 2  # the truncated file, marked in a worker, is counted here


def test_a_dataset_of_only_broken_files_is_a_data_error(tmp_path, make_photo_folder, corrupt_files):
    good = make_photo_folder(tmp_path / "src", n=1)
    text, truncated = corrupt_files(tmp_path, good[0])
    with pytest.raises(DataError):
        ColorDataset([str(text)], CROP, train=True)
    ds = ColorDataset([str(truncated)], CROP, train=True, report=False)
    with pytest.raises(DataError):
        ds[0]


# ---------------------------------------------------------------------------------------------------
def test_image_cache_skips_bad_files_and_reuses_the_npy(tmp_path, make_photo_folder, corrupt_files, capsys,
                                                         monkeypatch):
    folder = tmp_path / "photos"
    good = make_photo_folder(folder, n=6)
    bad = corrupt_files(folder, good[0])
    paths = find_images(str(folder))
    cache_dir = tmp_path / "cache"
    cache = ImageCache.build(paths, RESIZE, cache_dir=str(cache_dir), progress=False)
    assert cache.images.shape == (6, RESIZE, RESIZE, 3) and cache.images.dtype == np.uint8
    assert cache.paths == sorted(map(str, good))
    assert sorted(p for p, _ in cache.skipped) == sorted(map(str, bad))
    err = capsys.readouterr().err
    assert "skipped 2 unreadable training image(s)" in err
    assert all(err.count(p.name) == 1 for p in bad)
    # Each cached image is the centre square of the resized photo.
    src = resized(good[1])
    o = [(s - RESIZE) // 2 for s in src.shape[:2]]
    assert np.array_equal(cache.images[1], src[o[0]:o[0] + RESIZE, o[1]:o[1] + RESIZE])
    assert len(list(cache_dir.glob("*.npy"))) == 1 and not list(cache_dir.glob(".tmp_*"))
    umask = os.umask(0)
    os.umask(umask)
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in cache_dir.iterdir())  # not mkstemp's 0600

    def no_decoding(args):
        raise AssertionError("the cache was rebuilt instead of reused")
    monkeypatch.setattr("dataset.decode_square", no_decoding)
    again = ImageCache.build(paths, RESIZE, cache_dir=str(cache_dir), progress=False)
    assert np.array_equal(np.asarray(again.images), cache.images)
    assert again.paths == cache.paths and again.skipped == cache.skipped
    assert "skipped 2 unreadable" in capsys.readouterr().err  # still reported when reused


def test_image_cache_is_rebuilt_when_a_file_changes_or_the_index_is_unreadable(tmp_path, make_photo_folder):
    folder = tmp_path / "photos"
    good = make_photo_folder(folder, n=3)
    paths, cache_dir = find_images(str(folder)), tmp_path / "cache"
    ImageCache.build(paths, RESIZE, cache_dir=str(cache_dir), progress=False)
    Image.new("RGB", (50, 60), (255, 0, 0)).save(good[0])
    os.utime(good[0], ns=(1, 1))  # a different mtime even on coarse clocks
    red = ImageCache.build(paths, RESIZE, cache_dir=str(cache_dir), progress=False)
    assert (red.images[0][..., 0] > 250).all()
    for meta in cache_dir.glob("*.json"):
        meta.write_text("{ half written")
    rebuilt = ImageCache.build(paths, RESIZE, cache_dir=str(cache_dir), progress=False)
    assert np.array_equal(rebuilt.images, red.images)


def test_random_crop_flip_gives_real_windows_and_depends_only_on_the_generator():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (6, RESIZE, RESIZE, 3), dtype=torch.uint8, generator=g)
    out = random_crop_flip(batch, CROP, torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, CROP, CROP) and out.dtype == torch.uint8
    found = [find_window(batch[i].numpy(), hwc(out[i])) for i in range(6)]
    assert all(f is not None for f in found)
    assert torch.equal(out, random_crop_flip(batch, CROP, torch.Generator().manual_seed(1)))
    flips = {f for _, _, f in found}
    many = [random_crop_flip(batch, CROP, torch.Generator().manual_seed(s)) for s in range(2, 6)]
    assert any(not torch.equal(out, m) for m in many)
    flips |= {find_window(batch[0].numpy(), hwc(m[0]))[2] for m in many}
    assert flips == {True, False}
    c = center_crop(batch, CROP)
    o = (RESIZE - CROP) // 2
    assert torch.equal(c, batch[:, o:o + CROP, o:o + CROP].permute(0, 3, 1, 2))


def test_random_resized_crop_at_full_scale_is_the_image_or_its_mirror():
    # scale_min = 1 and crop = S: every window is the whole image, sampled at its own pixel centres.
    batch = torch.randint(0, 256, (8, RESIZE, RESIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_resized_crop_flip(batch, RESIZE, 1.0, torch.Generator().manual_seed(3))
    assert out.shape == (8, 3, RESIZE, RESIZE) and out.dtype == torch.uint8
    chw = batch.permute(0, 3, 1, 2)
    mirrored = [torch.equal(out[i], chw[i].flip(-1)) for i in range(8)]
    assert all(torch.equal(out[i], chw[i]) or mirrored[i] for i in range(8))
    assert any(mirrored) and not all(mirrored)


def test_random_resized_crop_magnifies_a_window_and_depends_only_on_the_generator():
    # A horizontal ramp: a window of side w resampled to CROP px has a slope of w / CROP per pixel.
    ramp = torch.arange(RESIZE, dtype=torch.float32).mul(255 / (RESIZE - 1)).round().to(torch.uint8)
    batch = ramp[None, None, :, None].expand(16, RESIZE, RESIZE, 3).contiguous()
    out = random_resized_crop_flip(batch, CROP, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(out, random_resized_crop_flip(batch, CROP, 0.5, torch.Generator().manual_seed(1)))
    row = out[:, 0, CROP // 2].float()
    slope = (row[:, -4] - row[:, 3]).abs() / (CROP - 7) / (255 / (RESIZE - 1))  # window side / CROP, in px
    side = slope * CROP
    assert (side >= 0.5 * RESIZE - 2).all() and (side <= RESIZE + 2).all()
    assert side.max() - side.min() > 0.15 * RESIZE  # the scale really varies
