"""Build the model a run trains: dense, SSC at a budget, or a pruning baseline at the same budget.

"The same budget" is exact: with ``match_budget`` a pruning run first computes the SSC
conversion of the same architecture at ``density`` and prunes to exactly its number of nonzero
weights (conv and linear layers, kept layers included), so SSC and its rivals are compared at
equal parameter counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ssconv.conversion import convert
from ssconv.conversion.same_budget import build_rival, ssc_weight_budget
from ssconv.models import create_model
from ssconv.train.config import (
    PRUNING_METHOD_NAMES,
    SSC_PRESETS,
    STRUCTURED_BASELINES,
    ConfigError,
    ConfigRemedyError,
    TrainConfig,
)

__all__ = ["build_model", "ssc_settings"]

log = logging.getLogger(__name__)


def ssc_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The fixed SSC settings of a config: the method's preset, then explicit ``ssc_*`` keys
    ("auto" ones are left to the solver)."""
    values = {
        "ssc_groups": cfg.ssc_groups,
        "ssc_period": cfg.ssc_period,
        "ssc_pointwise": cfg.ssc_pointwise,
        "ssc_spatial": cfg.ssc_spatial,
        "ssc_prefer": cfg.ssc_prefer,
    }
    preset = {k: v for k, v in SSC_PRESETS.get(cfg.method, {}).items() if k in values}
    merged = {k: (preset[k] if v == "auto" and k in preset else v) for k, v in values.items()}
    out = {k.removeprefix("ssc_"): v for k, v in merged.items() if v != "auto"}
    # point_groups defaults to 1, not to the solver: "auto" is passed on, 1 left out.
    point_groups = cfg.ssc_point_groups
    if point_groups == 1 and "ssc_point_groups" in SSC_PRESETS.get(cfg.method, {}):
        point_groups = SSC_PRESETS[cfg.method]["ssc_point_groups"]
    if point_groups != 1:
        out["point_groups"] = point_groups
    return out


def ssc_shuffle(cfg: TrainConfig) -> bool:
    """Whether an SSC method's grouped layers read shuffled channels: the preset's value where
    it fixes one, else ``cfg.ssc_shuffle``, else the default (on)."""
    preset = SSC_PRESETS.get(cfg.method, {})
    if "ssc_shuffle" in preset:
        return bool(preset["ssc_shuffle"])
    return True if cfg.ssc_shuffle is None else cfg.ssc_shuffle


def _rules(cfg: TrainConfig) -> dict[str, Any]:
    return {"skip": tuple(cfg.skip), "include": tuple(cfg.include), "keep": tuple(cfg.keep)}


def from_weights(cfg: TrainConfig) -> bool:
    """Whether a run starts from given dense weights (``pretrained`` or ``init_checkpoint``)."""
    return bool(cfg.pretrained or cfg.init_checkpoint)


def build_dense(
    cfg: TrainConfig, num_classes: int, in_channels: int, *, load_weights: bool = True
) -> nn.Module:
    """The dense model of ``cfg``; with ``load_weights``, holding the weights of ``pretrained``
    / ``init_checkpoint`` (a :class:`ConfigError` naming the key when they cannot be had)."""
    from ssconv.models.registry import PretrainedWeightsError
    from ssconv.models.weights import WeightsError, load_init_checkpoint

    if cfg.pretrained and cfg.init_checkpoint and load_weights:
        raise ConfigError("pretrained, init_checkpoint: set one of them (both give weights)")
    try:
        model = create_model(
            cfg.model,
            num_classes=num_classes,
            in_channels=in_channels,
            pretrained=cfg.pretrained and load_weights,
            **cfg.model_kwargs,
        )
    except PretrainedWeightsError as exc:
        raise ConfigRemedyError("pretrained: " + exc.template, **exc.values) from None
    if cfg.init_checkpoint and load_weights:
        try:
            load_init_checkpoint(model, cfg.init_checkpoint, what=f"model {cfg.model!r}")
        except WeightsError as exc:
            raise ConfigError(f"init_checkpoint: {exc}") from None
    return model


