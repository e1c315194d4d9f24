"""Tiny-ImageNet, ImageNet and ``folder:PATH`` on small fake trees of JPEG files."""

import logging

import pytest
import torch

from ssconv.data import DatasetError, build_dataset, dataset_info

from .fakes import jpeg, make_image_tree, make_tiny_imagenet

# ----------------------------------------------------------------------------- Tiny-ImageNet


def test_tiny_imagenet_train_and_val(tmp_path):
    make_tiny_imagenet(tmp_path)
    train, info = build_dataset("tiny_imagenet", root=tmp_path, train=True)
    val, val_info = build_dataset("tiny_imagenet", root=tmp_path, train=False)
    assert len(train) == 6 and len(val) == 4
    assert info.num_classes == 3 and info.input_size == (3, 64, 64)
    # Labels follow the sorted wnids, as ImageFolder on train/ would give them.
    assert train.classes == ["n01", "n02", "n03"]
    assert info.classes == ("goldfish", "European fire salamander", "bullfrog")
    assert train.targets == [0, 0, 1, 1, 2, 2]
    # Val labels come from val_annotations.txt: val_0..3 are n03, n01, n02, n03.
    assert val.targets == [2, 0, 1, 2]
    assert [p.rsplit("/", 1)[-1] for p, _ in val.samples] == [f"val_{k}.JPEG" for k in range(4)]
    assert (info.train_size, val_info.test_size) == (6, 4)
    for ds in (train, val):
        x, y = ds[1]  # train[1] is a grey JPEG
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and isinstance(y, int)


def test_tiny_imagenet_augmentation_and_root_forms(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    train, _ = build_dataset("tiny_imagenet", root=base, train=True)  # the folder itself
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train.transform.transforms[0].padding == 4
    val, _ = build_dataset("tiny_imagenet", root=tmp_path, train=False)
    assert [type(t).__name__ for t in val.transform.transforms] == ["ToTensor", "Normalize"]
    small, info = build_dataset("tiny_imagenet", root=tmp_path, train=False, size=32)
    assert small[0][0].shape == (3, 32, 32) and info.input_size == (3, 32, 32)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DatasetError) as e:
        build_dataset("tiny_imagenet", root=tmp_path, train=True)
    msg = str(e.value)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in msg
    assert "tiny-imagenet-200.zip" in msg and "val_annotations.txt" in msg


def test_tiny_imagenet_missing_annotations(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetError, match=r"val/val_annotations.txt not found"):
        build_dataset("tiny_imagenet", root=tmp_path, train=False)


