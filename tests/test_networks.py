import pytest
import torch

from facesynth.config import GANConfig
from facesynth.nets.discriminator import Discriminator
from facesynth.nets.generator import Generator
from facesynth.presets import PRESETS, get_preset
from facesynth.synthesis.generate import generate_images
from facesynth.training.loop import mixed_ws


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_the_right_shapes(name):
    cfg = PRESETS[name]
    if cfg.resolution > 256:
        # Same code path as the smaller presets; only its size differs. Check it at a scaled-down capacity.
        cfg = cfg.replace(channel_base=cfg.channel_base // 16, channel_max=16, w_dim=32, z_dim=32)
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, cfg.z_dim))
        assert ws.shape == (2, cfg.num_ws, cfg.w_dim)
        img = G.synthesis(ws)
        assert img.shape == (2, 3, cfg.resolution, cfg.resolution)
        assert torch.isfinite(img).all()
        assert D(img).shape == (2, 1)
    assert len(G.synthesis.layer_resolutions()) == cfg.num_ws


def test_num_ws_matches_stylegan2():
    assert GANConfig(resolution=1024).num_ws == 18
    assert GANConfig(resolution=256).num_ws == 14


def test_paper_preset_sizes_match_the_papers():
    # StyleGAN2 config F at 1024: G 30.0M parameters; StyleGAN2-ADA's paper256: about 24.8M.
    from facesynth.nets import parameter_counts

    assert abs(parameter_counts(get_preset("stylegan2-256-paper"))["G"] / 1e6 - 24.8) < 0.2


def test_psi_zero_gives_the_mean_face_and_psi_one_the_raw_one():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    G.mapping.w_avg.copy_(torch.randn(cfg.w_dim))
    z = torch.randn(4, cfg.z_dim)
    with torch.no_grad():
        mean_face = G.synthesis(G.mapping.w_avg.expand(1, cfg.num_ws, -1), noise_mode="const")
        zero = G(z, truncation_psi=0.0, noise_mode="const")
        raw = G.synthesis(G.mapping(z), noise_mode="const")
        one = G(z, truncation_psi=1.0, noise_mode="const")
    torch.testing.assert_close(zero, mean_face.expand_as(zero))
    torch.testing.assert_close(one, raw)
    assert (zero[0] - zero[1]).abs().max() < 1e-6
    assert (raw[0] - raw[1]).abs().max() > 1e-3


def test_truncation_cutoff_only_touches_the_first_layers():
    cfg = get_preset("tiny")
    G = Generator(cfg)
    G.mapping.w_avg.copy_(torch.randn(cfg.w_dim))
    z = torch.randn(2, cfg.z_dim)
    raw = G.mapping(z)
    cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], G.mapping.w_avg.expand(2, 2, -1))
    torch.testing.assert_close(cut[:, 2:], raw[:, 2:])


def test_style_mixing_regularisation_crosses_two_latents():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    G = Generator(cfg)
    z = torch.randn(4, cfg.z_dim)
    base = G.mapping(z)
    seen_cutoffs = set()
    for seed in range(40):
        torch.manual_seed(seed)
        ws = mixed_ws(G, z, prob=1.0)
        same = (ws - base).abs().amax(dim=(0, 2)) < 1e-6  # per layer: still from z?
        cutoff = int(same.sum())
        assert 1 <= cutoff < cfg.num_ws, "mixing must keep some layers and replace the rest"
        assert same[:cutoff].all() and not same[cutoff:].any(), "layers must switch once, at the crossover"
        # The replaced layers all come from one other latent.
        tail = ws[:, cutoff:]
        assert (tail - tail[:, :1]).abs().max() < 1e-6
        seen_cutoffs.add(cutoff)
    assert len(seen_cutoffs) >= 3, "the crossover point should be random"
    torch.testing.assert_close(mixed_ws(G, z, prob=0.0), base)


def test_noise_inputs_add_stochastic_detail_only_when_enabled():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    for m in G.modules():
        if hasattr(m, "strength"):
            m.strength.data.fill_(0.5)
    z = torch.randn(1, cfg.z_dim)
    with torch.no_grad():
        a, b = G(z, noise_mode="random"), G(z, noise_mode="random")
        c, d = G(z, noise_mode="const"), G(z, noise_mode="const")
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(c, d)


