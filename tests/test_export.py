"""export_model.py: decode settings chosen by the documented rule, on the run's held-out images (also when
the run's training folder has moved) or on a separate selection folder; a float16 checkpoint."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import export_model
import train
from colorizer import Colorizer
from dataset import find_images
from model import Decode, ModelConfig, build_model
from utils import load_checkpoint, rebalance_weights


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, photo_dir):
    """A tiny classification run whose training folder is a copy that the tests may move."""
    root = tmp_path_factory.mktemp("export")
    data = root / "photos"
    shutil.copytree(photo_dir, data)
    out = root / "run"
    tiny_run(data, out, "classification", steps=6)
    return out, data


def tiny_run(data, out, loss: str, steps: int) -> None:
    """A tiny training run of `loss` on data, a quarter of it held out, its checkpoints in out."""
    r = train.train(train.parse_args([
        "--data", str(data), "--out", str(out), "--loss", loss, "--val-fraction", "0.25",
        "--max-steps", str(steps), "--batch-size", "4", "--crop-size", "32", "--width", "8", "--depth", "2",
        "--cache-dir", "", "--workers", "0", "--no-progress"]))
    assert r["stopped"] is None


def export(run, tmp_path, *extra):
    out = tmp_path / "model.pt"
    assert export_model.main(["--run", str(run), "--out", str(out), "--temperatures", "0.38,1",
                              "--corrections", "0,1", "--sizes", "32", *map(str, extra)]) == 0
    return load_checkpoint(str(out)), json.loads((tmp_path / "model_selection.json").read_text())


def test_the_rule_picks_the_most_accurate_colourful_enough_setting(cls_run, tmp_path):
    ckpt, sel = export(cls_run[0], tmp_path, "--min-cf", "0.2")
    assert len(sel["grid"]) == 4 and sel["selection_images"] == 6  # 25% of 24 held out
    ok = [r for r in sel["grid"] if r["cf_ratio"] >= 0.2]
    want = max(ok, key=lambda r: r["psnr_gain"]) if ok else max(sel["grid"], key=lambda r: r["cf_ratio"])
    assert sel["chosen"] == want
    assert ckpt["inference"] == {k: want[k] for k in ("size", *Decode.keys())}
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    assert "ab_prior" in ckpt


def test_a_moved_training_folder_holds_out_the_same_images(cls_run, tmp_path):
    run, data = cls_run
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, here = export(run, tmp_path / "a")
    _, there = export(run, tmp_path / "b", "--data", moved)
    assert here["grid"] == there["grid"]


def test_a_selection_folder_replaces_the_held_out_images(cls_run, photo_dir, tmp_path):
    _, sel = export(cls_run[0], tmp_path, "--select", photo_dir, "--images", "3")
    assert sel["selection_images"] == 3 and sel["selection_set"] == str(photo_dir)


def test_a_selection_folder_is_used_whole_unless_limited(cls_run, tmp_path):
    """--select names the photos to choose on: all of them by default (the held-out images' default of 150
    once cut a 300-photo folder in half without a word)."""
    folder = tmp_path / "select"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(151):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    _, sel = export(cls_run[0], tmp_path, "--select", folder, "--temperatures", "0.38", "--corrections", "0")
    assert sel["selection_images"] == len(find_images(str(folder))) == 151


def test_members_make_an_int8_ensemble_chosen_with_its_stored_weights(cls_run, tmp_path):
    run = cls_run[0]
    ckpt, sel = export(run, tmp_path, "--members", run / "last.pt", "--int8")
    assert ckpt["members"] == 2 and len(ckpt["member_sources"]) == 2
    assert ckpt["model"]["members.0.head.weight"].dtype == torch.int8
    # The grid was scored with the weights as stored: re-scoring the saved file gives the same numbers.
    from evaluate import evaluate
    from predict_color import Colorizer
    chosen = sel["chosen"]
    col = Colorizer.from_checkpoint(str(tmp_path / "model.pt"))
    paths = export_model.held_out_paths(ckpt["train_config"], 150)
    m = evaluate(col, paths, progress=False)["mean"]
    assert m["psnr"] - m["grey_psnr"] == pytest.approx(chosen["psnr_gain"], abs=1e-9)

    other = tmp_path / "other.pt"
    ck = load_checkpoint(str(run / "last.pt"))
    ck["model_config"] = {**ck["model_config"], "width": 16}
    torch.save(ck, other)
    with pytest.raises(SystemExit):
        export_model.main(["--run", str(run), "--out", str(tmp_path / "x.pt"), "--members", str(other)])


def test_fine_tuning_at_another_crop_size_keeps_the_heads_classes(cls_run, tmp_path):
    """--init from a classification run at a new crop size (whose own prior estimate would give other bins)
    keeps the checkpoint's ab bins and prior; the loss's weights follow this run's --rebalance-lambda."""
    run, data = cls_run
    init = load_checkpoint(str(run / "best.pt"))
    out = tmp_path / "ft"
    r = train.train(train.parse_args([
        "--data", str(data), "--out", str(out), "--init", str(run / "best.pt"), "--loss", "classification",
        "--rebalance-lambda", "0.8", "--val-fraction", "0.25", "--max-steps", "1", "--batch-size", "4",
        "--crop-size", "48", "--resize", "56", "--width", "8", "--depth", "2", "--cache-dir", "",
        "--workers", "0", "--no-progress"]))
    assert r["stopped"] is None
    ft = load_checkpoint(str(out / "last.pt"))
    assert ft["model_config"]["num_bins"] == init["model_config"]["num_bins"]
    torch.testing.assert_close(ft["model"]["bins"], init["model"]["bins"])
    torch.testing.assert_close(ft["ab_prior"]["prior"], init["ab_prior"]["prior"], atol=1e-5, rtol=1e-4)
    want = rebalance_weights(init["ab_prior"]["prior"], 0.8).log()
    torch.testing.assert_close(ft["model"]["log_weights"], want, atol=1e-5, rtol=1e-4)
    assert (want - init["model"]["log_weights"]).abs().max() > 0.1  # lambda 0.5 weighted them otherwise


