"""G-SimCLR: the denoising autoencoder, faiss k-means pseudo-labels, the method's sampler hook,
the pseudo-labels kept in the run directory, and the failure messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from ssl_platform.checkpoint.io import export_backbone
from ssl_platform.data.collate import TransformedDataset
from ssl_platform.data.datasets import Digits
from ssl_platform.data.pseudo_labels import kmeans_pseudo_labels
from ssl_platform.data.samplers import GuidedBatchSampler
from ssl_platform.data.transforms import EvalTransform, SimCLRViews
from ssl_platform.features import embed_dataset
from ssl_platform.methods import METHODS, DenoisingAutoencoder, GSimCLR, SimCLR

TINY = {"small_input": True, "in_chans": 1, "backbone_kwargs": {"channels": [8, 16, 32, 64]},
        "proj_hidden_dim": 32, "proj_dim": 16}


def blobs(n_per: int = 50, k: int = 6, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Well-separated directions on the sphere (k-means on normalised features must find them)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1) * 10
    truth = np.repeat(np.arange(k), n_per)
    x = centers[truth] + 0.3 * torch.randn(len(truth), d, generator=g)
    return x, truth


# ---- k-means


def test_kmeans_recovers_separated_clusters_like_sklearn():
    x, truth = blobs()
    ours = kmeans_pseudo_labels(x, 6, seed=0, restarts=10)  # as scikit-learn's n_init=10
    reference = KMeans(6, n_init=10, random_state=0).fit_predict(
        torch.nn.functional.normalize(x, dim=1).numpy())
    assert ours.dtype == np.int64 and ours.shape == (300,)
    assert adjusted_rand_score(truth, ours) == 1.0
    assert adjusted_rand_score(reference, ours) == 1.0


def test_kmeans_is_reproducible_from_the_seed():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))  # no structure: the seed matters
    assert np.array_equal(kmeans_pseudo_labels(x, 20, seed=3), kmeans_pseudo_labels(x, 20, seed=3))
    assert not np.array_equal(kmeans_pseudo_labels(x, 20, seed=3), kmeans_pseudo_labels(x, 20, seed=4))


def test_kmeans_refuses_more_clusters_than_samples():
    with pytest.raises(ValueError, match="cannot make 50 clusters from 10 samples"):
        kmeans_pseudo_labels(torch.randn(10, 4), 50)


# ---- denoising autoencoder


def test_dae_loss_is_mse_of_the_noisy_inputs_reconstruction_against_the_clean_input():
    dae = DenoisingAutoencoder(in_chans=1, image_size=28, backbone_kwargs={"channels": [8, 16]}, noise_std=0.3)
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(0)
    loss = dae({"image": x})["loss"]
    torch.manual_seed(0)
    noisy = x + 0.3 * torch.randn_like(x)
    expected = ((dae.reconstruct(noisy) - x) ** 2).mean()
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, ((dae.reconstruct(x) - x) ** 2).mean())  # the noise was really added


@pytest.mark.parametrize("size, backbone, kwargs", [
    (28, "plain_convnet", {"channels": [8, 16, 32]}),  # 28 -> 3: three doublings give 24, then interpolated
    (8, "resnet18", {"channels": [8, 16, 32, 64]}),
    (32, "plain_convnet", {}),
])
def test_dae_reconstructs_at_the_input_size(size, backbone, kwargs):
    dae = DenoisingAutoencoder(backbone, small_input=backbone == "resnet18", in_chans=1, image_size=size,
                               backbone_kwargs=kwargs)
    assert dae.reconstruct(torch.randn(2, 1, size, size)).shape == (2, 1, size, size)
    assert dae.embed({"image": torch.randn(2, 1, size, size)}).shape == (2, dae.backbone.num_features)


@pytest.mark.slow
def test_dae_learns_to_denoise_digits():
    torch.manual_seed(0)
    data = TransformedDataset(Digits(split="train", limit=256), EvalTransform(size=8, channels=1))
    x = torch.stack([data[i]["image"] for i in range(len(data))])
    dae = DenoisingAutoencoder(in_chans=1, image_size=8, backbone_kwargs={"channels": [16, 32]}, noise_std=0.2)
    opt = torch.optim.Adam(dae.parameters(), lr=3e-3)
    first = dae({"image": x})["loss"].item()
    for _ in range(150):
        opt.zero_grad()
        dae({"image": x})["loss"].backward()
        opt.step()
    dae.eval()
    with torch.no_grad():
        last = ((dae.reconstruct(x + 0.2 * torch.randn_like(x)) - x) ** 2).mean().item()
    # below a tenth of its start and below the variance of the pixels (predicting their mean)
    assert last < 0.1 * first and last < 0.5 * x.var().item()


def test_dae_needs_a_convolutional_feature_map():
    with pytest.raises(ValueError, match=r"CNN backbone .* \[B, D, h, w\]"):
        DenoisingAutoencoder("vit_tiny_patch16_224", in_chans=1, image_size=32,
                             backbone_kwargs={"img_size": 32, "patch_size": 8})


# ---- the method


@pytest.fixture
def encoder_file(tmp_path):
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(in_chans=1, image_size=8, backbone_kwargs={"channels": [8, 16]})
    path = tmp_path / "dae" / "backbone.safetensors"
    path.parent.mkdir()
    export_backbone(dae.backbone, path)
    return path


def digits_views():
    return TransformedDataset(Digits(split="train", limit=400),
                              SimCLRViews(size=8, channels=1, min_scale=0.5, blur_prob=0.0, gray_prob=0.0))


def make(encoder, **kw) -> GSimCLR:
    return GSimCLR(encoder=str(encoder), image_size=8, **{**TINY, **kw})


def test_registered_and_keeps_simclrs_loss(encoder_file):
    assert METHODS["gsimclr"] is GSimCLR and METHODS["dae"] is DenoisingAutoencoder
    torch.manual_seed(0)
    plain = SimCLR(**TINY, temperature=0.3)
    guided = make(encoder_file, temperature=0.3)
    # SimCLR's arguments pass through, and its parameters keep their names: runs saved before load
    assert guided.criterion.temperature == 0.3 and guided.in_chans == 1
    assert {k: v.shape for k, v in guided.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    with pytest.raises(TypeError, match="temprature"):
        make(encoder_file, temprature=0.3)
    guided.load_state_dict(plain.state_dict())
    guided._labels = torch.arange(8)
    batch = {"views": [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)], "index": torch.arange(8)}
    assert torch.equal(plain(batch)["loss"], guided(batch)["loss"])


def test_sampler_hook_clusters_the_encoders_latents_and_keeps_them_in_the_run_dir(encoder_file, tmp_path):
    data = digits_views()
    method = make(encoder_file, num_clusters=40)
    sampler = method.make_batch_sampler(data, batch_size=8, num_replicas=2, rank=1, seed=3, out_dir=tmp_path / "run")
    assert isinstance(sampler, GuidedBatchSampler) and sampler.global_batch == 16
    saved = np.load(tmp_path / "run" / "pseudo_labels" / "epoch_0000.npy")
    record = json.loads((tmp_path / "run" / "pseudo_labels" / "epoch_0000.json").read_text())
    assert saved.shape == (400,) and np.array_equal(saved, sampler.labels)
    assert record["num_clusters"] == 40 and record["seed"] == 3 and record["num_samples"] == 400
    assert record["cluster_size_max"] >= record["cluster_size_min"] >= 0
    # aligned with dataset indices: the encoder's features of image i, clustered the same way, give label i
    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.evaluation.features import extract_features

    feats, _ = extract_features(load_backbone(encoder_file), data.dataset, EvalTransform(size=8, channels=1))
    assert np.array_equal(kmeans_pseudo_labels(feats, 40, seed=3), saved)


def test_default_k_is_four_global_batches(encoder_file, tmp_path):
    method = make(encoder_file)
    method.make_batch_sampler(digits_views(), batch_size=16, num_replicas=1, rank=0, seed=0, out_dir=tmp_path)
    assert method.k == 64 and len(np.unique(method._sampler.labels)) <= 64


def test_a_resumed_run_reads_the_labels_back_instead_of_clustering(encoder_file, tmp_path):
    data = digits_views()
    make(encoder_file, num_clusters=40).make_batch_sampler(data, batch_size=8, num_replicas=1, rank=0, seed=0,
                                                           out_dir=tmp_path)
    path = tmp_path / "pseudo_labels" / "epoch_0000.npy"
    marked = np.arange(400) % 40  # not what k-means gives: proves the file is what is used
    np.save(path, marked)
    sampler = make(encoder_file, num_clusters=40).make_batch_sampler(data, batch_size=8, num_replicas=1, rank=0,
                                                                     seed=0, out_dir=tmp_path)
    assert np.array_equal(sampler.labels, marked)
    with pytest.raises(RuntimeError, match=r"clustered with other settings .*num_clusters"):
        make(encoder_file, num_clusters=50).make_batch_sampler(data, batch_size=8, num_replicas=1, rank=0, seed=0,
                                                               out_dir=tmp_path)


def test_reclustering_uses_this_backbone_and_a_lost_file_stops_resumption(encoder_file, tmp_path):
    data = digits_views()
    method = make(encoder_file, num_clusters=40, recluster_every_epochs=2)
    sampler = method.make_batch_sampler(data, batch_size=8, num_replicas=1, rank=0, seed=0, out_dir=tmp_path)
    first = sampler.labels.copy()
    method.on_epoch_start(1)  # not a re-clustering epoch
    assert np.array_equal(sampler.labels, first) and not (tmp_path / "pseudo_labels" / "epoch_0002.npy").exists()
    method.on_epoch_start(2)
    again = np.load(tmp_path / "pseudo_labels" / "epoch_0002.npy")
    assert np.array_equal(sampler.labels, again) and adjusted_rand_score(first, again) < 0.9
    assert "epoch 2" in json.loads((tmp_path / "pseudo_labels" / "epoch_0002.json").read_text())["source"]
    # re-clustering reads the method's own embedding (the one contract), not some other representation
    feats, _ = embed_dataset(method, data.dataset, method.transform, embed=method.embed)
    assert np.array_equal(kmeans_pseudo_labels(feats, 40, seed=0 + 2), again)

    (tmp_path / "pseudo_labels" / "epoch_0002.npy").unlink()
    resumed = make(encoder_file, num_clusters=40, recluster_every_epochs=2)
    resumed.make_batch_sampler(data, batch_size=8, num_replicas=1, rank=0, seed=0, out_dir=tmp_path)
    with pytest.raises(RuntimeError, match="epoch_0002.npy is missing"):
        resumed.on_epoch_start(3)


def test_batch_statistic_counts_distinct_pseudo_labels(encoder_file):
    method = make(encoder_file)
    method._labels = torch.tensor([0, 1, 2, 3, 0, 0, 1, 1])
    views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]
    assert method({"views": views, "index": torch.tensor([0, 1, 2, 3])})["distinct_labels"].item() == 1.0
    assert method({"views": views, "index": torch.tensor([0, 4, 5, 6])})["distinct_labels"].item() == 0.5


def test_option_errors_say_what_to_do(encoder_file, tmp_path):
    with pytest.raises(ValueError, match="recluster_every_epochs needs remainder='fill'"):
        make(encoder_file, remainder="drop", recluster_every_epochs=1)
    with pytest.raises(ValueError, match="remainder must be one of"):
        make(encoder_file, remainder="repeat")
    method = make(tmp_path / "no_such_run")
    with pytest.raises(Exception, match="give a run directory or a .safetensors file"):
        method.make_batch_sampler(digits_views(), batch_size=8, num_replicas=1, rank=0, seed=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="use at least 64 clusters"):
        make(encoder_file, num_clusters=20).make_batch_sampler(digits_views(), batch_size=64, num_replicas=1,
                                                               rank=0, seed=0, out_dir=tmp_path / "k")


def test_weights_hash_follows_the_tensors_not_the_file_bytes(encoder_file, tmp_path):
    from safetensors.torch import load_file, save_file

    from ssl_platform.data.pseudo_labels import weights_sha256

    tensors = load_file(str(encoder_file))
    copy = tmp_path / "copy.safetensors"
    save_file(tensors, str(copy), metadata={"other": "metadata"})
    assert weights_sha256(copy) == weights_sha256(encoder_file)
    name = min(tensors)
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(copy))
    assert weights_sha256(copy) != weights_sha256(encoder_file)
