"""The network: output shapes for any input size, both heads, and checkpoints that hold no pickled code."""
import pytest
import torch

from model import EVEN_SPREAD, Decode, ModelConfig, build_model, colour_spread
from utils import CheckpointError, load_checkpoint, save_checkpoint

SIZES = [(37, 53), (1, 1), (5, 200), (64, 64), (33, 17)]
HEADS = {"regression": dict(head="regression"), "classification": dict(head="classification", num_bins=13),
         "regression_var": dict(head="regression_var")}
CHANNELS = {"regression": 2, "classification": 13, "regression_var": 4}  # the head's output channels


def tiny(head: str, depth: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(width=4, max_width=16, depth=depth, **HEADS[head])).eval()


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("h,w", SIZES)
def test_output_shapes_for_any_input_size(head, h, w):
    model = tiny(head)
    l_n = torch.rand(2, 1, h, w) * 2 - 1
    with torch.no_grad():
        out = model(l_n)
        ab = model.predict_ab(l_n)
    assert out.shape == (2, CHANNELS[head], (h + 1) // 2, (w + 1) // 2)  # the head works at half resolution
    assert ab.shape == (2, 2, h, w) and torch.isfinite(ab).all()


@pytest.mark.parametrize("head", HEADS)
def test_training_mode_forward_and_backward_on_an_odd_size(head):
    model = tiny(head).train()
    out = model(torch.rand(2, 1, 37, 53) * 2 - 1)
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_classification_decode_is_a_mix_of_the_bins():
    model = tiny("classification")
    bins = torch.stack([torch.linspace(-50, 60, 13), torch.linspace(30, -20, 13)], 1)
    model.bins.copy_(bins)
    with torch.no_grad():
        ab = model.predict_ab(torch.rand(1, 1, 20, 24) * 2 - 1)  # normalised: ab / 110
    lo, hi = bins.min(0).values / 110, bins.max(0).values / 110
    assert (ab.amin((0, 2, 3)) >= lo - 1e-5).all() and (ab.amax((0, 2, 3)) <= hi + 1e-5).all()


def test_a_colour_prior_bias_moves_the_decoded_colour_towards_its_bin_and_zero_changes_nothing():
    model = tiny("classification")
    model.bins.copy_(torch.stack([torch.linspace(-50, 60, 13), torch.linspace(30, -20, 13)], 1))
    out = model(torch.rand(2, 1, 20, 24) * 2 - 1).detach()
    plain = model.decode(out)
    assert torch.equal(model.decode(out, bias=torch.zeros(2, 13)), plain)
    bias = torch.zeros(2, 13)
    bias[0, 12] = 5.0  # image 0 only: favour the last bin, (60, -20)
    pushed = model.decode(out, bias=bias)
    target = model.bins[12] / 110
    before = (plain[0] - target[:, None, None]).norm(dim=0).mean()
    assert (pushed[0] - target[:, None, None]).norm(dim=0).mean() < before
    assert torch.equal(pushed[1], plain[1])
    with pytest.raises(ValueError, match="classification"):
        tiny("regression").decode(torch.zeros(1, 2, 4, 4), bias=torch.zeros(1, 13))


@pytest.mark.parametrize("head", HEADS)
def test_the_gain_scales_each_images_colours_about_their_mean(head):
    """decode(gain=k) = mu + k (ab - mu), mu each image's own mean ab: same mean colour, k times the spread."""
    model = tiny(head).eval()
    if head == "classification":
        model.bins.copy_(torch.randn(13, 2) * 40)
    torch.manual_seed(1)
    out = torch.randn(2, CHANNELS[head], 10, 12) * 3  # head outputs with some spread
    base, vivid = model.decode(out), model.decode(out, Decode(gain=1.6))
    mu = base.mean((2, 3), keepdim=True)
    torch.testing.assert_close(vivid.mean((2, 3), keepdim=True), mu)
    torch.testing.assert_close(vivid - mu, 1.6 * (base - mu))
    assert (base - mu).abs().max() > 0.05  # there is a spread to scale, so the test can tell


def test_decode_settings_come_from_a_checkpoint_entry_and_take_only_given_overrides():
    d = Decode.from_dict({"size": 192, "temperature": 0.55, "gain": 1.2})  # size is not a decode setting
    assert d == Decode(temperature=0.55, gain=1.2)
    assert d.override(gain=None, spread=0.3) == Decode(0.55, 0.0, 1.2, 0.3)
    with pytest.raises(TypeError):
        d.override(vividness=2.0)


def test_spread_stretches_each_image_by_its_own_predicted_variance():
    """decode(spread=s): mu + sqrt(1 + s V / D) (m - mu) per image, V the mean predicted variance (summed over
    a and b) and D the mean squared offset of the mean colours: an image the network is sure of (tiny V)
    keeps its colours, an unsure one is stretched towards the colourfulness it predicts."""
    model = tiny("regression_var")
    torch.manual_seed(2)
    mean = torch.randn(2, 2, 10, 12) * 0.2
    log_var = torch.stack([torch.full((2, 10, 12), -14.0), torch.full((2, 10, 12), -3.0)])  # sure, unsure
    out = torch.cat([mean, log_var], 1)
    torch.testing.assert_close(model.decode(out), mean)  # spread 0: the mean as it is
    s = 0.5
    ab = model.decode(out, Decode(spread=s))
    mu = mean.mean((2, 3), keepdim=True)
    d = ((mean - mu) ** 2).sum(1).mean((1, 2))
    k = (1 + s * 2 * torch.exp(torch.tensor([-14.0, -3.0])) / d).sqrt()
    torch.testing.assert_close(ab - mu, k[:, None, None, None] * (mean - mu))
    assert k[0] < 1.0001 and k[1] > 1.2  # the test can tell the two images apart


@pytest.mark.parametrize("head", HEADS)
def test_evenness_stretches_washed_out_images_more_than_vivid_ones(head):
    """decode(evenness=a): each image's gain times (EVEN_SPREAD / r)^a, r the RMS distance of its decoded
    colours from their mean. a = 1 brings every image to the same spread, EVEN_SPREAD x gain; a = 0.5 halves
    the log-distance to it; the mean colour never moves."""
    model = tiny(head)
    if head == "classification":
        model.bins.copy_(torch.randn(13, 2) * 40)
    torch.manual_seed(3)
    out = torch.randn(2, CHANNELS[head], 10, 12) * torch.tensor([0.3, 3.0])[:, None, None, None]
    base = model.decode(out)
    mu = base.mean((2, 3), keepdim=True)
    r = colour_spread(base).sqrt()
    assert r[1] > 1.5 * r[0]  # a washed-out and a vivid image, so the test can tell them apart
    for a, k in ((1.0, 1.0), (0.5, 1.2)):
        ab = model.decode(out, Decode(gain=k, evenness=a))
        torch.testing.assert_close(ab.mean((2, 3), keepdim=True), mu)
        stretch = k * (EVEN_SPREAD / r) ** a
        torch.testing.assert_close(ab - mu, stretch[:, None, None, None] * (base - mu))
    torch.testing.assert_close(colour_spread(model.decode(out, Decode(evenness=1.0))).sqrt(),
                               torch.full((2,), EVEN_SPREAD))


def test_the_variance_branch_does_not_train_the_mean():
    """The log-variance is predicted from detached features: its loss reaches only its own branch."""
    model = tiny("regression_var").train()
    out = model(torch.rand(2, 1, 21, 30) * 2 - 1)
    out[:, 2:].pow(2).mean().backward()
    for name, p in model.named_parameters():
        touched = p.grad is not None and p.grad.abs().sum() > 0
        assert touched == name.startswith("var_head."), name


def test_a_frozen_mean_leaves_only_the_variance_branch_trainable_and_the_rest_in_eval_mode():
    model = tiny("regression_var")
    model.freeze_mean()
    model.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if n.startswith("var_head.")}
    # BatchNorm keeps the network's statistics: every module but the branch (which has none) in eval mode
    assert {n for n, m in model.named_modules() if m.training} == \
        {""} | {n for n, _ in model.named_modules() if n.startswith("var_head")}
    with pytest.raises(ValueError):
        tiny("regression").freeze_mean()


