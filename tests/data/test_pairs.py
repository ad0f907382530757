"""Image-text pair sets: manifests, the emoji set, template captions, the pair transform."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_platform.data.datasets.pairs import (
    DIGIT_NAMES,
    DIGIT_TEMPLATES,
    CaptionedImages,
    DigitCaptions,
    EmojiPairs,
    ImageTextPairs,
    caption_corpus,
    hash_split,
    read_manifest,
    verify_emoji,
)
from ssl_platform.data.root import data_root
from ssl_platform.data.transforms import ImageTextTransform
from ssl_platform.models.text import train_wordpiece


@pytest.fixture
def pair_dir(tmp_path):
    """Four tiny images (one RGBA with a transparent corner) and their captions as JSONL and CSV."""
    (tmp_path / "img").mkdir()
    rows = []
    for i, (colour, label, split) in enumerate([((255, 0, 0), "red", "train"), ((0, 255, 0), "green", "train"),
                                                ((0, 0, 255), "blue", "test"), ((255, 0, 0), "red", "test")]):
        image = Image.new("RGBA", (8, 8), colour + (255,))
        image.putpixel((0, 0), (0, 0, 0, 0))  # transparent: must come out white, not black
        image.save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "text": f"a {label} square number {i}", "label": label, "split": split})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lines = ["image,text,label,split"] + [f"{r['image']},{r['text']},{r['label']},{r['split']}" for r in rows]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_jsonl_and_csv_manifests_give_the_same_pairs(pair_dir):
    a, b = ImageTextPairs(pair_dir / "pairs.jsonl"), ImageTextPairs(pair_dir / "pairs.csv")
    assert len(a) == len(b) == 4 and a.texts == b.texts and a.classes == b.classes == ["blue", "green", "red"]
    assert a.targets.tolist() == [2, 1, 0, 2]
    (sample, label), (sample_b, _) = a[1], b[1]
    assert sample["text"] == "a green square number 1" and label == 1
    pixels = np.asarray(sample["image"])
    assert sample["image"].mode == "RGB" and pixels.shape == (8, 8, 3)
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[1, 1].tolist() == [0, 255, 0]
    assert np.array_equal(pixels, np.asarray(sample_b["image"]))


def test_manifest_split_and_class_numbering_agree_across_splits(pair_dir):
    test = ImageTextPairs(pair_dir / "pairs.jsonl", split="test")
    assert test.texts == ["a blue square number 2", "a red square number 3"]
    assert test.classes == ["blue", "green", "red"] and test.targets.tolist() == [0, 2]  # green absent, same ids
    with pytest.raises(ValueError, match=r"no rows with split 'val'; its splits are \['test', 'train'\]"):
        ImageTextPairs(pair_dir / "pairs.jsonl", split="val")


def test_bad_manifests_name_the_problem(pair_dir):
    (pair_dir / "bad.jsonl").write_text('{"image": "img/0.png"}\n')
    with pytest.raises(ValueError, match="row 1 needs 'image' and 'text'"):
        read_manifest(pair_dir / "bad.jsonl")
    (pair_dir / "broken.jsonl").write_text('{"image": "img/0.png", "text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl:2 is not a JSON object"):
        read_manifest(pair_dir / "broken.jsonl")
    (pair_dir / "pairs.tsv").write_text("x")
    with pytest.raises(ValueError, match="must end in .jsonl or .csv"):
        read_manifest(pair_dir / "pairs.tsv")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(pair_dir / "none.jsonl")
    (pair_dir / "missing.jsonl").write_text('{"image": "img/nope.png", "text": "x"}\n')
    with pytest.raises(FileNotFoundError, match="img/nope.png of the manifest is missing"):
        ImageTextPairs(pair_dir / "missing.jsonl")[0]


def test_unlabelled_manifest_rows_get_minus_one(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "text": "dark"}\n')
    pairs = ImageTextPairs(tmp_path / "m.jsonl")
    assert pairs.targets.tolist() == [-1] and pairs.classes == [] and pairs[0][1] == -1


def test_hash_split_is_stratified_and_independent_of_order():
    rng = np.random.default_rng(0)
    keys = [f"item{i}" for i in range(300)]
    groups = rng.choice(["a", "b", "c"], size=300).tolist()
    test = hash_split(keys, groups, 0.2)
    for g in "abc":  # every group keeps its share: round(n * 0.2)
        members = [i for i, x in enumerate(groups) if x == g]
        assert test[members].sum() == round(len(members) * 0.2)
    order = rng.permutation(300)
    shuffled = hash_split([keys[i] for i in order], [groups[i] for i in order], 0.2)
    assert np.array_equal(shuffled, test[order])  # each key's side depends on the key only
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        hash_split(keys, groups, 1.0)


def test_template_captions_follow_the_labels():
    pairs = DigitCaptions("test")
    assert len(pairs) == len(pairs.targets) and pairs.classes == [str(d) for d in range(10)]
    for i in range(0, len(pairs), 37):
        sample, label = pairs[i]
        assert sample["text"] == DIGIT_TEMPLATES[i % 3].format(DIGIT_NAMES[label]) and sample["image"].mode == "RGB"
    assert set(pairs.texts) <= set(caption_corpus(DIGIT_NAMES, DIGIT_TEMPLATES))
    with pytest.raises(ValueError, match="exactly one"):
        CaptionedImages(pairs, DIGIT_NAMES, templates=["no slot"])
    with pytest.raises(ValueError, match="names has 2 entries for 10 classes"):
        CaptionedImages(pairs, ["a", "b"])


def test_pair_transform_gives_the_batch_keys_and_decodes_back(pair_dir):
    tok = train_wordpiece(["a red square", "a green square number 1"], pair_dir / "tok.json", vocab_size=200)
    transform = ImageTextTransform(str(pair_dir / "tok.json"), size=16, max_length=8)
    sample, _ = ImageTextPairs(pair_dir / "pairs.jsonl")[1]
    out = transform(sample)
    assert out["image"].shape == (3, 16, 16) and out["image"].dtype == torch.float32
    assert out["text_ids"].shape == out["text_mask"].shape == (8,) and out["text_mask"].dtype == torch.bool
    n = int(out["text_mask"].sum())
    assert tok.decode(out["text_ids"][:n].tolist()) == "a green square number 1"
    grey = ImageTextTransform(str(pair_dir / "tok.json"), size=16, max_length=8, channels=1)(sample)
    assert grey["image"].shape == (1, 16, 16)
    image_only = ImageTextTransform(None, size=16)(sample)  # the eval transform of category probes
    assert set(image_only) == {"image"} and torch.equal(image_only["image"], out["image"])
    with pytest.raises(TypeError, match="reads {'image', 'text'} items"):
        transform(sample["image"])


def test_verify_emoji_says_what_is_wrong(tmp_path):
    assert "lacks ['emoji.npz', 'wordpiece.json']" in verify_emoji(tmp_path)
    (tmp_path / "emoji.npz").write_bytes(b"not a zip")
    (tmp_path / "wordpiece.json").write_text("{}")
    assert "unreadable" in verify_emoji(tmp_path)
    np.savez(tmp_path / "emoji.npz", images=np.zeros((3, 64, 64, 3), np.uint8), names=np.array(["a", "b", "c"]),
             labels=np.zeros(3), test=np.zeros(3, bool))
    assert "holds 3 emoji, expected 1906" in verify_emoji(tmp_path)
    with pytest.raises(FileNotFoundError, match="data prepare emoji"):
        EmojiPairs(root=tmp_path.parent / "nowhere")


@pytest.mark.data
@pytest.mark.skipif(verify_emoji(data_root() / "emoji") is not None, reason="needs: data prepare emoji")
def test_emoji_pairs_are_disjoint_stratified_and_named():
    train, test = EmojiPairs("train"), EmojiPairs("test")
    assert len(train) + len(test) == 1906 and len(train.classes) == 9 and "Component" not in train.classes
    assert not set(train.texts) & set(test.texts)  # names are unique, so no pair is on both sides
    for c in range(9):  # 20% of every category held out
        n = (train.targets == c).sum() + (test.targets == c).sum()
        assert (test.targets == c).sum() == round(n * 0.2)
    sample, label = test[test.texts.index("grinning face")]
    assert test.classes[label] == "Smileys & Emotion" and sample["image"].size == (64, 64)
    assert np.asarray(sample["image"])[0, 0].tolist() == [255, 255, 255]  # transparent corner on white


@pytest.mark.data
@pytest.mark.skipif(not (data_root() / "fashion-mnist").is_dir(), reason="needs: data prepare fashion-mnist")
def test_fashion_mnist_captions_name_the_class():
    from ssl_platform.data.datasets import FashionMNIST
    from ssl_platform.data.datasets.pairs import FMNIST_NAMES, FMNIST_TEMPLATES, FashionMNISTCaptions

    pairs, plain = FashionMNISTCaptions("test", limit=50), FashionMNIST("test", limit=50)
    assert pairs.targets.tolist() == plain.targets.tolist() and len(pairs) == 50
    for i in (0, 1, 2, 3, 49):
        sample, label = pairs[i]
        assert sample["text"] == FMNIST_TEMPLATES[i % 4].format(FMNIST_NAMES[label])
        assert sample["image"].mode == "RGB" and np.array_equal(np.asarray(sample["image"])[..., 0], np.asarray(plain[i][0]))
