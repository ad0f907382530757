"""Image-text pairs: a manifest of your own pairs, emoji with their names, captioned class images.

Items are `({"image": PIL.Image, "text": str}, label)` with `label` -1 when the pair has none; every
set has `texts`, `targets` (`[N]` int64), `classes` and `channels`, like the image sets.
`ImageTextTransform` (`data/transforms/image_text.py`, also importable from here, the path recipes
name) turns an item into the batch keys of image-text methods (M3AE): `image`, `text_ids`, `text_mask`.

- `ImageTextPairs(manifest)`: a JSONL or CSV file, one pair per row (layout in its docstring); the
  layout for ROCO / MedICaT-scale GPU runs (`recipes/m3ae/vit_base_roco_medicat_100k.yaml`).
- `EmojiPairs(split)`: the 1906 Noto emoji of the npm package `emoji-datasource-google` (Apache-2.0
  artwork), each with its name ("grinning face") and one of 9 categories (the 5 skin-tone swatches of
  "Component" are left out). `python -m ssl_platform data prepare emoji` (`data/sources/emoji.py`)
  writes `<data root>/emoji/{emoji.npz, wordpiece.json}`, checked by `verify_emoji`; the WordPiece
  tokenizer is trained on the training names only.
- `FashionMNISTCaptions(split)`, `DigitCaptions(split)`: class images with captions from templates
  ("a photo of a sandal"); small, real images, but the text carries only the label.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssl_platform.data.datasets.base import balanced_subset, check_split, to_pil
from ssl_platform.data.datasets.digits import Digits
from ssl_platform.data.datasets.idx import FashionMNIST
from ssl_platform.data.root import find_data_path, resolve_root

# recipes, eval suites and zoo entries name the transform by this module's path
# (ssl_platform.data.datasets.pairs.ImageTextTransform): it stays importable from here
from ssl_platform.data.transforms.image_text import ImageTextTransform  # noqa: F401

SPLITS = ("train", "test")
EMOJI_FILES = ("emoji.npz", "wordpiece.json")
EMOJI_COUNT = 1906  # entries of emoji.json with a Google image, minus the Component swatches


def rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB on a white background: transparent pixels of RGBA artwork would otherwise turn black."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


def hash_split(keys: Sequence[str], groups: Sequence[str], test_fraction: float) -> np.ndarray:
    """`[N]` bool, True = test: per group, the `round(n * test_fraction)` keys with the smallest SHA-1.

    Stratified (every group keeps its share in both splits) and stable: it depends on the keys only,
    not on their order or on a random generator, so a new package version moves only new items.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digest = np.array([hashlib.sha1(k.encode()).hexdigest() for k in keys])
    groups = np.asarray(groups)
    test = np.zeros(len(keys), dtype=bool)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        order = members[np.argsort(digest[members], kind="stable")]
        test[order[: round(len(members) * test_fraction)]] = True
    return test


class _Pairs:
    """What every pair set shares: `texts`, `targets`, `classes`, `channels`, `limit`; items from `_image(i)`."""

    texts: list[str]
    targets: np.ndarray
    classes: list[str]
    channels: int = 3

    def _keep(self, limit: int | None, seed: int) -> np.ndarray:
        keep = balanced_subset(self.targets, limit, seed)
        self.texts = [self.texts[i] for i in keep]
        self.targets = self.targets[keep]
        return keep

    def _image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], int]:
        return {"image": self._image(index), "text": self.texts[index]}, int(self.targets[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.classes)})"


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a `.jsonl` / `.json` (one object a line) or `.csv` (with a header) manifest, as dicts.

    Raises ValueError naming the row and what is missing when a row has no `image` or no `text`.
    """
    return [row for _, row in manifest_lines(path)]


def manifest_lines(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """`read_manifest`'s rows, each with its line in the file (a CSV row over several lines: its last),
    so errors about a pair can name where it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}; give a .jsonl or .csv file with image and text columns")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append((line_no, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no} is not a JSON object ({err}); one object per line") from err
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]  # line_num: the line the row ended on
    else:
        raise ValueError(f"manifest {path} must end in .jsonl or .csv, got {path.suffix!r}")
    for row_no, (line_no, row) in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("image") or row.get("text") is None:
            raise ValueError(f"{path} row {row_no} needs 'image' and 'text' fields (line {line_no}), got {row!r}")
    return rows


