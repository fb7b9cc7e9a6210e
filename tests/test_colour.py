"""The Lab conversion against scikit-image, the network's normalisation, and the ab quantisation helpers."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color

from utils import (AB_GRID_MAX, AB_GRID_N, AB_GRID_STEP, LabNorm, float_weights, grey_to_l, grid_centers,
                   int8_weights, lab_to_rgb, match_luma, prior_from_counts, prior_from_weights, rebalance_weights,
                   rgb_to_lab, soft_encode)

LAB_TOL = 0.5  # Lab units


def sk_rgb2lab(rgb: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [0, 1] or uint8 -> skimage's Lab, laid out the same way."""
    a = rgb.numpy()
    a = a.astype(np.float64) / 255 if a.dtype == np.uint8 else a.astype(np.float64)
    return np.moveaxis(color.rgb2lab(np.moveaxis(a, -3, -1)), -1, -3)


def sk_lab2rgb(lab: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():  # skimage warns about the out-of-gamut colours it clips
        warnings.simplefilter("ignore", UserWarning)
        return np.moveaxis(color.lab2rgb(np.moveaxis(lab.double().numpy(), -3, -1)), -1, -3)


def gamut_corners() -> torch.Tensor:
    """The 8 corners of the RGB cube as a (1, 3, 2, 4) image."""
    c = torch.tensor([[r, g, b] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)])
    return c.T.reshape(1, 3, 2, 4)


