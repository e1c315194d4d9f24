"""Plots of aggregated runs (matplotlib, written to files): accuracy against density,
effective MACs and measured latency, and training curves."""

from __future__ import annotations

import statistics
from pathlib import Path

from ssconv.report.results import Group

__all__ = ["plot_all"]

_MARKERS = "os^vDP*Xh<>p"


def _style(methods: list[str]) -> dict[str, dict]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20")
    return {
        m: {"color": cmap(i % 20), "marker": _MARKERS[i % len(_MARKERS)]}
        for i, m in enumerate(methods)
    }


def _by_dataset_model(groups: list[Group]) -> dict[tuple[str, str], list[Group]]:
    out: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        out.setdefault((g.dataset, g.model), []).append(g)
    return out


def plot_all(groups: list[Group], folder: str | Path) -> list[Path]:
    """Write the report's figures into ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for (dataset, model), gs in _by_dataset_model(groups).items():
        methods = sorted({g.method for g in gs}, key=lambda m: (m != "dense", m))
        style = _style(methods)
        tag = f"{dataset}_{model}".replace(":", "_").replace("/", "_")
        dense = [g for g in gs if g.method == "dense"]

        for xkey, xlabel, name, logx in (
            ("density", "density (nonzero / dense weights)", "acc_vs_density", True),
            ("effective_macs", "effective MACs per image", "acc_vs_macs", True),
            ("latency_ms", "measured inference latency (ms per batch)", "acc_vs_latency", False),
        ):
            fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
            plotted = False
            for method in methods:
                pts = []
                for g in gs:
                    if g.method != method:
                        continue
                    x, (y, e) = g.mean(xkey), g.mean_std("final_acc1")
                    if x is not None and y is not None:
                        pts.append((x, y * 100, (e or 0.0) * 100))
                if not pts:
                    continue
                pts.sort()
                xs, ys, es = zip(*pts)
                kw = style[method]
                if method == "dense" and xkey == "density":
                    ax.axhline(ys[0], color=kw["color"], ls="--", lw=1, label="dense")
                    continue
                ax.errorbar(
                    xs,
                    ys,
                    yerr=es,
                    label=method,
                    capsize=3,
                    lw=1.2,
                    ms=6,
                    **kw,
                    ls="-" if xkey == "density" else "none",
                )
                plotted = True
            if not plotted:
                plt.close(fig)
                continue
            if logx:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"{model} on {dataset} (mean ± std over seeds)", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2, loc="lower right")
            path = folder / f"{name}_{tag}.png"
            fig.savefig(path, dpi=130)
            plt.close(fig)
            written.append(path)

        densities = sorted(
            {g.target_density for g in gs if g.target_density is not None}, reverse=True
        )
        if not densities:
            continue
        fig, axes = plt.subplots(
            1,
            len(densities),
            figsize=(5.5 * len(densities), 4.2),
            squeeze=False,
            constrained_layout=True,
        )
        for ax, density in zip(axes[0], densities):
            for g in [*dense, *(g for g in gs if g.target_density == density)]:
                curves = [[row["val_acc1"] * 100 for row in run.epochs] for run in g.runs]
                curves = [c for c in curves if c]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
                ax.plot(
                    range(1, n + 1),
                    mean,
                    label=g.method,
                    lw=1.3,
                    ls="--" if g.method == "dense" else "-",
                    **style[g.method],
                )
            ax.set_title(f"density {density:g}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7, ncol=2, loc="lower right")
        fig.suptitle(f"training curves, {model} on {dataset} (mean over seeds)", fontsize=10)
        path = folder / f"curves_{tag}.png"
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
    return written
