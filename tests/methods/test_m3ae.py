"""M3AE: masks per modality, losses over masked positions only, decoders, embeddings, the debug recipe."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_platform.losses.reconstruction import masked_patch_mse, patchify
from ssl_platform.methods.m3ae import M3AE, masked_token_loss, text_mask_counts
from ssl_platform.models.text import encode, load_tokenizer, train_wordpiece

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["a red square", "a green circle", "a blue triangle on a white background", "a small yellow star",
            "the big red circle", "a tiny green square in the corner"]


@pytest.fixture
def tok_path(tmp_path):
    train_wordpiece(CAPTIONS, tmp_path / "tok.json", vocab_size=500)
    return str(tmp_path / "tok.json")


def tiny(tok_path, **kw):
    """16 px images in 4 px patches: a 4x4 grid, 4 of 16 patches visible at 0.75."""
    torch.manual_seed(0)
    args = {"backbone": "vit_tiny_patch16_224", "image_size": 16,
            "backbone_kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}, "max_length": 12,
            "text_dim": 32, "text_depth": 1, "text_heads": 2, "fusion_dim": 32, "fusion_depth": 2, "fusion_heads": 2,
            "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}
    return M3AE(tok_path, **{**args, **kw})


def make_batch(tok_path, b=6, max_length=12):
    torch.manual_seed(1)
    ids, mask = encode(load_tokenizer(tok_path), [CAPTIONS[i % len(CAPTIONS)] for i in range(b)], max_length)
    return {"image": torch.randn(b, 3, 16, 16), "text_ids": ids, "text_mask": mask}


# ---- masks, one ratio per modality


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.25])
def test_image_mask_hides_the_exact_share_of_patches(tok_path, ratio):
    model = tiny(tok_path, image_mask_ratio=ratio)
    keep, masked = model.image_mask(8, torch.device("cpu"))
    assert keep.shape == (8, round(16 * (1 - ratio))) and (masked.sum(1) == 16 - keep.shape[1]).all()
    for row in range(8):  # the kept indices are exactly the visible patches, sorted
        assert keep[row].tolist() == torch.nonzero(~masked[row]).flatten().tolist()


@pytest.mark.parametrize("ratio", [0.15, 0.5])
def test_text_mask_counts_and_positions(tok_path, ratio):
    model = tiny(tok_path, text_mask_ratio=ratio)
    batch = make_batch(tok_path, b=6)
    ids, mask = batch["text_ids"], batch["text_mask"]
    masked_ids, labels = model.mask_text(ids, mask)
    words = mask & (ids != model.special["cls"]) & (ids != model.special["sep"])
    chosen = labels != -100
    # exactly max(1, round(n * ratio)) of each text's words; never [CLS], [SEP] or padding
    for row in range(6):
        n = int(words[row].sum())
        assert int(chosen[row].sum()) == max(1, round(n * ratio))
    assert not (chosen & ~words).any()
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original ids
    assert torch.equal(masked_ids[~chosen], ids[~chosen])  # nothing else changes
    assert torch.equal(text_mask_counts(words, ratio), chosen.sum(1))


def test_text_mask_replaces_80_10_10(tok_path):
    model = tiny(tok_path, text_mask_ratio=0.5)
    ids, mask = encode(load_tokenizer(tok_path), [CAPTIONS[2]] * 4000, 12)
    torch.manual_seed(0)
    masked_ids, labels = model.mask_text(ids, mask)
    chosen = labels != -100
    as_mask = (masked_ids == model.special["mask"])[chosen].float().mean()
    kept = (masked_ids == ids)[chosen].float().mean()  # left as is (a random word may also hit the original)
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
    swapped = masked_ids[chosen & (masked_ids != ids) & (masked_ids != model.special["mask"])]
    assert not torch.isin(swapped, torch.tensor(list(model.special.values()))).any()  # random words only


def test_bad_ratios_and_weights_fail_at_construction(tok_path):
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny(tok_path, image_mask_ratio=1.0)
    with pytest.raises(ValueError, match=r"text_mask_ratio must be in \(0, 1\)"):
        tiny(tok_path, text_mask_ratio=0.0)
    with pytest.raises(ValueError, match="mim_weight or mlm_weight"):
        tiny(tok_path, mim_weight=0.0, mlm_weight=0.0)
    with pytest.raises(ValueError, match="mim_layer must be in"):
        tiny(tok_path, mim_layer=3)
    with pytest.raises(ValueError, match="timm VisionTransformer with a class token"):
        tiny(tok_path, backbone="resnet18", backbone_kwargs={})


# ---- losses over masked positions only


def test_token_loss_is_the_mean_over_masked_tokens_of_a_naive_loop():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.full((3, 7), -100)
    labels[0, 2], labels[1, 1], labels[1, 5], labels[2, 6] = 4, 0, 10, 3
    naive = []
    for b in range(3):
        for t in range(7):
            if labels[b, t] != -100:
                naive.append(-torch.log_softmax(logits[b, t], -1)[labels[b, t]])
    torch.testing.assert_close(masked_token_loss(logits, labels), torch.stack(naive).mean())
    # predictions at unmasked positions change nothing
    other = logits.clone()
    other[labels == -100] = torch.randn_like(other[labels == -100]) * 10
    torch.testing.assert_close(masked_token_loss(other, labels), masked_token_loss(logits, labels))
    with pytest.raises(ValueError, match="no text token is masked"):
        masked_token_loss(logits, torch.full((3, 7), -100))


def test_forward_token_loss_counts_masked_tokens_only(tok_path, monkeypatch):
    """The MLM loss of a forward pass equals the naive loop over the labels the masking chose."""
    model = tiny(tok_path, mim_weight=0.0, itm_weight=0.0)
    batch = make_batch(tok_path)
    seen = {}
    real_mask_text, real_head = model.mask_text, model.mlm_head.forward

    def spy_mask(ids, mask):
        seen["masked_ids"], seen["labels"] = real_mask_text(ids, mask)
        return seen["masked_ids"], seen["labels"]

    def spy_head(x):
        seen["logits"] = real_head(x)
        return seen["logits"]

    monkeypatch.setattr(model, "mask_text", spy_mask)
    monkeypatch.setattr(model.mlm_head, "forward", spy_head)
    out = model(batch)
    logits, labels = seen["logits"], seen["labels"]
    naive = [F.cross_entropy(logits[b, t][None], labels[b, t][None]) for b in range(labels.shape[0])
             for t in range(labels.shape[1]) if labels[b, t] != -100]
    torch.testing.assert_close(out["mlm_loss"], torch.stack(naive).mean())
    assert set(out) == {"loss", "mlm_loss", "mlm_acc"}


def test_pixel_loss_ignores_predictions_at_visible_patches(tok_path, monkeypatch):
    model = tiny(tok_path, mlm_weight=0.0, itm_weight=0.0)
    batch = make_batch(tok_path)
    real_decode = model.decode_pixels

    def run(where):
        def decode(stream, keep):
            pred = real_decode(stream, keep)
            visible = torch.zeros(pred.shape[:2], dtype=torch.bool).scatter(1, keep, True)
            hit = visible if where == "visible" else ~visible
            return pred + 100.0 * hit[..., None] if where else pred

        monkeypatch.setattr(model, "decode_pixels", decode)
        torch.manual_seed(5)  # the same image mask every time
        return model(batch)["mim_loss"]

    clean = run(None)
    torch.testing.assert_close(run("visible"), clean)  # the encoder saw those: no loss there
    assert run("masked") > clean + 100


def test_pixel_loss_matches_the_reference_on_decoded_patches(tok_path):
    """Per-patch normalised targets, masked patches only: the forward's MIM loss is masked_patch_mse."""
    model = tiny(tok_path, mlm_weight=0.0, itm_weight=0.0)
    batch = make_batch(tok_path)
    torch.manual_seed(7)
    loss = model(batch)["mim_loss"]
    torch.manual_seed(7)
    keep, masked = model.image_mask(6, torch.device("cpu"))
    text = model.text_encoder.forward_features(batch["text_ids"], batch["text_mask"])
    _, _, at_mim = model.fuse(model.image_tokens(batch["image"], keep), text, batch["text_mask"], model.mim_layer)
    pred = model.decode_pixels(at_mim, keep)
    target = patchify(batch["image"], 4)
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    naive = torch.stack([((pred[b, i] - t[b, i]) ** 2).mean() for b in range(6) for i in range(16) if masked[b, i]]).mean()
    torch.testing.assert_close(loss, naive)
    torch.testing.assert_close(loss, masked_patch_mse(pred, target, masked))


