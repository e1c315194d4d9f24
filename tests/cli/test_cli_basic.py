import json
import subprocess
import sys

import pytest

from ssconv.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_dash_m_and_version():
    proc = subprocess.run(
        [sys.executable, "-m", "ssconv", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("ssconv ")


def test_models_lists_registry(capsys):
    code, out, _ = run(capsys, "models", "vgg*")
    assert code == 0 and "vgg19_bn" in out and "cifar_resnet32" not in out


def test_summary_table_and_json(capsys):
    code, out, _ = run(capsys, "summary", "cifar_resnet20", "--density", "0.1")
    assert code == 0 and "total (conv+linear)" in out and "model density" in out
    code, out, _ = run(capsys, "summary", "cifar_resnet20", "--density", "0.1", "--json")
    data = json.loads(out)
    assert data["target_density"] == 0.1
    assert abs(data["achieved_density"] / 0.1 - 1) <= 0.05
    assert data["totals"]["effective_macs"] < data["totals"]["dense_macs"]
    assert {"name", "settings", "params", "density", "effective_macs", "executed_macs"} <= set(
        data["layers"][1]
    )


def test_summary_prefer_mixing(capsys):
    """--prefer mixing reaches for the pattern that reads more channels: under ERK densities at
    0.05 the wide layers of ResNet-20 lose their no-1x1 pattern (G=1 P=32 no-pw)."""
    args = ["summary", "cifar_resnet20", "--in-channels", "1", "--input-size", "28", "28"]
    args += ["--density", "0.05", "--distribution", "erk"]
    code, plain, _ = run(capsys, *args)
    assert code == 0 and "G=1 P=32 no-pw full" in plain
    code, mixed, _ = run(capsys, *args, "--prefer", "mixing")
    assert code == 0 and "no-pw" not in mixed and "model density" in mixed


def test_summary_explicit_settings_and_dense(capsys):
    code, out, _ = run(
        capsys,
        "summary",
        "vgg11_bn",
        "--period",
        "4",
        "--no-pointwise",
        "--spatial",
        "checkerboard",
        "--in-channels",
        "1",
        "--input-size",
        "28",
        "28",
    )
    assert code == 0 and "G=1 P=4 no-pw checkerboard" in out
    code, out, _ = run(capsys, "summary", "cifar_resnet20", "--json")
    assert json.loads(out)["achieved_density"] == 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "vgg19"], "did you mean 'vgg19_bn'"),
        (["summary", "cifar_resnet20", "--density", "0.0001"], "cannot be met"),
        (["pattern", "cifar_resnet20", "--layer", "layer1.0.conv"], "did you mean"),
    ],
)
def test_user_errors_exit_2_with_message(capsys, tmp_path, argv, message):
    if argv[0] == "pattern":
        argv = [*argv, "-o", str(tmp_path / "p.png")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_bad_option_values_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "cifar_resnet20", "--density", "2"])
    assert exc.value.code == 2
    assert "--density must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summary", "cifar_resnet20", "--period", "x"])


def test_pattern_picture(capsys, tmp_path):
    path = tmp_path / "pattern.png"
    code, out, _ = run(
        capsys,
        "pattern",
        "cifar_resnet32",
        "--period",
        "4",
        "--spatial",
        "checkerboard",
        "--layer",
        "layer2.1.conv1",
        "-o",
        str(path),
    )
    assert code == 0 and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_trains_compares_and_reuses(capsys, tmp_path):
    argv = [
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    table = out[out.index("method") :]
    for method in ("dense", "ssc", "dw_separable", "erk"):
        assert f"\n{method} " in table
    assert "same number of nonzero" in out
    assert "binomial standard error" in out and "fashion_mnist_regime.md" in out
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.count("reusing the finished run") == 4


def test_output_into_a_closed_pipe_is_not_a_bug():
    """`ssconv models | head -1`: the reader leaves early; exit 0, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssconv", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before ssconv (still importing) writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "bug" not in err


def test_period_argument_forms():
    import argparse

    from ssconv.cli.common import period_arg

    assert period_arg("auto") == "auto" and period_arg("None") is None
    assert period_arg("Depthwise") == "depthwise" and period_arg("4") == 4
    with pytest.raises(argparse.ArgumentTypeError, match="'depthwise'"):
        period_arg("wide")
