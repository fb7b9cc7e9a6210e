"""evaluate.py: the metrics on known cases, and a whole run with a freshly trained tiny checkpoint."""
import json
import os

import numpy as np
import torch
from PIL import Image

import evaluate
from predict_color import Colorizer


def test_metrics_on_known_cases():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    grey = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, -1)
    assert evaluate.colourfulness(grey) == 0.0 and evaluate.colourfulness(rgb) > 50
    assert evaluate.ab_auc(rgb, rgb) == 100.0  # no pixel has any ab error
    assert 0 < evaluate.ab_auc(grey, rgb) < 100
    assert evaluate.psnr(rgb, rgb) > 90 and evaluate.psnr(grey, rgb) < 20
    s = evaluate.score(rgb, rgb)
    assert s["ssim"] == 1.0 and s["cf"] == s["cf_orig"]


def test_evaluate_writes_csv_json_and_contact_sheet(tiny_run, photo_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(photo_dir), "--model", str(tiny_run / "last.pt"), "--out", str(out),
                          "--limit", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    mean = summary["mean"]
    assert summary["settings"]["images"] == 4
    assert abs(mean["dcf"] - (mean["cf"] - mean["cf_orig"])) < 1e-9
    assert mean["grey_cf"] == 0.0 and 0 < mean["grey_auc"] < 100
    rows = (out / "per_image.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("image,psnr,ssim,cf,cf_orig,auc")
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height == 4 * 160
    assert "grey" in capsys.readouterr().out


def test_grey_baseline_matches_a_zero_ab_colorizer(tiny_run, photo_dir):
    """A colorizer whose head predicts no colour must score exactly like the grey baseline."""
    col = Colorizer.from_checkpoint(str(tiny_run / "last.pt"))
    with torch.no_grad():
        for p in col.model.head.parameters():
            p.zero_()
    paths = sorted(str(p) for p in photo_dir.rglob("*.jpg"))[:3]
    mean = evaluate.evaluate(col, paths, progress=False)["mean"]
    for k in ("psnr", "ssim", "cf", "auc"):
        assert abs(mean[k] - mean["grey_" + k]) < 1e-6, k


def test_several_sets_and_models_in_one_run(tiny_run, photo_dir, tmp_path, capsys):
    """Each model on each set, beside the same grey baseline: one table per set, OUT/<set>/<model>/ and
    OUT/results.json."""
    out = tmp_path / "eval"
    ckpt = str(tiny_run / "last.pt")
    other = tmp_path / "other" / "last.pt"
    other.parent.mkdir()
    other.write_bytes((tiny_run / "best.pt").read_bytes())
    sets = [str(photo_dir), str(photo_dir)]  # the same folder twice still gets two names
    assert evaluate.main(["--data", *sets, "--model", ckpt, str(other), "--out", str(out), "--limit", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 2 and all(set(r) == {"last_0", "last_1"} for r in results.values())
    for name, per_model in results.items():
        a, b = per_model["last_0"]["mean"], per_model["last_1"]["mean"]
        assert a["grey_psnr"] == b["grey_psnr"] and (out / name / "last_1" / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert printed.count("grey ") >= 2 and "last_1" in printed


def test_fid_scores_each_model_and_the_grey_baseline_once_per_set(tiny_run, photo_dir, tmp_path, monkeypatch):
    """--fid compares folders of PNGs: every model's outputs, and the grey inputs, which are the same for every
    model, so they are written and scored once per set (the first model's folder) and shared."""
    calls = []

    def fake_fid(pred_dir, true_dir):  # FID's network is not needed to count what is compared
        calls.append(pred_dir)
        return float(len(calls))

    monkeypatch.setattr(evaluate, "fid_score", fake_fid)
    out = tmp_path / "eval"
    ckpt = str(tiny_run / "last.pt")
    other = tmp_path / "other" / "last.pt"
    other.parent.mkdir()
    other.write_bytes((tiny_run / "best.pt").read_bytes())
    assert evaluate.main(["--data", str(photo_dir), "--model", ckpt, str(other), "--out", str(out), "--limit", "3",
                          "--fid"]) == 0
    (set_dir,) = [d for d in out.iterdir() if d.is_dir()]  # OUT/<set>/<model>/
    first, second = set_dir / "last_0", set_dir / "last_1"
    assert [os.path.relpath(c, set_dir) for c in calls] == [os.path.join("last_0", "outputs"),
                                                        os.path.join("last_0", "grey"),
                                                        os.path.join("last_1", "outputs")]
    assert len(list((first / "grey").glob("*.png"))) == 3 and not (second / "grey").exists()
    assert len(list((second / "outputs").glob("*.png"))) == 3
    (rows,) = json.loads((out / "results.json").read_text()).values()
    assert rows["last_0"]["mean"]["grey_fid"] == rows["last_1"]["mean"]["grey_fid"] == 2.0
    assert (rows["last_0"]["mean"]["fid"], rows["last_1"]["mean"]["fid"]) == (1.0, 3.0)


def test_simulated_hints_are_seeded_nested_and_help(tiny_run, photo_dir, tmp_path):
    """--hints N: the same points in every run, the first N of one draw (so 5 include the 2), and hints
    with the originals' colours bring the colours closer than no hints, more with more of them."""
    out = tmp_path / "eval"
    assert evaluate.main(["--data", str(photo_dir), "--model", str(tiny_run / "last.pt"), "--out", str(out),
                          "--limit", "6", "--hints", "0", "2", "5"]) == 0
    res = json.loads((out / "results.json").read_text())
    (rows,) = res.values()
    assert list(rows) == ["last", "last+2h", "last+5h"] and rows["last+5h"]["settings"]["hints"] == 5
    psnr = [rows[k]["mean"]["psnr"] for k in rows]
    assert psnr[0] < psnr[1] < psnr[2], psnr
    col = Colorizer.from_checkpoint(str(tiny_run / "last.pt"))
    rgb = np.asarray(Image.open(next(photo_dir.glob("*.jpg"))).convert("RGB"))
    five = evaluate.image_hints(col, rgb, "a.jpg", 5)
    assert evaluate.image_hints(col, rgb, "a.jpg", 2) == five[:2] and evaluate.image_hints(col, rgb, "a.jpg", 5) == five
