import json

import pytest

from ssconv.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


SMALL = ("--input-size", "16", "16", "--batch-size", "8", "--iterations", "5")


def test_json_has_the_shape_of_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "cifar_resnet20", "--input-size", "16", "16", "--json")
    summary = json.loads(out)
    code, out, err = run(
        capsys, "prune", "cifar_resnet20", "--method", "snip", "--density", "0.1", *SMALL, "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert set(data) == set(summary) | {"pruning"}
    assert set(data["totals"]) == set(summary["totals"])
    assert set(data["layers"][1]) == set(summary["layers"][1])
    assert data["target_density"] == 0.1 and data["achieved_density"] <= 0.1
    assert data["achieved_density"] == data["pruning"]["density"]
    assert data["pruning"]["method"] == "snip" and data["pruning"]["data"] == "synthetic"
    assert data["totals"]["executed_macs"] == summary["totals"]["executed_macs"]  # dense MACs
    assert data["totals"]["effective_macs"] < data["totals"]["executed_macs"]
    assert "synthetic batch" in err  # data-driven without --dataset: said plainly


@pytest.mark.parametrize("method", ["random", "erk", "magnitude", "grasp", "synflow"])
def test_table_and_dense_mac_note(capsys, method):
    code, out, _ = run(
        capsys, "prune", "cifar_resnet20", "--method", method, "--density", "0.05", *SMALL
    )
    assert code == 0
    assert "total (conv+linear)" in out and "kept (stem)" in out and "model density" in out
    assert "executes dense MACs" in out and "effective MACs" in out


def test_match_ssc_prunes_to_the_ssc_count(capsys):
    code, out, _ = run(capsys, "summary", "cifar_resnet20", "--density", "0.1", "--json")
    ssc = json.loads(out)["totals"]["weight_params"]
    code, out, _ = run(
        capsys,
        "prune",
        "cifar_resnet20",
        "--method",
        "magnitude",
        "--density",
        "0.1",
        "--match-ssc",
        "--json",
    )
    assert code == 0 and json.loads(out)["totals"]["weight_params"] == ssc


def test_num_params_target(capsys):
    code, out, _ = run(
        capsys, "prune", "cifar_resnet20", "--method", "random", "--num-params", "20000", "--json"
    )
    data = json.loads(out)
    assert code == 0 and data["totals"]["weight_params"] == 20000


def test_unknown_dataset_is_a_clear_error(capsys):
    code, _, err = run(
        capsys,
        "prune",
        "cifar_resnet20",
        "--method",
        "snip",
        "--density",
        "0.1",
        "--dataset",
        "nope",
    )
    assert code == 2 and "--dataset" in err and "nope" in err


def test_dataset_batches_are_scored(capsys):
    try:
        from ssconv.data import build_dataset  # noqa: F401
    except ImportError:
        pytest.skip("ssconv.data is not available")
    code, out, err = run(
        capsys,
        "prune",
        "cifar_resnet20",
        "--method",
        "snip",
        "--density",
        "0.1",
        "--dataset",
        "synthetic:3:16:16:10",
        "--batch-size",
        "8",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["pruning"]["data"] == "given" and "synthetic batch" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "cifar_resnet20", "--method", "snip", "--density", "0.0001"], "cannot be met"),
        (["prune", "vgg19", "--method", "snip", "--density", "0.1"], "did you mean 'vgg19_bn'"),
        (["prune", "mobilenet_v2", "--method", "random", "--density", "0.1"], "no layer to prune"),
        (
            ["prune", "cifar_resnet20", "--method", "random", "--num-params", "5", "--match-ssc"],
            "--match-ssc needs --density",
        ),
    ],
)
def test_user_errors_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_bad_options_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "cifar_resnet20", "--method", "lottery", "--density", "0.1"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "cifar_resnet20", "--method", "random"])  # no target