def test_bad_head_is_rejected():
    with pytest.raises(ValueError):
        build_model(ModelConfig(head="classification", num_bins=0))
    with pytest.raises(ValueError):
        build_model({"head": "segmentation"})


def test_checkpoint_round_trip_loads_strictly_and_a_pickled_module_is_refused(tmp_path):
    model = tiny("classification")
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, str(path))
    ckpt = load_checkpoint(str(path))
    again = build_model(ckpt["model_config"])
    again.load_state_dict(ckpt["model"], strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    pickled = tmp_path / "whole_module.pt"
    torch.save(model, pickled)
    with pytest.raises(CheckpointError, match="whole_module.pt"):
        load_checkpoint(str(pickled))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_an_ensemble_averages_its_members_decoded_colours():
    torch.manual_seed(0)
    cfg = ModelConfig(width=4, max_width=16, depth=2, **HEADS["classification"])
    ens = build_model(cfg, members=2).eval()
    for m in ens.members:
        m.bins.copy_(torch.randn(13, 2) * 40)
        m.log_weights.copy_(torch.randn(13))
    l_n = torch.rand(1, 1, 21, 18) * 2 - 1
    settings = Decode(temperature=0.5, prior_correction=0.7)
    with torch.no_grad():
        out = ens(l_n)
        assert out.shape[:2] == (2, 1)
        each = [m.predict_ab(l_n, settings=settings) for m in ens.members]
        torch.testing.assert_close(ens.predict_ab(l_n, settings=settings), (each[0] + each[1]) / 2)
    assert not torch.allclose(each[0], each[1])  # the members differ, so the test can tell
    assert type(build_model(cfg)).__name__ == "ColorUNet"
    with pytest.raises(ValueError):
        build_model(cfg, members=0)
