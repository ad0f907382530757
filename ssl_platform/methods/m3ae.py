"""M3AE: multi-modal masked autoencoding of images and their texts.

Chen, Du, Li, Wan, Wang, Xu, Bian. "Multi-Modal Masked Autoencoders for Medical Vision-and-Language
Pre-Training", MICCAI 2022 (zhjohnchan/M3AE). Not Geng et al.'s single-encoder M3AE.

A ViT encodes the image and a Transformer the text; each stream is projected to a shared width,
tagged with a modality embedding and fused by co-attention layers (self-attention, cross-attention
to the other stream, MLP). Three design choices make it work:

- asymmetric masking: 75% of the image patches are dropped (pixels are redundant), only 15% of the
  text tokens are masked (words are dense in meaning);
- reconstruction from different depths: pixels are decoded from the image stream of an
  *intermediate* fusion layer (`mim_layer`: the last layers become abstract, not pixel-like),
  tokens from the last layer;
- different decoders: a Transformer for pixels (MAE's, `models/mae_decoder.py`, shared with
  SatMAE++; the fused class token rides along in a zero position slot), an MLP (BERT's prediction
  head) for tokens.

As in the official code, each objective has its own pass per step: masked text with the whole
image (MLM), the masked image with the whole text (MIM), and, when `itm_weight > 0`, whole pairs of
which about half have a wrong image (ITM, image-text matching, which also scores retrieval:
`image_tokens`, `text_tokens` and `match_logits` are `methods.base.ImageTextMatcher`). The image
tower and the co-attention are in `models/image_text.py`. The exported `backbone` is the image ViT;
`embed` gives image, text or joint embeddings.

Deviations from the official code (zhjohnchan/M3AE@14da377; docs/methods.md, M3AE section): random
init, not CLIP ViT-B/16 and RoBERTa-base (hence the recipes' own lr, one rate for every group: no 5x
for fusion and heads); a WordPiece or any `tokenizer.json` vocabulary; per-token masking; no
dropout in the fusion layers (officially 0.1); `decoder_depth` pixel-decoder blocks (the official
head builds its config's value + 1: give 5 for its 4); the random swap word is never [PAD], [CLS],
[SEP] or [MASK] (officially any id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_platform.data.root import find_data_path, resolve_data_path
from ssl_platform.losses.reconstruction import masked_patch_mse, patchify
from ssl_platform.masking.random import num_visible, random_keep_mask
from ssl_platform.methods.base import Method
from ssl_platform.models.backbones import pooled_features
from ssl_platform.models.image_text import CoAttentionLayer, class_token_vit, co_attend, vit_tokens
from ssl_platform.models.mae_decoder import mae_decode, mae_decoder_blocks
from ssl_platform.models.pos_embed import sincos_2d
from ssl_platform.models.text import (
    TextEncoder,
    load_tokenizer,
    special_ids,
    tokenizer_from_json,
    train_wordpiece,
)


def text_mask_counts(candidates: Tensor, mask_ratio: float) -> Tensor:
    """`candidates: [B, L]` bool (maskable tokens) -> `[B]` tokens to mask: `round(n * ratio)`, at least one.

    At least one, because a caption of three words at 15% would otherwise never be masked and give no
    token loss; never more than the caption has.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"text_mask_ratio must be in (0, 1), got {mask_ratio}")
    n = candidates.sum(1)
    return torch.minimum(torch.clamp(torch.round(n * mask_ratio), min=1), n).long()