def test_rgb_to_lab_matches_skimage_on_random_float_colours():
    rgb = torch.rand(4, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(rgb)
    assert lab.shape == rgb.shape and lab.dtype == torch.float32
    np.testing.assert_allclose(lab.numpy(), sk_rgb2lab(rgb), atol=LAB_TOL)


def test_rgb_to_lab_matches_skimage_on_uint8_and_the_lookup_table_agrees_with_float():
    rgb8 = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    lab8 = rgb_to_lab(rgb8)
    np.testing.assert_allclose(lab8.numpy(), sk_rgb2lab(rgb8), atol=LAB_TOL)
    np.testing.assert_allclose(lab8.numpy(), rgb_to_lab(rgb8.float() / 255).numpy(), atol=1e-3)


def test_all_gamut_corners_convert_like_skimage_and_round_trip():
    rgb = gamut_corners()
    lab = rgb_to_lab(rgb)
    np.testing.assert_allclose(lab.numpy(), sk_rgb2lab(rgb), atol=LAB_TOL)
    np.testing.assert_allclose(lab_to_rgb(lab).numpy(), rgb.numpy(), atol=1e-3)
    # White is L = 100 with no colour; black is L = 0.
    white, black = lab[0, :, 1, 3], lab[0, :, 0, 0]
    np.testing.assert_allclose(white.numpy(), [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(black.numpy(), [0, 0, 0], atol=0.05)


def test_lab_to_rgb_matches_skimage_in_and_out_of_gamut():
    g = torch.Generator().manual_seed(2)
    lab = torch.stack([torch.rand(3, 32, 32, generator=g) * 100,
                       torch.rand(3, 32, 32, generator=g) * 220 - 110,
                       torch.rand(3, 32, 32, generator=g) * 220 - 110], dim=1)  # (3, 3, 32, 32)
    ours = lab_to_rgb(lab)
    assert ours.shape == lab.shape and ours.min() >= 0 and ours.max() <= 1
    np.testing.assert_allclose(ours.numpy(), sk_lab2rgb(lab), atol=1.0 / 255)


def test_unbatched_and_batched_inputs_give_the_same_result():
    rgb = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    batched = rgb_to_lab(rgb)
    for i in range(3):
        torch.testing.assert_close(rgb_to_lab(rgb[i]), batched[i])
        torch.testing.assert_close(lab_to_rgb(batched[i]), lab_to_rgb(batched)[i])


def test_real_photo_pixels_match_skimage(real_photo_dir):
    path = sorted(real_photo_dir.glob("*.jpg"))[0]
    rgb8 = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
    np.testing.assert_allclose(rgb_to_lab(rgb8).numpy(), sk_rgb2lab(rgb8), atol=LAB_TOL)


def test_grey_to_l_is_the_l_of_the_grey_colour_and_grey_has_no_colour():
    grey = torch.cat([torch.linspace(0, 1, 256), torch.rand(256, generator=torch.Generator().manual_seed(4))])
    grey = grey.reshape(2, 16, 16)
    rgb = grey[:, None].expand(2, 3, 16, 16)
    lab = rgb_to_lab(rgb)
    torch.testing.assert_close(grey_to_l(grey), lab[:, 0], atol=1e-3, rtol=0)
    np.testing.assert_allclose(grey_to_l(grey).numpy(), sk_rgb2lab(rgb)[:, 0], atol=LAB_TOL)
    assert lab[:, 1:].abs().max() < 0.01


def test_lab_norm_round_trip_and_ranges():
    norm = LabNorm()
    rgb8 = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    l_n, ab_n = norm.split(rgb8)
    assert l_n.shape == (2, 1, 12, 12) and ab_n.shape == (2, 2, 12, 12)
    assert l_n.min() >= -1 and l_n.max() <= 1 and ab_n.abs().max() <= 1.2
    back = norm.merge(l_n, ab_n)
    assert (back * 255 - rgb8.float()).abs().max() < 0.5  # the same 8-bit colours
    lab = torch.randn(2, 3, 4, 4) * 30 + 20
    torch.testing.assert_close(norm.l_inv(norm.l(lab[:, :1])), lab[:, :1])
    torch.testing.assert_close(norm.ab_inv(norm.ab(lab[:, 1:])), lab[:, 1:])


# ---------------------------------------------------------------------------------------------------
def kept_bins(seed: int = 6):
    """Kept bins as the trainer makes them: from the histogram of a colour sample that leaves gaps."""
    g = torch.Generator().manual_seed(seed)
    ab = (torch.randn(20000, 2, generator=g) * torch.tensor([25.0, 35.0]) + torch.tensor([5.0, 15.0]))
    q = torch.round((ab.clamp(-AB_GRID_MAX, AB_GRID_MAX) + AB_GRID_MAX) / AB_GRID_STEP).long()
    counts = np.bincount((q[:, 0] * AB_GRID_N + q[:, 1]).numpy(), minlength=AB_GRID_N ** 2)
    keep, prior = prior_from_counts(counts.astype(np.float64))
    bins = grid_centers()[keep]
    grid_to_bin = ((grid_centers()[:, None] - bins[None]) ** 2).sum(-1).argmin(1)  # as train.Criterion
    return keep, torch.from_numpy(prior).float(), bins, grid_to_bin


def test_soft_encode_weights_sum_to_one_and_the_dominant_bin_is_the_nearest_kept_bin():
    keep, _, bins, grid_to_bin = kept_bins()
    assert 20 < len(keep) < AB_GRID_N ** 2  # a realistic set with gaps
    g = torch.Generator().manual_seed(7)
    ab = torch.rand(2, 2, 30, 30, generator=g) * 240 - 120  # the whole plane, beyond the grid too
    idx, w = soft_encode(ab, grid_to_bin, bins)
    assert idx.shape == w.shape == (2, 9, 30, 30)
    assert idx.min() >= 0 and idx.max() < len(bins) and w.min() >= 0
    torch.testing.assert_close(w.sum(1), torch.ones(2, 30, 30))

    dominant = bins[idx.gather(1, w.argmax(1, keepdim=True))[:, 0]]       # (2, 30, 30, 2)
    pix = ab.clamp(-AB_GRID_MAX, AB_GRID_MAX).permute(0, 2, 3, 1)           # (2, 30, 30, 2)
    d2 = ((pix[..., None, :] - bins) ** 2).sum(-1)                          # (2, 30, 30, Q)
    nearest = bins[d2.argmin(-1)]
    # Where a pixel's own grid cell is a kept bin, the nearest kept bin is within its 3x3 neighbourhood,
    # and soft_encode must put the most weight on it.
    cell = torch.round((pix + AB_GRID_MAX) / AB_GRID_STEP).long()
    own_kept = torch.isin(cell[..., 0] * AB_GRID_N + cell[..., 1], torch.from_numpy(keep))
    assert own_kept.float().mean() > 0.3
    torch.testing.assert_close(dominant[own_kept], nearest[own_kept])
    # Elsewhere the weight still goes to a kept bin that is no farther than one grid step beyond the nearest.
    extra = ((dominant - pix) ** 2).sum(-1).sqrt() - ((nearest - pix) ** 2).sum(-1).sqrt()
    assert extra.max() <= AB_GRID_STEP * 2 ** 0.5 + 1e-4


def test_soft_encode_falls_back_to_the_nearest_kept_bin_far_from_every_kept_bin():
    _, _, bins, grid_to_bin = kept_bins()
    far = torch.tensor([110.0, -110.0]).reshape(1, 2, 1, 1)  # a corner of the grid nobody uses
    idx, w = soft_encode(far, grid_to_bin, bins)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 1, 1))
    best = bins[idx[0, w[0, :, 0, 0].argmax(), 0, 0]]
    torch.testing.assert_close(best, bins[((bins - far[0, :, 0, 0]) ** 2).sum(-1).argmin()])


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_rebalance_weights_have_expected_weight_one_and_favour_rare_bins(lam):
    _, prior, _, _ = kept_bins()
    assert abs(prior.sum().item() - 1) < 1e-5
    w = rebalance_weights(prior, lam)
    assert w.shape == prior.shape and (w > 0).all()
    assert abs((prior * w).sum().item() - 1) < 1e-4
    if lam < 1:
        assert w[prior.argmin()] > w[prior.argmax()]
    else:
        torch.testing.assert_close(w, torch.ones_like(w))


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9])
def test_prior_from_weights_inverts_rebalance_weights(lam):
    _, prior, _, _ = kept_bins()
    back = prior_from_weights(rebalance_weights(prior, lam).log(), lam)
    torch.testing.assert_close(back, prior.float(), atol=1e-5, rtol=1e-3)


