"""Objects from a composed config: data, models, distiller, optimiser, loggers, and the ``Trainer`` that
joins them, with every ``auto`` (device, loader, precision, teacher cache) decided for this machine.

Nothing here reads the command line or Hydra's runtime: a test composes a config and builds from it exactly
as ``python -m distillbench`` does. Nothing is written until the run directory has been claimed
(``distillbench.rundir``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distillbench.batching import eval_rank_batch, per_rank_batch
from distillbench.data.device_loader import make_device_loaders
from distillbench.data.holdout import eval_split_name, holdout_split
from distillbench.data.jpeg_device import make_jpeg_device_loaders
from distillbench.data.loaders import last_batch_dropped, make_loaders
from distillbench.data.subset import apply_subset
from distillbench.engine.callbacks import Callback
from distillbench.engine.speed import SpeedOptions, use_fused_optimizer
from distillbench.engine.teacher_cache import cache_dtype, weights_checksum, why_not_cacheable
from distillbench.engine.trainer import Trainer
from distillbench.errors import ConfigError, RunDirError, UserError
from distillbench.identity import variant_name, variant_overrides
from distillbench.loggers import ConsoleLogger, FileLogger, LoggerGroup, RunInfo, WandbLogger
from distillbench.models import create_model
from distillbench.models.linear_probe import build_linear_probe
from distillbench.rundir import FinishedRun, RunPlan, claim_run_dir
from distillbench.runtime import distributed
from distillbench.runtime.distributed import DistContext, init_distributed
from distillbench.runtime.seeding import seed_everything
from distillbench.validation import validate
from distillbench.weights import load_model_weights

log = logging.getLogger("distillbench")


def build_object(node: DictConfig):
    """``hydra.utils.instantiate``, with the user's mistakes (a ``UserError`` raised by what is built)
    passed on as they are rather than wrapped in Hydra's instantiation error and its traceback."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: a CUDA GPU when there is one (the rank's own on several ranks), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto.")
    return device


