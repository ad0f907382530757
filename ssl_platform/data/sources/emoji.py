"""`emoji`: the Noto emoji of the npm package `emoji-datasource-google`, with their names and categories.

`<data root>/emoji/{emoji.npz, wordpiece.json}`, which `ssl_platform.data.datasets.EmojiPairs` reads
(and `verify_emoji` there checks): 1906 images on white at 64 x 64, their lower-cased names, 9
categories (the 5 skin-tone swatches of "Component" are left out), a train/test split by
`hash_split`, and a WordPiece tokenizer trained on the training names only.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_platform.data.datasets.pairs import EMOJI_FILES, hash_split, rgb_on_white, verify_emoji
from ssl_platform.data.download import npm_pack
from ssl_platform.data.sources.spec import FileSource
from ssl_platform.models.text import train_wordpiece

EMOJI_NPM = "emoji-datasource-google@16.0.0"
EMOJI_SKIP = ("Component",)  # 5 skin-tone swatches: too few for a class, and no object in the image
EMOJI_TEST_FRACTION = 0.2
EMOJI_VOCAB = 2000


def fetch(tmp: Path, remedy: str) -> Path:
    """`npm pack` the emoji package into `tmp` and write `emoji.npz` + `wordpiece.json` into `tmp/emoji`.

    `emoji.npz` holds `images [N, 64, 64, 3]` uint8, `names [N]`, `labels [N]`, `classes [9]` and
    `test [N]` bool; the tokenizer is trained on the training names only. Raises DataSourceError with
    `remedy` when npm cannot fetch the package.
    """
    tarball = npm_pack(EMOJI_NPM, tmp, remedy, pattern="emoji-datasource-google-*.tgz")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp / "npm", filter="data")
    package = tmp / "npm" / "package"
    entries = [e for e in json.loads((package / "emoji.json").read_text())
               if e.get("has_img_google") and e.get("category") not in EMOJI_SKIP]
    entries.sort(key=lambda e: e["unified"])  # a fixed order, whatever the file's
    images = []
    for e in entries:
        with Image.open(package / "img" / "google" / "64" / e["image"]) as image:
            images.append(np.asarray(rgb_on_white(image).resize((64, 64), Image.BICUBIC)))
    names = [e["name"].lower() for e in entries]
    categories = [e["category"] for e in entries]
    classes = sorted(set(categories))
    test = hash_split([e["unified"] for e in entries], categories, EMOJI_TEST_FRACTION)
    out = tmp / "emoji"
    out.mkdir()
    np.savez_compressed(out / "emoji.npz", images=np.stack(images), names=np.array(names),
                        labels=np.array([classes.index(c) for c in categories], dtype=np.int64),
                        classes=np.array(classes), test=test)
    train_wordpiece([n for n, t in zip(names, test) if not t], out / "wordpiece.json", vocab_size=EMOJI_VOCAB)
    return out


SOURCE = FileSource(
    title="npm package emoji-datasource-google 16.0.0 (Noto emoji with names)",
    fetch=fetch,
    files=EMOJI_FILES,
    verify=verify_emoji,
    remedy=(
        "Make the npm registry reachable (`npm pack emoji-datasource-google@16.0.0` must work), or run that "
        "command on a machine that can, copy the .tgz here and call "
        "ssl_platform.data.sources.emoji.fetch on a folder holding it; the result goes into {dir}/."
    ),
)
