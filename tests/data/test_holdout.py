"""The held-out split used for tuning: per class, disjoint, fixed by its own seed, unaugmented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillbench.data.holdout import eval_split_name, holdout_split
from distillbench.data.instance import InstanceDataset
from distillbench.data.subset import take_subset
from distillbench.data.transforms import test_transform, train_transform
from distillbench.errors import ConfigError


def dataset(n_per_class=20, classes=5) -> InstanceDataset:
    targets = np.repeat(np.arange(classes), n_per_class)
    data = np.zeros((len(targets), 32, 32, 3), dtype=np.uint8)
    data[:, 0, 0, 0] = np.arange(len(targets)) % 256  # a fingerprint per image
    data[:, 0, 0, 1] = np.arange(len(targets)) // 256
    return InstanceDataset(data, targets, transform=train_transform(), num_classes=classes)


def fingerprints(ds: InstanceDataset) -> set[int]:
    return {int(a) + 256 * int(b) for a, b in ds.data[:, 0, 0, :2]}


def test_ninety_ten_per_class_disjoint_and_complete():
    full = dataset()
    train, val = holdout_split(full, 0.1, seed=0, eval_transform=test_transform())
    assert len(train) == 90 and len(val) == 10
    assert np.bincount(val.targets, minlength=5).tolist() == [2] * 5
    assert fingerprints(train).isdisjoint(fingerprints(val))
    assert fingerprints(train) | fingerprints(val) == set(range(100))
    # Indices are re-based so per-sample memories match the images trained on.
    assert [train[i][2] for i in (0, 89)] == [0, 89]


def test_split_depends_only_on_its_seed_and_is_unaugmented():
    full = dataset()
    a = holdout_split(full, 0.1, seed=0, eval_transform=test_transform())[1]
    b = holdout_split(full, 0.1, seed=0, eval_transform=test_transform())[1]
    c = holdout_split(full, 0.1, seed=1, eval_transform=test_transform())[1]
    assert fingerprints(a) == fingerprints(b) != fingerprints(c)
    torch.manual_seed(0)
    first = a[0][0]
    torch.manual_seed(1)
    assert torch.equal(first, a[0][0])  # no random crop or flip


def test_fraction_must_be_a_proper_fraction():
    with pytest.raises(ConfigError, match="strictly between 0 and 1, got 1.0; set dataset.holdout.fraction"):
        holdout_split(dataset(), 1.0, seed=0, eval_transform=test_transform())


def test_the_held_out_part_is_named_holdout_and_both_parts_keep_the_provenance():
    """run.json records the training set's provenance: a tuning run's says it was scored on held-out images."""
    full = dataset()
    full.provenance = {"checksums_verified": True, "generated": False}
    train, val = holdout_split(full, 0.1, seed=0, eval_transform=test_transform())
    assert eval_split_name(val) == "holdout" and eval_split_name(full) == eval_split_name(train) == "test"
    assert train.provenance == val.provenance == {"checksums_verified": True, "generated": False,
                                                  "eval_split": "holdout"}
    assert full.provenance == {"checksums_verified": True, "generated": False}
    assert eval_split_name(take_subset(val, 4, "dataset.subset.test")) == "holdout"  # debug subsets keep the name