class ImageTextPairs(_Pairs):
    """Image-text pairs listed in a manifest file.

    One row per pair: `image` (a path, relative to `image_root` or else to the manifest's folder),
    `text` (the caption or report), optional `label` (a class name or id, for probes) and optional
    `split` (any string, e.g. train / val / test). JSONL:

        {"image": "images/PMC1234_fig2.jpg", "text": "CT of the chest shows ...", "label": "CT", "split": "train"}

    or CSV with the header `image,text,label,split`. Classes are the sorted distinct labels of the
    whole manifest, so every split numbers them alike.

    Args:
        manifest: the `.jsonl` or `.csv` file.
        split: keep the rows whose `split` equals this (None: every row).
        image_root: the folder image paths are relative to (None: the manifest's folder).
        limit: keep a class-balanced subset of this many pairs.
        seed: seed of that subset.
    """

    def __init__(self, manifest: str | Path, split: str | None = None, image_root: str | Path | None = None,
                 limit: int | None = None, seed: int = 0):
        manifest = find_data_path(manifest) or Path(manifest).expanduser()  # the rule of data/root.py
        lines = manifest_lines(manifest)
        rows = [r for _, r in lines]
        labels = sorted({str(r["label"]) for r in rows if r.get("label") not in (None, "")})
        if split is not None:
            splits = sorted({str(r.get("split")) for r in rows})
            lines = [(n, r) for n, r in lines if str(r.get("split")) == split]
            rows = [r for _, r in lines]
            if not rows:
                raise ValueError(f"{manifest} has no rows with split {split!r}; its splits are {splits}")
        root = resolve_root(image_root) if image_root is not None else Path(manifest).parent
        self.manifest = Path(manifest)
        self.lines = [n for n, _ in lines]  # each pair's line in the manifest
        self.paths = [root / r["image"] for r in rows]
        self.texts = [str(r["text"]) for r in rows]
        self.classes = labels
        index = {name: i for i, name in enumerate(labels)}
        self.targets = np.array([index[str(r["label"])] if r.get("label") not in (None, "") else -1 for r in rows],
                                dtype=np.int64)
        keep = self._keep(limit, seed)
        self.paths = [self.paths[i] for i in keep]
        self.lines = [self.lines[i] for i in keep]

    def _image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return rgb_on_white(image)  # converting decodes, so damage shows up here
        except FileNotFoundError as err:
            raise FileNotFoundError(f"image {path} of the manifest is missing ({self.sample_source(index)}); "
                                    "fix the path or set image_root") from err
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise OSError(f"cannot read image {path} ({self.sample_source(index)}: {err}); fix or remove the file, "
                          "or its line in the manifest") from err

    def sample_source(self, index: int) -> str:
        """Pair `index`'s manifest line (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return f"{self.manifest} line {self.lines[index]}, image {self.paths[index]}"


class EmojiPairs(_Pairs):
    """Noto emoji (64x64, on white) with their lower-cased names, labelled by category.

    Reads `<root>/emoji/emoji.npz` (written by `python -m ssl_platform data prepare emoji`). The
    train/test split is `hash_split` over the names per category, 20% test.

    Args:
        split: "train" or "test".
        root: the data root holding `emoji/` (None: `SSL_PLATFORM_DATA` or `./data`).
        limit: keep a class-balanced subset of this many pairs.
        seed: seed of that subset.
    """

    def __init__(self, split: str = "train", root: str | Path | None = None, limit: int | None = None, seed: int = 0):
        check_split(split, SPLITS, "EmojiPairs")
        directory = resolve_root(root) / "emoji"
        problem = verify_emoji(directory)
        if problem is not None:
            raise FileNotFoundError(f"EmojiPairs: {problem}; run `python -m ssl_platform data prepare emoji`")
        data = np.load(directory / "emoji.npz", allow_pickle=False)
        rows = np.flatnonzero(data["test"] == (split == "test"))
        self.classes = [str(c) for c in data["classes"]]
        self.texts = [str(t) for t in data["names"][rows]]
        self.targets = data["labels"][rows].astype(np.int64)
        keep = self._keep(limit, seed)
        self.images = data["images"][rows[keep]]  # [N, 64, 64, 3] uint8

    def _image(self, index: int) -> Image.Image:
        return to_pil(self.images[index])


def verify_emoji(directory: Path) -> str | None:
    """None when `directory` holds a complete emoji set, else what is wrong (also the `emoji` source's check)."""
    missing = [name for name in EMOJI_FILES if not (directory / name).is_file()]
    if missing:
        return f"{directory} lacks {missing}"
    try:
        data = np.load(directory / "emoji.npz", allow_pickle=False)
        shapes = {k: data[k].shape for k in ("images", "names", "labels", "test")}
    except (OSError, ValueError, KeyError, EOFError) as err:  # truncated, foreign, or arrays missing
        return f"{directory / 'emoji.npz'} is unreadable ({err})"
    n = shapes["images"][0]
    if shapes["images"][1:] != (64, 64, 3) or any(s != (n,) for k, s in shapes.items() if k != "images"):
        return f"{directory / 'emoji.npz'} has arrays of unexpected shapes {shapes}"
    if n != EMOJI_COUNT:
        return f"{directory / 'emoji.npz'} holds {n} emoji, expected {EMOJI_COUNT}"
    return None


class CaptionedImages(_Pairs):
    """A labelled image set with captions from templates: item i reads `templates[j].format(name)`.

    The template j is fixed per item (`i % len(templates)`), so a caption never changes between epochs
    and held-out captions are known in advance.

    Args:
        dataset: items `(PIL image, label)` with `targets` and `classes`.
        names: the words for each class in captions (None: the class names, lower-cased).
        templates: format strings with one `{}`.
    """

    def __init__(self, dataset: Any, names: Sequence[str] | None = None,
                 templates: Sequence[str] = ("a photo of a {}",)):
        names = [c.lower() for c in dataset.classes] if names is None else list(names)
        if len(names) != len(dataset.classes):
            raise ValueError(f"names has {len(names)} entries for {len(dataset.classes)} classes")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError(f"templates must be format strings with exactly one {{}}, got {list(templates)}")
        self.dataset = dataset
        self.classes = list(dataset.classes)
        self.targets = np.asarray(dataset.targets, dtype=np.int64)
        self.texts = [templates[i % len(templates)].format(names[y]) for i, y in enumerate(self.targets)]
        self.channels = 3

    def _image(self, index: int) -> Image.Image:
        return rgb_on_white(self.dataset[index][0])


FMNIST_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FMNIST_TEMPLATES = ("a photo of a {}", "a grey picture of a {}", "a {} on a black background", "an image of a {}")
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_TEMPLATES = ("a handwritten {}", "the digit {}", "a small picture of a {}")


def caption_corpus(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every caption a template set can produce: the corpus a WordPiece tokenizer for it is trained on."""
    return [t.format(n) for t in templates for n in names]


class FashionMNISTCaptions(CaptionedImages):
    """Fashion-MNIST images (as RGB) with template captions ("a photo of a sandal").

    Args:
        split, root, limit, seed: as `FashionMNIST` (needs `python -m ssl_platform data prepare fashion-mnist`).
    """

    def __init__(self, split: str = "train", root: str | Path | None = None, limit: int | None = None, seed: int = 0):
        super().__init__(FashionMNIST(split, root=root, limit=limit, seed=seed), FMNIST_NAMES, FMNIST_TEMPLATES)


class DigitCaptions(CaptionedImages):
    """scikit-learn's bundled digits with captions ("a handwritten seven"): no preparing, for debug runs.

    Args:
        split, test_fraction, seed, limit: as `Digits`.
    """

    def __init__(self, split: str = "train", test_fraction: float = 0.25, seed: int = 0, limit: int | None = None):
        super().__init__(Digits(split, test_fraction, seed, limit), DIGIT_NAMES, DIGIT_TEMPLATES)