def test_pixel_decoder_reads_the_intermediate_fusion_layer(tok_path):
    """With mim_layer=1 of 2, the last fusion layer cannot change the pixel loss; with mim_layer=2 it does."""
    for mim_layer, changes in ((1, False), (2, True)):
        model = tiny(tok_path, mlm_weight=0.0, mim_layer=mim_layer)
        batch = make_batch(tok_path)
        torch.manual_seed(3)
        before = model(batch)["mim_loss"]
        with torch.no_grad():
            for p in list(model.image_fusion[1].parameters()) + list(model.text_fusion[1].parameters()):
                p.add_(torch.randn_like(p))
        torch.manual_seed(3)
        after = model(batch)["mim_loss"]
        assert (not torch.allclose(before, after)) == changes


def test_positions_are_added_before_the_gather_and_kept_tokens_land_back(tok_path):
    model = tiny(tok_path).eval()
    model.backbone.blocks = torch.nn.Sequential()  # no mixing: each token is its patch + its position
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 9, 15], [1, 2, 3, 12]])
    full, part = model.image_tokens(x), model.image_tokens(x, keep)
    torch.testing.assert_close(part[:, 0], full[:, 0])  # class token kept
    torch.testing.assert_close(part[:, 1:], torch.stack([full[b, 1:][keep[b]] for b in range(2)]))
    # decoder input: the kept tokens at their own positions, the mask token everywhere else
    model.decoder_blocks = torch.nn.ModuleList()
    model.decoder_norm = torch.nn.Identity()
    model.decoder_pred = torch.nn.Identity()
    stream = torch.randn(2, 5, 32)
    out = model.decode_pixels(stream, keep)  # [B, 16, decoder_dim]: the class slot dropped
    emb = model.decoder_embed(stream)
    for b in range(2):
        for i in range(16):
            want = emb[b, 1 + keep[b].tolist().index(i)] if i in keep[b] else model.mask_token[0, 0]
            torch.testing.assert_close(out[b, i], want + model.decoder_pos[0, 1 + i])


