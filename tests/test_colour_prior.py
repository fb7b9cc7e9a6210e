"""Colour priors (colour_prior.py) and the colour memory's bank (memory.py): numpy only, small made-up data."""
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

import colour_prior as cp
from memory import TRUST_FEATURES, Bank, Trust
from utils import grid_centers, rgb_to_lab

BINS = grid_centers().numpy()[::3]  # a spread of real grid cells as the model's bins


def test_rgb_to_ab_agrees_with_scikit_image_and_the_torch_conversion():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    ab = cp.rgb_to_ab(rgb)
    assert np.abs(ab - rgb2lab(rgb)[..., 1:]).max() < 1e-3
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 1:].permute(1, 2, 0).numpy()
    assert np.abs(ab - ours).max() < 1e-3


def test_a_solid_photo_peaks_at_its_own_bin_and_every_histogram_sums_to_one():
    red = np.zeros((30, 30, 3), np.uint8)
    red[..., 0] = 200
    h = cp.photo_histogram(red, BINS)
    assert h.sum() == pytest.approx(1.0) and (h >= 0).all()
    ab = rgb2lab(red[:1, :1])[0, 0, 1:]
    assert np.linalg.norm(BINS[h.argmax()] - ab) <= np.linalg.norm(BINS - ab, axis=1).min() + 1e-6


def test_pooled_references_keep_both_colours():
    red, blue = np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    hr, hb = cp.photo_histogram(red, BINS), cp.photo_histogram(blue, BINS)
    both = cp.pool([hr, hb])
    assert both.sum() == pytest.approx(1.0)
    assert both[hr.argmax()] == pytest.approx(hr.max() / 2, rel=0.05)
    assert both[hb.argmax()] == pytest.approx(hb.max() / 2, rel=0.05)
    assert cp.histogram_distance(hr, hr) == 0 and cp.histogram_distance(hr, hb) > 0.9


def test_the_bias_is_zero_at_strength_zero_and_favours_what_the_histogram_has_more_of_than_the_prior():
    prior = np.full(len(BINS), 1 / len(BINS))
    h = np.zeros(len(BINS))
    h[7] = 1.0
    assert not cp.prior_bias(h, prior, 0.0).any()
    b = cp.prior_bias(h, prior, 0.5)
    assert b.dtype == np.float32 and b.argmax() == 7 and b[7] > 0
    assert b.min() == pytest.approx(0.5 * np.log(cp.FLOOR), rel=1e-5)  # absent colours: less likely, not impossible


def _bank(n=60, e=12):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(n, e))
    hists = rng.dirichlet(np.ones(len(BINS)) * 0.3, size=n)
    return Bank.build(raw, hists, BINS, dims=8), raw, hists


def test_a_bank_round_trips_compactly_and_finds_an_entry_by_its_own_embedding(tmp_path):
    bank, raw, hists = _bank()
    bank.trust = Trust(weights=np.arange(len(TRUST_FEATURES), dtype=float), bias=0.3, max_strength=0.8)
    bank.save(tmp_path / "bank.npz")
    back = Bank.load(tmp_path / "bank.npz")
    assert back.embeddings.dtype == np.float16 and back.hists.dtype == np.uint8
    assert back.trust.strength(np.ones(4)) == pytest.approx(bank.trust.strength(np.ones(4)))
    idx, sim = back.neighbours(raw[17])
    assert idx[0] == 17 and sim[0] == pytest.approx(1.0, abs=1e-2) and (np.diff(sim) <= 0).all()
    look = back.lookup(raw[17], hists[3])
    assert look.hist.sum() == pytest.approx(1.0) and look.features.shape == (len(TRUST_FEATURES),)
    assert 0 <= look.strength <= 0.8
    assert back.lookup(raw[17], hists[3], exclude=np.array([17])).neighbours[0] != 17
    # uint8 histograms keep each photo's colours: the looked-up histogram is near the entry's own
    back.k, back.tau = 1, 0.05
    assert cp.histogram_distance(back.lookup(raw[17], hists[3]).hist, hists[17]) < 0.05
