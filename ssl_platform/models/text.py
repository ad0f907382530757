"""The text side of image-text methods (M3AE): a WordPiece tokenizer and a small Transformer encoder.

The tokenizer is the `tokenizers` library's: any `tokenizer.json` (a `tokenizers` file or a
Hugging Face `save_pretrained` directory) loads with `load_tokenizer`, and `train_wordpiece` trains a
BERT-style WordPiece vocabulary offline on a caption corpus. `special_ids` reads the padding, class,
separator and mask ids from either BERT's (`[PAD] [CLS] [SEP] [MASK]`) or RoBERTa's (`<pad> <s> </s>
<mask>`) names, so masked-token modelling works with either family.

`TextEncoder` is a pre-norm Transformer over token ids (learned positions, timm blocks, a key
padding mask): `forward_features(ids, mask) -> [B, L, D]`, `forward_head(tokens, pre_logits=True) ->
[B, D]` (the first token, [CLS]), the same contract as timm backbones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

# BERT's special tokens, in the order `train_wordpiece` gives them ids 0..4
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# role -> accepted names (BERT family first, then RoBERTa / BPE family)
SPECIAL_NAMES = {
    "pad": ("[PAD]", "<pad>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # an optional dependency (pyproject extra "text")
        raise ImportError(
            "text methods need the `tokenizers` package: pip install 'tokenizers>=0.15' (or the platform's "
            "[text] extra)"
        ) from err
    return tokenizers


def train_wordpiece(texts: Iterable[str], path: str | Path, vocab_size: int = 1000, min_frequency: int = 1):
    """Train a lower-casing BERT WordPiece tokenizer on `texts` and save it (atomically) as JSON.

    When every distinct word (plus single characters) fits in `vocab_size`, the vocabulary is exactly
    that and the result is deterministic, so processes that build it at the same time write the same
    file (template captions, debug runs). Larger corpora go through the library's WordPiece trainer,
    which breaks ties in hash order: train those once (`data prepare`) and keep the file.

    Args:
        texts: the training captions (only the training split's, so held-out text never leaks in).
        path: where the `tokenizer.json` goes (parent directories are made).
        vocab_size: the most entries of the vocabulary (specials and single characters included).
        min_frequency: the least count of a merged piece.

    Returns:
        The trained `tokenizers.Tokenizer`, which adds [CLS] ... [SEP] around every text.
    """
    tokenizers = _import_tokenizers()
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = list(texts)
    if not texts:
        raise ValueError("train_wordpiece got no texts; pass the training captions")
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(WORDPIECE_SPECIALS), show_progress=False)
    # every word whole, plus single characters (and their "##" continuations) for unseen words
    words = {w for text in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))}
    chars = {c for w in words for c in w}
    whole = words | chars | {"##" + c for c in chars}
    if len(whole) + len(WORDPIECE_SPECIALS) <= vocab_size:
        # the corpus fits whole: build the vocabulary directly, because the trainer breaks ties between
        # equally frequent merges in hash order and would number (and even choose) pieces differently
        # on every run
        pieces = sorted(whole)
    else:
        tok.train_from_iterator(texts, trainer=trainer)
        pieces = sorted(set(tok.get_vocab()) - set(WORDPIECE_SPECIALS))
    # WordPiece encodes by greedy longest match against the vocabulary set: sorted ids, same encoding
    tok.model = models.WordPiece({t: i for i, t in enumerate([*WORDPIECE_SPECIALS, *pieces])}, unk_token="[UNK]")
    tok.add_special_tokens(list(WORDPIECE_SPECIALS))  # never split, and dropped by decode
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tok.save(tmp)
        os.replace(tmp, path)  # a reader never sees half a file, even when two ranks train at once
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tok


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer` from a `tokenizer.json` file or a directory holding one.

    Raises FileNotFoundError naming what to do when there is none.
    """
    tokenizers = _import_tokenizers()
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}: give a tokenizers JSON file or a Hugging Face tokenizer directory "
            "(save_pretrained) holding tokenizer.json, or train one on your captions with "
            "ssl_platform.models.text.train_wordpiece(texts, path)"
        )
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # the library raises a bare Exception on a malformed file
        raise ValueError(f"{file} is not a tokenizers JSON file ({err}); re-train or re-export it") from err


def tokenizer_from_json(text: str):
    """The inverse of `tokenizer.to_str()`: how a tokenizer saved inside a checkpoint comes back."""
    return _import_tokenizers().Tokenizer.from_str(text)


def special_ids(tokenizer) -> dict[str, int]:
    """`{"pad", "cls", "sep", "mask"} -> id`, from BERT's or RoBERTa's token names.

    Raises ValueError naming the missing roles: masked-token modelling needs all four.
    """
    ids, missing = {}, []
    for role, names in SPECIAL_NAMES.items():
        found = [tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None]
        if found:
            ids[role] = found[0]
        else:
            missing.append(f"{role} ({' or '.join(names)})")
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)} token; masked-token modelling needs "
                         "padding, class, separator and mask tokens (train_wordpiece adds them)")
    return ids


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    """Texts -> `ids: [B, max_length]` int64 and `mask: [B, max_length]` bool (True = a real token).

    Texts longer than `max_length` are cut, keeping the final separator so every row ends alike;
    shorter ones are padded with the tokenizer's pad id.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS], one token, [SEP]), got {max_length}")
    specials = special_ids(tokenizer)
    ids = torch.full((len(texts), max_length), specials["pad"], dtype=torch.int64)
    mask = torch.zeros(len(texts), max_length, dtype=torch.bool)
    for row, enc in enumerate(tokenizer.encode_batch(list(texts))):
        tokens = enc.ids
        if len(tokens) > max_length:
            tokens = tokens[: max_length - 1] + [tokens[-1]]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        mask[row, : len(tokens)] = True
    return ids, mask


class TextEncoder(nn.Module):
    """Token ids -> contextual token features: embeddings + learned positions + pre-norm Transformer.

    Args:
        vocab_size: rows of the token embedding.
        max_length: the longest sequence (rows of the position table).
        embed_dim: width.
        depth: Transformer blocks.
        num_heads: attention heads.
        mlp_ratio: hidden width of each block's MLP over `embed_dim`.
        pad_id: the padding token (its embedding row stays zero and attention never reads it).
    """

    def __init__(self, vocab_size: int, max_length: int = 32, embed_dim: int = 256, depth: int = 4,
                 num_heads: int = 4, mlp_ratio: float = 4.0, pad_id: int = 0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"text embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.max_length = max_length
        self.num_features = self.embed_dim = embed_dim
        self.token_embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        with torch.no_grad():
            self.token_embed.weight[pad_id].zero_()
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """`ids: [B, L]` -> `[B, L, D]` token plus position embeddings."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text of {ids.shape[1]} tokens is longer than the encoder's max_length "
                             f"{self.max_length}; encode with max_length <= {self.max_length}")
        return self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]

    def forward_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """`ids: [B, L]` int64, `mask: [B, L]` bool (True = real token) -> `[B, L, D]`."""
        x = self.embed_tokens(ids)
        # additive key mask [B, 1, 1, L]: padded keys get -inf, so padding never changes a real token
        attn_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        attn_mask = attn_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = True) -> Tensor:
        """`[B, L, D]` -> `[B, D]`: the first ([CLS]) token, as BERT pools."""
        return x[:, 0]

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(ids, mask))
