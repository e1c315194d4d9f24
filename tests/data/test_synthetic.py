"""The synthetic dataset: deterministic, balanced, configurable, learnable."""

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from ssconv.data import DatasetError, SyntheticDataset, build_dataset, dataset_info


def test_defaults():
    train, info = build_dataset("synthetic", train=True)
    test, _ = build_dataset("synthetic", train=False)
    assert (len(train), len(test)) == (512, 128)
    assert info.input_size == (3, 32, 32) and info.num_classes == 10
    assert info.mean == (0.0, 0.0, 0.0) and info.std == (1.0, 1.0, 1.0)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert sorted(torch.bincount(torch.tensor(train.targets)).tolist()) == [51] * 8 + [52] * 2


def test_deterministic_across_builds_and_access_order():
    a, _ = build_dataset("synthetic", train=True)
    b, _ = build_dataset("synthetic", train=True)
    assert a.targets == b.targets
    later = b[17]
    assert torch.equal(a[17][0], later[0]) and a[17][1] == later[1]
    assert torch.equal(a[-1][0], a[511][0])
    test, _ = build_dataset("synthetic", train=False)
    assert not torch.equal(a[0][0], test[0][0])  # the splits hold different noise
    # Through workers-style pickling too.
    c = pickle.loads(pickle.dumps(a))
    assert torch.equal(c[5][0], a[5][0])


def test_spec_and_size():
    ds, info = build_dataset("synthetic:1:8:6:4:40:20", train=False)
    assert len(ds) == 20 and ds[0][0].shape == (1, 8, 6)
    assert info.name == "synthetic:1:8:6:4:40:20" and info.num_classes == 4
    assert info.train_size == 40 and info.mean == (0.0,)
    ds, info = build_dataset("synthetic:3:32:32:5", train=True, size=16)
    assert len(ds) == 512 and ds[0][0].shape == (3, 16, 16) and info.input_size == (3, 16, 16)
    assert dataset_info("synthetic:2:4:4:3").input_size == (2, 4, 4)


@pytest.mark.parametrize("spec", ["synthetic:3:32", "synthetic:a:b:c:d", "synthetic:3:0:32:10"])
def test_bad_spec(spec):
    with pytest.raises(DatasetError, match=r"use synthetic:C:H:W:CLASSES"):
        build_dataset(spec, train=True)


def test_classes_are_separable():
    ds = SyntheticDataset(200, (1, 8, 8), 2, seed=3)
    x = torch.stack([ds[i][0] for i in range(200)]).flatten(1)
    y = torch.tensor(ds.targets)
    # Nearest class mean (estimated on half) classifies the other half well.
    means = torch.stack([x[:100][y[:100] == c].mean(0) for c in range(2)])
    pred = torch.cdist(x[100:], means).argmin(1)
    assert (pred == y[100:]).float().mean() > 0.9
    assert abs(x.std().item() - 1) < 0.1


def test_loader_batches():
    ds, _ = build_dataset("synthetic:3:8:8:10:32:16", train=True)
    xb, yb = next(iter(DataLoader(ds, batch_size=8)))
    assert xb.shape == (8, 3, 8, 8) and yb.dtype == torch.int64