def test_itm_shows_about_half_the_texts_another_image():
    torch.manual_seed(0)
    source, wrong = M3AE.itm_pairs(4000, torch.device("cpu"))
    own = torch.arange(4000)
    assert abs(wrong.float().mean() - 0.5) < 0.03
    assert (source[wrong] != own[wrong]).all() and (source[~wrong] == own[~wrong]).all()
    assert source.min() >= 0 and source.max() < 4000


# ---- the whole step, embeddings, the tokenizer in the checkpoint


def test_step_logs_every_loss_and_backpropagates_to_every_parameter(tok_path):
    model = tiny(tok_path)
    out = model(make_batch(tok_path))
    assert {"loss", "mlm_loss", "mim_loss", "itm_loss", "mlm_acc"} <= set(out)
    torch.testing.assert_close(out["loss"], out["mlm_loss"] + out["mim_loss"] + out["itm_loss"])
    out["loss"].backward()
    # DDP without find_unused_parameters needs a gradient for every parameter, with and without ITM
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model = tiny(tok_path, itm_weight=0.0)
    model(make_batch(tok_path))["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_bf16_autocast_runs_and_stays_close_to_fp32(tok_path):
    # the GPU recipes train under bf16 autocast: the pixel decoder's fp32 mask token must follow the tokens
    model = tiny(tok_path)
    batch = make_batch(tok_path)
    torch.manual_seed(3)
    full = model(batch)
    torch.manual_seed(3)  # the same masks
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(batch)
    assert torch.isfinite(half["loss"]) and abs(float(half["mim_loss"]) - float(full["mim_loss"])) < 0.05
    half["loss"].backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.dtype == torch.float32


def test_decoder_checkpoint_keys_are_the_trained_runs(tok_path):
    # runs trained before the decoder moved to models/mae_decoder.py store these names and shapes
    state = tiny(tok_path).state_dict()
    assert {"decoder_embed.weight", "mask_token", "decoder_blocks.0.attn.qkv.weight", "decoder_norm.weight",
            "decoder_pred.weight"} <= set(state)
    assert state["mask_token"].shape == (1, 1, 16) and "decoder_pos" not in state  # rebuilt from the kwargs
    assert not any(k.startswith("decoder.") for k in state)


def test_embed_gives_image_text_and_joint_embeddings(tok_path, tmp_path):
    from ssl_platform.checkpoint.io import export_backbone, load_backbone
    from ssl_platform.models.backbones import pooled_features

    model = tiny(tok_path).eval()
    batch = make_batch(tok_path)
    with torch.no_grad():
        image = model.embed({"image": batch["image"]})
        text = model.embed({"text_ids": batch["text_ids"], "text_mask": batch["text_mask"]})
        joint = model.embed(batch)
        assert image.shape == (6, 32) and text.shape == (6, 32) and joint.shape == (6, 64)
        torch.testing.assert_close(model.embed(batch, modality="image"), image)
        # the image embedding is the exported backbone's: evaluation of backbone.safetensors sees the same
        export_backbone(model.backbone, tmp_path / "b.safetensors")
        torch.testing.assert_close(pooled_features(load_backbone(tmp_path / "b.safetensors").eval(), batch["image"]), image)
        # the joint embedding depends on the pairing: another text changes the image's half
        other = dict(batch, text_ids=batch["text_ids"].roll(1, 0), text_mask=batch["text_mask"].roll(1, 0))
        assert not torch.allclose(model.embed(other)[:, :32], joint[:, :32])
    with pytest.raises(KeyError, match="text embedding needs text_ids and text_mask"):
        model.embed({"image": batch["image"]}, modality="text")
    with pytest.raises(ValueError, match="modality must be"):
        model.embed(batch, modality="audio")


def test_bad_batches_say_what_is_wrong(tok_path):
    model = tiny(tok_path)
    batch = make_batch(tok_path)
    with pytest.raises(KeyError, match=r"missing \['text_mask'\]"):
        model({"image": batch["image"], "text_ids": batch["text_ids"]})
    with pytest.raises(ValueError, match="another tokenizer"):
        model(dict(batch, text_ids=batch["text_ids"] + 10_000))
    with pytest.raises(ValueError, match=r"built for \(16, 16\) images"):
        model(dict(batch, image=torch.randn(6, 3, 32, 32)))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        model({k: v[:1] for k, v in batch.items()})


def test_the_tokenizer_travels_in_the_state_dict(tok_path, tmp_path):
    from ssl_platform.checkpoint.io import CheckpointError, load_state_strict

    model = tiny(tok_path)
    assert model.tokenizer().get_vocab() == load_tokenizer(tok_path).get_vocab()
    state = model.state_dict()
    restored = tiny(tok_path)
    load_state_strict(restored, state, "test")
    assert restored.tokenizer().to_str() == model.tokenizer().to_str()
    other = tmp_path / "other.json"
    train_wordpiece(CAPTIONS + ["completely different words here"], other, vocab_size=500)
    with pytest.raises(CheckpointError, match="tokenizer_json"):
        load_state_strict(tiny(str(other)), state, "test")


def test_a_missing_tokenizer_is_trained_on_the_corpus_or_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_wordpiece"):
        tiny(str(tmp_path / "none.json"))
    model = tiny(str(tmp_path / "new.json"), tokenizer_corpus=CAPTIONS)
    assert (tmp_path / "new.json").exists() and model.vocab_size == load_tokenizer(tmp_path / "new.json").get_vocab_size()


# ---- the debug recipe


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_debug_recipe_lowers_the_loss(tmp_path):
    from ssl_platform import pretrain

    cfg = pretrain.load_recipe(ROOT / "recipes/m3ae/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=null", "train.epochs=2", "train.log_every_steps=1"])
    pretrain.run(cfg)
    logged = _rows(tmp_path)
    assert len(logged) == 42 and (tmp_path / "tokenizer.json").exists() and (tmp_path / "backbone.safetensors").exists()
    for key in ("train/loss", "train/mlm_loss", "train/mim_loss"):
        values = [r[key] for r in logged]
        assert sum(values[-5:]) / 5 < 0.95 * sum(values[:5]) / 5, key


