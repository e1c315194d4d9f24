"""Training configuration: one dataclass, loaded from YAML/TOML plus overrides, validated strictly.

Every field has help text and a type / range check; an unknown key, a wrong type or an out-of-
range value raises :class:`ConfigError` naming the key (and the closest valid key).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssconv.conversion.same_budget import STRUCTURED_RIVALS
from ssconv.errors import Remedy
from ssconv.layers.pattern import DEPTHWISE_PERIOD
from ssconv.layers.ssconv import DEFAULT_INIT_SCALE, INIT_SCALES, STOCK_BACKENDS
from ssconv.pruning.methods import PRUNING_METHODS
from ssconv.sparsity.budget import AUTO, DISTRIBUTIONS, PREFERENCES, resolve_distribution
from ssconv.sparsity.selection import KEEP_RULES

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "METHODS",
    "PRUNING_METHOD_NAMES",
    "SSC_PRESETS",
]

PRUNING_METHOD_NAMES = PRUNING_METHODS  # (the pruning registry's names)
#: SSC with some settings fixed (the solver picks the rest); group_conv is SSC with period 1.
SSC_PRESETS: dict[str, dict] = {
    "ssc": {},
    # One channel group in every layer: 1 x 1 weights mix all channels (design study, docs/ssc.md).
    "ssc_ungrouped": {"ssc_groups": 1},
    # The default (channel groups mixed by a shuffle folded into each layer) under its study name.
    "ssc_shuffled": {"ssc_shuffle": True},
    # The design before 2026-12-02: stacked layers' groups never mix (docs/ssc.md, "Design study").
    "ssc_unshuffled": {"ssc_shuffle": False},
    "ssc_hetconv": {"ssc_pointwise": True, "ssc_spatial": "full"},
    "ssc_groupwise": {"ssc_pointwise": False, "ssc_spatial": "full"},
    "ssc_checkerboard": {"ssc_spatial": "checkerboard"},
    # The grouped-convolution baseline as usually built: no channel shuffle, uniform densities.
    "group_conv": {
        "ssc_period": 1,
        "ssc_spatial": "full",
        "ssc_shuffle": False,
        "distribution": "uniform",
    },
    # One spatial kernel per filter in every layer: the spatial part is a shifted depthwise
    # convolution (onnxruntime's fast path; docs/ssc.md, "Design study").
    "ssc_depthwise": {"ssc_period": DEPTHWISE_PERIOD},
    # The solver may thin each layer's 1 x 1 part (its own, finer group count) to spend the
    # weights on more spatial kernels (design study, screen 8, docs/ssc.md).
    "ssc_thin_point": {"ssc_point_groups": "auto"},
}
STRUCTURED_BASELINES = STRUCTURED_RIVALS
#: ``torch.compile`` modes (``compile_mode``; ``ssconv bench --compile MODE``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
METHODS = ("dense", *SSC_PRESETS, *STRUCTURED_BASELINES, *PRUNING_METHOD_NAMES)


class ConfigError(ValueError):
    """A bad configuration value; the CLI exits with code 2."""


class ConfigRemedyError(Remedy, ConfigError):
    """A :class:`ConfigError` whose message names the arguments that fix it
    (:class:`ssconv.errors.Remedy`: the CLI renders them as its flags)."""


def _f(default, help: str, **checks):
    """A dataclass field carrying its help text and checks in its metadata."""
    factory = isinstance(default, (list, dict))
    meta = {"help": help, **checks}
    if factory:
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(eq=False)
class TrainConfig:
    """Everything a training run depends on (saved as ``config.yaml`` in the run folder).

    Two configs are equal when their :meth:`to_dict` are: a default ``distribution`` (null)
    equals the value it resolves to, as in the saved config of a run.
    """

    # What to train
    model: str = _f(
        "cifar_resnet20",
        "model name (see `ssconv models`), or timm:NAME / tv:NAME for a timm / torchvision model",
        kind=str,
    )
    model_kwargs: dict = _f({}, "extra builder arguments, e.g. {width_mult: 0.5}", kind=dict)
    pretrained: bool = _f(
        False,
        "start from the pretrained weights of a timm:NAME / tv:NAME model (downloaded by timm / "
        "torchvision on first use); converted layers keep them on their pattern",
        kind=bool,
        neutral=False,
    )
    init_checkpoint: str | None = _f(
        None,
        "dense weights to start from: a state_dict file (.pt / .pth, also under 'state_dict' "
        "or 'model') or .safetensors, loaded into the dense model before conversion (SSC keeps "
        "them on its pattern, pruning masks them)",
        kind=str,
        nullable=True,
        neutral=None,
    )
    dataset: str = _f("embedded", "dataset name (see `ssconv datasets`) or folder:PATH", kind=str)
    data_root: str | None = _f(
        None, "where the dataset lives / is downloaded", kind=str, nullable=True
    )
    download: bool = _f(False, "download the dataset if missing (needs internet)", kind=bool)
    image_size: int | None = _f(
        None, "resize images to this size (default: the dataset's)", kind=int, lo=8, nullable=True
    )
    in_channels: int | None = _f(
        None,
        "image channels of the model's input: 1 (grey) or 3; folder:PATH converts its images to "
        "them (default: the dataset's; folder:PATH: 1 when every image is grey, else 3)",
        kind=int,
        choices=(1, 3),
        nullable=True,
        neutral=None,
    )
    skip_bad_images: bool = _f(
        False,
        "folder:PATH: train without the image files that cannot be decoded (their count is "
        "logged) instead of stopping with their list (default: off)",
        kind=bool,
        neutral=False,
    )
    hflip: bool | None = _f(
        None,
        "random horizontal flip of the training images (default: the dataset's recipe: on, "
        "except synthetic; turn it off for digits, text or symbols)",
        kind=bool,
        nullable=True,
        neutral=None,
    )
    crop_padding: int | None = _f(
        None,
        "padding in pixels of the random training crop at the image size, 0: no random crop "
        "(default: the dataset's: CIFAR 4 at 32 px, Fashion-MNIST 2 at 28 px, Tiny-ImageNet 4 "
        "at 64 px, each scaled with image_size; folder:PATH size/8; not for imagenet, which "
        "uses RandomResizedCrop)",
        kind=int,
        lo=0,
        nullable=True,
        neutral=None,
    )
    method: str = _f(
        "ssc",
        "dense; ssc or an SSC preset (ssc_ungrouped, ssc_shuffled, ssc_unshuffled, ssc_hetconv, "
        "ssc_groupwise, ssc_checkerboard, ssc_depthwise, ssc_thin_point, group_conv); "
        "dw_separable; or a pruning method",
        kind=str,
        choices=METHODS,
    )
    density: float | None = _f(
        0.1,
        "target model density (conv+linear nonzero / dense)",
        kind=float,
        lo=0.0,
        lo_open=True,
        hi=1.0,
        nullable=True,
    )
    distribution: str | None = _f(
        None,
        "layer-wise densities: auto (ERK's below density 0.1, uniform from 0.1 up), uniform, "
        "erk or equal (the same number of weights per layer); null: the method's default (auto "
        "for SSC methods, whose count pruned models match; uniform for masks and the "
        "structured baselines)",
        kind=str,
        choices=DISTRIBUTIONS,
        nullable=True,
    )
    ssc_groups: Any = _f("auto", "SSC groups: int or auto", kind="int_or_auto")
    ssc_period: Any = _f(
        "auto",
        "SSC period: int, none (no spatial kernel), depthwise (the group width: one spatial "
        "kernel per filter) or auto",
        kind="period",
    )
    ssc_pointwise: Any = _f("auto", "SSC 1x1 weights: true, false or auto", kind="bool_or_auto")
    ssc_spatial: str = _f(
        "auto",
        "SSC spatial taps: full, checkerboard or auto",
        kind=str,
        choices=("auto", "full", "checkerboard"),
    )
    ssc_point_groups: Any = _f(
        1,
        "groups of the SSC 1x1 part per SSC group: 1 (the 1x1 weights span the group), an int "
        "or auto (the solver may thin the 1x1 part for more spatial kernels)",
        kind="int_or_auto",
        lo=1,
        neutral=1,
    )
    ssc_prefer: str = _f(
        "weights",
        "what the SSC solver keeps within a layer's share: weights (the densest pattern) or "
        "mixing (patterns no cheaper one beats in input channels per filter)",
        kind=str,
        choices=PREFERENCES,
        neutral="weights",
    )
    ssc_backend: str = _f(
        "auto", "SSC execution backend", kind=str, choices=("auto", *STOCK_BACKENDS)
    )
    keep: list = _f(
        list(KEEP_RULES),
        f"default rules keeping layers dense ({', '.join(KEEP_RULES)})",
        kind=list,
    )
    skip: list = _f([], "name patterns of layers to keep dense", kind=list)
    include: list = _f([], "name patterns of layers to convert / prune anyway", kind=list)
    match_budget: bool = _f(
        True, "prune to exactly the nonzero count SSC reaches at `density`", kind=bool
    )
    prune_scope: str = _f(
        "global", "pruning score ranking: global or layer", kind=str, choices=("global", "layer")
    )
    prune_iterations: int = _f(100, "SynFlow rounds", kind=int, lo=1)
    prune_batches: int = _f(1, "batches scored by SNIP / GraSP", kind=int, lo=1)
    ssc_shuffle: bool | None = _f(
        None,
        "channel mixing across SSC groups: every SSC layer with groups > 1 reads its input in "
        "ShuffleNet's shuffled channel order, folded into the layer (no run-time cost on the "
        "fused kernels); null: the method's default (on for ssc; presets may fix it)",
        kind=bool,
        nullable=True,
        neutral=False,
    )
    init_scale: str = _f(
        DEFAULT_INIT_SCALE,
        "initial weight scale of sparse layers: effective (Kaiming over each filter's nonzero "
        "fan-in), dense (over the dense fan-in, as masking a dense init), balanced (variance "
        "2/sqrt(nonzero*dense)), or as_built (SSC effective, pruned models dense)",
        kind=str,
        choices=("as_built", *INIT_SCALES),
        neutral="as_built",
    )
    # How to train
    epochs: int = _f(10, "training epochs", kind=int, lo=1)
    batch_size: int = _f(128, "batch size (per process)", kind=int, lo=1)
    eval_batch_size: int = _f(256, "evaluation batch size", kind=int, lo=1)
    max_steps: int | None = _f(
        None, "cap on optimizer steps per epoch (quick runs)", kind=int, lo=1, nullable=True
    )
    train_subset: int | None = _f(
        None, "use only the first N training images (seeded choice)", kind=int, lo=1, nullable=True
    )
    optimizer: str = _f("sgd", "sgd or adamw", kind=str, choices=("sgd", "adamw"))
    lr: float = _f(0.1, "peak learning rate", kind=float, lo=0.0, lo_open=True)
    momentum: float = _f(0.9, "SGD momentum", kind=float, lo=0.0, hi=1.0)
    nesterov: bool = _f(False, "Nesterov momentum", kind=bool)
    weight_decay: float = _f(5e-4, "weight decay", kind=float, lo=0.0)
    schedule: str = _f(
        "cosine",
        "lr schedule: multistep, cosine or constant",
        kind=str,
        choices=("multistep", "cosine", "constant"),
    )
    milestones: list = _f([], "multistep: epochs where lr is multiplied by gamma", kind=list)
    gamma: float = _f(0.1, "multistep decay factor", kind=float, lo=0.0, lo_open=True)
    warmup_epochs: float = _f(0.0, "linear warm-up length in epochs", kind=float, lo=0.0)
    label_smoothing: float = _f(0.0, "label smoothing", kind=float, lo=0.0, hi=1.0)
    seed: int = _f(0, "random seed (init, data order, augmentation)", kind=int, lo=0)
    label: str | None = _f(
        None,
        "name of this recipe in reports (a sweep's variant name; default: the method)",
        kind=str,
        nullable=True,
    )
    # Where and how it runs
    workers: int = _f(2, "data loader worker processes", kind=int, lo=0)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", kind=str)
    amp: bool = _f(False, "mixed precision (bfloat16 on CPU, float16 on CUDA)", kind=bool)
    channels_last: bool = _f(False, "channels_last memory format", kind=bool)
    fast_batchnorm: bool = _f(
        False,
        "BatchNorm2d layers on ssconv's NCHW kernels in CPU training (every method alike; "
        "equal to PyTorch's to float32 rounding, 1.7-2.5x faster: docs/benchmarks.md)",
        kind=bool,
        neutral=False,
    )
    fast_pooling: bool = _f(
        False,
        "2 x 2 max pools on ssconv's NCHW kernel in CPU training (every method alike; equal "
        "to PyTorch's, values and gradients: docs/benchmarks.md)",
        kind=bool,
        neutral=False,
    )
    channels_last_chains: bool = _f(
        False,
        "SSC layers that train on the channel-lane kernels hand their outputs to the next in "
        "channels_last, through BatchNorm, activations and pools (ssconv.deploy."
        "chain_channels_last: fewer layout copies; PyTorch's BatchNorm and pools inside "
        "the chains, a different float32 summation order: docs/benchmarks.md)",
        kind=bool,
        neutral=False,
    )
    compile: bool = _f(False, "torch.compile the model", kind=bool)
    compile_mode: str = _f(
        "default",
        "torch.compile mode when compile is on: default, reduce-overhead (CUDA graphs on a "
        "GPU: launch overhead removed), max-autotune or max-autotune-no-cudagraphs",
        kind=str,
        choices=COMPILE_MODES,
        neutral="default",
    )
    # Outputs
    log_every: int = _f(
        0, "also log a metrics row every N steps (0: per epoch only)", kind=int, lo=0
    )
    checkpoint_steps: int = _f(
        0, "also checkpoint every N steps (0: per epoch only)", kind=int, lo=0
    )
    keep_checkpoints: int = _f(2, "newest checkpoints kept", kind=int, lo=1)
    latency_batch: int = _f(
        64, "batch size of the inference latency measured after training (0: skip)", kind=int, lo=0
    )

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The settings, with ``distribution`` as the run uses it (:meth:`resolved_distribution`),
        so that configs that build the same model save and hash alike."""
        data = dataclasses.asdict(self)
        data["distribution"] = self.resolved_distribution()
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, as a dataclass with eq

    def ssc_distribution(self) -> str:
        """SSC's layer distribution in this run: ``distribution``, else the method's preset's,
        else ``"auto"`` (a pruning run with ``match_budget`` matches the count of this SSC)."""
        if self.distribution is not None:
            return self.distribution
        return SSC_PRESETS.get(self.method, {}).get("distribution", AUTO)

    def mask_distribution(self) -> str:
        """The layer distribution of a pruned or structured baseline: ``distribution``, else
        uniform, resolved at ``density`` (not at the density of a matched count, which may lie
        just below it: 26,800 / 268,048 weights for 0.10)."""
        return resolve_distribution(self.distribution or "uniform", self.density)

    def resolved_distribution(self) -> str | None:
        """``distribution`` with ``"auto"`` and the method's default resolved at ``density``:
        SSC methods :meth:`ssc_distribution`, the others :meth:`mask_distribution`, except
        that a pruning method's default, uniform masks matched (``match_budget``) to the count
        of an SSC that takes ERK densities, is ``None`` (a choice no single value names)."""
        if self.method in SSC_PRESETS:
            return resolve_distribution(self.ssc_distribution(), self.density)
        matched_default = (
            self.distribution is None and self.method in PRUNING_METHOD_NAMES and self.match_budget
        )
        if matched_default and resolve_distribution(AUTO, self.density) != "uniform":
            return None
        return self.mask_distribution()

    def digest(self) -> str:
        """Short hash of the settings that change results (run names, resume guard).

        A key added to the schema after runs were made declares a ``neutral`` value, the one
        that does what the code did before the key existed; it is left out of the hash at
        that value, so those runs keep their digest (see :func:`with_neutral_defaults`).
        """
        data = {
            k: v
            for k, v in self.to_dict().items()
            if k not in RUNTIME_KEYS
            and not (k in NEUTRAL and NEUTRAL[k] == v)
            and not (k in SSC_ONLY_KEYS and self.method not in SSC_PRESETS)
        }
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> TrainConfig:
        config = cls(**_check_items(data, source))
        config.check()
        return config

    def check(self) -> None:
        """Cross-field checks."""
        if self.method != "dense" and self.method != "ssc" and self.density is None:
            raise ConfigError(f"density: method {self.method!r} needs a density, e.g. 0.1")
        if self.method == "ssc" and self.density is None and self.ssc_period == "auto":
            raise ConfigError("density: method 'ssc' needs a density or an explicit ssc_period")
        bad = [m for m in self.milestones if not isinstance(m, int) or m < 1]
        if bad:
            raise ConfigError(f"milestones: expected positive integer epochs, got {bad}")
        if self.schedule == "multistep" and not self.milestones:
            raise ConfigError("milestones: schedule 'multistep' needs milestones, e.g. [80, 120]")
        unknown = set(self.keep) - set(KEEP_RULES)
        if unknown:
            raise ConfigError(
                f"keep: unknown rule(s) {sorted(unknown)}; allowed: {', '.join(KEEP_RULES)}"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")


#: Keys that change nothing for ``method: dense`` (they shape or initialize sparse models).
SPARSE_ONLY_KEYS = frozenset(
    {
        "density",
        "distribution",
        "ssc_groups",
        "ssc_period",
        "ssc_pointwise",
        "ssc_spatial",
        "ssc_prefer",
        "ssc_point_groups",
        "ssc_backend",
        "ssc_shuffle",
        "keep",
        "skip",
        "include",
        "match_budget",
        "prune_scope",
        "prune_iterations",
        "prune_batches",
        "init_scale",
    }
)

#: Keys only SSC methods read: left out of other methods' digests (their default changed
#: from off to on on 2026-12-02 without changing what dense or pruned runs do).
SSC_ONLY_KEYS = frozenset({"ssc_shuffle"})

#: Keys added to the schema after runs existed -> the value that reproduces the earlier code.
NEUTRAL = {
    f.name: f.metadata["neutral"]
    for f in dataclasses.fields(TrainConfig)
    if "neutral" in f.metadata
}


def with_neutral_defaults(saved: dict) -> dict:
    """A saved config with the keys it predates filled in by their neutral values."""
    return {**{k: v for k, v in NEUTRAL.items() if k not in saved}, **saved}


# Keys that may differ when resuming a run (they do not change the results).
RUNTIME_KEYS = frozenset(
    {
        "workers",
        "log_every",
        "checkpoint_steps",
        "keep_checkpoints",
        "eval_batch_size",
        "download",
        "data_root",
        "epochs",
        "label",
    }
)


def _check_items(data, source: str) -> dict:
    """Validate each key / value of ``data``; errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        values[key] = _validate(key, value, known[key].metadata, source)
    return values


def _validate(key: str, value, meta, source: str):
    kind = meta.get("kind")
    where = f"{source}: {key}"
    if value is None:
        if meta.get("nullable"):
            return None
        if kind == "period":
            return None
        raise ConfigError(f"{where}: may not be null ({meta['help']})")
    if kind == "int_or_auto":
        if value == "auto":
            return value
        kind = int
    if kind == "bool_or_auto":
        if value == "auto" or isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true, false or auto, got {value!r}")
    if kind == "period":
        if value == "auto":
            return value
        if isinstance(value, str) and value.lower() == "none":
            return None
        if isinstance(value, str) and value.lower() == DEPTHWISE_PERIOD:
            return DEPTHWISE_PERIOD
        kind = int
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if kind in (str, float, list, dict) and not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}{hint}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{where}: must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: must be <= {hi}, got {value!r}")
    return value


def _toml_module():
    """``tomllib`` (Python 3.11+) or its backport ``tomli`` (a dependency on 3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise ConfigError("TOML configs on Python 3.10 need tomli: pip install tomli") from None
    return tomli


def read_config_file(path: str | Path, what: str) -> object:
    """Parse a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file.

    ``what`` names the file in errors (``"--config: file"``, ``"sweep file"``); a missing,
    unreadable or malformed file raises :class:`ConfigError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    toml = path.suffix == ".toml"
    try:
        text = path.read_text()
        if toml:
            return _toml_module().loads(text)
        return yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None


def load_config(
    path: str | Path | None = None,
    overrides: dict | None = None,
    *,
    what: str = "config file",
    overrides_source: str = "overrides",
) -> TrainConfig:
    """Defaults, then the file (YAML ``.yaml/.yml`` or TOML ``.toml``), then ``overrides``.

    ``what`` and ``overrides_source`` name the file and the overrides in errors (the CLI:
    ``"--config: file"``, ``"command line"``)."""
    data: dict = {}
    if path is not None:
        data = _check_items(read_config_file(path, what), str(path))
    data.update(_check_items(overrides or {}, overrides_source))
    return TrainConfig.from_dict(data, source="config")


def field_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
