"""``folder:PATH`` is verified before use: unreadable files listed or skipped, verdicts cached,
grey folders as one channel, augmentation options, and a loader whose errors name the file."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from ssconv.data import DatasetError, build_dataset
from ssconv.data import verify as verify_mod
from ssconv.data.transforms import Augment, imagenet_transform, small_image_transform
from ssconv.data.verify import CACHE_NAME, verify_images

from .fakes import add_bad_images, jpeg, make_image_tree, png


def _tree(root, classes=("cat", "dog"), per_class=3, val=True):
    make_image_tree(root / "train", list(classes), per_class)
    if val:
        make_image_tree(root / "val", list(classes), 1)
    return f"folder:{root}"


def _names(transform):
    return [type(t).__name__ for t in transform.transforms]


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch, tmp_path):
    # Each test starts without the verdicts of this process, and never writes ~/.cache.
    monkeypatch.setattr(verify_mod, "_MEMO", {})
    monkeypatch.setenv("SSCONV_CACHE_DIR", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- bad files


def test_bad_files_of_both_splits_are_listed_by_path(tmp_path):
    name = _tree(tmp_path)
    fake, cut = add_bad_images(tmp_path / "train" / "cat")
    bad_val = tmp_path / "val" / "dog" / "notes.jpg"
    bad_val.write_text("not a picture")
    empty = tmp_path / "val" / "dog" / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        build_dataset(name, train=True)
    msg = str(e.value)
    # 6 + 2 train and 2 + 2 val files; every bad one named with its reason, in one error.
    assert "4 of 12 image files cannot be read" in msg
    assert f"{empty}: empty file (0 bytes)" in msg
    assert f"{fake}: not an image file" in msg
    assert f"{cut}: truncated or incomplete" in msg
    assert f"{bad_val}: not an image file" in msg
    assert "skip_bad_images=True" in msg and "--skip-bad-images" in msg
    with pytest.raises(DatasetError, match="4 of 12"):  # the test split refuses it too
        build_dataset(name, train=False)


def test_many_bad_files_are_counted_after_the_first_few(tmp_path):
    name = _tree(tmp_path, val=False)
    for k in range(12):
        (tmp_path / "train" / "cat" / f"junk{k:02d}.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError) as e:
        build_dataset(name, train=True)
    msg = str(e.value)
    assert "12 of 18" in msg and "junk07.jpg" in msg and "junk08.jpg" not in msg
    assert "... and 4 more" in msg


def test_skip_bad_images_leaves_them_out_with_a_count(tmp_path, caplog):
    name = _tree(tmp_path)
    fake, cut = add_bad_images(tmp_path / "train" / "cat")
    add_bad_images(tmp_path / "val" / "dog")
    with caplog.at_level(logging.INFO, logger="ssconv"):
        train, info = build_dataset(name, train=True, skip_bad_images=True)
        test, _ = build_dataset(name, train=False, skip_bad_images=True)
    assert len(train) == 6 and info.train_size == 6 and len(test) == 2
    assert str(fake) not in {p for p, _ in train.samples} and len(train.targets) == 6
    assert train.imgs == train.samples
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert [r.levelno for r in skipped] == [logging.WARNING, logging.WARNING]
    assert "skipped 2 unreadable image file(s) of 8" in skipped[0].getMessage()
    assert "cat/fake.png" in skipped[0].getMessage()
    assert "skipped 2 unreadable image file(s) of 4" in skipped[1].getMessage()
    x, y = train[0]
    assert x.shape == (3, 32, 32) and y == 0


def test_a_split_of_bad_files_only_is_refused_even_when_skipping(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="no readable image in"):
        build_dataset(f"folder:{tmp_path}", train=True, skip_bad_images=True)


# ----------------------------------------------------------------------------- the cache


def test_verdicts_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    name = _tree(tmp_path)
    add_bad_images(tmp_path / "train" / "dog")
    build_dataset(name, train=True, skip_bad_images=True)
    cache = json.loads((tmp_path / CACHE_NAME).read_text())
    fake = cache["files"]["train/dog/fake.png"]  # [size, mtime_ns, mode, error]
    assert fake[2] is None and fake[3].startswith("not an image file")
    assert cache["files"]["train/cat/cat_0.JPEG"][2:] == ["RGB", None]
    assert len(cache["files"]) == 10  # 6 + 2 train, 2 val

    # A second start (a new process: no in-memory verdicts) decodes nothing...
    decoded = []
    monkeypatch.setattr(verify_mod, "_MEMO", {})
    monkeypatch.setattr(verify_mod, "_decode", lambda p: decoded.append(p) or ("RGB", None))
    ds, _ = build_dataset(name, train=True, skip_bad_images=True)
    assert decoded == [] and len(ds) == 6
    # ... but a file that changed (size or mtime) is decoded again.
    jpeg(tmp_path / "train" / "cat" / "cat_1.JPEG", (41, 30), 7)
    build_dataset(name, train=True, skip_bad_images=True)
    assert [os.path.basename(p) for p in decoded] == ["cat_1.JPEG"]


def test_cache_falls_back_to_the_cache_dir_when_the_folder_is_not_writable(tmp_path):
    data = tmp_path / "data"
    make_image_tree(data, ["a", "b"], 2)
    (data / CACHE_NAME).mkdir()  # the folder's cache cannot be written (nor read)
    paths = sorted(str(p) for p in data.rglob("*.JPEG"))
    checks = verify_images(paths, folder=data)
    assert all(c.ok and c.mode == "RGB" for c in checks)
    (written,) = (tmp_path / "cache" / "verified").iterdir()
    assert json.loads(written.read_text())["folder"] == str(data)


def test_progress_bar_for_many_files(tmp_path, capsys, monkeypatch):
    make_image_tree(tmp_path, ["a"], 3)
    paths = sorted(str(p) for p in tmp_path.rglob("*.JPEG"))
    verify_images(paths, folder=tmp_path, what="folder:x", progress=True)
    assert "verifying folder:x" in capsys.readouterr().err
    monkeypatch.setattr(verify_mod, "_MEMO", {})
    (tmp_path / CACHE_NAME).unlink()
    monkeypatch.setattr(verify_mod, "PROGRESS_FROM", 2)
    verify_images(paths, folder=tmp_path, what="folder:x")  # stderr is not a terminal here
    assert "verifying" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- channels


def test_grey_folder_gives_one_channel(tmp_path):
    for split, n in (("train", 2), ("val", 1)):
        for c in ("x", "y"):
            for k in range(n):
                jpeg(tmp_path / split / c / f"{k}.jpg", (20, 20), 50 * k, "L")
    png(tmp_path / "train" / "x" / "grey.png", (20, 20), 3, "L")
    name = f"folder:{tmp_path}"
    train, info = build_dataset(name, train=True)
    assert info.input_size == (1, 32, 32) and info.in_channels == 1
    assert info.mean == (0.449,) and len(info.std) == 1
    assert train[0][0].shape == (1, 32, 32)
    # Explicit channels win over the detection.
    rgb, rgb_info = build_dataset(name, train=False, in_channels=3)
    assert rgb_info.input_size == (3, 32, 32) and rgb[0][0].shape == (3, 32, 32)


def test_one_colour_image_makes_the_folder_colour_unless_told(tmp_path):
    name = _tree(tmp_path, val=False)
    jpeg(tmp_path / "train" / "cat" / "grey.jpg", (20, 20), 10, "L")
    _, info = build_dataset(name, train=True)
    assert info.in_channels == 3
    grey, info = build_dataset(name, train=True, in_channels=1)
    assert info.in_channels == 1 and grey[1][0].shape == (1, 32, 32)


def test_in_channels_is_checked(tmp_path):
    name = _tree(tmp_path, val=False)
    with pytest.raises(DatasetError, match="in_channels: expected 1 .* or 3"):
        build_dataset(name, train=True, in_channels=2)
    # Datasets of fixed channels refuse another number, and accept their own.
    with pytest.raises(DatasetError, match="embedded has 1-channel images, not 3"):
        build_dataset("embedded", train=False, in_channels=3)
    _, info = build_dataset("embedded", train=False, in_channels=1)
    assert info.in_channels == 1


# ----------------------------------------------------------------------------- augmentation


def test_augment_options(tmp_path):
    name = _tree(tmp_path, val=False)
    default, _ = build_dataset(name, train=True)
    assert _names(default.transform)[2:4] == ["RandomCrop", "RandomHorizontalFlip"]
    assert default.transform.transforms[2].padding == 4  # size 32 // 8
    no_flip, _ = build_dataset(name, train=True, augment=Augment(hflip=False))
    assert "RandomHorizontalFlip" not in _names(no_flip.transform)
    assert "RandomCrop" in _names(no_flip.transform)
    pad, _ = build_dataset(name, train=True, augment=Augment(crop_padding=0))
    assert _names(pad.transform)[:3] == ["Resize", "CenterCrop", "RandomHorizontalFlip"]
    # The other datasets take the same options through their recipes.
    fm, _ = build_dataset("embedded", train=True, augment=Augment(hflip=False, crop_padding=3))
    assert _names(fm.transform) == ["RandomCrop", "ToTensor", "Normalize"]
    assert fm.transform.transforms[0].padding == 3
    off, _ = build_dataset("embedded", train=True, augment=False)
    assert _names(off.transform) == ["ToTensor", "Normalize"]


def test_augment_defaults_are_each_datasets_recipe():
    kw = {"mean": (0.5,), "std": (0.5,)}
    t = small_image_transform(native=28, size=None, padding=2, augment=Augment(), **kw)
    assert _names(t)[:2] == ["RandomCrop", "RandomHorizontalFlip"] and t.transforms[0].padding == 2
    t = small_image_transform(native=28, size=56, padding=2, augment=True, **kw)
    assert t.transforms[2].padding == 4  # scaled with the size
    t = imagenet_transform(size=64, augment=Augment(hflip=False))
    assert _names(t) == ["RandomResizedCrop", "ToTensor", "Normalize"]
    with pytest.raises(DatasetError, match="RandomResizedCrop, which takes no padding"):
        imagenet_transform(size=64, augment=Augment(crop_padding=4))
    with pytest.raises(DatasetError, match="crop_padding must be an integer >= 0"):
        Augment(crop_padding=-1)


# ----------------------------------------------------------------------------- the loader


def test_a_file_broken_after_verification_fails_naming_it(tmp_path):
    name = _tree(tmp_path, val=False)
    ds, _ = build_dataset(name, train=True)
    path = ds.samples[0][0]
    st = os.stat(path)
    data = Path(path).read_bytes()
    with open(path, "wb") as f:
        f.write(data[:200] + bytes(len(data) - 200))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DatasetError, match=f"{path}: cannot read this image"):
        ds[0]


def test_dataset_error_from_a_loader_worker_keeps_its_message(tmp_path):
    (tmp_path / "a").mkdir()
    png(tmp_path / "a" / "ok.png", (8, 8), 1)
    ds, _ = build_dataset(f"folder:{tmp_path}", train=True)
    (tmp_path / "a" / "ok.png").write_bytes(b"gone bad")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    assert str(e.value).startswith(f"{tmp_path / 'a' / 'ok.png'}: cannot read this image")
    assert "Traceback" not in str(e.value) and "Traceback" in e.value.worker_traceback
