"""One training loop for every method: dense, SSC, or a pruning baseline.

A run writes a folder::

    OUT/
      config.yaml       resolved configuration
      method.json       how the model was made (conversion / pruning report)
      metrics.jsonl     one JSON row per epoch (and per N steps with log_every)
      profile.txt/json  per-layer params and MACs of the trained model
      final.json        final and best accuracy, params, MACs, time
      best.safetensors  weights only, of the epoch with the best validation top-1 so far
      model.safetensors weights only, final (both: ssconv.train.checkpoint.save_weights)
      checkpoints/      atomic, rotated checkpoints (see ssconv.train.checkpoint)
      tb/               TensorBoard events when tensorboard is installed

Resuming restores the model (masks included), optimizer, scheduler, grad scaler, all RNG states
and the position inside the epoch, so that an interrupted and resumed run ends with the same
weights, metrics rows and RNG state, bit for bit on CPU, as an uninterrupted one (also for models
with Dropout: data loaders draw their seeds from generators of their own, never from the global
RNG; see :mod:`ssconv.train.loader`).

Fault tolerance:

* Every file is written atomically or appended row by row (``metrics.jsonl``); a resume drops
  the metrics rows the checkpoint does not cover (and a torn last line), so rows are never
  duplicated or lost across kills.
* Non-finite losses and gradients are caught before the optimizer step, and a checkpoint is
  written only of finite weights (and after an epoch only if its validation loss is finite):
  after :class:`NonFiniteLossError` the newest checkpoint is a good one.
* A full disk, a permission error or a read-only file system raises :class:`OutputError`
  naming the file and the errno (the CLI exits 2); the checkpoints already saved are intact.
* A start that fails before ``config.yaml`` is written leaves nothing that blocks a rerun.
* ``epochs`` may change on resume only where it does not change the learning-rate schedule of
  the steps already trained (see :func:`schedule_changes`), unless explicitly allowed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ssconv import profile
from ssconv.errors import LIBRARY_NAMES, RemedyError, render_template
from ssconv.train.checkpoint import (
    BEST_WEIGHTS,
    FINAL_WEIGHTS,
    CheckpointError,
    atomic_write_text,
    checkpoint_name,
    fsync_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    remove_temporaries,
    save_checkpoint,
    save_weights,
    with_filename,
)
from ssconv.train.config import RUNTIME_KEYS, ConfigError, TrainConfig, with_neutral_defaults
from ssconv.train.loader import (
    EpochBatchSampler,
    SeededDataset,
    loader_generator,
    worker_init,
)
from ssconv.train.methods import build_model

__all__ = [
    "Trainer",
    "TrainResult",
    "RunFolderError",
    "OutputError",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "ResumeMismatchError",
    "evaluate_model",
    "load_trained_model",
    "read_metrics",
    "schedule_changes",
    "SCHEDULE_KEYS",
    "train",
]

log = logging.getLogger(__name__)


class RunFolderError(RemedyError):
    """The output folder cannot be used (not empty without ``resume`` / ``overwrite``); the
    message names the arguments that fix it (:class:`ssconv.errors.Remedy`)."""


class OutputError(RunFolderError):
    """Writing the run folder failed: disk full, permission denied, read-only file system."""

    @classmethod
    def from_os_error(cls, exc: OSError, out: Path) -> OutputError:
        template, values = _os_error_template(exc, out)
        return cls(template, **values)


#: errnos of a run folder that cannot be written (a user / environment error, not a bug).
WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EFBIG",
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOTDIR",
        "EISDIR",
        "ENAMETOOLONG",
    )
    if hasattr(errno, name)
)
_HINTS = {
    "ENOSPC": "the disk is full: free some space",
    "EDQUOT": "the disk quota is used up: free some space",
    "EFBIG": "the file is too large for this file system",
    "EACCES": "permission denied: make it writable or choose another {out}",
    "EPERM": "operation not permitted: make it writable or choose another {out}",
    "EROFS": "the file system is read-only: choose another {out}",
    "ENOTDIR": "a part of the path is a file, not a folder: choose another {out}",
    "EISDIR": "a folder is in the way of a file: choose another {out}",
    "ENAMETOOLONG": "the path is too long: choose a shorter {out}",
}


def _os_error_template(exc: OSError, out: Path) -> tuple[str, dict]:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    values = {
        "path": repr(str(exc.filename or out)),
        "errno": name,
        "strerror": exc.strerror,
        "saved": repr(str(out / "checkpoints")),
    }
    template = "cannot write {path}: {errno} ({strerror}); " + _HINTS.get(name, "check it")
    saved = list_checkpoints(out / "checkpoints")
    if saved:
        values["newest"] = saved[0].name
        template += (
            "; the checkpoints already saved in {saved} are intact (newest: {newest}): "
            "continue with {resume}"
        )
    return template, values


def describe_os_error(exc: OSError, out: Path, names: Mapping[str, str] | None = None) -> str:
    """A user-facing sentence for a failed write: the file, the errno name, what to do (the
    arguments named as ``names`` gives them: see :class:`ssconv.errors.Remedy`)."""
    return render_template(*_os_error_template(exc, out), names)


#: Keys that may differ on resume (RUNTIME_KEYS) but define the learning-rate schedule.
SCHEDULE_KEYS = ("epochs",)


def schedule_changes(saved: dict, cfg: TrainConfig, epochs_started: int) -> list[str]:
    """Why resuming a run saved with config ``saved`` under ``cfg`` would not match an
    uninterrupted run of ``cfg`` (empty if it would).

    ``epochs_started``: epochs the checkpoint has begun (completed, plus one if it is
    mid-epoch). ``epochs`` sets the horizon of the cosine schedule, so changing it changes the
    learning rate of every step already trained; with a constant or multistep schedule
    (milestones are absolute epochs) more epochs continue the run exactly, but not fewer than
    it has already trained.
    """
    old, new = saved.get("epochs"), cfg.epochs
    if old is None or old == new:
        return []
    if cfg.schedule == "cosine":
        why = "epochs sets the horizon of the cosine learning-rate schedule, so the steps "
        why += "already trained followed another schedule than the new value describes"
    elif new < epochs_started:
        why = f"the run has already trained into epoch {epochs_started}"
    else:
        return []
    return [f"epochs: saved {old!r} vs now {new!r} ({why})"]


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``, skipping a torn line (a kill during the append)."""
    return [row for _, row in _metric_lines(Path(path))]