def test_a_shipped_ensemble_can_start_a_new_training_run(cls_run, tmp_path):
    """train.py --init takes a shipped (int8 ensemble) checkpoint: the first member, the run's best."""
    run, data = cls_run
    ckpt, _ = export(run, tmp_path, "--members", run / "last.pt", "--int8")
    sd = train.init_weights(ckpt)
    best = load_checkpoint(str(run / "best.pt"))["model"]
    assert set(sd) == set(best)
    w = best["stem.0.weight"]
    assert (sd["stem.0.weight"] - w).abs().max() <= w.abs().max() / 254 + 1e-7
    r = train.train(train.parse_args([
        "--data", str(data), "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "model.pt"),
        "--loss", "classification", "--val-fraction", "0.25", "--max-steps", "1", "--batch-size", "4",
        "--crop-size", "32", "--width", "8", "--depth", "2", "--cache-dir", "", "--workers", "0", "--no-progress"]))
    assert r["stopped"] is None


def test_the_ab_prior_survives_a_run_without_rebalancing(cls_run, tmp_path):
    """--rebalance-lambda 1 makes the loss's weights uniform; the checkpoints (a resumed run's and the
    exported one too) still carry the empirical prior, so a later fine-tune with rebalancing can use it."""
    data = cls_run[1]
    out = tmp_path / "flat"
    common = ["--out", str(out), "--cache-dir", "", "--workers", "0", "--no-progress"]
    train.train(train.parse_args([
        "--data", str(data), "--loss", "classification", "--rebalance-lambda", "1", "--val-fraction", "0.25",
        "--max-steps", "1", "--batch-size", "4", "--crop-size", "32", "--width", "8", "--depth", "2", *common]))
    first = load_checkpoint(str(out / "last.pt"))
    assert first["model"]["log_weights"].abs().max() < 1e-5  # uniform: no rebalancing
    prior = first["ab_prior"]["prior"]
    assert prior.max() > 2 * prior.min() and abs(prior.sum().item() - 1) < 1e-4  # not the uniform one

    train.train(train.parse_args(["--resume", str(out / "last.pt"), "--max-steps", "2", *common]))
    resumed = load_checkpoint(str(out / "last.pt"))
    assert resumed["step"] == 2
    torch.testing.assert_close(resumed["ab_prior"]["prior"], prior)

    shipped, _ = export(out, tmp_path, "--checkpoint", "last.pt")
    torch.testing.assert_close(shipped["ab_prior"]["prior"], prior)


