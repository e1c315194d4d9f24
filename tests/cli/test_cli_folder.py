"""`ssconv train` on image folders: bad files stop the start with exit 2 (or are skipped on
request), grey folders train as one channel, augmentation options, warnings once."""

import os
from pathlib import Path

import pytest
import yaml

from ssconv.cli.main import main
from ssconv.data import verify as verify_mod
from ssconv.train.config import TrainConfig
from ssconv.train.trainer import Trainer, load_trained_model
from tests.cli.test_cli_train import train
from tests.data import fakes

DENSE = ["--method", "dense"]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(verify_mod, "_MEMO", {})
    monkeypatch.setenv("SSCONV_CACHE_DIR", str(tmp_path / "cache"))


def _folder(root: Path, *, val: bool = True, mode: str = "RGB") -> list[str]:
    for split, n in (("train", 4), ("val", 2)) if val else (("train", 4),):
        for c in ("cat", "dog"):
            for k in range(n):
                fakes.png(root / split / c / f"{c}{k}.png", (20, 16), 10 * k + len(c), mode)
    return ["--dataset", f"folder:{root}"]


def _first_conv_in_channels(run: Path) -> int:
    model, _, _ = load_trained_model(run)
    conv = next(m for m in model.modules() if hasattr(m, "in_channels"))
    return conv.in_channels


def test_bad_files_exit_2_naming_each_before_training(capsys, tmp_path):
    data = _folder(tmp_path / "data")
    fake, cut = fakes.add_bad_images(tmp_path / "data" / "train" / "dog")
    code, out, err = train(capsys, tmp_path / "run", *data, *DENSE)
    assert code == 2, err
    assert "2 of 14 image files cannot be read" in err
    assert f"{fake}: not an image file" in err
    assert f"{cut}: truncated or incomplete" in err
    assert "--skip-bad-images" in err
    assert "Traceback" not in err and "bug in ssconv" not in err
    assert not (tmp_path / "run").exists()  # stopped before the run started


def test_skip_bad_images_trains_and_reports_the_count(capsys, tmp_path):
    data = _folder(tmp_path / "data")
    fakes.add_bad_images(tmp_path / "data" / "train" / "dog")
    run = tmp_path / "run"
    code, out, err = train(capsys, run, *data, *DENSE, "--skip-bad-images")
    assert code == 0, err
    assert "skipped 2 unreadable image file(s) of 10" in err
    assert "dog/fake.png" in err and "dog/cut.png" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["skip_bad_images"] is True
    # The verdicts are cached in the dataset folder for the next start.
    assert (tmp_path / "data" / verify_mod.CACHE_NAME).is_file()


def test_grey_folder_trains_one_channel_unless_told(capsys, tmp_path):
    data = _folder(tmp_path / "data", mode="L")
    code, _, err = train(capsys, tmp_path / "grey", *data, *DENSE)
    assert code == 0, err
    assert _first_conv_in_channels(tmp_path / "grey") == 1
    code, _, err = train(capsys, tmp_path / "rgb", *data, *DENSE, "--in-channels", "3")
    assert code == 0, err
    assert _first_conv_in_channels(tmp_path / "rgb") == 3
    # eval reads the images as the model was trained on them.
    assert main(["eval", str(tmp_path / "rgb")]) == 0
    assert "top-1" in capsys.readouterr().out
    code, _, err = train(capsys, tmp_path / "bad", *data, "--set", "in_channels=2")
    assert code == 2 and "in_channels: 2 is not one of [1, 3]" in err
    with pytest.raises(SystemExit) as e:  # argparse's own check of the flag
        main(["train", "--out", str(tmp_path / "bad"), *data, "--in-channels", "2"])
    assert e.value.code == 2 and "invalid choice: 2" in capsys.readouterr().err


def test_no_hflip_and_crop_padding_reach_the_transform(tmp_path):
    data = tmp_path / "data"
    _folder(data)
    cfg = TrainConfig.from_dict(
        {
            "dataset": f"folder:{data}",
            "model": "cifar_resnet20",
            "model_kwargs": {"width": 4},
            "method": "dense",
            "epochs": 1,
            "batch_size": 4,
            "max_steps": 1,
            "workers": 0,
            "hflip": False,
            "crop_padding": 2,
            "latency_batch": 0,
        }
    )
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    steps = trainer.train_set.base.transform.transforms
    names = [type(t).__name__ for t in steps]
    assert "RandomHorizontalFlip" not in names and "RandomCrop" in names
    assert steps[names.index("RandomCrop")].padding == 2
    assert [type(t).__name__ for t in trainer.test_set.transform.transforms][:2] == [
        "Resize",
        "CenterCrop",
    ]


def test_augment_flags_parse_into_the_config(capsys, tmp_path):
    base = ["train", "--out", str(tmp_path / "r"), "--print-config"]
    assert main([*base, "--no-hflip", "--crop-padding", "0", "--skip-bad-images"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["hflip"], cfg["crop_padding"], cfg["skip_bad_images"]) == (False, 0, True)
    assert main(base) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["hflip"], cfg["crop_padding"], cfg["in_channels"]) == (None, None, None)
    assert main([*base, "--crop-padding", "-1"]) == 2
    assert "crop_padding: must be >= 0" in capsys.readouterr().err


def test_no_val_folder_warns_once(capsys, tmp_path):
    data = _folder(tmp_path / "data", val=False)
    code, out, err = train(capsys, tmp_path / "run", *data, *DENSE)
    assert code == 0, err
    text = out + err
    assert text.count("no separate train/ and val/") == 1
    assert "UserWarning" not in text and "warnings.warn" not in text


def test_a_file_broken_after_verification_exits_2_naming_it(capsys, tmp_path):
    data = _folder(tmp_path / "data", val=False)
    # Verified (and cached) by a first start, then overwritten keeping its size and mtime:
    # the cache cannot tell, so the loader meets it mid-epoch.
    assert train(capsys, tmp_path / "first", *data, *DENSE)[0] == 0
    path = tmp_path / "data" / "train" / "cat" / "cat0.png"
    st = path.stat()
    path.write_bytes(path.read_bytes()[:100] + bytes(st.st_size - 100))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, _, err = train(capsys, tmp_path / "run", *data, *DENSE, "--max-steps", "100")
    assert code == 2
    assert f"{path}: cannot read this image" in err and "Traceback" not in err


def test_a_grey_folder_run_from_before_in_channels_resumes_with_3_channels(capsys, tmp_path):
    import torch

    data = _folder(tmp_path / "data", mode="L")
    run = tmp_path / "run"
    extra = [*DENSE, "--schedule", "constant"]
    assert train(capsys, run, *data, *extra, "--in-channels", "3")[0] == 0
    # What a run made before the new keys looks like: none of them saved.
    new_keys = ("in_channels", "skip_bad_images", "hflip", "crop_padding")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(
        yaml.safe_dump({k: config[k] for k in config if k not in new_keys})
    )
    for path in (run / "checkpoints").iterdir():
        state = torch.load(path, weights_only=False)
        state["config"] = {k: v for k, v in state["config"].items() if k not in new_keys}
        torch.save(state, path)
    code, out, err = train(capsys, run, *data, *extra, "--resume", "--epochs", "2")
    assert code == 0, err
    assert _first_conv_in_channels(run) == 3
