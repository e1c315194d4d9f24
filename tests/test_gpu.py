"""What users run on GPUs: training with AMP and channels_last, resume, pruning, freezing.

Marked ``gpu``: skipped without CUDA (CI has none); run on a GPU machine with
``python -m pytest -m gpu``.
"""

import json
import warnings

import pytest
import torch

import ssconv
from ssconv.cli.main import main
from ssconv.deploy import freeze
from ssconv.pruning import get_masks, prune
from ssconv.train.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.gpu

TINY = [
    "--model",
    "cifar_resnet20",
    "--set",
    "model_kwargs={width: 8}",
    "--dataset",
    "synthetic",
    "--batch-size",
    "16",
    "--max-steps",
    "3",
    "--workers",
    "0",
    "--device",
    "cuda",
]


@pytest.mark.parametrize("method", ["ssc", "snip"])
def test_train_amp_channels_last_and_resume_on_cuda(tmp_path, capsys, method):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *TINY, "--method", method, "--density", "0.1"]
    args += ["--epochs", "2", "--amp", "--channels-last"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in epochs)
    # Lose the last epoch: --resume continues from the epoch-1 checkpoint and finishes.
    newest = list_checkpoints(out / "checkpoints")
    assert len(newest) == 2
    newest[0].unlink()
    (out / "final.json").unlink()
    assert main([*args, "--resume"]) == 0
    assert load_checkpoint(list_checkpoints(out / "checkpoints")[0])["epoch"] == 2
    assert json.loads((out / "final.json").read_text())["complete"] is True
    capsys.readouterr()


def test_pruned_weights_stay_zero_through_amp_steps_on_cuda():
    model = ssconv.create_model("cifar_resnet20", num_classes=10).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = prune(model, "snip", density=0.1, input_size=(3, 32, 32), batch_size=8)
    assert 0.099 <= report.density <= 0.1
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(3):
        x = torch.randn(8, 3, 32, 32, device="cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(x).float().logsumexp(1).mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    for name, mask in get_masks(model).items():
        stored = model.get_submodule(name).parametrizations.weight.original
        assert stored.is_cuda and (stored[~mask] == 0).all(), name


def test_freeze_matches_on_cuda_channels_last():
    model = ssconv.convert(ssconv.create_model("vgg11_bn"), density=0.1, warn_coverage=False)
    model = model.model.cuda().eval()
    frozen = freeze(model)
    x = torch.randn(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), atol=1e-3, rtol=1e-3)


def test_auto_rule_keeps_depthwise_like_layers_dense_on_cuda():
    # On CPU a depthwise spatial part runs decomposed; on an H200 that was slower (see
    # docs/benchmarks.md), so CUDA keeps one dense convolution for narrow layers.
    layer = ssconv.SSConv2d(16, 16, 3, padding=1, period=16)
    assert layer.resolved_backend() == "decomposed"
    assert layer.cuda().resolved_backend() == "masked"
