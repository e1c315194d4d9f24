"""Plots of aggregated runs (matplotlib, written to files): accuracy against density,
effective MACs and measured latency, and training curves.

Made to be read at a glance: the Okabe-Ito colour-blind-safe palette, one marker shape per
method family (SSC variants, pruning, structured baselines, dense) and a distinct colour for
each method within its family, legends to the right of the axes (never over the data), plain
tick labels (0.05, 0.1; 2M, 5M), curves with a marker on every epoch, and latencies with the
spread and the machine their run folders record.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ssconv.pruning.methods import PRUNING_METHODS
from ssconv.report.results import Group

__all__ = [
    "DENSE_COLOR",
    "FAMILIES",
    "FAMILY_MARKERS",
    "OKABE_ITO",
    "family_of",
    "latency_caption",
    "make_figures",
    "method_styles",
    "plot_all",
]

#: Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
#: deficiency. Black is kept for the dense reference; these seven colour the other methods.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
)
DENSE_COLOR = "#000000"

#: Method families in legend order, with their names in legends and their marker shapes.
FAMILIES = {
    "dense": "dense",
    "ssc": "SSC variants",
    "pruning": "pruning",
    "structured": "structured baselines",
    "other": "other",
}
FAMILY_MARKERS = {"dense": "D", "ssc": "o", "pruning": "^", "structured": "s", "other": "X"}
_FAMILY_START = {"ssc": 0, "pruning": 3, "structured": 5, "other": 1}
_PRUNING = set(PRUNING_METHODS)
_STRUCTURED = {"dw_separable", "group_conv"}


def family_of(name: str, config_method: str | None = None) -> str:
    """The family of a method: from its config's ``method`` when known (a labelled variant such
    as ``erk-effective-init`` is pruning), else from its name."""
    for m in (config_method, name.split("#")[0]):
        if not m:
            continue
        if m == "dense":
            return "dense"
        if m in _STRUCTURED:
            return "structured"
        if m.startswith("ssc"):
            return "ssc"
        if m in _PRUNING or m.split("-")[0].split("_")[0] in _PRUNING:
            return "pruning"
    return "other"


def _darker(color: str, f: float = 0.65) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{int(c * f):02X}" for c in (r, g, b))


def method_styles(families: dict[str, str]) -> dict[str, dict]:
    """Matplotlib style (``color``, ``marker``, ``mfc``, ``mec``, ``ls``) of each method.

    ``families`` maps method names to families; the marker is the family's. When there are
    at most seven non-dense methods, each gets its own palette colour; otherwise colours are
    taken in turn within each family, so that methods of one family always differ in colour
    (up to seven; the eighth and later repeat the colours with hollow markers and dashed
    lines), each family starting at another colour so that the first methods of different
    families differ too. Markers get a darker edge of their colour (the palette's yellow needs it on
    white). Dense is black with a dashed line.
    """
    order = list(FAMILIES)
    names = sorted(families, key=lambda m: (order.index(families[m]), m))
    unique = sum(families[m] != "dense" for m in names) <= len(OKABE_ITO)
    styles: dict[str, dict] = {}
    count: dict[str, int] = {}
    i = 0
    for name in names:
        fam = families[name]
        if fam == "dense":
            styles[name] = {
                "color": DENSE_COLOR,
                "marker": FAMILY_MARKERS["dense"],
                "mfc": DENSE_COLOR,
                "mec": DENSE_COLOR,
                "ls": "--",
            }
            continue
        j = i if unique else count.get(fam, 0)
        i, count[fam] = i + 1, count.get(fam, 0) + 1
        start = 0 if unique else _FAMILY_START[fam]
        color = OKABE_ITO[(start + j) % len(OKABE_ITO)]
        hollow = (j // len(OKABE_ITO)) % 2 == 1
        styles[name] = {
            "color": color,
            "marker": FAMILY_MARKERS[fam],
            "mfc": "white" if hollow else color,
            "mec": color if hollow else _darker(color),
            "ls": "--" if hollow else "-",
        }
    return styles


def _group_families(gs: list[Group]) -> dict[str, str]:
    return {
        g.method: family_of(g.method, g.runs[0].config.get("method") if g.runs else None)
        for g in gs
    }


def _legend_outside(ax, families: dict[str, str], sources=(), **kw):
    """Legend to the right of ``ax`` (outside the data), entries grouped under bold family
    headers; entries are collected from ``ax`` and the axes in ``sources``."""
    from matplotlib.lines import Line2D

    by_label = {}
    for a in (*sources, ax):
        handles, labels = a.get_legend_handles_labels()
        by_label.update(zip(labels, handles))
    order = list(FAMILIES)
    out_h, out_l, headers = [], [], []
    for fam in order:
        names = sorted(n for n in by_label if families.get(n, "other") == fam)
        if not names:
            continue
        if fam != "dense":
            headers.append(FAMILIES[fam])
            out_h.append(Line2D([], [], ls="none", marker="none"))
            out_l.append(FAMILIES[fam])
        for n in names:
            out_h.append(by_label[n])
            out_l.append(n)
    legend = ax.legend(
        out_h,
        out_l,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        frameon=False,
        handlelength=2.4,
        **kw,
    )
    for text in legend.get_texts():
        if text.get_text() in headers:
            text.set_fontweight("bold")
    return legend


def _plain(x: float, _pos=None) -> str:
    return f"{x:g}"


def _density_ticks(ax, densities: list[float]) -> None:
    """Log x axis ticked at the densities present, labelled plainly (0.05, not 5x10^-2)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    ticks = sorted(set(densities))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ticks[0], ticks[-1]
    ax.set_xlim(lo / 1.25, hi * 1.25)