def test_tiny_imagenet_annotation_names_a_missing_image(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    (base / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(DatasetError, match=r"val_2.JPEG \(and 0 more listed in"):
        build_dataset("tiny_imagenet", root=tmp_path, train=False)


def test_tiny_imagenet_unknown_class_in_annotations(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    with open(base / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"line 5: class 'n77' is not in .*wnids.txt"):
        build_dataset("tiny_imagenet", root=tmp_path, train=False)


def test_tiny_imagenet_missing_class_folder(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    for f in (base / "train" / "n02" / "images").iterdir():
        f.unlink()
    (base / "train" / "n02" / "images").rmdir()
    with pytest.raises(DatasetError, match=r"train/n02/images not found \(class n02"):
        build_dataset("tiny_imagenet", root=tmp_path, train=True)


# ----------------------------------------------------------------------------- ImageNet


@pytest.fixture
def imagenet(tmp_path):
    make_image_tree(tmp_path / "train", ["n01", "n02"], 3)
    make_image_tree(tmp_path / "val", ["n01", "n02"], 2)
    return tmp_path


def test_imagenet(imagenet):
    train, info = build_dataset("imagenet", root=imagenet, train=True)
    val, val_info = build_dataset("imagenet", root=imagenet, train=False)
    assert len(train) == 6 and len(val) == 4
    assert info.num_classes == 2 and info.classes == ("n01", "n02")
    assert val.targets == [0, 0, 1, 1]
    assert train[0][0].shape == (3, 224, 224) and val[0][0].shape == (3, 224, 224)
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in val.transform.transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert val.transform.transforms[0].size == 256
    assert val_info.source == str(imagenet / "val")


def test_imagenet_size(imagenet):
    val, info = build_dataset("imagenet", root=imagenet, train=False, size=64)
    assert val[0][0].shape == (3, 64, 64) and info.input_size == (3, 64, 64)
    assert val.transform.transforms[0].size == 73  # 64 * 256 / 224


def test_imagenet_in_a_subfolder_of_the_data_root(tmp_path):
    make_image_tree(tmp_path / "imagenet" / "val", ["n01", "n02"], 1)
    val, info = build_dataset("imagenet", root=tmp_path, train=False)
    assert len(val) == 2 and info.source == str(tmp_path / "imagenet" / "val")


def test_imagenet_flat_val_is_explained(tmp_path):
    make_image_tree(tmp_path / "train", ["n01", "n02"], 1)
    for k in range(3):
        jpeg(tmp_path / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", (8, 8), 10)
    with pytest.raises(DatasetError) as e:
        build_dataset("imagenet", root=tmp_path, train=False)
    msg = str(e.value)
    assert f"{tmp_path / 'val'} holds 3 images directly" in msg
    assert "one folder per class" in msg and "valprep.sh" in msg


def test_imagenet_missing_and_mismatched(tmp_path):
    with pytest.raises(DatasetError, match=r"folder .*train not found; expected ROOT/train/<wnid>"):
        build_dataset("imagenet", root=tmp_path, train=True)
    make_image_tree(tmp_path / "train", ["n01", "n02"], 1)
    make_image_tree(tmp_path / "val", ["n01", "n03"], 1)
    with pytest.raises(DatasetError, match=r"different class folders .*'n02'.*'n03'"):
        build_dataset("imagenet", root=tmp_path, train=False)


def test_imagenet_empty_class_folder(tmp_path):
    make_image_tree(tmp_path / "train", ["n01"], 1)
    (tmp_path / "train" / "n02").mkdir()
    with pytest.raises(DatasetError, match=r"imagenet: .*train: .*n02"):
        build_dataset("imagenet", root=tmp_path, train=True)


# ----------------------------------------------------------------------------- folder:PATH


def test_folder_with_train_and_val(tmp_path):
    make_image_tree(tmp_path / "train", ["cat", "dog", "eel"], 2)
    make_image_tree(tmp_path / "val", ["cat", "dog", "eel"], 1)
    name = f"folder:{tmp_path}"
    train, info = build_dataset(name, train=True)
    val, _ = build_dataset(name, train=False)
    assert (len(train), len(val)) == (6, 3)
    assert info.name == name and info.num_classes == 3 and info.classes == ("cat", "dog", "eel")
    assert info.input_size == (3, 32, 32) and train[0][0].shape == (3, 32, 32)
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names[:4] == ["Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip"]
    big, big_info = build_dataset(name, train=False, size=48)
    assert big[0][0].shape == (3, 48, 48) and big_info.input_size == (3, 48, 48)
    assert dataset_info(name).num_classes == 3  # lists class folders, reads no image


def test_folder_without_split_warns_once_and_uses_it_for_both(tmp_path, caplog, recwarn):
    make_image_tree(tmp_path, ["a", "b"], 2)
    with caplog.at_level(logging.WARNING, logger="ssconv"):
        train, _ = build_dataset(f"folder:{tmp_path}", train=True)
        test, info = build_dataset(f"folder:{tmp_path}", train=False)
    assert len(train) == len(test) == 4 and info.num_classes == 2
    # Once, through logging (by the test split, the one it is about), not as a Python warning.
    said = [r for r in caplog.records if "no separate train/" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "not measured on held-out images" in said[0].getMessage()
    assert not [w for w in recwarn if "held-out" in str(w.message)]


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"folder: .*nowhere not found; expected PATH/train"):
        build_dataset(f"folder:{tmp_path / 'nowhere'}", train=True)
    with pytest.raises(DatasetError, match=r"needs an argument: folder:PATH"):
        build_dataset("folder", train=True)
    for k in range(2):
        jpeg(tmp_path / "flat" / f"{k}.png", (8, 8), 0)
    with pytest.raises(DatasetError, match="holds 2 images directly"):
        build_dataset(f"folder:{tmp_path / 'flat'}", train=True)