def masked_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the masked tokens only.

    Args:
        logits: `[B, L, V]` predictions for every position.
        labels: `[B, L]` the original token id at masked positions, -100 everywhere else.

    Returns:
        0-d mean over the masked tokens (unmasked positions contribute nothing).
    """
    if not (labels != -100).any():
        raise ValueError("no text token is masked, so the token loss is undefined; check text_mask and text_mask_ratio")
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


class M3AE(Method):
    """M3AE with a timm ViT image encoder (class token), a small text Transformer and co-attention fusion.

    Batch keys: `image`: `[B, C, H, W]` normalised, of `image_size`; `text_ids`: `[B, L]` int64 token
    ids ([CLS] ... [SEP] then padding) and `text_mask`: `[B, L]` bool, True at real tokens
    (`data.datasets.pairs.ImageTextTransform` makes all three).

    Args:
        tokenizer: path of the tokenizer (`tokenizers` JSON file or Hugging Face directory; found by
            `data/root.py`'s rule); its vocabulary sizes the text model and its special tokens drive the
            masking. It goes into the checkpoint (buffer `tokenizer_json`): a run keeps its tokenizer.
        tokenizer_corpus: when `tokenizer` does not exist yet: train a WordPiece tokenizer on these
            texts and save it there (template captions, debug runs).
        tokenizer_vocab: vocabulary size of that WordPiece training.
        backbone: a timm ViT name; `backbone_kwargs` more timm kwargs (`patch_size`, `embed_dim`, ...).
        in_chans, image_size: the images.
        max_length: longest text in tokens.
        text_dim, text_depth, text_heads: the text encoder.
        fusion_dim, fusion_depth, fusion_heads: the co-attention layers (per stream).
        mim_layer: the pixel decoder reads the image stream after this many fusion layers (the paper:
            3 of 6; default: half of `fusion_depth`).
        decoder_dim, decoder_depth, decoder_heads: the pixel decoder.
        image_mask_ratio: share of image patches dropped (0.75).
        text_mask_ratio: share of the real, non-special text tokens masked (0.15), each replaced by
            [MASK] 80% / a random token 10% / left as it is 10% of the time (BERT).
        norm_pix: per-patch normalised pixel targets.
        mim_weight, mlm_weight, itm_weight: loss weights (the paper: all 1); a weight of 0 skips its
            pass, and `itm_weight: 0` also leaves out what only ITM trains (the poolers, the image
            stream's last fusion layer).
    """

    def __init__(
        self,
        tokenizer: str,
        tokenizer_corpus: list[str] | None = None,
        tokenizer_vocab: int = 1000,
        backbone: str = "vit_base_patch16_224",
        in_chans: int = 3,
        image_size: int = 224,
        backbone_kwargs: dict | None = None,
        max_length: int = 32,
        text_dim: int = 256,
        text_depth: int = 4,
        text_heads: int = 4,
        fusion_dim: int = 256,
        fusion_depth: int = 2,
        fusion_heads: int = 4,
        mim_layer: int | None = None,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        image_mask_ratio: float = 0.75,
        text_mask_ratio: float = 0.15,
        norm_pix: bool = True,
        mim_weight: float = 1.0,
        mlm_weight: float = 1.0,
        itm_weight: float = 1.0,
    ):
        super().__init__()
        tok = self._tokenizer(tokenizer, tokenizer_corpus, tokenizer_vocab)
        # the tokenizer travels in the checkpoint as bytes: a run keeps the tokenizer it was trained
        # with, and resuming or loading with another one fails the strict load (another shape)
        self.register_buffer("tokenizer_json", torch.frombuffer(bytearray(tok.to_str().encode()), dtype=torch.uint8).clone())
        self.special = special_ids(tok)
        self.vocab_size = tok.get_vocab_size()
        if min(mim_weight, mlm_weight, itm_weight) < 0 or not (mim_weight or mlm_weight):
            raise ValueError(f"loss weights must be >= 0 with mim_weight or mlm_weight > 0, got mim {mim_weight}, "
                             f"mlm {mlm_weight}, itm {itm_weight}")
        self.weights = {"mim": float(mim_weight), "mlm": float(mlm_weight), "itm": float(itm_weight)}
        mim_layer = fusion_depth // 2 if mim_layer is None else mim_layer
        if not 0 <= mim_layer <= fusion_depth:
            raise ValueError(f"mim_layer must be in [0, fusion_depth={fusion_depth}], got {mim_layer}")
        self.mim_layer = mim_layer

        # -- the image encoder: a timm ViT whose class token is the image embedding
        self.backbone = encoder = class_token_vit(backbone, in_chans, image_size, backbone_kwargs)
        self.grid = tuple(encoder.patch_embed.grid_size)
        self.patch_size = encoder.patch_embed.patch_size[0]
        self.num_patches = self.grid[0] * self.grid[1]
        self.image_keep = num_visible(self.num_patches, image_mask_ratio)  # bad ratios fail here, not at step 1
        text_mask_counts(torch.ones(1, 1, dtype=torch.bool), text_mask_ratio)
        self.image_mask_ratio, self.text_mask_ratio = image_mask_ratio, text_mask_ratio
        self.norm_pix = norm_pix

        # -- the text encoder
        self.text_encoder = TextEncoder(self.vocab_size, max_length, text_dim, text_depth, text_heads,
                                        pad_id=self.special["pad"])
        # ids that a masked token may be swapped for (BERT's 10%): anything but padding, [CLS], [SEP], [MASK]
        words = torch.ones(self.vocab_size, dtype=torch.bool)
        words[list(self.special.values())] = False
        self.register_buffer("word_ids", torch.nonzero(words).flatten(), persistent=False)

        # -- projection to the fusion width plus a modality embedding, then co-attention layers
        self.image_proj = nn.Linear(encoder.embed_dim, fusion_dim)
        self.text_proj = nn.Linear(text_dim, fusion_dim)
        self.type_embed = nn.Parameter(torch.zeros(2, fusion_dim))  # 0: text, 1: image
        nn.init.trunc_normal_(self.type_embed, std=0.02)
        with_itm = itm_weight > 0
        self.image_fusion = nn.ModuleList(CoAttentionLayer(fusion_dim, fusion_heads)
                                          for _ in range(fusion_depth if with_itm else max(fusion_depth - 1, mim_layer)))
        self.text_fusion = nn.ModuleList(CoAttentionLayer(fusion_dim, fusion_heads) for _ in range(fusion_depth))
        if with_itm:
            # BERT-style poolers (first token -> Linear -> tanh) and the 2-way matching head
            self.image_pooler = nn.Sequential(nn.Linear(fusion_dim, fusion_dim), nn.Tanh())
            self.text_pooler = nn.Sequential(nn.Linear(fusion_dim, fusion_dim), nn.Tanh())
            self.itm_head = nn.Linear(2 * fusion_dim, 2)

        # -- the pixel decoder: MAE's, with fixed sin-cos positions and a slot for the class token
        self.decoder_embed = nn.Linear(fusion_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        pos = torch.cat([torch.zeros(1, decoder_dim), sincos_2d(self.grid, decoder_dim)])
        self.register_buffer("decoder_pos", pos[None], persistent=False)  # [1, 1 + N, Dd]
        self.decoder_blocks = nn.ModuleList(mae_decoder_blocks(decoder_dim, decoder_depth, decoder_heads))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * in_chans)

        # -- the token decoder: BERT's prediction head
        self.mlm_head = nn.Sequential(nn.Linear(fusion_dim, fusion_dim), nn.GELU(), nn.LayerNorm(fusion_dim),
                                      nn.Linear(fusion_dim, self.vocab_size))

    @staticmethod
    def _tokenizer(path: str, corpus: list[str] | None, vocab: int):
        if find_data_path(path) is None and corpus:  # nowhere by data/root.py's rule: trained where it says
            return train_wordpiece(corpus, path, vocab_size=vocab)
        return load_tokenizer(resolve_data_path(path, remedy="run `python -m ssl_platform data prepare NAME` for a "
                                                "prepared set's, train one with ssl_platform.models.text.train_wordpiece"
                                                "(texts, path), or give method.tokenizer_corpus"))

    def tokenizer(self):
        """The `tokenizers.Tokenizer` this model was built (or trained) with."""
        return tokenizer_from_json(bytes(self.tokenizer_json.cpu().tolist()).decode())

    def no_weight_decay(self) -> set[str]:
        """Embeddings, not weights."""
        return {"mask_token", "type_embed", "text_encoder.pos_embed"}

    # -- masks

    def image_mask(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """-> `keep: [B, K]` sorted indices of the visible patches, `masked: [B, N]` bool (True = dropped)."""
        visible = random_keep_mask(batch_size, self.num_patches, self.image_keep, device=device)
        keep = torch.nonzero(visible)[:, 1].view(batch_size, self.image_keep)
        return keep, ~visible

    def mask_text(self, ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
        """BERT masking of `ids: [B, L]` -> (masked ids `[B, L]`, labels `[B, L]`: original id where masked, else -100).

        Exactly `text_mask_counts` real tokens per text are chosen uniformly among the words (never
        [CLS], [SEP] or padding); of those, 80% become [MASK], 10% a random word, 10% stay.
        """
        candidates = text_mask & (ids != self.special["cls"]) & (ids != self.special["sep"]) & (ids != self.special["pad"])
        if not candidates.any(1).all():
            raise ValueError("a text has no word to mask (only special tokens); drop empty captions from the data")
        counts = text_mask_counts(candidates, self.text_mask_ratio)  # [B]
        score = torch.rand(ids.shape, device=ids.device).masked_fill(~candidates, 2.0)  # non-candidates last
        rank = score.argsort(1).argsort(1)  # [B, L] position of each token in its row's random order
        chosen = rank < counts[:, None]
        labels = ids.masked_fill(~chosen, -100)
        roll = torch.rand(ids.shape, device=ids.device)
        random_words = self.word_ids[torch.randint(len(self.word_ids), ids.shape, device=ids.device)]
        masked = torch.where(chosen & (roll < 0.8), torch.full_like(ids, self.special["mask"]), ids)
        masked = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_words, masked)
        return masked, labels

    @staticmethod
    def itm_pairs(batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """-> `source: [B]` the image each text is shown, `wrong: [B]` bool; about half the texts get
        another image of the batch (never their own, so every "no match" label is true)."""
        if batch_size < 2:
            raise ValueError("image-text matching needs at least 2 pairs per batch (a wrong image comes from the batch)")
        own = torch.arange(batch_size, device=device)
        wrong = torch.rand(batch_size, device=device) < 0.5
        shift = torch.randint(1, batch_size, (batch_size,), device=device)  # never 0
        return torch.where(wrong, (own + shift) % batch_size, own), wrong

    # -- encoders and fusion

    def image_tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """`x: [B, C, H, W]` -> `[B, 1 + N, D_img]` ViT tokens, or `[B, 1 + K, D_img]` of the patches `keep: [B, K]`
        (`models.image_text.vit_tokens`)."""
        return vit_tokens(self.backbone, x, keep)

    def text_tokens(self, ids: Tensor, text_mask: Tensor) -> Tensor:
        """`ids: [B, L]`, `text_mask: [B, L]` (True at real tokens) -> `[B, L, D_txt]` text encoder tokens."""
        return self.text_encoder.forward_features(ids, text_mask.bool())

    def fuse(self, image: Tensor, text: Tensor, text_mask: Tensor, image_layers: int | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        """Project and fuse the streams.

        Args:
            image: `[B, Ni, D_img]` image encoder tokens.
            text: `[B, L, D_txt]` text encoder tokens.
            text_mask: `[B, L]` bool, True at real tokens.
            image_layers: stop once the image stream has gone through this many layers (the MIM pass
                needs no more); None: all.

        Returns:
            image stream `[B, Ni, F]` after the last layer run, text stream `[B, L, F]` after it, and
            the image stream after `mim_layer` layers (what the pixel decoder reads).
        """
        x = self.image_proj(image) + self.type_embed[1]
        t = self.text_proj(text) + self.type_embed[0]
        depth = len(self.text_fusion) if image_layers is None else image_layers
        return co_attend(self.image_fusion, self.text_fusion, x, t, ~text_mask, depth, keep_after=self.mim_layer)

    def decode_pixels(self, image_stream: Tensor, keep: Tensor) -> Tensor:
        """`image_stream: [B, 1 + K, F]` of the visible patches `keep: [B, K]` -> `[B, N, p*p*C]` for every patch.

        Mask tokens are scattered to the dropped positions, positions added, and the class token is
        dropped from the output (`models/mae_decoder.py`).
        """
        x = mae_decode(image_stream, keep, self.num_patches, embed=self.decoder_embed, mask_token=self.mask_token,
                       code=self.decoder_pos, blocks=self.decoder_blocks, norm=self.decoder_norm, num_prefix=1)
        return self.decoder_pred(x)[:, 1:]  # [B, N, p*p*C]

    def joint(self, image_stream: Tensor, text_stream: Tensor) -> Tensor:
        """`[B, Ni, F]`, `[B, L, F]` -> `[B, 2F]`: both streams' first tokens (pooled when ITM is trained)."""
        xi, xt = image_stream[:, 0], text_stream[:, 0]
        if hasattr(self, "itm_head"):
            xi, xt = self.image_pooler(xi), self.text_pooler(xt)
        return torch.cat([xi, xt], dim=1)

    def _check(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        missing = [k for k in ("image", "text_ids", "text_mask") if k not in batch]
        if missing:
            raise KeyError(f"M3AE batches need image, text_ids and text_mask; missing {missing} (use "
                           "data.datasets.pairs.ImageTextTransform)")
        ids, mask = batch["text_ids"], batch["text_mask"].bool()
        if ids.shape != mask.shape or ids.shape[0] != batch["image"].shape[0]:
            raise ValueError(f"text_ids {tuple(ids.shape)} and text_mask {tuple(mask.shape)} must both be [B, L] for "
                             f"{batch['image'].shape[0]} images")
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"text_ids hold ids outside [0, {self.vocab_size}): the data was tokenized with another "
                             "tokenizer; give the transform and the method the same tokenizer path")
        return batch["image"], ids, mask

    def forward(self, batch: dict) -> dict[str, Tensor]:
        x, ids, text_mask = self._check(batch)
        out, loss = {}, x.new_zeros(())
        image_full = self.image_tokens(x) if self.weights["mlm"] or self.weights["itm"] else None
        text_full = self.text_encoder.forward_features(ids, text_mask) if self.weights["mim"] or self.weights["itm"] else None

        if self.weights["mlm"]:  # masked text, whole image; tokens from the last fusion layer
            masked_ids, labels = self.mask_text(ids, text_mask)
            _, t, _ = self.fuse(image_full, self.text_encoder.forward_features(masked_ids, text_mask), text_mask)
            logits = self.mlm_head(t)  # [B, L, V]
            out["mlm_loss"] = masked_token_loss(logits, labels)
            hit = (logits.argmax(-1) == labels)[labels != -100]
            out["mlm_acc"] = hit.float().mean()
            loss = loss + self.weights["mlm"] * out["mlm_loss"]

        if self.weights["mim"]:  # masked image, whole text; pixels from the intermediate fusion layer
            keep, masked = self.image_mask(x.shape[0], x.device)
            _, _, at_mim = self.fuse(self.image_tokens(x, keep), text_full, text_mask, image_layers=self.mim_layer)
            pred = self.decode_pixels(at_mim, keep)
            out["mim_loss"] = masked_patch_mse(pred, patchify(x, self.patch_size), masked, norm_pix=self.norm_pix)
            loss = loss + self.weights["mim"] * out["mim_loss"]

        if self.weights["itm"]:  # whole pairs, about half with another image of the batch
            source, wrong = self.itm_pairs(x.shape[0], x.device)
            # index_select, not image_full[source]: `source` repeats images, and the backward of advanced
            # indexing accumulates them with parallel atomic adds on the CPU (last-bit differences from
            # run to run); index_select's backward (index_add along dim 0) adds in a fixed order
            xi, t, _ = self.fuse(image_full.index_select(0, source), text_full, text_mask)
            out["itm_loss"] = F.cross_entropy(self.itm_head(self.joint(xi, t)).float(), (~wrong).long())
            loss = loss + self.weights["itm"] * out["itm_loss"]

        out["loss"] = loss
        return out

    # -- embeddings

    def embed_image(self, image: Tensor) -> Tensor:
        """`[B, C, H, W]` -> `[B, D_img]`: the ViT's class token (what the exported backbone gives)."""
        return pooled_features(self.backbone, image)

    def embed_text(self, ids: Tensor, text_mask: Tensor) -> Tensor:
        """`[B, L]`, `[B, L]` -> `[B, text_dim]`: the text encoder's [CLS] token."""
        return self.text_encoder(ids, text_mask.bool())

    def embed_joint(self, image: Tensor, ids: Tensor, text_mask: Tensor) -> Tensor:
        """-> `[B, 2 * fusion_dim]`: both fused streams' first tokens, through the poolers when ITM trained them."""
        text_mask = text_mask.bool()
        xi, t, _ = self.fuse(self.image_tokens(image), self.text_tokens(ids, text_mask), text_mask)
        return self.joint(xi, t)

    def match_logits(self, image: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """ITM score of each pair: `image: [B, Ni, D_img]` and `text: [B, L, D_txt]` encoder tokens -> `[B]`.

        The margin `logit(match) - logit(no match)`; retrieval ranks candidates by it. Encoder tokens
        come in (not pixels and ids) so that each image and text is encoded once for all its pairs.
        """
        if not hasattr(self, "itm_head"):
            raise ValueError("this M3AE was built with itm_weight=0, so it has no matching head to score pairs with")
        xi, t, _ = self.fuse(image, text, text_mask.bool())
        logits = self.itm_head(self.joint(xi, t))
        return logits[:, 1] - logits[:, 0]

    def embed(self, batch: dict, modality: str = "auto") -> Tensor:
        """`modality`: "image" (`batch["image"]`), "text" (`text_ids`, `text_mask`), "joint" (all three),
        or "auto": joint when the batch has both, else whichever it has."""
        has_image, has_text = "image" in batch, "text_ids" in batch and "text_mask" in batch
        if modality == "auto":
            modality = "joint" if has_image and has_text else "image" if has_image else "text"
        if modality not in ("image", "text", "joint"):
            raise ValueError(f"modality must be image, text, joint or auto, got {modality!r}")
        if (modality != "text" and not has_image) or (modality != "image" and not has_text):
            raise KeyError(f"a {modality} embedding needs " + {"image": "image", "text": "text_ids and text_mask",
                           "joint": "image, text_ids and text_mask"}[modality] + f"; the batch has {sorted(batch)}")
        if modality == "image":
            return self.embed_image(batch["image"])
        if modality == "text":
            return self.embed_text(batch["text_ids"], batch["text_mask"])
        return self.embed_joint(batch["image"], batch["text_ids"], batch["text_mask"])
