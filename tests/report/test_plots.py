"""Structure of the report's plots (palette, markers, legend placement, ticks, short curves,
latency spread and machine), checked on the matplotlib figures, never on pixels."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from ssconv.report.plots import (
    DENSE_COLOR,
    FAMILY_MARKERS,
    OKABE_ITO,
    family_of,
    latency_caption,
    make_figures,
    method_styles,
    plot_all,
)
from ssconv.report.results import Group, Run

MACHINE = {"processor": "Test CPU 9000", "threads": 2, "device": "cpu"}


def group(method, density, accs, *, epochs=3, latency=None, config_method=None, **final_keys):
    runs = []
    for seed, acc in enumerate(accs):
        final = {
            "final_acc1": acc,
            "density": density or 1.0,
            "effective_macs": 3e7 * (density or 1.0),
            **final_keys,
        }
        if latency is not None:
            final.update(latency_ms=latency, latency_batch=64)
        curve = [
            {"kind": "epoch", "epoch": e, "val_acc1": acc - 0.02 * (epochs - e)}
            for e in range(1, epochs + 1)
        ]
        config = {"method": config_method or method, "seed": seed}
        runs.append(Run(Path(f"/nowhere/{method}/{seed}"), config, final, curve))
    return Group("fmnist", "resnet", method, density, runs)


def grid(epochs=3, **latency_keys):
    lat = {"latency": 50.0, **latency_keys} if latency_keys else {}
    gs = [group("dense", None, [0.91, 0.92], epochs=epochs, **lat)]
    for d in (0.1, 0.05, 0.02):
        for i, m in enumerate(("ssc", "ssc_hetconv", "snip", "erk", "dw_separable")):
            gs.append(group(m, d, [0.85 + 0.01 * i + d, 0.86 + d], epochs=epochs, **lat))
    gs.append(group("erk-effective-init", 0.1, [0.84], epochs=epochs, config_method="erk"))
    return gs


def figures(gs):
    out = {}
    for name, fig in make_figures(gs):
        FigureCanvasAgg(fig).draw()  # the figures carry no canvas of their own: no pyplot
        out[name.split("_fmnist")[0]] = fig
    return out


def test_families():
    assert family_of("ssc_hetconv") == family_of("ssc#1a2b3c4d") == "ssc"
    assert family_of("erk-effective-init", "erk") == "pruning"
    assert family_of("ssc-erk-dense-init", "ssc") == "ssc"
    assert family_of("group_conv") == family_of("dw_separable") == "structured"
    for m in ("snip", "grasp", "synflow", "erk", "magnitude", "random"):
        assert family_of(m) == "pruning"
    assert family_of("dense") == "dense"


def test_palette_is_okabe_ito_with_one_marker_per_family():
    assert len({c.lower() for c in OKABE_ITO}) == len(OKABE_ITO) == 7
    assert len(set(FAMILY_MARKERS.values())) == len(FAMILY_MARKERS)
    families = {"dense": "dense", "ssc": "ssc", "ssc_hetconv": "ssc", "snip": "pruning"}
    families |= {"erk": "pruning", "dw_separable": "structured", "group_conv": "structured"}
    styles = method_styles(families)
    assert styles["dense"]["color"] == DENSE_COLOR
    for name, fam in families.items():
        assert styles[name]["marker"] == FAMILY_MARKERS[fam]
    sparse = [styles[m]["color"] for m in families if m != "dense"]
    assert set(sparse) <= set(OKABE_ITO)
    # Up to seven methods: every one its own colour (SNIP and SSC are never both blue).
    assert len(set(sparse)) == len(sparse)

    # A large report: colours differ within each family; the eighth SSC variant is hollow.
    many = {f"ssc-v{i}": "ssc" for i in range(8)} | {"snip": "pruning", "erk": "pruning"}
    styles = method_styles(many)
    ssc = [styles[f"ssc-v{i}"] for i in range(8)]
    assert len({s["color"] for s in ssc[:7]}) == 7
    assert ssc[7]["color"] == ssc[0]["color"] and ssc[7]["mfc"] == "white"
    assert styles["snip"]["color"] != styles["erk"]["color"]


def test_figures_legends_outside_markers_per_family_plain_density_ticks():
    figs = figures(grid())
    assert set(figs) == {"acc_vs_density", "acc_vs_macs", "curves"}  # no latency recorded
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_legend() is not None]
        assert len(axes) == 1, name
        ax = axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        # Right of every axes of the figure: it can hide no point.
        for a in fig.axes:
            assert legend.x0 >= a.get_window_extent(renderer).x1, name
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"SSC variants", "pruning", "structured baselines", "dense"} <= set(texts)
        assert texts.index("ssc") < texts.index("snip") < texts.index("dw_separable")

    ax = figs["acc_vs_density"].axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.02", "0.05", "0.1"]
    assert all(not t.get_text() for t in ax.get_xticklabels(minor=True))
    labels = {t.get_text() for t in figs["acc_vs_macs"].axes[0].get_xticklabels()}
    assert labels and not any("times" in s or "^" in s for s in labels)

    markers = {}
    for container in ax.containers:  # errorbar(): the data line is the container's first
        line = container.lines[0]
        markers[container.get_label()] = (line.get_marker(), to_hex(line.get_color()))
    assert set(markers) == {
        "ssc",
        "ssc_hetconv",
        "snip",
        "erk",
        "dw_separable",
        "erk-effective-init",
    }
    assert markers["ssc"][0] == markers["ssc_hetconv"][0] == FAMILY_MARKERS["ssc"]
    assert markers["snip"][0] == markers["erk"][0] == FAMILY_MARKERS["pruning"]
    assert markers["dw_separable"][0] == FAMILY_MARKERS["structured"]
    assert len({c for _, c in markers.values()}) == len(markers)
    assert {c for _, c in markers.values()} <= {c.lower() for c in OKABE_ITO}


@pytest.mark.parametrize("epochs", [1, 2])
def test_short_training_curves_stay_readable(epochs):
    fig = figures(grid(epochs=epochs))["curves"]
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 3
    for ax in panels:
        for line in ax.get_lines():
            assert line.get_marker() not in (None, "", "None", "none")
            assert len(line.get_xdata()) == epochs
        assert list(ax.get_xticks()) == list(range(1, epochs + 1))
        lo, hi = ax.get_xlim()
        assert lo < 1 - 0.25 and hi > epochs + 0.25
        ylo, yhi = ax.get_ylim()
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert ylo < min(ys) and yhi > max(ys) and 2 <= yhi - ylo <= 40
        assert ylo >= 0 and yhi <= 100


def test_latency_plot_shows_quartiles_and_machine():
    gs = grid(latency_p25_ms=45.0, latency_p75_ms=58.0, latency_repeats=15)
    for g in gs:
        for r in g.runs:
            r.final["latency_machine"] = MACHINE
    caption = latency_caption(gs)
    assert "p25-p75" in caption and "Test CPU 9000" in caption and "2 threads" in caption
    fig = figures(gs)["acc_vs_latency"]
    ax = fig.axes[0]
    assert "Test CPU 9000" in ax.get_title(loc="left")
    # Horizontal bars: from 45 to 58 around the median of 50.
    segments = [
        seg
        for coll in ax.collections
        for seg in coll.get_segments()
        if len(seg) == 2 and seg[0][1] == seg[1][1]
    ]
    assert any(math.isclose(s[0][0], 45.0) and math.isclose(s[1][0], 58.0) for s in segments)


def test_latency_without_spread_or_machine_says_so():
    gs = grid(latency_threads=1)
    caption = latency_caption(gs)
    assert "no spread recorded" in caption and "processor not recorded" in caption
    gs = grid(latency_spread=0.2, latency_device="cpu")
    assert "interquartile" in latency_caption(gs)


def test_plot_all_writes_pngs(tmp_path):
    paths = plot_all(grid(epochs=1, latency_spread=0.1), tmp_path)
    assert sorted(p.name.split("_fmnist")[0] for p in paths) == [
        "acc_vs_density",
        "acc_vs_latency",
        "acc_vs_macs",
        "curves",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_plots_leave_the_users_backend_alone(tmp_path):
    """A notebook user's backend (here: svg, chosen first) is unchanged after each plot, and
    pyplot is not imported by the plots (no figure manager, nothing to close)."""
    from torch import nn

    from ssconv import SSConv2d
    from ssconv.report.pattern_plot import plot_pattern

    before = matplotlib.get_backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    try:
        matplotlib.use("svg")
        paths = plot_all(grid(epochs=2, latency_spread=0.1), tmp_path / "report")
        assert len(paths) == 4 and all(p.stat().st_size > 1000 for p in paths)
        assert matplotlib.get_backend() == "svg"
        for layer, name in (
            (SSConv2d(16, 16, 3, period=4), "ssc.svg"),
            (nn.Conv2d(4, 4, 1), "d.png"),
        ):
            assert plot_pattern(layer, tmp_path / name).stat().st_size > 1000
            assert matplotlib.get_backend() == "svg"
        for _, fig in make_figures(grid(epochs=1)):
            assert fig.canvas.manager is None  # not registered with pyplot
        assert matplotlib.get_backend() == "svg"
        if not had_pyplot:
            assert "matplotlib.pyplot" not in sys.modules
    finally:
        matplotlib.use(before)


def test_latency_records_quartiles_and_machine(tmp_path, monkeypatch):
    import torch

    import ssconv.deploy
    import ssconv.pruning
    import ssconv.train.trainer
    from ssconv.report.latency import measure_run_latency

    model = torch.nn.Conv2d(1, 2, 3)
    state = {"data_info": {"input_size": [1, 8, 8]}}
    cfg = SimpleNamespace(channels_last=False)
    monkeypatch.setattr(ssconv.train.trainer, "load_trained_model", lambda f: (model, cfg, state))
    monkeypatch.setattr(ssconv.deploy, "freeze", lambda m: m)
    monkeypatch.setattr(ssconv.pruning, "remove_masks", lambda m: None)
    (tmp_path / "final.json").write_text(json.dumps({"complete": True}))
    measure_run_latency(tmp_path, batch=2, repeats=3)
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["latency_p25_ms"] <= final["latency_ms"] <= final["latency_p75_ms"]
    assert final["latency_repeats"] == 3
    assert final["latency_machine"]["device"] == "cpu" and final["latency_machine"]["processor"]


@pytest.mark.parametrize("method", ["ssc", "snip"])
def test_latency_of_a_recorded_cell_rebuilds_its_structure(tmp_path, method):
    """A sweep's record (config.yaml + final.json, no checkpoint) is timed on the structure
    its config builds: SSC's pattern, a pruned model's dense structure (masks baked in)."""
    import yaml

    from ssconv.report.latency import measure_run_latency

    cfg = {
        "dataset": "synthetic:3:16:16:4:48:16",
        "model": "cifar_resnet20",
        "model_kwargs": {"width": 4},
        "method": method,
        "density": 0.3,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "final.json").write_text(json.dumps({"complete": True, "method": method}))
    ms = measure_run_latency(tmp_path, batch=2, repeats=3)
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["latency_ms"] == ms > 0 and final["latency_batch"] == 2
    assert "rebuilt from config.yaml" in final["latency_source"]
    assert final["method"] == method  # the record's other fields are kept
