"""The command line, ``python -m distillbench experiment=NAME [overrides]``.

This is the edge of the program: it turns the composed Hydra config into objects (data,
models, distiller, optimiser, loggers) and hands them to the ``Trainer``. Nothing below
this module imports Hydra.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distillbench.data.device_loader import make_device_loaders
from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.holdout import holdout_split
from distillbench.data.jpeg_device import make_jpeg_device_loaders
from distillbench.data.loaders import make_loaders
from distillbench.engine import distributed
from distillbench.engine.checkpoint import CHECKPOINT_NAMES, CheckpointError, load_model_weights
from distillbench.engine.distributed import DistContext, check_batch_divides, init_distributed
from distillbench.engine.preemption import Preempted
from distillbench.engine.seeding import seed_everything
from distillbench.engine.side_by_side import fit_side_by_side
from distillbench.engine.speed import SpeedOptions, use_fused_optimizer
from distillbench.engine.teacher_cache import why_not_cacheable
from distillbench.engine.trainer import CHECKPOINT_DIR, DivergenceError, Trainer
from distillbench.errors import ConfigError, RunDirError
from distillbench.loggers import ConsoleLogger, FileLogger, LoggerGroup, RunInfo, WandbLogger
from distillbench.loggers.files import INIT_METRICS_FILE, METRICS_FILE, SUMMARY_FILE
from distillbench.models import create_model
from distillbench.models.linear_probe import build_linear_probe

log = logging.getLogger("distillbench")

# The repository's configs/ (the package is installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

USER_ERRORS = (ConfigError, RunDirError, DatasetNotFoundError, DatasetCorruptError, CheckpointError, DivergenceError)


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


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite earlier work unless told to: finished or unfinished runs alike."""
    summary = run_dir / SUMMARY_FILE
    checkpoints = [run_dir / CHECKPOINT_DIR / name for name in CHECKPOINT_NAMES]
    has_checkpoint = any(c.exists() for c in checkpoints)
    if overwrite:
        for path in (summary, run_dir / METRICS_FILE, run_dir / INIT_METRICS_FILE, run_dir / "model.pth"):
            path.unlink(missing_ok=True)
        shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
        return
    if resume:
        return
    if summary.exists():
        raise RunDirError(
            f"The run directory {run_dir} already holds a finished run (see {summary}). Nothing was changed. "
            "Choose another seed or name, point hydra.run.dir elsewhere, or pass overwrite=true to replace it."
        )
    if has_checkpoint:
        raise RunDirError(
            f"The run directory {run_dir} holds an unfinished run (checkpoints in {run_dir / CHECKPOINT_DIR}). "
            "Pass resume=true to continue it, or overwrite=true to start it again from scratch."
        )


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
            f"({cfg.paths.runs}/{probe.source_experiment}/seed{cfg.seed}) then holds model.pth, and point "
            "probe.checkpoint=/path/to/model.pth at it if that is not the path above. Any {'model': state_dict} "
            f"file of a {probe.arch} with {probe.source_num_classes} classes loads (distillbench's model.pth, "
            "RepDistiller's checkpoints)."
        )
    return build_linear_probe(probe.arch, path, num_classes, source_num_classes=probe.source_num_classes,
                              input_size=cfg.dataset.get("size", 32), init_std=probe.init_std,
                              freeze_bn=probe.freeze_bn)