def _count_ticks(ax) -> None:
    """Log x axis of counts (MACs) at 1-2-3-5 steps, labelled 2M, 3M, 5M, 10M."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ssconv.utils.text import format_count

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos=None: format_count(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _seeds_note(gs: list[Group]) -> str:
    counts = sorted({len(g.runs) for g in gs})
    if counts == [1]:
        return "one seed each: no accuracy spread"
    if len(counts) == 1:
        return f"mean ± std over {counts[0]} seeds"
    one = "; one-seed points have no accuracy bar" if counts[0] == 1 else ""
    return f"mean ± std over {counts[0]}-{counts[-1]} seeds{one}"


def _latency_point(g: Group) -> tuple[float, float, float] | None:
    """(mean median latency, lower and upper bar) of a group, bars from the quartiles of the
    timed repeats when recorded (``latency_p25_ms``/``latency_p75_ms``), else half the
    recorded interquartile width (``latency_spread`` x median) either side, else none (nan)."""
    meds = g.values("latency_ms")
    if not meds:
        return None
    x = statistics.fmean(meds)
    lows, highs = [], []
    for r in g.runs:
        f = r.final
        med = f.get("latency_ms")
        if med is None:
            continue
        if f.get("latency_p25_ms") is not None and f.get("latency_p75_ms") is not None:
            lows.append(med - f["latency_p25_ms"])
            highs.append(f["latency_p75_ms"] - med)
        elif f.get("latency_spread") is not None:
            lows.append(f["latency_spread"] * med / 2)
            highs.append(f["latency_spread"] * med / 2)
    if not lows:
        return x, float("nan"), float("nan")
    return x, statistics.fmean(lows), statistics.fmean(highs)


def latency_caption(gs: list[Group]) -> str:
    """What the latency axis shows: its bars (or that none are recorded) and the machine."""
    finals = [r.final for g in gs for r in g.runs if r.final.get("latency_ms") is not None]
    if not finals:
        return ""
    if all(f.get("latency_p25_ms") is not None for f in finals):
        repeats = sorted({f.get("latency_repeats") for f in finals if f.get("latency_repeats")})
        n = f" of {repeats[0]} timed batches" if len(repeats) == 1 else ""
        bars = f"median{n}, bars p25-p75"
    elif all(f.get("latency_spread") is not None for f in finals):
        bars = "median, bar width = interquartile range of the timed batches"
    else:
        bars = "median only: no spread recorded, differences may be timing noise"
    batches = sorted({f["latency_batch"] for f in finals if f.get("latency_batch")})
    if len(batches) == 1:
        bars += f"; batch {batches[0]}"
    machines = set()
    for f in finals:
        m = f.get("latency_machine") or {}
        device = m.get("device") or f.get("latency_device")
        threads = m.get("threads") or f.get("latency_threads")
        parts = [
            m.get("gpu") or m.get("processor"),
            device,
            threads and f"{threads} thread{'s' if threads != 1 else ''}",
        ]
        machines.add(", ".join(str(p) for p in parts if p))
    if len(machines) == 1 and next(iter(machines)):
        where = next(iter(machines))
        if not any(f.get("latency_machine") for f in finals):
            where += " (processor not recorded)"
    elif len(machines) > 1:
        where = f"{len(machines)} different machines/settings (not comparable)"
    else:
        where = "a machine not recorded"
    return f"latency: {bars}\nmeasured on {where}"


def _finish(ax, families: dict[str, str], title: str, legend_kw: dict | None = None) -> None:
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    _legend_outside(ax, families, **(legend_kw or {}))


def plot_all(groups: list[Group], folder: str | Path) -> list[Path]:
    """Write the report's figures into ``folder``; returns their paths.

    The figures are :class:`matplotlib.figure.Figure` objects drawn without ``pyplot``: the
    user's matplotlib backend (a notebook's inline one, say) is left as it is.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, fig in make_figures(groups):
        path = folder / name
        fig.savefig(path, dpi=130)
        written.append(path)
    return written