def test_same_seed_gives_the_same_image():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    a = generate_images(G, [3, 7], truncation_psi=0.7)
    b = generate_images(G, [3, 7], truncation_psi=0.7)
    c = generate_images(G, [7], truncation_psi=0.7)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[1:], c)
    assert (a[0] - a[1]).abs().max() > 1e-4


def test_config_validation_refuses_absurd_values():
    from facesynth.errors import FacesynthError

    with pytest.raises(FacesynthError, match="power of two"):
        GANConfig(resolution=1000).validate()
    with pytest.raises(FacesynthError, match="power of two"):
        GANConfig(resolution=2**30).validate()
    with pytest.raises(FacesynthError, match="positive"):
        GANConfig(channel_base=-4).validate()
    with pytest.raises(FacesynthError, match="unknown config keys"):
        GANConfig.from_dict({"resolution": 64, "evil": 1})


def test_channel_overrides_thin_chosen_resolutions_and_are_validated():
    from facesynth.errors import FacesynthError

    cfg = GANConfig(resolution=64, channel_base=4096, channel_max=512, channel_overrides={"32": 64, "64": 32})
    assert [cfg.channels_at(r) for r in cfg.block_resolutions] == [512, 512, 256, 64, 32]
    G = Generator(cfg.replace(z_dim=32, w_dim=32))
    assert G.synthesis.blocks[-1].conv1.conv.weight.shape[:2] == (32, 32)
    with pytest.raises(FacesynthError, match="does not have"):
        GANConfig(resolution=64, channel_overrides={"128": 8}).validate()
    with pytest.raises(FacesynthError, match="channel count"):
        GANConfig(resolution=64, channel_overrides={"64": -1}).validate()


# --------------------------------------------------------------------------- StyleGAN2's other forms

def _forms_cfg(**kw):
    from facesynth.config import GANConfig

    base = dict(resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2, batch=4)
    return GANConfig(**{**base, **kw}).validate()


@pytest.mark.parametrize("g_arch,d_arch", [("resnet", "skip"), ("orig", "orig"), ("skip", "resnet")])
def test_network_forms_build_run_and_train(g_arch, d_arch):
    from facesynth.nets import build_discriminator, build_generator

    cfg = _forms_cfg(g_architecture=g_arch, d_architecture=d_arch)
    G, D = build_generator(cfg), build_discriminator(cfg)
    img = G(torch.randn(4, 32))
    assert img.shape == (4, 3, 16, 16)
    D(img).sum().backward()
    assert all(p.grad is not None for p in G.synthesis.parameters() if p.requires_grad and p.ndim)
    has_torgb = [b.torgb is not None for b in G.synthesis.blocks]
    assert has_torgb == ([True] * 3 if g_arch == "skip" else [False, False, True])
    assert hasattr(G.synthesis.blocks[1], "skip") == (g_arch == "resnet")


def test_conv_clamp_limits_every_convolution():
    from facesynth.nets import build_generator

    G = build_generator(_forms_cfg(conv_clamp=0.5))
    seen = []
    for m in G.synthesis.modules():
        if type(m).__name__ in ("StyledConv", "ToRGB"):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.abs().max().item()))
    G(torch.randn(2, 32) * 10)
    assert seen and max(seen) <= 0.5 + 1e-6


def test_conditional_networks_project_labels():
    from facesynth.errors import FacesynthError
    from facesynth.nets import build_discriminator, build_generator

    cfg = _forms_cfg(c_dim=3, d_mapping_layers=1)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(2, 32)
    c = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3)
    with pytest.raises(FacesynthError, match="--class"):
        G(z)
    a, b = G(z, c=c, noise_mode="const"), G(z, c=c.flip(0), noise_mode="const")
    assert not torch.allclose(a, b)  # the label changes the face
    assert D(a, c).shape == (2, 1) and not torch.allclose(D(a, c), D(a, c.flip(0)))


def test_forms_refused_where_they_do_not_apply():
    from facesynth.errors import FacesynthError

    with pytest.raises(FacesynthError, match="progressive"):
        _forms_cfg(g_architecture="resnet", progressive=True, start_resolution=8)
    with pytest.raises(FacesynthError, match="stylegan2"):
        _forms_cfg(arch="progan", mapping_layers=0, d_architecture="skip")
    with pytest.raises(FacesynthError, match="mbstd_channels"):
        _forms_cfg(mbstd_channels=5)