def _metric_lines(path: Path) -> list[tuple[str, dict]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s: skipping the torn line %d (a kill during its write)", path, number)
            continue
        if isinstance(row, dict):
            rows.append((line, row))
    return rows


#: What a start that failed (or was killed) before writing config.yaml can leave in OUT.
_LEFTOVER_FILES = frozenset({"train.log"})


def _is_leftover(path: Path) -> bool:
    name = path.name
    return path.is_file() and (
        name in _LEFTOVER_FILES or (name.startswith(".") and name.endswith(".tmp"))
    )


def _all_finite(tensors) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


class ResumeMismatchError(RemedyError):
    """The resumed run's configuration differs from the saved one."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Stopped by SIGINT / SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        if checkpoint is None:  # the run had finished: nothing to resume
            super().__init__(f"stopped by {name} after the run finished (its results are saved)")
        else:
            super().__init__(f"stopped by {name}; checkpoint saved to {checkpoint}")

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message, with how to resume named as ``names`` gives it (``--resume``)."""
        text = str(self)
        if self.checkpoint is None:
            return text
        return f"{text}; resume with {({**LIBRARY_NAMES, **(names or {})})['resume']}"


@dataclass
class TrainResult:
    out: Path
    final: dict[str, Any]
    model: nn.Module = field(repr=False)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available")
    return device


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_lists(random.getstate()),
    }


def _python_state_to_lists(state):
    if isinstance(state, tuple):
        return [_python_state_to_lists(s) for s in state]
    return state


def _lists_to_tuples(state):
    if isinstance(state, list):
        return tuple(_lists_to_tuples(s) for s in state)
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for index in range(min(len(cuda), torch.cuda.device_count())):
            torch.cuda.set_rng_state(cuda[index], index)
    npd = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npd["keys"].numpy().astype(np.uint32),
            npd["pos"],
            npd["has_gauss"],
            npd["cached_gaussian"],
        )
    )
    random.setstate(_lists_to_tuples(state["python"]))


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    milestones = sorted(m * steps_per_epoch for m in cfg.milestones)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def _topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    k_max = min(max(ks), logits.shape[1])
    pred = logits.topk(k_max, dim=1).indices  # (N, k)
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, k_max)].any(1).sum()) for k in ks]