def build_model(
    cfg: TrainConfig,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int, int],
    data: Callable[[], Iterable] | None = None,
    *,
    for_loading: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of ``cfg.method`` and a JSON-ready description of how it was made.

    Args:
        data: returns an iterable of ``(images, labels)`` batches for data-driven pruning.
        for_loading: only build the structure a checkpoint will be loaded into (a pruned
            model is returned dense: its masks come from the checkpoint, see
            :func:`ssconv.pruning.prepare_masks`).
    """
    model, info = _build_model(
        cfg, num_classes, in_channels, input_size, data, for_loading=for_loading
    )
    if from_weights(cfg):
        # Dense weights given: converted layers hold them on their pattern, pruned ones masked;
        # no initialization rule applies.
        info["init"] = "pretrained" if cfg.pretrained else f"init_checkpoint {cfg.init_checkpoint}"
    elif cfg.init_scale != "as_built" and not for_loading:
        from ssconv.sparsity import rescale_init

        rescale_init(model, cfg.init_scale)
    info["init_scale"] = cfg.init_scale
    return model, info


def _build_model(cfg, num_classes, in_channels, input_size, data, *, for_loading):
    """:func:`build_model` before the initialization rule (SSC layers hold
    their construction-time ``effective`` initialization, pruned ones the dense model's)."""
    # A structure to load a checkpoint into needs no weights (nor a download).
    model = build_dense(cfg, num_classes, in_channels, load_weights=not for_loading)
    info: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "dense" or (for_loading and cfg.method in PRUNING_METHOD_NAMES):
        return model, info
    if cfg.method in STRUCTURED_BASELINES:
        if from_weights(cfg) and not for_loading:
            log.warning(
                "dw_separable: the layers it replaces start fresh (their dense weights do not "
                "carry over to depthwise + pointwise); the other layers keep the given weights"
            )
        report = build_rival(
            model,
            cfg.method,
            density=cfg.density,
            distribution=cfg.mask_distribution(),
            **_rules(cfg),
        )
        info["conversion"] = report.to_dict()
        info["target_density"] = cfg.density
        info["density"] = report.density
        return report.model, info
    if cfg.method in SSC_PRESETS:
        report = convert(
            model,
            density=cfg.density,
            distribution=cfg.ssc_distribution(),
            inplace=True,
            backend=cfg.ssc_backend,
            warn_coverage=False,
            init_scale="effective",  # build_model applies cfg.init_scale to every method
            copy_weights=from_weights(cfg),  # pretrained dense weights, kept on the pattern
            shuffle=ssc_shuffle(cfg),
            **ssc_settings(cfg),
            **_rules(cfg),
        )
        for issue in report.coverage:
            log.warning("SSC coverage: %s", issue.message)
        info["conversion"] = report.to_dict()
        info["target_density"] = cfg.density
        info["density"] = report.density
        info["shuffle"] = ssc_shuffle(cfg)
        return report.model, info
    if cfg.method in PRUNING_METHOD_NAMES:
        num_params = None
        if cfg.match_budget:
            num_params = ssc_weight_budget(
                model,
                cfg.density,
                distribution=cfg.ssc_distribution(),
                settings=ssc_settings(cfg),
                **_rules(cfg),
            )
            info["matched_ssc_params"] = num_params
        batches = data() if (data is not None and cfg.method in ("snip", "grasp")) else None
        report = build_rival(
            model,
            cfg.method,
            density=cfg.density,
            num_params=num_params,
            data=batches,
            input_size=input_size,
            scope=cfg.prune_scope,
            iterations=cfg.prune_iterations,
            batches=cfg.prune_batches,
            seed=cfg.seed,
            distribution=cfg.mask_distribution(),
            **_rules(cfg),
        )
        info["pruning"] = report.to_dict()
        info["target_density"] = cfg.density
        info["density"] = report.density
        return model, info
    raise ValueError(f"unknown method {cfg.method!r}")