def test_a_variance_head_is_exported_with_the_spread_the_rule_picks(photo_dir, tmp_path):
    """--spreads is a grid axis for a regression_var run; the pick is stored and used by the Colorizer."""
    run = tmp_path / "run"
    tiny_run(photo_dir, run, "mse_var", steps=4)
    _, sel = export(run, tmp_path, "--checkpoint", "last.pt", "--gains", "1,1.5", "--spreads", "0,2",
                    "--min-cf", "0.5")
    assert sorted((g["gain"], g["spread"]) for g in sel["grid"]) == [(1, 0), (1, 2), (1.5, 0), (1.5, 2)]
    assert len({round(g["cf_ratio"], 6) for g in sel["grid"]}) == 4  # every setting decodes differently
    col = Colorizer.from_checkpoint(str(tmp_path / "model.pt"))
    assert (col.decode.gain, col.decode.spread) == (sel["chosen"]["gain"], sel["chosen"]["spread"])


def test_a_regression_grid_runs_the_network_once_a_photo_and_scores_as_without(photo_dir, tmp_path):
    """reuse_outputs: the decode knobs act after the network, so the grid keeps each photo's output."""
    run = tmp_path / "run"
    tiny_run(photo_dir, run, "mse_var", steps=2)
    ckpt = load_checkpoint(str(run / "last.pt"))
    model = build_model(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    paths = {"photos": find_images(str(photo_dir))[:3]}
    settings = [Decode(gain=1.0), Decode(gain=1.5, spread=1.0), Decode(gain=0.7, evenness=1.0)]
    plain = [export_model.score(Colorizer(model, 32, d), paths) for d in settings]
    calls = []
    next(model.children()).register_forward_hook(lambda *_: calls.append(1))  # runs only when the network does
    cache = export_model.reuse_outputs(model)
    reused = [export_model.score(Colorizer(model, 32, d), paths) for d in settings]
    assert reused == plain
    assert len(cache) == 3 and len(calls) == 3  # the network ran once a photo, not once a setting
    other = torch.rand(1, 1, 32, 48) * 2 - 1    # an input not seen before runs the network
    torch.testing.assert_close(model(other), model.__class__.forward(model, other))


def test_several_selection_folders_each_need_their_colour_and_share_the_accuracy(cls_run, photo_dir, tmp_path):
    """--select A B --min-cf a b: a setting qualifies only if it reaches a on A and b on B (e.g. general
    photos and held-out landscapes, each at least as colourful as the model it replaces); among those the
    rule takes the highest PSNR gain averaged over the folders. --evenness is a grid axis of any head."""
    other = tmp_path / "other"
    other.mkdir()
    for p in find_images(str(photo_dir))[:4]:
        with Image.open(p) as im:
            im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other / os.path.basename(p))
    _, sel = export(cls_run[0], tmp_path, "--select", photo_dir, other, "--images", "4",
                    "--evenness", "0,1", "--min-cf", "0.3", "0.5")
    grid = sel["grid"]
    assert len(grid) == 8 and sel["selection_images"] == 8
    assert {g["evenness"] for g in grid} == {0, 1}
    for g in grid:
        assert [s["set"] for s in g["per_set"]] == [str(photo_dir), str(other)]
        assert g["psnr_gain"] == pytest.approx(sum(s["psnr_gain"] for s in g["per_set"]) / 2)
    ok = [g for g in grid if g["per_set"][0]["cf_ratio"] >= 0.3 and g["per_set"][1]["cf_ratio"] >= 0.5]
    want = (max(ok, key=lambda g: g["psnr_gain"]) if ok
            else min(grid, key=lambda g: max(0.3 - g["per_set"][0]["cf_ratio"], 0.5 - g["per_set"][1]["cf_ratio"])))
    assert sel["chosen"] == want and sel["min_cf"] == [0.3, 0.5]
    with pytest.raises(SystemExit):
        export(cls_run[0], tmp_path, "--select", photo_dir, other, "--min-cf", "0.3", "0.5", "0.7")