class Trainer:
    """Runs one configuration into one output folder (``train()`` is the entry point).

    Args:
        resume: True: continue the run in ``out`` (refused when there is none: a missing or
            empty folder); ``"auto"``: continue it if there is one, else start (sweeps).
        overwrite: replace the run in ``out``.
        allow_schedule_change: resume even where a changed ``epochs`` changes the
            learning-rate schedule of the steps already trained (see :func:`schedule_changes`).
        ignore: names of files in ``out`` that do not count as its content (a sweep's lock;
            also ``NAME.*``).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out: str | Path,
        *,
        resume: bool | str = False,
        overwrite: bool = False,
        progress: bool | None = None,
        callbacks: list[Callable[[Trainer], None]] | None = None,
        ignore: tuple[str, ...] = (),
        allow_schedule_change: bool = False,
    ) -> None:
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume: expected True, False or 'auto', got {resume!r}")
        self.cfg = cfg
        self.ignore = ignore  # file names in OUT that do not make it "non-empty" (sweep locks)
        self.out = Path(out)
        self.resume = resume
        self.overwrite = overwrite
        self.allow_schedule_change = allow_schedule_change
        self._started = False  # OUT holds a run (config.yaml written, or resumed)
        self.progress = progress
        self.callbacks = callbacks or []
        self.rank, self.world, self.local_rank = _distributed()
        self.is_main = self.rank == 0
        self.global_step = 0
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # batches done in the current epoch
        self.best_acc = 0.0
        self.best_epoch: int | None = None  # the epoch best.safetensors holds (None: none yet)
        self._wall_before = 0.0  # seconds trained by the processes this run resumed from
        self._stop_signal: int | None = None

    # ---------------------------------------------------------------- folder
    def _ignored(self, name: str) -> bool:
        return any(name == i or name.startswith(i + ".") for i in self.ignore)

    def _prepare_folder(self) -> tuple[Path, dict] | None:
        """Check the run folder; return the newest valid checkpoint when resuming."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunFolderError(
                "{out} {path} is a file, not a folder; pass the path of a folder (a new one, "
                "or an ssconv run folder with {resume} / {overwrite})",
                path=repr(str(out)),
            )
        existing = [p for p in out.iterdir() if not self._ignored(p.name)] if out.is_dir() else []
        if existing and all(_is_leftover(p) for p in existing):
            # A start that failed or was killed before it wrote config.yaml: not a run.
            log.info("%s: removing what a failed start left (%s)", out, [p.name for p in existing])
            if self.is_main:
                for p in existing:
                    p.unlink(missing_ok=True)
            existing = []
        if not existing:
            if self.resume is True:
                what = "does not exist" if not out.exists() else "is empty"
                raise RunFolderError(
                    "{resume}: nothing to resume: {out} {path} {what}; drop {resume} to start "
                    "a new run there",
                    path=repr(str(out)),
                    what=what,
                )
            return None
        is_run = (out / "config.yaml").is_file() or bool(list_checkpoints(out / "checkpoints"))
        if not self.resume:
            if not self.overwrite:
                raise RunFolderError(
                    "{out} {path} is not empty; pass {resume} to continue that run or "
                    "{overwrite} to replace it",
                    path=repr(str(out)),
                )
            if not is_run:
                raise RunFolderError(
                    "{overwrite} refused: {path} does not look like an ssconv run folder (no "
                    "config.yaml); choose another {out}",
                    path=repr(str(out)),
                )
            if self.is_main:
                for p in existing:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            return None
        if not is_run:
            raise RunFolderError(
                "{resume}: {path} holds no ssconv run (no config.yaml, no checkpoints); drop "
                "{resume} and choose an empty or new {out}",
                path=repr(str(out)),
            )
        self._started = True
        if self.is_main:
            for leftover in remove_temporaries(out / "checkpoints") + remove_temporaries(out):
                log.info("removed %s, the temporary file of a write that never finished", leftover)
        found = latest_checkpoint(out / "checkpoints")
        if found is None:
            broken = list_checkpoints(out / "checkpoints")
            if broken:
                raise CheckpointError(
                    f"cannot resume: no usable checkpoint in {str(out / 'checkpoints')!r} "
                    f"(broken: {', '.join(p.name for p in broken)})"
                )
            saved = self._saved_config()
            if saved is not None:
                self._check_resume_config(saved, None)
            log.warning("resuming: no checkpoint in %s yet; starting from scratch", out)
        return found

    def _saved_config(self) -> dict | None:
        try:
            saved = yaml.safe_load((self.out / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        return saved if isinstance(saved, dict) else None

    def _check_resume_config(self, saved: dict, state: dict | None) -> None:
        """Refuse to resume under other results-relevant settings; ``state``: the checkpoint
        (None: nothing trained yet, so only the saved config.yaml is compared)."""
        saved = with_neutral_defaults(saved)
        mine = self.cfg.to_dict()
        diff = {
            k: (saved.get(k), mine[k])
            for k in mine
            if k not in RUNTIME_KEYS and saved.get(k) != mine[k]
        }
        if diff:
            lines = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ResumeMismatchError(
                "{resume}: the configuration differs from the run's ({lines}); resume with the "
                "same settings or start a new run in another {out}",
                lines=lines,
            )
        if state is None:
            return
        started = int(state["epoch"]) + (1 if state.get("step_in_epoch") else 0)
        changes = schedule_changes(saved, self.cfg, started)
        if not changes:
            return
        text = "; ".join(changes)
        if not self.allow_schedule_change:
            raise ResumeMismatchError(
                "{resume}: {text}. Resume with the saved value ({epochs} {saved}), start a new "
                "run in another {out}, or pass {allow_schedule_change} to continue anyway (the "
                "run then follows neither schedule)",
                text=text,
                saved=saved["epochs"],
            )
        log.warning("resuming with a changed schedule (allow_schedule_change): %s", text)

    # ------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if (cfg.device != "cpu" and torch.cuda.is_available()) else "gloo"
            dist.init_process_group(backend)
        try:
            return self._run()
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise OutputError.from_os_error(exc, self.out) from exc
            raise
        finally:
            if self.world > 1 and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self) -> TrainResult:
        if self.world == 1:
            found = self._prepare_folder()
        else:
            # Rank 0 inspects the folder; everybody resumes from the same checkpoint (or fails
            # with the same error instead of waiting forever).
            found, error = None, None
            if self.is_main:
                try:
                    found = self._prepare_folder()
                except (RunFolderError, CheckpointError, ResumeMismatchError) as exc:
                    error = exc
            holder = [str(found[0]) if found else None, repr(error) if error else None]
            dist.broadcast_object_list(holder, src=0)
            if error is not None:
                raise error
            if holder[1] is not None:
                raise RunFolderError(
                    "rank 0 could not use the run folder: {error}", error=holder[1]
                )
            if not self.is_main and holder[0] is not None:
                found = (Path(holder[0]), load_checkpoint(holder[0]))
        if found is not None:
            self._check_resume_config(found[1]["config"], found[1])
        created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        # OUT/train.log receives what the "ssconv" loggers emit at the level the application
        # configured (the CLI sets INFO).
        handler = None
        logger = logging.getLogger("ssconv")
        if self.is_main:
            handler = logging.FileHandler(self.out / "train.log")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
        try:
            # Signals are handled from here on: one arriving during set-up stops the run at
            # its first step boundary, after saving a checkpoint.
            previous = self._install_signal_handlers()
            try:
                return self._run_in_folder(found)
            finally:
                self._restore_signal_handlers(previous)
        except BaseException:
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()
                handler = None
            if self.is_main and not self._started:
                self._clean_failed_start(created)
            raise
        finally:
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()

    def _clean_failed_start(self, created: bool) -> None:
        """Remove what a start that failed before config.yaml was written left, so that the
        same command can simply be run again (the error itself went to the console)."""
        for path in [self.out / name for name in _LEFTOVER_FILES] + [
            p for p in self.out.glob(".*.tmp")
        ]:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only if empty

    def _run_in_folder(self, found) -> TrainResult:
        from ssconv.data import build_dataset
        from ssconv.data.transforms import Augment

        cfg = self.cfg
        device = _resolve_device(cfg.device, self.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = device

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        root = cfg.data_root
        # folder:PATH data is verified here, before anything is trained (an unreadable image
        # stops the start, or is left out with skip_bad_images); the test split gets the
        # training split's channels. A resumed run keeps the channels it was trained with
        # (a grey folder's run from before in_channels existed has 3).
        in_channels = cfg.in_channels
        if in_channels is None and found is not None and "data_info" in found[1]:
            in_channels = found[1]["data_info"]["input_size"][0]
        train_set, info = build_dataset(
            cfg.dataset,
            root=root,
            train=True,
            download=cfg.download,
            augment=Augment(hflip=cfg.hflip, crop_padding=cfg.crop_padding),
            size=cfg.image_size,
            in_channels=in_channels,
            skip_bad_images=cfg.skip_bad_images,
        )
        test_set, _ = build_dataset(
            cfg.dataset,
            root=root,
            train=False,
            download=cfg.download,
            augment=False,
            size=cfg.image_size,
            in_channels=info.in_channels,
            skip_bad_images=cfg.skip_bad_images,
        )
        if cfg.train_subset is not None and cfg.train_subset < len(train_set):
            g = torch.Generator().manual_seed(cfg.seed)
            subset = torch.randperm(len(train_set), generator=g)[: cfg.train_subset].tolist()
            train_set = torch.utils.data.Subset(train_set, sorted(subset))
        self.info = info
        self.train_set = SeededDataset(train_set, cfg.seed)
        self.test_set = test_set
        num_classes = info.num_classes

        def prune_batches():
            sampler = EpochBatchSampler(
                len(self.train_set),
                cfg.batch_size,
                seed=cfg.seed,
                epoch=10**6,
                max_batches=cfg.prune_batches,
            )
            loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=0)
            return list(loader)

        # When resuming, the masks come from the checkpoint: no pruning scores to compute.
        model, method_info = build_model(
            cfg,
            num_classes,
            info.input_size[0],
            info.input_size,
            data=prune_batches,
            for_loading=found is not None,
        )
        if found is not None:
            # Masks first: registering them reorders parameters, and the optimizer's state is
            # matched to parameters by position.
            from ssconv.pruning import prepare_masks

            prepare_masks(model, found[1]["model"])
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.fast_batchnorm:
            from ssconv.layers.batchnorm import fast_batchnorm

            fast_batchnorm(model)  # same tensors: the optimizer and state_dict are unaffected
        if cfg.fast_pooling:
            from ssconv.layers.pooling import fast_pooling

            fast_pooling(model)  # no parameters or buffers
        if cfg.channels_last_chains:
            from ssconv.deploy import chain_channels_last

            chain_channels_last(model)  # layer attributes only: no parameters or buffers
        self.model = model

        steps_per_epoch = EpochBatchSampler(
            len(self.train_set),
            cfg.batch_size,
            seed=cfg.seed,
            epoch=0,
            rank=self.rank,
            world=self.world,
            max_batches=cfg.max_steps,
        ).num_batches()
        if steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size: {cfg.batch_size} (x {self.world} processes) is larger than the "
                f"{len(self.train_set)} training images; lower it"
            )
        self.steps_per_epoch = steps_per_epoch
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov and cfg.momentum > 0,
                weight_decay=cfg.weight_decay,
            )
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
        use_scaler = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler

        if found is not None:
            path, state = found
            self._load_state(state)
            log.info(
                "resumed from %s (epoch %d, step %d of %d)",
                path.name,
                self.epoch,
                self.step_in_epoch,
                steps_per_epoch,
            )
            method_info = json.loads((self.out / "method.json").read_text())
            if self.is_main and with_neutral_defaults(state["config"]) != cfg.to_dict():
                # Runtime keys (workers, epochs where allowed, ...) changed: config.yaml says
                # what the run now is.
                atomic_write_text(
                    self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
                )
        elif self.is_main:
            # config.yaml first: from then on the folder is a run (resumable, or --overwrite).
            atomic_write_text(
                self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            )
            self._started = True
            atomic_write_text(self.out / "method.json", json.dumps(method_info, indent=2))
            atomic_write_text(self.out / "metrics.jsonl", "")

        train_model: nn.Module = model
        if self.world > 1:
            ddp_ids = [device.index] if device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(model, device_ids=ddp_ids)
        if cfg.compile:
            mode = None if cfg.compile_mode == "default" else cfg.compile_mode
            train_model = torch.compile(train_model, mode=mode)
        self.train_model = train_model

        writer = self._tensorboard()
        self._wall_start = time.time()
        try:
            while self.epoch < cfg.epochs:
                self._train_epoch(writer)
        finally:
            if writer is not None:
                writer.close()
        final = self._finish(self._wall_time(), method_info)
        return TrainResult(self.out, final, model)

    # ------------------------------------------------------------ one epoch
    def _autocast(self):
        if not self.cfg.amp:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _train_epoch(self, writer) -> dict:
        cfg, model = self.cfg, self.train_model
        sampler = EpochBatchSampler(
            len(self.train_set),
            cfg.batch_size,
            seed=cfg.seed,
            epoch=self.epoch,
            rank=self.rank,
            world=self.world,
            start_batch=self.step_in_epoch,
            max_batches=cfg.max_steps,
        )
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            # Its own generator: a new iterator must not draw from the global RNG (restored on
            # resume, used by Dropout), or a resumed run would not be bit-identical.
            generator=loader_generator(cfg.seed, self.epoch, self.rank, 0x10ADE5),
            worker_init_fn=worker_init() if cfg.workers else None,
        )
        model.train()
        sums = torch.zeros(4, dtype=torch.float64)  # loss * n, correct1, correct5, n
        if self.step_in_epoch and getattr(self, "_epoch_sums", None) is not None:
            sums = self._epoch_sums
        epoch_start = time.time()
        images = 0
        bar = self._progress(len(sampler))
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            bad = not bool(torch.isfinite(loss.detach()))
            flags = torch.tensor([float(bad), float(self._stop_signal is not None)])
            if self.world > 1:
                dist.all_reduce(flags)
            if flags[0] > 0:
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {self.epoch + 1}, step "
                    f"{self.step_in_epoch + 1}; the last good checkpoint is kept in "
                    f"{self.out / 'checkpoints'}; lower lr or disable amp"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            # A finite loss can still have inf / nan gradients; the update would make the
            # weights non-finite. (With a grad scaler, AMP skips such steps by itself.)
            if not self.scaler.is_enabled() and not _all_finite(
                p.grad
                for group in self.optimizer.param_groups
                for p in group["params"]
                if p.grad is not None
            ):
                raise NonFiniteLossError(
                    f"the gradients became non-finite (nan or inf) at epoch {self.epoch + 1}, "
                    f"step {self.step_in_epoch + 1} (loss {loss.item():.6g}); the update was "
                    f"not applied and the last good checkpoint is kept in "
                    f"{self.out / 'checkpoints'}; lower lr or disable amp"
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.global_step += 1
            self.step_in_epoch += 1
            n = y.shape[0]
            images += n
            c1, c5 = _topk_correct(logits.detach().float(), y)
            sums += torch.tensor([loss.item() * n, c1, c5, n], dtype=torch.float64)
            self._epoch_sums = sums
            if bar is not None:
                rate = images / max(time.time() - epoch_start, 1e-9)
                bar.set_postfix(
                    loss=f"{sums[0] / sums[3]:.3f}",
                    acc=f"{sums[1] / sums[3]:.3f}",
                    img_s=f"{rate:.0f}",
                )
                bar.update(1)
            if cfg.log_every and self.global_step % cfg.log_every == 0:
                self._log_row(
                    {
                        "kind": "step",
                        "epoch": self.epoch + 1,
                        "step": self.global_step,
                        "loss": loss.item(),
                        "lr": self.optimizer.param_groups[0]["lr"],
                    },
                    writer,
                )
            for callback in self.callbacks:
                callback(self)
            stop = self._stop_signal is not None or flags[1] > 0
            if stop or (cfg.checkpoint_steps and self.global_step % cfg.checkpoint_steps == 0):
                path = self._save()
                if stop:
                    if bar is not None:
                        bar.close()
                    raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, path)
        if bar is not None:
            bar.close()
        elapsed = time.time() - epoch_start
        if self.world > 1:
            dist.all_reduce(sums)
        val = self.evaluate(self.test_set)
        if not math.isfinite(val["loss"]):
            raise NonFiniteLossError(
                f"the validation loss became {val['loss']} after epoch {self.epoch + 1}; no "
                f"checkpoint of this epoch was written and the last good one is kept in "
                f"{self.out / 'checkpoints'}; lower lr or disable amp"
            )
        self.epoch += 1
        self.step_in_epoch = 0
        self._epoch_sums = None
        n = max(sums[3].item(), 1)
        row = {
            "kind": "epoch",
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": sums[0].item() / n,
            "train_acc1": sums[1].item() / n,
            "train_acc5": sums[2].item() / n,
            "val_loss": val["loss"],
            "val_acc1": val["acc1"],
            "val_acc5": val["acc5"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": images * self.world / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            "wall_time": time.time(),
        }
        # The first epoch with the highest top-1 (ties keep the earlier one).
        improved = self.best_epoch is None or val["acc1"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = val["acc1"], self.epoch
        self._log_row(row, writer)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f (top-5 %.4f)  %.0f img/s",
            self.epoch,
            self.cfg.epochs,
            row["train_loss"],
            row["train_acc1"],
            row["val_acc1"],
            row["val_acc5"],
            row["images_per_s"],
        )
        self._save(best=improved)
        return row

    def evaluate(self, dataset) -> dict[str, float]:
        """Loss and top-1 / top-5 accuracy of the model on ``dataset`` (all processes)."""
        return evaluate_model(
            self.model,
            dataset,
            batch_size=self.cfg.eval_batch_size,
            device=self.device,
            workers=self.cfg.workers,
            channels_last=self.cfg.channels_last,
            autocast=self._autocast,
            rank=self.rank,
            world=self.world,
        )

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "epoch_sums": getattr(self, "_epoch_sums", None),
            "data_info": self._data_info(),
            "wall_time_s": self._wall_time(),
        }

    def _wall_time(self) -> float:
        """Seconds this run has trained, over every process that resumed it."""
        start = getattr(self, "_wall_start", None)
        return self._wall_before + (0.0 if start is None else time.time() - start)

    def _data_info(self) -> dict[str, Any]:
        return {"num_classes": self.info.num_classes, "input_size": list(self.info.input_size)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_acc = state["best_acc"]
        # 0: a checkpoint from before best.safetensors (its best epoch is not known).
        self.best_epoch = state.get("best_epoch", 0)
        self._epoch_sums = state.get("epoch_sums")
        # Checkpoints from before the key existed: the time of earlier processes is unknown.
        self._wall_before = float(state.get("wall_time_s", 0.0))
        if self.is_main:
            self._truncate_metrics(self.epoch, self.global_step)

    def _save(self, best: bool = False) -> Path | None:
        # Never a checkpoint of a diverged model: it would rotate the good ones away.
        finite = _all_finite(v for v in self.model.state_dict().values() if v.is_floating_point())
        if self.world > 1:  # every process stops, or none
            on = self.device if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([0.0 if finite else 1.0], device=on)
            dist.all_reduce(flag)
            finite = flag.item() == 0
        if not finite:
            raise NonFiniteLossError(
                f"the model's weights or buffers became non-finite (nan or inf) after step "
                f"{self.global_step}; no checkpoint of it was written and the last good one is "
                f"kept in {self.out / 'checkpoints'}; lower lr or disable amp"
            )
        if not self.is_main:
            return None
        self._sync_metrics()  # the rows this checkpoint covers are on disk before it
        if best:  # before the checkpoint: a resume from it never misses the best weights
            self._save_weights(BEST_WEIGHTS)
        name = checkpoint_name(self.epoch, self.global_step)
        return save_checkpoint(
            self.state_dict(), self.out / "checkpoints", name, keep=self.cfg.keep_checkpoints
        )

    def _save_weights(self, name: str) -> Path:
        """The model's weights only, with what rebuilds it (see :func:`ssconv.load_run`)."""
        meta = {
            "config": self.cfg.to_dict(),
            "data_info": self._data_info(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_epoch": self.best_epoch,
            "best_acc1": self.best_acc,
        }
        return save_weights(self.model.state_dict(), self.out / name, metadata=meta)

    def _truncate_metrics(self, epoch: int, step: int) -> None:
        """Keep exactly the metric rows the checkpoint we resume from covers: epoch rows of its
        completed epochs, step rows up to its step (no duplicates, no torn line)."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(errors="replace").splitlines()
        kept = [
            line
            for line, row in _metric_lines(path)
            if (row.get("epoch", 0) <= epoch if row.get("kind") == "epoch" else True)
            and row.get("step", 0) <= step
        ]
        if kept != [line for line in lines if line.strip()]:
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _sync_metrics(self) -> None:
        fsync_path(self.out / "metrics.jsonl")

    # ------------------------------------------------------------- outputs
    def _log_row(self, row: dict, writer) -> None:
        if not self.is_main:
            return
        path = self.out / "metrics.jsonl"
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise with_filename(exc, path) from None
        if writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step", "wall_time"):
                    writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def _tensorboard(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed; no event files written")
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _progress(self, total: int):
        if not self.is_main or self.progress is False:
            return None
        from tqdm.auto import tqdm

        # disable=None: quiet when stderr is not a terminal (logs, CI), unless forced on.
        return tqdm(
            total=total,
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=None if self.progress is None else False,
            dynamic_ncols=True,
        )

    def _finish(self, wall: float, method_info: dict) -> dict[str, Any]:
        final: dict[str, Any] = {}
        if self.is_main:
            rows = read_metrics(self.out / "metrics.jsonl")
            epochs = [r for r in rows if r.get("kind") == "epoch"]
            prof = profile(self.model, (1, *self.info.input_size))
            atomic_write_text(self.out / "profile.txt", prof.table() + "\n")
            atomic_write_text(self.out / "profile.json", prof.to_json(indent=2))
            latency = self._latency()
            final = {
                "method": self.cfg.method,
                "model": self.cfg.model,
                "dataset": self.cfg.dataset,
                "target_density": method_info.get("target_density"),
                "density": prof.density,
                "weight_params": prof.weight_params,
                "params": prof.total_params,
                "effective_macs": prof.effective_macs,
                "executed_macs": prof.executed_macs,
                "epochs": self.epoch,
                "final_acc1": epochs[-1]["val_acc1"] if epochs else None,
                "final_acc5": epochs[-1]["val_acc5"] if epochs else None,
                "best_acc1": max((r["val_acc1"] for r in epochs), default=None),
                "best_epoch": self.best_epoch,
                "mean_epoch_time_s": (
                    sum(r["epoch_time_s"] for r in epochs) / len(epochs) if epochs else None
                ),
                # Epochs after the first (which pays kernel builds, caches and warm-up).
                "steady_epoch_time_s": (
                    sum(r["epoch_time_s"] for r in epochs[1:]) / (len(epochs) - 1)
                    if len(epochs) > 1
                    else (epochs[0]["epoch_time_s"] if epochs else None)
                ),
                "images_per_s": epochs[-1]["images_per_s"] if epochs else None,
                "latency_ms": latency,
                "latency_batch": self.cfg.latency_batch,
                "threads": torch.get_num_threads(),
                "device": str(self.device),
                "wall_time_s": wall,
                "complete": self.epoch >= self.cfg.epochs,
                "config_digest": self.cfg.digest(),
            }
            self._save_weights(FINAL_WEIGHTS)
            atomic_write_text(self.out / "final.json", json.dumps(final, indent=2))
        return final

    @torch.inference_mode()
    def _latency(self) -> float | None:
        """Median inference time (ms) of one batch of ``latency_batch`` images, eval mode."""
        from ssconv.utils.timing import measure

        batch = self.cfg.latency_batch
        if not batch:
            return None
        model = self.model
        was_training = model.training
        model.eval()
        x = torch.randn(batch, *self.info.input_size, device=self.device)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stats = measure({"model": lambda: model(x)}, repeats=7, warmup=2, device=self.device)
        model.train(was_training)
        return stats["model"].median * 1e3

    # ------------------------------------------------------------- signals
    @property
    def stop_signal(self) -> int | None:
        """The SIGINT / SIGTERM received during :meth:`run`, if any (also one that came too
        late to interrupt it, e.g. during the final evaluation)."""
        return self._stop_signal

    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning(
                "%s received: saving a checkpoint at the next step", signal.Signals(signum).name
            )

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        if previous:
            for s, h in previous.items():
                signal.signal(s, h)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 0,
    channels_last: bool = False,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """Loss and top-1 / top-5 accuracy of ``model`` on ``dataset`` (sharded under DDP)."""
    was_training = model.training
    model.eval()
    sampler = EpochBatchSampler(
        len(dataset),
        batch_size,
        seed=0,
        epoch=0,
        rank=rank,
        world=world,
        shuffle=False,
        drop_last=False,
    )
    loader = DataLoader(
        dataset,
        batch_sampler=[[i for _, i in batch] for batch in sampler],
        num_workers=workers,
        generator=loader_generator(0),  # leaves the global RNG alone (see ssconv.train.loader)
        worker_init_fn=worker_init() if workers else None,
    )
    sums = torch.zeros(4, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        c1, c5 = _topk_correct(logits.float(), y)
        sums += torch.tensor([loss.item(), c1, c5, y.shape[0]], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    n = max(sums[3].item(), 1)
    return {
        "loss": sums[0].item() / n,
        "acc1": sums[1].item() / n,
        "acc5": sums[2].item() / n,
        "images": int(sums[3].item()),
    }


def load_trained_model(
    run_or_checkpoint: str | Path, map_location: Any = "cpu"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild a trained model from a run folder (its newest valid checkpoint) or a file.

    The file is a checkpoint or a run's weights-only ``.safetensors`` file (``best``,
    ``model``: its state then holds ``model``, ``config``, ``data_info`` and ``epoch``).
    Returns ``(model, config, checkpoint state)``; the model is in eval mode on the CPU (or
    ``map_location``).
    """
    from ssconv.pruning import prepare_masks

    path = Path(run_or_checkpoint)
    if path.suffix == ".safetensors" and not path.is_dir():
        weights, meta = load_weights(path)
        if "config" not in meta or "data_info" not in meta:
            raise CheckpointError(f"{str(path)!r} lacks the config of its run")
        state = {**meta, "model": weights}
    elif path.is_dir():
        found = latest_checkpoint(
            path / "checkpoints" if (path / "checkpoints").is_dir() else path, map_location
        )
        if found is None:
            raise CheckpointError(f"no usable checkpoint in {str(path)!r}")
        path, state = found
    else:
        state = load_checkpoint(path, map_location)
    cfg = TrainConfig.from_dict(state["config"], source=str(path))
    data_info = state["data_info"]
    input_size = tuple(data_info["input_size"])
    model, _ = build_model(
        cfg, data_info["num_classes"], input_size[0], input_size, for_loading=True
    )
    prepare_masks(model, state["model"])
    model.load_state_dict(state["model"])
    return model.eval(), cfg, state


def train(cfg: TrainConfig, out: str | Path, **kwargs) -> TrainResult:
    """Train ``cfg`` into ``out`` (see :class:`Trainer` for the keyword arguments)."""
    return Trainer(cfg, out, **kwargs).run()
