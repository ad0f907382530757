"""One task of a suite, loaded: its datasets and transforms instantiated, and the backbone's features
of its train, validation and test sets extracted once, for every protocol and setting to share.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from ssl_platform import config
from ssl_platform.evaluation.features import extract_features, pixel_summary
from ssl_platform.evaluation.suite_schema import Suite, TaskConfig


@dataclasses.dataclass
class TaskData:
    """One task's data once loaded: datasets, cached features and what noise needs.

    A retrieval task ranks image-text pairs with the whole method, not cached features: it has only
    its test set and transform (the rest is None).
    """

    name: str
    kind: str
    train_set: Any
    test_set: Any
    transform: Any
    train_transform: Any
    train: tuple[Tensor, Tensor] | None  # feats [N, D], targets [N, ...]
    test: tuple[Tensor, Tensor] | None
    val: tuple[Tensor, Tensor] | None
    num_classes: int
    pixels: Tensor | None  # [N, d] for instance-dependent noise


def _num_classes(dataset: Any, *labels: Tensor) -> int:
    """Classes of a task: the dataset's class list, or one more than the largest label seen."""
    largest = max(int(y.max()) for y in labels) + 1
    return max(len(getattr(dataset, "classes", []) or []), largest)


def load_task(name: str, task: TaskConfig, suite: Suite, backbone: nn.Module, device: str) -> TaskData:
    """Instantiate a task's datasets and extract its features once (a retrieval task: its test pairs only)."""
    ev = suite.eval
    if task.kind == "retrieval":
        return TaskData(name=name, kind=task.kind, train_set=None, test_set=config.instantiate(task.test),
                        transform=config.instantiate(task.transform), train_transform=None, train=None, test=None,
                        val=None, num_classes=0, pixels=None)
    train_set, test_set = config.instantiate(task.train), config.instantiate(task.test)
    transform = config.instantiate(task.transform)
    extractor = config.locate(task.extractor) if task.extractor else extract_features
    train = extractor(backbone, train_set, transform, ev.batch_size, ev.num_workers, device)
    test = extractor(backbone, test_set, transform, ev.batch_size, ev.num_workers, device)
    val = None
    if task.val is not None:
        val = extractor(backbone, config.instantiate(task.val), transform, ev.batch_size, ev.num_workers, device)
    classification = task.kind == "classification"
    pixels = None
    if classification and task.noise and "instance" in suite.noise.kinds:
        pixels = pixel_summary(train_set, transform, ev.batch_size, ev.num_workers, suite.noise.pixel_side)
    return TaskData(
        name=name, kind=task.kind, train_set=train_set, test_set=test_set, transform=transform,
        train_transform=config.instantiate(task.train_transform) if task.train_transform else transform,
        train=train, test=test, val=val, pixels=pixels,
        num_classes=_num_classes(train_set, train[1], test[1]) if classification else 0,
    )
