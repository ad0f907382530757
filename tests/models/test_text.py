"""The text side of image-text methods: WordPiece training and reload, encoding, the text encoder."""

import pytest
import torch

from ssl_platform.models.text import (
    WORDPIECE_SPECIALS,
    TextEncoder,
    encode,
    load_tokenizer,
    special_ids,
    tokenizer_from_json,
    train_wordpiece,
)

CAPTIONS = ["grinning face", "face with tears of joy", "flag: egypt", "red apple", "green apple",
            "woman technologist: medium skin tone", "grinning cat", "cat face"]


def test_wordpiece_round_trip_through_file_directory_and_string(tmp_path):
    tok = train_wordpiece(CAPTIONS, tmp_path / "tok" / "tokenizer.json", vocab_size=40)  # the trainer's merges
    from_file = load_tokenizer(tmp_path / "tok" / "tokenizer.json")
    from_dir = load_tokenizer(tmp_path / "tok")  # a Hugging Face save_pretrained folder holds tokenizer.json
    from_str = tokenizer_from_json(tok.to_str())
    texts = CAPTIONS + ["a grinning apple", "unseen zebra words"]
    want = [e.ids for e in tok.encode_batch(texts)]
    for other in (from_file, from_dir, from_str):
        assert [e.ids for e in other.encode_batch(texts)] == want
        assert other.get_vocab() == tok.get_vocab()
    # BERT's specials first, and every text framed by [CLS] ... [SEP]
    assert [tok.token_to_id(t) for t in WORDPIECE_SPECIALS] == [0, 1, 2, 3, 4]
    assert all(ids[0] == 2 and ids[-1] == 3 for ids in want)
    # lower-casing, and the pieces decode back to the words
    assert tok.encode("GRINNING Face").ids == tok.encode("grinning face").ids
    assert tok.decode(tok.encode("grinning face").ids) == "grinning face"


def test_wordpiece_training_is_deterministic_below_the_vocabulary_cap(tmp_path):
    # 1000 entries are more than these captions can fill: every word ends up whole, no tie at a cut
    a = train_wordpiece(CAPTIONS, tmp_path / "a.json", vocab_size=1000)
    b = train_wordpiece(CAPTIONS, tmp_path / "b.json", vocab_size=1000)
    assert a.get_vocab_size() < 1000
    words = {w for c in CAPTIONS for w in c.replace(":", " :").split()}
    assert all(a.encode(w).tokens == ["[CLS]", w, "[SEP]"] for w in words)  # whole words
    assert a.encode("great").tokens[1:-1] == ["g", "##r", "##e", "##a", "##t"]  # unseen word: its characters
    assert a.encode("zebra").tokens[1:-1] == ["[UNK]"]  # a character never seen
    assert a.get_vocab() == b.get_vocab()
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_bad_tokenizer_inputs_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_wordpiece"):
        load_tokenizer(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no texts"):
        train_wordpiece([], tmp_path / "empty.json")


def test_special_ids_read_bert_and_roberta_names():
    from tokenizers import Tokenizer, models

    roberta = Tokenizer(models.WordLevel({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "hi": 4, "<mask>": 5}, unk_token="<unk>"))
    assert special_ids(roberta) == {"pad": 1, "cls": 0, "sep": 2, "mask": 5}
    no_mask = Tokenizer(models.WordLevel({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match=r"no mask \(\[MASK\] or <mask>\)"):
        special_ids(no_mask)


def test_encode_pads_cuts_and_keeps_the_separator(tmp_path):
    tok = train_wordpiece(CAPTIONS, tmp_path / "t.json", vocab_size=120)
    texts = ["red apple", "woman technologist: medium skin tone"]
    ids, mask = encode(tok, texts, max_length=6)
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == torch.int64 and mask.dtype == torch.bool
    for row, text in enumerate(texts):  # against encoding one text at a time
        full = tok.encode(text).ids
        kept = full if len(full) <= 6 else full[:5] + [full[-1]]
        n = len(kept)
        assert ids[row, :n].tolist() == kept and mask[row, :n].all() and not mask[row, n:].any()
        assert (ids[row, n:] == 0).all()  # [PAD]
    assert ids[1, -1].item() == tok.token_to_id("[SEP]")
    with pytest.raises(ValueError, match="at least 3"):
        encode(tok, texts, max_length=2)


def test_text_encoder_ignores_padding_and_pools_the_first_token():
    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=50, max_length=10, embed_dim=32, depth=2, num_heads=4).eval()
    ids = torch.tensor([[2, 7, 9, 3, 0, 0, 0, 0]])
    mask = ids != 0
    out = enc.forward_features(ids, mask)
    # other ids behind the mask (and a longer padded tail) change nothing at the real tokens
    ids2 = torch.tensor([[2, 7, 9, 3, 11, 12, 13, 14, 15, 16]])
    mask2 = torch.tensor([[True] * 4 + [False] * 6])
    out2 = enc.forward_features(ids2, mask2)
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    torch.testing.assert_close(enc(ids, mask), out[:, 0])
    assert enc.forward_head(out).shape == (1, 32)
    with pytest.raises(ValueError, match="longer than the encoder's max_length"):
        enc.forward_features(torch.zeros(1, 11, dtype=torch.long), torch.ones(1, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible"):
        TextEncoder(vocab_size=50, embed_dim=30, num_heads=4)
