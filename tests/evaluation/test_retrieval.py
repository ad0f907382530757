"""Retrieval R@K: against a naive loop, ties, the pair-score matrix, and M3AE's matching head end to end;
the cost printed before scoring."""

import re
from pathlib import Path

import pytest
import torch

from ssl_platform.evaluation.retrieval import pair_scores, ranks_of_partners, recall_at_k


def naive_recall(scores, k):
    """Query by query: sort the candidates (ties: the partner goes last among equals), is the partner in the top k?"""
    hits = 0
    n = scores.shape[0]
    for q in range(n):
        row = scores[q].tolist()
        order = sorted(range(n), key=lambda j: (-row[j], j == q))  # among equal scores the partner ranks last
        hits += order.index(q) < k
    return 100.0 * hits / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_matches_a_naive_loop_both_ways(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(40, 40, generator=g) + 2.0 * torch.eye(40)  # partners a little ahead
    scores = (scores * 2).round() / 2  # coarse values: ties happen
    out = recall_at_k(scores, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert out[f"i2t_r{k}"] == pytest.approx(naive_recall(scores, k))
        assert out[f"t2i_r{k}"] == pytest.approx(naive_recall(scores.T, k))
    assert out["rsum"] == pytest.approx(sum(v for key, v in out.items() if key != "rsum"))


def test_perfect_constant_and_reversed_scores():
    n = 20
    perfect = recall_at_k(torch.eye(n))
    assert all(v == 100.0 for k, v in perfect.items() if k != "rsum")
    # a constant score ranks every partner behind all its ties: no recall at all, never a free 100%
    constant = recall_at_k(torch.zeros(n, n))
    assert all(v == 0.0 for v in constant.values())
    worst = recall_at_k(-torch.eye(n))
    assert worst["i2t_r10"] == 0.0
    assert ranks_of_partners(-torch.eye(n)).tolist() == [n - 1] * n


def test_recall_inputs_are_checked():
    with pytest.raises(ValueError, match="square"):
        recall_at_k(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(torch.eye(3), ks=(0,))


def test_pair_scores_fill_the_matrix_in_blocks():
    torch.manual_seed(0)
    images, texts = torch.randn(7, 3, 4), torch.randn(5, 2, 4)
    mask = torch.ones(5, 2, dtype=torch.bool)
    mask[1, 1] = False

    def score(img, txt, m):  # any pair function: a masked dot product of means
        t = (txt * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return (img.mean(1) * t).sum(-1)

    want = torch.tensor([[score(images[i:i + 1], texts[j:j + 1], mask[j:j + 1]).item() for j in range(5)]
                         for i in range(7)])
    for block in (1, 3, 64):
        torch.testing.assert_close(pair_scores(score, images, texts, mask, block=block), want)


def test_m3ae_matching_head_scores_every_pair(tmp_path):
    """retrieval_metrics on a tiny M3AE: every pair scored once, eval mode restored, recall in range."""
    from ssl_platform.data.datasets.pairs import DigitCaptions, ImageTextTransform
    from ssl_platform.evaluation.retrieval import encode_pairs, retrieval_metrics
    from ssl_platform.methods.m3ae import M3AE
    from ssl_platform.models.text import train_wordpiece

    pairs = DigitCaptions("test", limit=12)
    train_wordpiece(pairs.texts, tmp_path / "tok.json", vocab_size=300)
    torch.manual_seed(0)
    model = M3AE(str(tmp_path / "tok.json"), backbone="vit_tiny_patch16_224", image_size=16,
                 backbone_kwargs={"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}, max_length=10,
                 text_dim=32, text_depth=1, text_heads=2, fusion_dim=32, fusion_depth=2, fusion_heads=2,
                 decoder_dim=16, decoder_depth=1, decoder_heads=2)
    transform = ImageTextTransform(str(tmp_path / "tok.json"), size=16, max_length=10)
    model.train()
    out = retrieval_metrics(model, pairs, transform, block=5)
    assert model.training  # restored
    assert set(out) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}
    assert all(0.0 <= v <= 100.0 for k, v in out.items() if k != "rsum")
    # against scoring each pair on its own, straight from pixels and ids
    model.eval()
    with torch.no_grad():
        image, text, mask, labels = encode_pairs(model, pairs, transform)
        s = pair_scores(model.match_logits, image, text, mask, block=5)
        assert s.shape == (12, 12) and labels.tolist() == pairs.targets.tolist()
        for i, j in [(0, 0), (3, 7), (11, 2)]:
            single = model.match_logits(image[i:i + 1], text[j:j + 1], mask[j:j + 1])
            torch.testing.assert_close(s[i, j], single[0], atol=1e-4, rtol=1e-4)
    assert recall_at_k(s) == pytest.approx(out)
    from ssl_platform.methods.base import ImageTextMatcher

    assert isinstance(model, ImageTextMatcher)


class MeanDot(torch.nn.Module):
    """Scores a pair by the dot product of the mean image pixel rows and the mean (masked) text ids."""

    def image_tokens(self, image):
        return image.mean(1)[:, :, :4]  # [B, H, 4]

    def text_tokens(self, ids, text_mask):
        return (ids * text_mask).float()[..., None].expand(-1, -1, 4)  # [B, L, 4]

    def match_logits(self, image, text, text_mask):
        return (image.mean(1) * text.mean(1)).sum(-1)


def test_retrieval_asks_a_method_only_for_the_matching_protocol(tmp_path):
    """Any module with image_tokens, text_tokens and match_logits is ranked; one without is refused, by name."""
    from ssl_platform.data.datasets.pairs import DigitCaptions, ImageTextTransform
    from ssl_platform.evaluation.retrieval import retrieval_metrics
    from ssl_platform.methods.simclr import SimCLR
    from ssl_platform.models.text import train_wordpiece

    pairs = DigitCaptions("test", limit=6)
    tok = tmp_path / "tok.json"
    train_wordpiece(pairs.texts, tok, vocab_size=200)
    transform = ImageTextTransform(str(tok), size=8, max_length=6)
    out = retrieval_metrics(MeanDot(), pairs, transform, block=4)
    assert set(out) >= {"i2t_r1", "t2i_r1", "rsum"}
    with pytest.raises(TypeError, match="SimCLR has none.*M3AE"):
        retrieval_metrics(SimCLR("resnet18"), pairs, transform)


def test_the_cost_is_printed_from_the_sizes_then_from_the_timed_first_pass(tmp_path, capsys):
    from ssl_platform.data.datasets.pairs import DigitCaptions, ImageTextTransform
    from ssl_platform.evaluation.retrieval import retrieval_metrics
    from ssl_platform.models.text import train_wordpiece

    pairs = DigitCaptions("test", limit=12)
    train_wordpiece(pairs.texts, tmp_path / "tok.json", vocab_size=200)
    transform = ImageTextTransform(str(tmp_path / "tok.json"), size=8, max_length=6)
    quiet = retrieval_metrics(MeanDot(), pairs, transform, block=5, progress=False)
    assert capsys.readouterr().err == ""
    assert retrieval_metrics(MeanDot(), pairs, transform, block=5) == quiet
    sizes, first = capsys.readouterr().err.splitlines()  # stderr is no terminal here: no bars
    assert sizes == ("[retrieval] 12 pairs: every image scored against every text, 144 runs of the matching head "
                     "in 3 passes of 5 images x 12 texts (estimated from the sizes; the time follows the first pass)")
    assert re.fullmatch(r"\[retrieval\] the first pass took \d+\.\ds: about \d\d:\d\d for the other 2 "
                        r"\(estimated from the timed first pass, warm-up included\)", first)


def test_one_pass_has_no_time_estimate(capsys):
    scores = pair_scores(lambda i, t, m: i.sum((1, 2)) + t.sum((1, 2)), torch.ones(3, 1, 2), torch.ones(3, 1, 2),
                         torch.ones(3, 1, dtype=torch.bool), block=4, progress=True)
    assert scores.shape == (3, 3) and capsys.readouterr().err == ""


# ---- the retrieval task kind of the harness, on a tiny M3AE run (the debug recipe, a few steps)


@pytest.mark.slow
def test_the_suite_scores_retrieval_with_the_whole_method_and_refuses_a_backbone_file(tmp_path):
    from omegaconf import OmegaConf

    from ssl_platform import pretrain
    from ssl_platform.config import ConfigError
    from ssl_platform.evaluation.suite import load_suite, run_suite

    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "m3ae"
    pretrain.run(pretrain.load_recipe(root / "recipes/m3ae/debug.yaml", [f"train.out_dir={run}"]))
    transform = {"_component_": "ssl_platform.data.datasets.pairs.ImageTextTransform",
                 "tokenizer": str(run / "tokenizer.json"), "size": 32, "max_length": 8}
    pairs = {"_component_": "ssl_platform.data.datasets.pairs.DigitCaptions"}
    cfg = {"name": "pairs", "tasks": {"digits": {
        "kind": "retrieval", "noise": False, "transform": transform,
        "train": {**pairs, "split": "train"}, "test": {**pairs, "split": "test", "limit": 30}}},
        "eval": {"protocols": ["retrieval"], "seeds": [0, 1], "label_fractions": [1.0]}}
    path = tmp_path / "suite.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    suite = load_suite(path)
    rows = run_suite(suite, torch.nn.Identity(), "m3ae", tmp_path / "trained", method_spec=str(run))
    random = run_suite(suite, torch.nn.Identity(), "random", tmp_path / "random", method_spec=f"random:{run}")
    metrics = {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"rsum"}
    for got in (rows, random):
        assert {r["metric"] for r in got} == metrics and {r["protocol"] for r in got} == {"retrieval"}
        by = {(r["seed"], r["metric"]): r["value"] for r in got}
        for seed in (0, 1):
            for d in ("i2t", "t2i"):
                assert 0 <= by[(seed, f"{d}_r1")] <= by[(seed, f"{d}_r5")] <= by[(seed, f"{d}_r10")] <= 100
    trained = {(r["seed"], r["metric"]): r["value"] for r in rows}
    assert all(trained[(0, m)] == trained[(1, m)] for m in metrics)  # trained weights: seeds change nothing
    random_by = {(r["seed"], r["metric"]): r["value"] for r in random}
    assert any(random_by[(0, m)] != random_by[(1, m)] for m in metrics)  # a fresh random init per seed
    with pytest.raises(ConfigError, match=r"retrieval task.*give backbone=RUN_DIR or random:RUN_DIR"):
        run_suite(suite, torch.nn.Identity(), "file", tmp_path / "file", method_spec=str(run / "backbone.safetensors"))
