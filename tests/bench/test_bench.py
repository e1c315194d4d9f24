"""Benchmark and export plumbing on small shapes. No timing is asserted (speed lives in
benchmarks/ and docs/benchmarks.md)."""

import json

import pytest
import torch

import ssconv
from ssconv.bench.layers import LayerShape, run_layer_bench, summarize
from ssconv.bench.models import bench_variants, build_variants, format_bench
from ssconv.cli.main import main
from ssconv.utils.timing import measure


def test_measure_interleaves_and_reports_spread():
    calls = []
    stats = measure(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4  # warm-up, then interleaved rounds
    assert stats["a"].runs == 3 and stats["a"].p25 <= stats["a"].median <= stats["a"].p75


def test_layer_bench_rows_and_efficiency_definition():
    rows = run_layer_bench([LayerShape("t", 8, 8, 6)], [(1, 4, True, "full")], batch=2, repeats=2)
    (row,) = rows
    assert row["density"] == pytest.approx((9 / 4 + 3 / 4) / 9)
    for b in ("masked", "decomposed", "split", "auto"):  # auto: the default call, timed
        expected = (row["dense_ms"] / row[f"{b}_ms"]) / row["mac_ratio"]
        assert row[f"{b}_eff"] == pytest.approx(expected)
    assert summarize(rows)["rows"] == 1


def test_autotune_sets_explicit_backends_and_keeps_outputs():
    model = ssconv.convert(
        ssconv.create_model("cifar_resnet20", width=8), density=0.2, warn_coverage=False
    ).model.eval()
    x = torch.randn(2, 3, 16, 16)
    before = model(x)
    chosen = ssconv.autotune(model, x, repeats=1)
    assert chosen and set(chosen.values()) <= {"masked", "decomposed", "split", "fused"}
    for name, backend in chosen.items():
        assert model.get_submodule(name).backend == backend
    assert torch.allclose(model(x), before, atol=1e-5)


def test_bench_variants_same_budget_and_table():
    variants = build_variants("cifar_resnet20", 0.2, in_channels=1, num_classes=10)
    assert [v.name for v in variants] == ["dense", "ssc", "pruned", "dw_separable"]
    result = bench_variants(variants, (1, 16, 16), batch=2, repeats=2, train=True)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["ssc"]["params"] == rows["pruned"]["params"]
    assert rows["pruned"]["executed_macs"] == rows["dense"]["executed_macs"]
    assert rows["ssc"]["executed_macs"] < rows["dense"]["executed_macs"]
    assert rows["dense"]["latency_speedup"] == 1.0 and "train_step_ms" in rows["ssc"]
    assert "speed-up" in format_bench(result)


def test_ssc_presets_are_variants_built_as_training_builds_them():
    """An SSC preset is benchmarked as `ssconv train --method NAME` converts it: the same
    patterns, at the same nonzero count as the other variants of the budget."""
    from ssconv import SSConv2d, profile
    from ssconv.train.config import TrainConfig
    from ssconv.train.methods import build_model

    names = ("ssc", "ssc_thin_point", "ssc_depthwise")
    variants = build_variants("cifar_resnet20", 0.05, in_channels=1, num_classes=10, variants=names)
    assert [v.name for v in variants] == list(names)

    def patterns(model):
        return {n: m.pattern for n, m in model.named_modules() if isinstance(m, SSConv2d)}

    thin = variants[1].model
    cfg = TrainConfig.from_dict(
        {"method": "ssc_thin_point", "density": 0.05, "model": "cifar_resnet20"}
    )
    trained, _ = build_model(cfg, 10, 1, (1, 28, 28))
    assert patterns(thin) == patterns(trained)
    assert any(p.point_groups != p.groups for p in patterns(thin).values())
    # Within the same weight budget as the default SSC model (the solver's discrete fits).
    counts = [profile(v.model, (1, 1, 28, 28)).weight_params for v in variants]
    assert all(0.98 * counts[0] <= c <= 0.05 * 268_048 for c in counts), counts
    with pytest.raises(ValueError, match="unknown variant 'sparse'.*ssc_thin_point"):
        build_variants("cifar_resnet20", 0.05, in_channels=1, variants=("sparse",))


def test_an_ssc_variant_with_erk_densities_is_built_as_training_builds_it():
    """`ssc_thin_point:erk` is the preset with `distribution: erk`, as a config sets it; a
    distribution on a non-SSC variant, or an unknown one, is refused naming the variant."""
    from ssconv import SSConv2d
    from ssconv.bench.models import parse_variant
    from ssconv.train.config import TrainConfig
    from ssconv.train.methods import build_model

    (built,) = build_variants(
        "cifar_resnet20", 0.05, in_channels=1, num_classes=10, variants=("ssc_thin_point:erk",)
    )
    assert built.name == "ssc_thin_point:erk"
    cfg = TrainConfig.from_dict(
        {
            "method": "ssc_thin_point",
            "density": 0.05,
            "distribution": "erk",
            "model": "cifar_resnet20",
        }
    )
    trained, _ = build_model(cfg, 10, 1, (1, 28, 28))

    def patterns(model):
        return {n: m.pattern for n, m in model.named_modules() if isinstance(m, SSConv2d)}

    assert patterns(built.model) == patterns(trained)
    (uniform,) = build_variants(
        "cifar_resnet20", 0.05, in_channels=1, num_classes=10, variants=("ssc_thin_point:uniform",)
    )
    assert patterns(uniform.model) != patterns(trained)  # the distribution took effect
    # Below density 0.1 the preset's default ("auto") is ERK's densities.
    (default,) = build_variants(
        "cifar_resnet20", 0.05, in_channels=1, num_classes=10, variants=("ssc_thin_point",)
    )
    assert patterns(default.model) == patterns(trained)
    assert parse_variant("ssc:uniform") == ("ssc", "uniform")
    with pytest.raises(ValueError, match="'dense:erk'.*SSC variants only"):
        parse_variant("dense:erk")
    with pytest.raises(ValueError, match="unknown distribution 'snip'.*uniform erk"):
        parse_variant("ssc:snip")


def test_bench_onnx_times_every_variant_and_survives_one_failure(monkeypatch):
    pytest.importorskip("onnxruntime")
    import ssconv.deploy

    variants = build_variants("cifar_resnet20", 0.2, in_channels=1, num_classes=10)
    result = bench_variants(variants, (1, 16, 16), batch=2, repeats=2, onnx=True)
    rows = {r["variant"]: r for r in result["rows"]}
    assert all(r["onnx_ms"] > 0 for r in rows.values()), rows
    assert rows["dense"]["onnx_speedup"] == 1.0

    real = ssconv.deploy.export_onnx

    def failing_for_ssc(model, path, *args, **kwargs):
        if str(path).endswith("ssc.onnx"):
            raise RuntimeError("simulated exporter failure")
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(ssconv.deploy, "export_onnx", failing_for_ssc)
    variants = build_variants("cifar_resnet20", 0.2, in_channels=1, num_classes=10)
    result = bench_variants(variants, (1, 16, 16), batch=2, repeats=2, onnx=True)
    rows = {r["variant"]: r for r in result["rows"]}
    assert "onnx_ms" not in rows["ssc"] and "simulated" in rows["ssc"]["onnx_error"]
    assert rows["pruned"]["onnx_ms"] > 0
    assert "failed (see log)" in format_bench(result)


def test_export_onnx_check_raises_when_runtimes_disagree(tmp_path):
    pytest.importorskip("onnxruntime")
    from ssconv.deploy import export_onnx

    model = ssconv.create_model("cifar_resnet20", in_channels=1)
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        export_onnx(model, tmp_path / "m.onnx", (1, 16, 16), atol=-1.0)  # any diff is too big


def test_bench_cli_json_and_errors(capsys, tmp_path):
    out = tmp_path / "b.json"
    code = main(
        [
            "bench",
            "cifar_resnet20",
            "--density",
            "0.2",
            "--batch",
            "2",
            "--repeats",
            "2",
            "--input-size",
            "16",
            "16",
            "--variants",
            "dense",
            "ssc",
            "--json",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["variant"] for r in data["rows"]] == ["dense", "ssc"]
    assert json.loads(out.read_text())["model"] == "cifar_resnet20"
    assert main(["bench", "cifar_resnet20", "--variants", "sparse"]) == 2
    assert "ssc_thin_point" in capsys.readouterr().err  # the presets are listed
    if not torch.cuda.is_available():
        assert main(["bench", "cifar_resnet20", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_cli_from_a_trained_run(capsys, tmp_path, fmt):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--dataset",
                "synthetic:3:16:16:4:32:8",
                "--model",
                "cifar_resnet20",
                "--set",
                "model_kwargs={width: 4}",
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--batch-size",
                "8",
                "--workers",
                "0",
                "--method",
                "snip",
                "--density",
                "0.3",
                "--set",
                "latency_batch=0",
            ]
        )
        == 0
    )
    target = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    assert main(["export", str(run), "-o", str(target), "--batch", "2"]) == 0
    assert target.stat().st_size > 0
    out = capsys.readouterr().out
    assert "max |diff|" in out
    if fmt == "onnx" and "at batch" in out:  # onnxruntime installed: dynamic batch, checked
        assert "at batch 2 and 4" in out
    assert main(["export", "no_such_model", "-o", str(target)]) == 2


@pytest.mark.gpu
def test_bench_on_cuda():
    variants = build_variants("cifar_resnet20", 0.1)
    result = bench_variants(variants, (3, 32, 32), batch=8, repeats=3, device="cuda", train=True)
    assert all(r["latency_ms"] > 0 for r in result["rows"])


def test_bench_compile_mode_and_graph_options_reach_every_variant(monkeypatch, capsys):
    """The plumbing of --compile MODE / --cuda-graphs (the compilers themselves run on a GPU
    machine: benchmarks/gpu_check.sh); torch.compile is replaced by a recorder."""
    modes = []

    def fake_compile(model, mode=None):
        modes.append(mode)
        if isinstance(model, torch.nn.Module) and getattr(model, "_fail_compile", False):
            raise RuntimeError("simulated compiler failure")
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    variants = build_variants(
        "cifar_resnet20", 0.2, in_channels=1, num_classes=10, variants=("dense", "ssc")
    )
    result = bench_variants(
        variants, (1, 16, 16), batch=2, repeats=2, train=True, compile="reduce-overhead"
    )
    assert modes == ["reduce-overhead"] * 4  # frozen and trainable, both variants
    assert result["compile_mode"] == "reduce-overhead" and result["cuda_graphs"] is False
    rows = {r["variant"]: r for r in result["rows"]}
    for key in ("compiled", "compiled_train_step", "train_step"):
        assert rows["ssc"][f"{key}_ms"] > 0 and rows["dense"][f"{key}_speedup"] == 1.0
    table = format_bench(result)
    assert "compiled train ms" in table and "torch.compile mode reduce-overhead" in table

    variants = build_variants(
        "cifar_resnet20", 0.2, in_channels=1, num_classes=10, variants=("dense", "ssc")
    )
    variants[1].model._fail_compile = True
    result = bench_variants(variants, (1, 16, 16), batch=2, repeats=2, train=True, compile=True)
    rows = {r["variant"]: r for r in result["rows"]}
    assert "simulated compiler failure" in rows["ssc"]["compiled_train_step_error"]
    assert rows["dense"]["compiled_train_step_ms"] > 0 and result["compile_mode"] == "default"
    assert "failed (see log)" in format_bench(result)

    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        bench_variants(variants, (1, 16, 16), batch=2, repeats=2, cuda_graphs=True)
    assert main(["bench", "cifar_resnet20", "--cuda-graphs"]) == 2
    assert "--cuda-graphs needs a GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's choices
        main(["bench", "cifar_resnet20", "--compile", "fastest"])
    assert exc.value.code == 2 and "invalid choice: 'fastest'" in capsys.readouterr().err


@pytest.mark.gpu
def test_bench_cuda_graphs_and_reduce_overhead_on_cuda():
    variants = build_variants("cifar_resnet20", 0.1, variants=("dense", "ssc"))
    result = bench_variants(
        variants,
        (3, 32, 32),
        batch=8,
        repeats=3,
        device="cuda",
        train=True,
        cuda_graphs=True,
        compile="reduce-overhead",
    )
    for r in result["rows"]:
        for key in ("graphed", "graphed_train_step", "compiled", "compiled_train_step"):
            assert r.get(f"{key}_ms", 0) > 0 or f"{key}_error" in r, (key, r)
        assert r["graphed_ms"] > 0, r  # inference of a frozen model always captures


def test_bench_fast_batchnorm_swaps_every_variants_batchnorm(capsys, monkeypatch):
    from ssconv.bench import models as bench_models
    from ssconv.layers.batchnorm import BatchNorm2d

    seen = []
    real = bench_models.bench_variants

    def spy(variants, *args, **kwargs):
        for v in variants:
            norms = [m for m in v.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            seen.append((v.name, bool(norms) and all(type(m) is BatchNorm2d for m in norms)))
        return real(variants, *args, **kwargs)

    monkeypatch.setattr(bench_models, "bench_variants", spy)  # cli.bench imports it per call
    argv = ["bench", "cifar_resnet20", "--density", "0.2", "--batch", "2", "--repeats", "1"]
    argv += ["--input-size", "16", "16", "--variants", "dense", "ssc", "--train", "--nchw"]
    assert main([*argv, "--fast-batchnorm"]) == 0
    assert seen == [("dense", True), ("ssc", True)]
    capsys.readouterr()
