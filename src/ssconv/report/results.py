"""Collect run folders and aggregate them over seeds: Markdown / CSV tables.

Everything comes from the run folders themselves (``config.yaml``, ``final.json``,
``metrics.jsonl``): a report can be rebuilt anywhere the folders are copied.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Run",
    "Group",
    "find_runs",
    "group_runs",
    "markdown_table",
    "seed_table",
    "csv_table",
]


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    final: dict[str, Any]
    epochs: list[dict[str, Any]]

    @property
    def label(self) -> str:
        """The recipe's name in tables and plots: its ``label`` (a sweep variant), else the
        ``variant=NAME`` folder a sweep put it in, else its method."""
        if self.config.get("label"):
            return self.config["label"]
        for part in reversed(self.folder.parts):
            if part.startswith("variant="):
                return part.removeprefix("variant=")
        return self.config["method"]

    @property
    def recipe(self) -> str:
        """Digest of every setting that changes results except the seed: runs pool as seeds
        only when their recipes are equal."""
        from ssconv.train.config import RUNTIME_KEYS, SPARSE_ONLY_KEYS

        ignore = RUNTIME_KEYS - {"epochs"} | {"seed"}
        if self.config.get("method") == "dense":
            ignore |= SPARSE_ONLY_KEYS  # e.g. a dense run of a sweep whose base sets them
        data = {k: v for k, v in self.config.items() if k not in ignore}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]

    @property
    def key(self) -> tuple:
        c = self.config
        density = None if c["method"] == "dense" else c.get("density")
        return (c["dataset"], c["model"], self.label, density, self.recipe)


@dataclass
class Group:
    """The runs of one (dataset, model, method, target density), one per seed."""

    dataset: str
    model: str
    method: str
    target_density: float | None
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r.final[key] for r in self.runs if r.final.get(key) is not None]

    def mean_std(self, key: str) -> tuple[float | None, float | None]:
        vals = self.values(key)
        if not vals:
            return None, None
        # One seed has no spread: None (printed without "±"), not a misleading 0.00.
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)

    def mean(self, key: str) -> float | None:
        return self.mean_std(key)[0]

    def row(self) -> dict[str, Any]:
        final_m, final_s = self.mean_std("final_acc1")
        best_m, best_s = self.mean_std("best_acc1")
        return {
            "dataset": self.dataset,
            "model": self.model,
            "method": self.method,
            "target_density": self.target_density,
            "density": self.mean("density"),
            "weights": self.mean("weight_params"),
            "effective_macs": self.mean("effective_macs"),
            "executed_macs": self.mean("executed_macs"),
            "final_acc1_mean": final_m,
            "final_acc1_std": final_s,
            "best_acc1_mean": best_m,
            "best_acc1_std": best_s,
            "seeds": len(self.runs),
            "latency_ms": self.mean("latency_ms"),
            "train_images_per_s": self.mean("images_per_s"),
            "epoch_time_s": self.mean("mean_epoch_time_s"),
        }


def _read_run(folder: Path) -> Run | None:
    final_path, config_path = folder / "final.json", folder / "config.yaml"
    if not (final_path.is_file() and config_path.is_file()):
        return None
    final = json.loads(final_path.read_text())
    if not final.get("complete"):
        return None
    from ssconv.train.config import with_neutral_defaults

    config = with_neutral_defaults(yaml.safe_load(config_path.read_text()))
    epochs = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("kind") == "epoch":
                    epochs.append(row)
    return Run(folder, config, final, epochs)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every finished run under ``paths`` (run folders or folders containing them).

    A run found twice (its run folder and a sweep's record of it, both with the same config
    digest and epochs) counts once: the first found.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    digests: set[tuple] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        candidates = (
            [path]
            if (path / "final.json").is_file()
            else [p.parent for p in sorted(path.rglob("final.json"))]
        )
        for folder in candidates:
            folder = folder.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            run = _read_run(folder)
            if run is None:
                continue
            same = (run.final.get("config_digest"), run.final.get("epochs"))
            if same[0] is not None and same in digests:
                continue
            digests.add(same)
            runs.append(run)
    return runs


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Runs of equal recipe (every setting but the seed) as one group each.

    Runs that share a label and density but differ in some setting are never pooled: their
    groups get the recipe digest appended to the label (``ssc#1a2b3c4d``) and a warning says
    which settings differ.
    """
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.key not in groups:
            groups[run.key] = Group(*run.key[:4])
        groups[run.key].runs.append(run)
    by_name: dict[tuple, list[tuple]] = {}
    for key in groups:
        by_name.setdefault(key[:4], []).append(key)
    for name, keys in by_name.items():
        if len(keys) < 2:
            continue
        configs = [groups[k].runs[0].config for k in keys]
        differ = sorted(
            k
            for k in set().union(*configs)
            if k != "seed" and len({json.dumps(c.get(k), default=str) for c in configs}) > 1
        )
        warnings.warn(
            f"runs labelled {name[2]!r} (density {name[3]}) have {len(keys)} different recipes "
            f"(settings that differ: {', '.join(differ)}); they are reported as separate rows, "
            "not pooled as seeds",
            stacklevel=2,
        )
        for key in keys:
            groups[key].method = f"{name[2]}#{key[4]}"
    return sorted(
        groups.values(), key=lambda g: (g.dataset, g.model, -(g.target_density or 2.0), g.method)
    )


def _pm(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None:
        return "-"
    if std is None:
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def _count(n: float | None) -> str:
    from ssconv.utils.text import format_count

    return "-" if n is None or (isinstance(n, float) and math.isnan(n)) else format_count(n)


def markdown_table(groups: list[Group]) -> str:
    head = (
        "| dataset | model | method | target density | density | weights | eff. MACs | "
        "exec. MACs | final acc (%) | best acc (%) | seeds | latency (ms) | train img/s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g in groups:
        r = g.row()
        target = "-" if g.target_density is None else f"{g.target_density:g}"
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        speed = "-" if r["train_images_per_s"] is None else f"{r['train_images_per_s']:.0f}"
        cells = [
            g.dataset,
            g.model,
            g.method,
            target,
            f"{r['density']:.4f}",
            _count(r["weights"]),
            _count(r["effective_macs"]),
            _count(r["executed_macs"]),
            _pm(r["final_acc1_mean"], r["final_acc1_std"]),
            _pm(r["best_acc1_mean"], r["best_acc1_std"]),
            str(r["seeds"]),
            latency,
            speed,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(groups: list[Group]) -> str:
    """Final test top-1 (%) of every run, one column per seed, so that paired comparisons
    (the same seeds of two methods) can be read off; ``-`` where a group lacks that seed."""
    seeds = sorted({r.config.get("seed") for g in groups for r in g.runs}, key=str)
    head = (
        "| method | target density | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean ± std | seeds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g in groups:
        by_seed = {r.config.get("seed"): r.final.get("final_acc1") for r in g.runs}
        cells = ["-" if by_seed.get(s) is None else f"{100 * by_seed[s]:.2f}" for s in seeds]
        target = "-" if g.target_density is None else f"{g.target_density:g}"
        m, sd = g.mean_std("final_acc1")
        lines.append(
            f"| {g.method} | {target} | " + " | ".join(cells) + f" | {_pm(m, sd)} | {len(g.runs)} |"
        )
    return "\n".join(lines)


def csv_table(groups: list[Group]) -> str:
    rows = [g.row() for g in groups]
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()