def build_teacher(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    if cfg.teacher.get("pretrained") and cfg.teacher.checkpoint is None:
        # torchvision's released ImageNet weights; without internet the factory says to pass a checkpoint.
        return create_model(cfg.teacher.arch, num_classes=num_classes, pretrained=True)
    teacher = create_model(cfg.teacher.arch, num_classes=num_classes)
    path = Path(cfg.teacher.checkpoint)
    if not path.is_file():
        raise ConfigError(
            f"The teacher checkpoint '{path}' does not exist. Train a teacher with "
            f"`python -m distillbench experiment=teacher_{cfg.teacher.arch}` (it writes model.pth in its run "
            "directory) or bring one from RepDistiller/mdistiller, then pass teacher.checkpoint=/path/to/file "
            f"(or place it at {cfg.paths.teachers}/{cfg.teacher.arch}_vanilla/ckpt_epoch_240.pth). "
            "Files saved as {'model': state_dict} load unchanged."
        )
    load_model_weights(teacher, path, cfg.teacher.arch)
    return teacher


def build_probe(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """``role: probe``: the frozen CIFAR network of ``cfg.probe`` with a fresh ``num_classes``-way linear head."""
    probe = cfg.get("probe")
    if probe is None:
        raise ConfigError("role=probe needs a probe section: use a transfer_* experiment, or add +probe=linear.")
    path = Path(probe.checkpoint)
    if not path.is_file():
        raise ConfigError(
            f"The checkpoint of the network to probe, '{path}', does not exist. A linear probe trains a classifier "
            f"on a network already trained on {probe.source_dataset}: train it first with `python -m distillbench "
            f"experiment={probe.source_experiment} seed={cfg.seed}`, whose run directory "
            f"({cfg.paths.runs}/{probe.source_experiment}/default/seed{cfg.seed}) then holds model.pth, and point "
            "probe.checkpoint=/path/to/model.pth at it if that is not the path above. Any {'model': state_dict} "
            f"file of a {probe.arch} with {probe.source_num_classes} classes loads (distillbench's model.pth, "
            "RepDistiller's checkpoints)."
        )
    return build_linear_probe(probe.arch, path, num_classes, source_num_classes=probe.source_num_classes,
                              input_size=cfg.dataset.get("size", 32), init_std=probe.init_std,
                              freeze_bn=probe.freeze_bn)


def build_loaders(cfg: DictConfig, train_set, test_set, device: torch.device, channels_last: bool,
                  ctx: DistContext | None = None, distiller=None) -> tuple:
    """``dataset.loader``: torch (DataLoader + PIL, the reference), device (in-memory sets held on the device),
    jpeg_device (image folders decoded and augmented on the device), or auto (device for in-memory sets on a GPU).
    ``distiller``: the run's method, whose ``min_batch_size`` the last training batch must reach."""
    ctx = ctx or DistContext()
    kind = loader_kind(cfg, train_set, device)
    if kind == "device" and cfg.dataset.loader == "auto":
        # auto (trainer=fast) keeps the DataLoader for in-memory sets whose transforms the device loader does not
        # reproduce (STL-10's Resize), instead of failing.
        from distillbench.data.device_loader import recipe_of

        try:
            recipe_of(train_set.transform), recipe_of(test_set.transform)
        except ValueError:
            kind = "torch"
    # dataset.batch_size is the global batch; each rank loads its share.
    batch = per_rank_batch(cfg.dataset.batch_size, len(train_set), ctx.world_size)
    test_batch = eval_rank_batch(cfg.dataset.test_batch_size, ctx.world_size)
    # The last partial training batch is dropped when the recipe says so (dataset.drop_last: RRD's loader), or when
    # it is smaller than the method can use (Distiller.min_batch_size).
    drop_last = last_batch_dropped(len(train_set), batch, world_size=ctx.world_size,
                                   drop_last=bool(cfg.dataset.get("drop_last", False)),
                                   min_batch_size=distiller.min_batch_size if distiller is not None else 1,
                                   needed_by=f"distiller {cfg.distiller.name}")
    shards = {"rank": ctx.rank, "world_size": ctx.world_size, "drop_last": drop_last}
    if kind == "device":
        device_test_batch = cfg.dataset.get("device_test_batch_size") or cfg.dataset.test_batch_size
        device_test_batch = eval_rank_batch(device_test_batch, ctx.world_size)
        return make_device_loaders(train_set, test_set, batch, device_test_batch, device, seed=cfg.seed,
                                   channels_last=channels_last, **shards)
    if kind == "torch":
        return make_loaders(train_set, test_set, batch, test_batch, cfg.dataset.num_workers,
                            cfg.dataset.test_num_workers, device, seed=cfg.seed, **shards)
    if kind == "jpeg_device":
        return make_jpeg_device_loaders(train_set, test_set, batch, test_batch, cfg.dataset.num_workers,
                                        cfg.dataset.test_num_workers, device, seed=cfg.seed,
                                        channels_last=channels_last, **shards)
    raise ConfigError(f"dataset.loader must be 'torch', 'device', 'jpeg_device' or 'auto', got '{kind}'.")


def loader_kind(cfg: DictConfig, train_set, device: torch.device) -> str:
    """``dataset.loader`` with ``auto`` decided: the device loader for in-memory sets on a GPU."""
    kind = cfg.dataset.loader
    if kind == "auto":
        kind = "device" if device.type == "cuda" and hasattr(train_set, "data") else "torch"
    return kind


def teacher_cache_dir(cfg: DictConfig, distiller, train_loader, device: torch.device) -> Path | None:
    """Where the teacher-output cache lives, or None when the run computes the teacher live."""
    setting = cfg.trainer.teacher_cache
    cache_dtype(cfg.trainer.get("teacher_cache_dtype", "float32"))  # a wrong value fails before any work
    if setting is False or distiller is None:
        return None
    reason = why_not_cacheable(distiller, train_loader)
    if setting == "auto":
        return Path(cfg.paths.cache) if reason is None and device.type == "cuda" else None
    if setting is not True:
        raise ConfigError(f"trainer.teacher_cache must be true, false or auto, got '{setting}'.")
    if reason is not None:
        raise ConfigError(f"trainer.teacher_cache=true, but {cfg.distiller.name}: {reason} Use "
                          "trainer.teacher_cache=auto or false for it, or dataset.loader=device.")
    return Path(cfg.paths.cache)


def build_optimizer_factory(cfg: DictConfig, device: torch.device):
    """``cfg.optim`` as a factory of parameters: torch's fused kernel when ``trainer.fused_optimizer`` says so, and
    the lr rule of ``trainer.distributed.lr_scaling`` (none: the config's lr; linear: times batch / reference)."""
    rule, reference = cfg.trainer.distributed.lr_scaling, cfg.trainer.distributed.reference_batch_size
    extra = {}
    if rule == "linear":
        extra["lr"] = cfg.optim.lr * cfg.dataset.batch_size / reference
    elif rule != "none":
        raise ConfigError(f"trainer.distributed.lr_scaling must be 'none' or 'linear', got '{rule}'.")
    fused = use_fused_optimizer(cfg.trainer.fused_optimizer, device)
    if fused is not None:
        extra["fused"] = fused
    factory = build_object(cfg.optim)
    return functools.partial(factory, **extra) if extra else factory


def build_loggers(cfg: DictConfig, console_prefix: str = "") -> LoggerGroup:
    loggers = []
    if cfg.logger.console:
        loggers.append(ConsoleLogger(console_prefix))
    if cfg.logger.files:
        loggers.append(FileLogger())
    wandb = cfg.logger.wandb
    if wandb.mode != "disabled":
        loggers.append(WandbLogger(wandb.project, wandb.entity, wandb.mode, root=wandb.dir))
    return LoggerGroup(loggers)


def build_trainer(cfg: DictConfig, run_dir: Path, console_prefix: str = "",
                  overrides: list[str] | None = None, job: str | None = None,
                  callbacks: Sequence[Callback] = ()) -> Trainer:
    """Everything ``cfg`` asks for, built and handed to a ``Trainer`` (not yet started). ``job``: the
    name of this run among an experiment's ``jobs`` (it names the W&B run).

    Nothing is written before everything has been built and the run directory has been claimed
    for this run's identity (``distillbench.rundir``): a wrong value, a missing file or a resume
    with another config fails with the directory untouched, and a directory that already holds
    this very run, finished, raises ``FinishedRun`` (its results stand).
    """
    run_dir = Path(run_dir)
    validate(cfg)
    overrides = list(overrides or [])
    # A job SLURM requeued (after a preemption or a time limit) continues its run.
    resume = bool(cfg.resume) or int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0
    ctx = init_distributed(resolve_device(cfg.trainer.device).type, cfg.trainer.distributed.backend)
    if not ctx.is_main:  # rank 0 speaks for the run
        logging.getLogger("distillbench").setLevel(logging.WARNING)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("jobs", None)

    device = resolve_device(cfg.trainer.device, ctx.local_rank)
    if cfg.trainer.distributed.sync_bn and ctx.enabled and device.type != "cuda":
        raise ConfigError("trainer.distributed.sync_bn=true needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
                          "set it to false for CPU processes.")
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark)
    seed_everything(cfg.seed)
    num_classes = cfg.dataset.num_classes
    # Models and the teacher checkpoint first: a wrong name fails before any data is read. The trained
    # network is built first, so one seed gives it the same initial weights whatever the method.
    if cfg.role == "probe":  # a linear head on a frozen CIFAR network; no teacher, no distiller
        model, trained = build_probe(cfg, num_classes), cfg.probe
    elif cfg.role == "eval":  # the teacher as released (or from teacher.checkpoint), evaluated, not trained
        model, trained = build_teacher(cfg, num_classes), cfg.teacher
    else:
        trained = cfg.teacher if cfg.role == "teacher" else cfg.student
        model = create_model(trained.arch, num_classes=num_classes)
    teacher, distiller, ce_weight, job_type, method = None, None, 1.0, "teacher", "none"
    if cfg.role == "probe":
        job_type, method = "probe", cfg.probe.method
    if cfg.role == "student":
        job_type, method, ce_weight = "student", cfg.distiller.name, cfg.distiller.ce_weight
        if cfg.distiller.method is not None:
            distiller = build_object(cfg.distiller.method)
            teacher = build_teacher(cfg, num_classes)

    train_set, test_set = build_object(cfg.dataset.build)
    if cfg.dataset.get("holdout"):
        # Tuning: score on images held out of the training set, never on the test set.
        train_set, test_set = holdout_split(train_set, cfg.dataset.holdout.fraction, cfg.dataset.holdout.seed,
                                            eval_transform=test_set.transform)
    # debug runs (configs/debug/): a few images of each split, the training ones optionally unaugmented.
    train_set, test_set = apply_subset(train_set, test_set, cfg.dataset.get("subset"),
                                       augment=cfg.dataset.get("augment", True))
    eval_split = eval_split_name(test_set)  # "holdout" when tuning: the scores are not test scores
    speed = SpeedOptions.resolve(device, cfg.trainer.precision, cfg.trainer.channels_last, cfg.trainer.compile,
                                 cfg.trainer.compile_backend, cfg.trainer.get("compile_scope", "models"))
    train_loader, test_loader = build_loaders(cfg, train_set, test_set, device, speed.channels_last, ctx, distiller)
    make_optimizer = build_optimizer_factory(cfg, device)
    cache_dir = teacher_cache_dir(cfg, distiller, train_loader, device)

    # Networks that come from files or downloads are identified by their weights, not by the path.
    loaded = {"teacher": teacher} if teacher is not None else {}
    if cfg.role in ("probe", "eval"):
        loaded["probe" if cfg.role == "probe" else "teacher"] = model
    resolved = resolved_settings(cfg, device, speed, train_set, cache_dir, ctx, loaded)
    plan = RunPlan(run_dir=run_dir, experiment=cfg.name, variant=variant_name(overrides), seed=cfg.seed,
                   config=config, resolved=resolved, overrides=overrides,
                   variant_overrides=variant_overrides(overrides),
                   data=dict(getattr(train_set, "provenance", {}) or {}))
    lock = claim_on_rank_0(plan, resume, bool(cfg.overwrite), ctx, device)

    tags = {"method": method, "arch": trained.arch, "dataset": cfg.dataset.name, "eval_split": eval_split}
    if teacher is not None:
        tags["teacher"] = cfg.teacher.arch
        tags["student"] = cfg.student.arch
    if cfg.role == "probe":  # the transfer table's cell: its dataset key (cifar100_to_stl10), row and pair
        tags.update(dataset=cfg.probe.table, probe_dataset=cfg.dataset.name, teacher=cfg.probe.teacher,
                    student=cfg.probe.student)
    published = {"published_acc1": cfg.published.acc1} if cfg.get("published") else {}
    record = {"experiment": cfg.name, "variant": plan.variant, "identity": plan.identity, "group": plan.group,
              "precision": resolved["trainer.precision"],
              "data_generated": bool(plan.data.get("generated", False))}
    info = RunInfo(name=cfg.name, job_type=job_type, run_dir=str(run_dir), seed=cfg.seed,
                   config={**config, "resolved": resolved}, tags=tags, summary_fields={**published, **record},
                   identity=plan.identity, group=plan.group, variant=plan.variant, job=job)
    return Trainer(
        model=model,
        train_loader=train_loader,
        test_loader=test_loader,
        make_optimizer=make_optimizer,
        make_scheduler=build_object(cfg.sched),
        epochs=0 if cfg.role == "eval" else cfg.trainer.epochs,
        run_dir=run_dir,
        logger=build_loggers(cfg, console_prefix) if ctx.is_main else LoggerGroup([]),
        info=info,
        device=device,
        teacher=teacher,
        distiller=distiller,
        ce_weight=ce_weight,
        seed=cfg.seed,
        resume=resume,
        expected_teacher_acc1=cfg.teacher.expected_acc1 if teacher is not None else None,
        teacher_acc1_tolerance=cfg.trainer.teacher_acc1_tolerance,
        check_finite_every=cfg.trainer.check_finite_every,
        checkpoint_every_steps=cfg.trainer.checkpoint_every_steps,
        detect_anomaly=cfg.trainer.detect_anomaly,
        progress=cfg.trainer.progress,
        speed=speed,
        teacher_cache_dir=cache_dir,
        teacher_cache_optional=cfg.trainer.teacher_cache == "auto",
        teacher_cache_dtype=cfg.trainer.get("teacher_cache_dtype", "float32"),
        sync_bn=bool(cfg.trainer.distributed.sync_bn) and ctx.enabled,
        run_lock=lock,
        callbacks=callbacks,
    )


def resolved_settings(cfg: DictConfig, device: torch.device, speed: SpeedOptions, train_set, cache_dir,
                      ctx: DistContext, loaded: dict[str, torch.nn.Module]) -> dict:
    """Every ``auto`` as decided on this machine, and the facts a config names only by path, under the
    config keys they decide: they replace the config's values in the run's identity."""
    fused = use_fused_optimizer(cfg.trainer.fused_optimizer, device)
    resolved = {
        "trainer.device_type": device.type,
        "trainer.precision": speed.precision,
        "trainer.channels_last": speed.channels_last,
        "trainer.compile": speed.compile_mode or False,
        "trainer.compile_scope": speed.compile_scope,
        "trainer.fused_optimizer": bool(fused),
        "dataset.loader": loader_kind(cfg, train_set, device),
        "world_size": ctx.world_size,
        "per_rank_batch": per_rank_batch(cfg.dataset.batch_size, len(train_set), ctx.world_size),
        "teacher_cache_planned": cache_dir is not None,
        # a lossy cache changes the numbers only of runs that read the cache
        "trainer.teacher_cache_dtype": (str(cfg.trainer.get("teacher_cache_dtype", "float32"))
                                        if cache_dir is not None else "float32"),
    }
    for role, network in loaded.items():  # the weights, whatever file or download they came from
        resolved[f"{role}.weights_sha256"] = weights_checksum(network)
    return resolved


# What rank 0's claim of the run directory ended in, as every rank learns it (the largest code wins).
CLAIMED, FINISHED, REFUSED = 0, 1, 2


def claim_on_rank_0(plan: RunPlan, resume: bool, overwrite: bool, ctx: DistContext, device: torch.device):
    """Rank 0 claims the one run directory of all ranks; every rank learns the outcome at once instead of
    waiting for rank 0 at a barrier. Returns rank 0's lock (None on other ranks); raises ``FinishedRun`` on
    every rank when the directory holds this very run, finished, and a ``RunDirError`` when it is refused."""
    lock, refused = None, None
    if ctx.is_main:
        try:
            lock = claim_run_dir(plan, resume, overwrite)
            log.info("run %s (identity %s) in %s", plan.variant, plan.identity, plan.run_dir)
        except UserError as err:
            refused = err
    outcome = CLAIMED if refused is None else FINISHED if isinstance(refused, FinishedRun) else REFUSED
    outcome = int(distributed.all_reduce_max(torch.tensor(float(outcome), device=device)).item())
    if refused is not None:
        raise refused
    if outcome == FINISHED:
        raise FinishedRun(plan.run_dir, plan.identity)
    if outcome == REFUSED:
        raise RunDirError(f"Rank 0 could not take the run directory {plan.run_dir}; its message says why. "
                          "Nothing was changed; this rank stops as well.")
    return lock
