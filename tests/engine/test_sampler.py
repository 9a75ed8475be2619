"""``fraction=``: the deterministic training subset, also for data sets that repeat their samples per epoch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from vision.engine.sampler import training_subset
from vision.tasks.generation.data import ImageTensors, RepeatDataset


def _images(n: int) -> ImageTensors:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageTensors(images, torch.arange(n))


@pytest.mark.parametrize("make", [lambda: ImageTensors(_images(10).images, torch.arange(10), repeat=3),
                                  lambda: RepeatDataset(_images(10), 3)])  # fmt: skip
def test_repeated_data_is_cut_by_distinct_samples_and_keeps_every_pass(make):
    subset = training_subset(make(), 0.5, seed=0)
    labels = Counter(int(subset[i][1]) for i in range(len(subset)))
    assert len(subset) == 15
    assert len(labels) == 5 and set(labels.values()) == {3}  # 5 of the 10 images, each in all 3 passes
    assert all(int(subset[i][0][0, 0, 0]) == int(subset[i][1]) for i in range(len(subset)))


def test_plain_data_subset_is_deterministic_distinct_and_seeded():
    data = _images(40)
    first, again = training_subset(data, 0.25, seed=3), training_subset(data, 0.25, seed=3)
    other = training_subset(data, 0.25, seed=4)
    assert len(first) == 10 and len(set(first.indices)) == 10 and first.indices == sorted(first.indices)
    assert first.indices == again.indices and first.indices != other.indices
    assert len(training_subset(data, 0.001, seed=0)) == 1  # at least one sample
    assert training_subset(data, 1.0, seed=0) is data


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match=r"fraction=.* must be in \(0, 1\]"):
        training_subset(_images(4), fraction, seed=0)