def make_figures(groups: list[Group]):
    """The report's figures, as ``(file name, matplotlib.figure.Figure)`` pairs (a generator:
    each figure is made when asked for).

    The figures are made without ``pyplot`` and belong to no backend's figure manager: nothing
    needs closing, and the global backend is untouched. To show one in a notebook, return it
    from a cell (or ``display(fig)``); to save one, ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, MaxNLocator

    for (dataset, model), gs in _by_dataset_model(groups).items():
        families = _group_families(gs)
        style = method_styles(families)
        tag = f"{dataset}_{model}".replace(":", "_").replace("/", "_")
        dense = [g for g in gs if families[g.method] == "dense"]
        seeds = _seeds_note(gs)

        for xkey, xlabel, name in (
            (
                "density",
                "density (nonzero / dense weights; methods offset sideways to stay visible)",
                "acc_vs_density",
            ),
            ("effective_macs", "effective MACs per image", "acc_vs_macs"),
            ("latency_ms", "measured inference latency (ms per batch)", "acc_vs_latency"),
        ):
            fig = Figure(figsize=(8, 4.5), layout="constrained")
            ax = fig.subplots()
            plotted, y_lo, y_hi = False, [], []
            # Methods at the same target density are offset sideways (a few % on the log
            # axis), so that their points and seed bars do not hide each other.
            sparse = [m for m in style if families[m] != "dense"]
            dodge = {m: 10 ** ((i - (len(sparse) - 1) / 2) * 0.01) for i, m in enumerate(sparse)}
            for method in style:
                pts = []
                for g in gs:
                    if g.method != method:
                        continue
                    (y, e) = g.mean_std("final_acc1")
                    if xkey == "latency_ms":
                        lat = _latency_point(g)
                        x, xlo, xhi = lat if lat else (None, None, None)
                    else:
                        x, xlo, xhi = g.mean(xkey), float("nan"), float("nan")
                        if xkey == "density" and x is not None:
                            x *= dodge.get(method, 1.0)
                    if x is not None and y is not None:
                        pts.append((x, y * 100, (e or 0.0) * 100, xlo, xhi))
                if not pts:
                    continue
                pts.sort()
                xs, ys, es, xlos, xhis = zip(*pts)
                y_lo += [y - e for y, e in zip(ys, es)]
                y_hi += [y + e for y, e in zip(ys, es)]
                kw = style[method]
                if families[method] == "dense" and xkey == "density":
                    ax.axhline(ys[0], color=kw["color"], ls="--", lw=1, label=method)
                    if es[0]:  # its spread over seeds, as a band
                        ax.axhspan(ys[0] - es[0], ys[0] + es[0], color=kw["color"], alpha=0.08)
                    continue
                xerr = [xlos, xhis] if xkey == "latency_ms" else None
                ax.errorbar(
                    xs,
                    ys,
                    yerr=es,
                    xerr=xerr,
                    label=method,
                    capsize=3,
                    lw=1.2,
                    ms=7,
                    color=kw["color"],
                    marker=kw["marker"],
                    mfc=kw["mfc"],
                    mec=kw["mec"],
                    ls=kw["ls"] if xkey == "density" else "none",
                )
                plotted = True
            if not plotted:
                continue
            if xkey == "density":
                # Ticks at the target densities (0.05, 0.1), not at the achieved 0.0499.
                targets = [
                    g.target_density or g.mean("density")
                    for g in gs
                    if families[g.method] != "dense"
                ]
                _density_ticks(ax, [t for t in targets if t])
            elif xkey == "effective_macs":
                _count_ticks(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("final test accuracy (%)")
            pad = max(0.2, 0.08 * (max(y_hi) - min(y_lo)))
            ax.set_ylim(min(y_lo) - pad, max(y_hi) + pad)
            title = f"{model} on {dataset} ({seeds})"
            if xkey == "latency_ms":
                title += "\n" + latency_caption(gs)
            _finish(ax, families, title)
            yield f"{name}_{tag}.png", fig

        densities = sorted(
            {g.target_density for g in gs if g.target_density is not None}, reverse=True
        )
        if not densities:
            continue
        fig = Figure(figsize=(4.6 * len(densities) + 2.2, 4.2), layout="constrained")
        axes = fig.subplots(1, len(densities), squeeze=False, sharey=True)
        n_max, values = 0, []
        for ax, density in zip(axes[0], densities):
            for g in [*dense, *(g for g in gs if g.target_density == density)]:
                curves = [
                    [
                        (row.get("epoch", i + 1), row["val_acc1"] * 100)
                        for i, row in enumerate(run.epochs)
                        if row.get("val_acc1") is not None
                    ]
                    for run in g.runs
                ]
                curves = [c for c in curves if c]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                epochs = [curves[0][i][0] for i in range(n)]
                mean = [statistics.fmean(c[i][1] for c in curves) for i in range(n)]
                kw = style[g.method]
                ax.plot(
                    epochs,
                    mean,
                    label=g.method,
                    lw=1.3,
                    ms=6,
                    color=kw["color"],
                    marker=kw["marker"],
                    mfc=kw["mfc"],
                    mec=kw["mec"],
                    ls=kw["ls"],
                )
                n_max = max(n_max, max(epochs))
                values += mean
            ax.set_title(f"density {density:g}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        if not values:
            continue
        for ax in axes[0]:
            # Integer epochs, and room either side: a 1- or 2-epoch curve is not squeezed
            # against the frame.
            if n_max <= 12:
                ax.xaxis.set_major_locator(FixedLocator(list(range(1, n_max + 1))))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, n_max + 0.5)
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.08 * (hi - lo))
        axes[0][0].set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
        axes[0][0].set_ylabel("test accuracy (%)")
        _legend_outside(axes[0][-1], families, sources=axes[0][:-1])
        n_seeds = sorted({len(g.runs) for g in gs})
        over = "one seed" if n_seeds == [1] else "mean over seeds"
        fig.suptitle(f"training curves, {model} on {dataset} ({over})", fontsize=10)
        yield f"curves_{tag}.png", fig


def _by_dataset_model(groups: list[Group]) -> dict[tuple[str, str], list[Group]]:
    out: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        out.setdefault((g.dataset, g.model), []).append(g)
    return out