LUMA = torch.tensor([0.299, 0.587, 0.114])


@pytest.mark.parametrize("tol", [0.0, 0.5 / 255])
def test_match_luma_meets_the_grey_and_never_moves_away_from_a_colour_with_that_grey(tol):
    g = torch.Generator().manual_seed(0)
    true = torch.rand(3, 64, 64, generator=g)
    true[:, :8] = torch.randint(0, 2, (3, 8, 64), generator=g).float()  # cube corners and edges too
    luma = torch.einsum("chw,c->hw", true, LUMA)
    pred = torch.rand(3, 64, 64, generator=g)
    pred[:, 8:16] = torch.randint(0, 2, (3, 8, 64), generator=g).float()
    out = match_luma(pred.clone(), luma, tol)
    assert out.min() >= 0 and out.max() <= 1
    assert (torch.einsum("chw,c->hw", out, LUMA) - luma).abs().max() <= tol + 1e-5
    before, after = (pred - true).norm(dim=0), (out - true).norm(dim=0)
    assert (after <= before + 1e-5).all() and after.mean() < 0.9 * before.mean()
    # The nearest such colour: no other colour of the set (here the original) is nearer to pred.
    assert ((out - pred).norm(dim=0) <= (true - pred).norm(dim=0) + 1e-5).all()


def test_match_luma_leaves_colours_that_already_have_the_grey_alone():
    rgb = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    luma = torch.einsum("chw,c->hw", rgb, LUMA)
    torch.testing.assert_close(match_luma(rgb.clone(), luma, 1e-3), rgb)
    grey = torch.rand(16, 16).expand(3, 16, 16).clone()
    torch.testing.assert_close(match_luma(grey.clone(), grey[0], 0.0), grey, atol=1e-6, rtol=0)


def test_int8_weights_round_trip_within_half_a_step_per_output_channel():
    torch.manual_seed(0)
    sd = {"conv.weight": torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8)[:, None, None, None],
          "conv.bias": torch.randn(8), "bn.num_batches_tracked": torch.tensor(7), "zero.weight": torch.zeros(2, 3),
          "bins": torch.randn(5, 2) * 50}
    stored = int8_weights(sd)
    assert stored["conv.weight"].dtype == torch.int8 and stored["conv.bias"].dtype == torch.float16
    assert stored["bins"].dtype == torch.float16  # a 2-d buffer, not a weight: the colours stay precise
    assert stored["bn.num_batches_tracked"].dtype == torch.int64
    back = float_weights(stored)
    assert set(back) == set(sd) and all(v.dtype == sd[k].dtype for k, v in back.items())
    step = sd["conv.weight"].abs().amax((1, 2, 3), keepdim=True) / 127
    assert ((back["conv.weight"] - sd["conv.weight"]).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(back["zero.weight"], sd["zero.weight"])
    torch.testing.assert_close(float_weights({k: v.half() for k, v in sd.items() if v.is_floating_point()})["conv.bias"],
                               sd["conv.bias"], atol=1e-2, rtol=1e-3)