@pytest.mark.slow
def test_debug_recipe_resumes_to_the_same_weights(tmp_path):
    from ssl_platform import pretrain
    from ssl_platform.checkpoint.io import load_checkpoint

    def run(out, steps):
        pretrain.run(pretrain.load_recipe(ROOT / "recipes/m3ae/debug.yaml",
                                          [f"train.out_dir={out}", f"train.max_steps={steps}", "train.save_every_steps=3"]))

    run(tmp_path / "straight", 6)
    run(tmp_path / "resumed", 3)
    run(tmp_path / "resumed", 6)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    assert a["method"].keys() == b["method"].keys()
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])
    assert [r["train/loss"] for r in _rows(tmp_path / "straight")][3:] == [r["train/loss"] for r in _rows(tmp_path / "resumed")][3:]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes/m3ae").glob("*.yaml")), ids=lambda p: p.name)
def test_every_m3ae_recipe_validates(recipe):
    """Every kwarg of every component is one its constructor takes (the GPU recipe is never run here)."""
    from ssl_platform import pretrain

    cfg = pretrain.load_recipe(recipe)
    assert cfg.method._component_ == "ssl_platform.methods.m3ae.M3AE"
    assert cfg.data.transform.tokenizer == cfg.method.tokenizer  # data and model share one tokenizer


def test_emoji_suite_validates():
    from ssl_platform.evaluation.suite import load_suite

    suite = load_suite(ROOT / "eval/emoji.yaml")
    assert suite.noise.rates == [0.2, 0.4] and "linear" in suite.eval.protocols