def build_loaders(cfg: DictConfig, train_set, test_set, device: torch.device, channels_last: bool,
                  ctx: DistContext | None = None) -> tuple:
    """``dataset.loader``: torch (DataLoader + PIL, the reference), device (in-memory sets held on the device),
    jpeg_device (image folders decoded and augmented on the device), or auto (device for in-memory sets on a GPU)."""
    ctx = ctx or DistContext()
    kind = cfg.dataset.loader
    if kind == "auto":
        kind = "device" if device.type == "cuda" and hasattr(train_set, "data") else "torch"
    # dataset.batch_size is the global batch; each rank loads its share.
    batch = per_rank_batch(cfg.dataset.batch_size, len(train_set), ctx.world_size)
    test_batch = max(1, cfg.dataset.test_batch_size // ctx.world_size)
    shards = {"rank": ctx.rank, "world_size": ctx.world_size}
    if kind == "device":
        device_test_batch = cfg.dataset.get("device_test_batch_size") or cfg.dataset.test_batch_size
        return make_device_loaders(train_set, test_set, batch, max(1, device_test_batch // ctx.world_size), device,
                                   seed=cfg.seed, channels_last=channels_last, **shards)
    if kind == "torch":
        return make_loaders(train_set, test_set, batch, test_batch, cfg.dataset.num_workers,
                            cfg.dataset.test_num_workers, device, seed=cfg.seed, **shards)
    if kind == "jpeg_device":
        return make_jpeg_device_loaders(train_set, test_set, batch, test_batch, cfg.dataset.num_workers,
                                        cfg.dataset.test_num_workers, device, seed=cfg.seed,
                                        channels_last=channels_last, **shards)
    raise ConfigError(f"dataset.loader must be 'torch', 'device', 'jpeg_device' or 'auto', got '{kind}'.")


def per_rank_batch(global_batch: int, dataset_size: int, world_size: int) -> int:
    if world_size == 1:
        return global_batch
    if global_batch % world_size:
        raise ConfigError(
            f"dataset.batch_size={global_batch} is the global batch and must split evenly over {world_size} ranks; "
            f"choose a multiple of {world_size}; trainer.distributed.lr_scaling says how the lr follows the batch."
        )
    check_batch_divides(dataset_size, global_batch, world_size)
    return global_batch // world_size


def teacher_cache_dir(cfg: DictConfig, distiller, train_loader, device: torch.device) -> Path | None:
    """Where the teacher-output cache lives, or None when the run computes the teacher live."""
    setting = cfg.trainer.teacher_cache
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
    factory = instantiate(cfg.optim)
    return functools.partial(factory, **extra) if extra else factory


def build_loggers(cfg: DictConfig, console_prefix: str = "") -> LoggerGroup:
    loggers = []
    if cfg.logger.console:
        loggers.append(ConsoleLogger(console_prefix))
    if cfg.logger.files:
        loggers.append(FileLogger())
    if cfg.logger.wandb.mode != "disabled":
        loggers.append(WandbLogger(cfg.logger.wandb.project, cfg.logger.wandb.entity, cfg.logger.wandb.mode))
    return LoggerGroup(loggers)


def run_job(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one model as ``cfg`` says, in ``run_dir``; return its summary."""
    return build_trainer(cfg, run_dir).fit()


def run_side_by_side(cfg: DictConfig, run_dir: Path) -> list[dict]:
    """``cfg`` once per seed of ``side_by_side_seeds``, all in this process: run directories ``seed<s>``
    beside ``run_dir``, steps interleaved (``engine.side_by_side``)."""
    seeds = list(cfg.side_by_side_seeds)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"side_by_side_seeds must not repeat a seed, got {seeds}.")
    if distributed.launcher_environment() is not None:
        raise ConfigError("side_by_side_seeds packs runs into one process; it does not combine with torchrun or "
                          "SLURM tasks. Launch one of them.")
    trainers = []
    for seed in seeds:
        seed_cfg = cfg.copy()
        seed_cfg.seed = seed
        seed_cfg.side_by_side_seeds = None
        seed_cfg.trainer.progress = False  # one bar per run would garble the console
        trainers.append(build_trainer(seed_cfg, Path(run_dir).parent / f"seed{seed}", f"[seed {seed}] "))
    return fit_side_by_side(trainers)


def build_trainer(cfg: DictConfig, run_dir: Path, console_prefix: str = "") -> Trainer:
    """Everything ``cfg`` asks for, built and handed to a ``Trainer`` (not yet started)."""
    run_dir = Path(run_dir)
    # A job SLURM requeued (after a preemption or a time limit) continues its run.
    resume = bool(cfg.resume) or int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0
    ctx = init_distributed(resolve_device(cfg.trainer.device).type, cfg.trainer.distributed.backend)
    if not ctx.is_main:  # rank 0 speaks for the run
        logging.getLogger("distillbench").setLevel(logging.WARNING)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("jobs", None)
    if ctx.is_main:  # one run directory for all ranks, written by rank 0
        prepare_run_dir(run_dir, resume, cfg.overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    distributed.barrier()

    device = resolve_device(cfg.trainer.device, ctx.local_rank)
    if cfg.trainer.distributed.sync_bn and ctx.enabled and device.type != "cuda":
        raise ConfigError("trainer.distributed.sync_bn=true needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
                          "set it to false for CPU processes.")
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark)
    seed_everything(cfg.seed)
    num_classes = cfg.dataset.num_classes
    # Models and the teacher checkpoint first: a wrong name fails before any data is read. The trained
    # network is built first, so one seed gives it the same initial weights whatever the method.
    if cfg.role not in ("student", "teacher", "probe"):
        raise ConfigError(f"role must be 'student', 'teacher' or 'probe', got '{cfg.role}'.")
    if cfg.role == "probe":  # a linear head on a frozen CIFAR network; no teacher, no distiller
        model, trained = build_probe(cfg, num_classes), cfg.probe
    else:
        trained = cfg.teacher if cfg.role == "teacher" else cfg.student
        model = create_model(trained.arch, num_classes=num_classes)
    teacher, distiller, ce_weight, job_type, method = None, None, 1.0, "teacher", "none"
    if cfg.role == "probe":
        job_type, method = "probe", cfg.probe.method
    if cfg.role == "student":
        job_type, method, ce_weight = "student", cfg.distiller.name, cfg.distiller.ce_weight
        if cfg.distiller.method is not None:
            distiller = instantiate(cfg.distiller.method)
            teacher = build_teacher(cfg, num_classes)

    train_set, test_set = instantiate(cfg.dataset.build)
    eval_split = "test"
    if cfg.dataset.get("holdout"):
        # Tuning: score on images held out of the training set, never on the test set.
        train_set, test_set = holdout_split(train_set, cfg.dataset.holdout.fraction, cfg.dataset.holdout.seed,
                                            eval_transform=test_set.transform)
        eval_split = "holdout"
    speed = SpeedOptions.resolve(device, cfg.trainer.precision, cfg.trainer.channels_last, cfg.trainer.compile,
                                 cfg.trainer.compile_backend)
    train_loader, test_loader = build_loaders(cfg, train_set, test_set, device, speed.channels_last, ctx)

    tags = {"method": method, "arch": trained.arch, "dataset": cfg.dataset.name, "eval_split": eval_split}
    if teacher is not None:
        tags["teacher"] = cfg.teacher.arch
        tags["student"] = cfg.student.arch
    if cfg.role == "probe":  # the transfer table's cell: its dataset key (cifar100_to_stl10), row and pair
        tags.update(dataset=cfg.probe.table, probe_dataset=cfg.dataset.name, teacher=cfg.probe.teacher,
                    student=cfg.probe.student)
    published = {"published_acc1": cfg.published.acc1} if cfg.get("published") else {}
    info = RunInfo(name=cfg.name, job_type=job_type, run_dir=str(run_dir), seed=cfg.seed, config=config, tags=tags,
                   summary_fields=published)
    return Trainer(
        model=model,
        train_loader=train_loader,
        test_loader=test_loader,
        make_optimizer=build_optimizer_factory(cfg, device),
        make_scheduler=instantiate(cfg.sched),
        epochs=cfg.trainer.epochs,
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
        teacher_cache_dir=teacher_cache_dir(cfg, distiller, train_loader, device),
        teacher_cache_optional=cfg.trainer.teacher_cache == "auto",
        sync_bn=bool(cfg.trainer.distributed.sync_bn) and ctx.enabled,
    )


def run_jobs(cfg: DictConfig, run_dir: Path) -> dict[str, dict]:
    """Run ``cfg.jobs`` in order, each as ``cfg`` with its patch merged in, in ``run_dir/<job>``."""
    summaries = {}
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "jobs"])
    for name, patch in cfg.jobs.items():
        job_cfg = OmegaConf.merge(base, patch)
        job_cfg.run_dir = str(run_dir)
        log.info("== job %s ==", name)
        summaries[name] = run_job(job_cfg, run_dir / name)
    return summaries


def results_table(summaries: dict[str, dict]) -> str:
    rows = ["| job | network | method | top-1 last | top-1 best |", "|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['arch']} | {s['method']} | {s['acc1_last']:.2f} | {s['acc1_best']:.2f} |")
    return "\n".join(rows)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` of the run's summary, for hyperparameter sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.get("jobs"):
            summaries = run_jobs(cfg, run_dir)
            print("\n" + results_table(summaries) + "\n", flush=True)
            return None
        if cfg.get("side_by_side_seeds"):
            run_side_by_side(cfg, run_dir)
            return None
        summary = run_job(cfg, run_dir)
        return summary[cfg.optimized_metric] if cfg.get("optimized_metric") else None
    except USER_ERRORS as err:
        log.error("%s", err)
        sys.exit(1)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(128 + err.signum)  # as if killed by the signal, but with the work saved
    finally:
        distributed.shutdown()
