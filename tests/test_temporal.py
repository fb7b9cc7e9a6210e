"""temporal.Stabilizer on synthetic frames (no model, no files): it follows the motion, lowers the flicker
of a noisy prediction, restarts at a cut and copes with flat and black frames; its numpy optical flow
agrees with scikit-image's optical_flow_ilk."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from temporal import Stabilizer, StabilizerConfig, histogram_change, normalised_grey

W, H, SHIFT = 96, 64, 2  # frame size and pan (pixels per frame, to the right)


def texture(seed: int = 0) -> np.ndarray:
    """A photo's grey (float32 in [0, 1], 256 x 256) to pan over."""
    photo = data.camera() if seed == 0 else data.coins()
    return np.asarray(photo[:256, :256], np.float32) / 255


def pan(picture: np.ndarray, t: int) -> np.ndarray:
    """Frame t of a pan over picture: the window moves SHIFT px right per frame."""
    return picture[40:40 + H, 20 + SHIFT * t: 20 + SHIFT * t + W]


def true_ab(t: int) -> torch.Tensor:
    """A smooth colour field fixed to the picture (moving with the pan), (1, 2, H, W)."""
    x = torch.arange(W, dtype=torch.float32) + SHIFT * t
    a = 30 * torch.sin(x / 15)[None].expand(H, W)
    b = 20 * torch.cos(torch.arange(H, dtype=torch.float32) / 10)[:, None].expand(H, W)
    return torch.stack([a, b])[None]


def flicker(abs_: list[torch.Tensor]) -> float:
    """Mean |change of ab| between consecutive frames after undoing the pan, 8 px from the edges."""
    m = 8
    d = [(cur[..., m:W - SHIFT - m] - prev[..., m + SHIFT:W - m]).norm(dim=1).mean()
         for prev, cur in zip(abs_, abs_[1:])]
    return float(torch.stack(d).mean())


def test_stabilizer_lowers_the_flicker_of_a_noisy_prediction():
    gen = torch.Generator().manual_seed(0)
    picture = texture()
    noisy = [true_ab(t) + 8 * torch.randn(1, 2, H // 8, W // 8, generator=gen).repeat_interleave(8, 2)
             .repeat_interleave(8, 3) for t in range(12)]  # blotchy guesses, as a network's
    stab = Stabilizer()
    smooth = [torch.from_numpy(stab(pan(picture, t), ab.numpy())) for t, ab in enumerate(noisy)]
    assert stab.cuts == [0]
    assert flicker(smooth) < 0.4 * flicker(noisy)
    # and it stays on the true colour rather than smearing it along the pan
    err = lambda abs_: float(torch.stack([(a - true_ab(t))[..., 8:-8].abs().mean() for t, a in enumerate(abs_)]).mean())
    assert err(smooth) < err(noisy)


def test_a_cut_restarts_from_the_new_prediction():
    a, b = texture(0), texture(1)
    stab = Stabilizer()
    for t in range(4):
        stab(pan(a, t), true_ab(t).numpy())
    new = torch.full((1, 2, H, W), -40.0)
    out = torch.from_numpy(stab(pan(b, 4), new.numpy()))
    assert stab.cuts == [0, 4]
    assert torch.equal(out, new)  # nothing of the first shot's colour leaks across the cut


def test_without_memory_the_prediction_passes_unchanged():
    stab = Stabilizer(StabilizerConfig(memory=0.0))
    picture = texture()
    for t in range(3):
        ab = true_ab(t) + t
        assert torch.allclose(torch.from_numpy(stab(pan(picture, t), ab.numpy())), ab)


@pytest.mark.parametrize("level", [0.0, 0.5])
def test_flat_and_black_frames_give_a_finite_colour(level):
    stab = Stabilizer()
    flat = np.full((H, W), level, np.float32)
    for t in range(3):
        out = stab(flat, true_ab(t).numpy())
        assert np.isfinite(out).all()
    assert np.isfinite(normalised_grey(flat)).all()


def test_histogram_change_sees_a_cut_and_not_a_pan_or_a_brightness_flicker():
    a, b = texture(0), texture(1)
    g = lambda x: normalised_grey(x)
    assert histogram_change(g(pan(a, 0)), g(pan(a, 1))) < 0.05
    assert histogram_change(g(pan(a, 0)), g(0.8 * pan(a, 0) + 0.1)) < 0.05  # exposure flicker of old film
    assert histogram_change(g(pan(a, 0)), g(pan(b, 0))) > StabilizerConfig().cut_threshold


def test_the_numpy_optical_flow_is_scikit_images():
    from skimage.registration import optical_flow_ilk
    from temporal import optical_flow
    picture = texture()
    ref, moving = pan(picture, 1), pan(picture, 0)
    ours, theirs = optical_flow(ref, moving, radius=4), optical_flow_ilk(ref, moving, radius=4, num_warp=3)
    assert np.abs(ours - theirs).mean() < 0.01 and np.abs(ours - theirs).max() < 0.5
    assert np.allclose(ours[:, 8:-8, 8:-8].mean((1, 2)), [0, SHIFT], atol=0.05)
