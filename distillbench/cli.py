"""The command line, ``python -m distillbench experiment=NAME [overrides]``.

This is the edge of the program: it turns the composed Hydra config into objects (data,
models, distiller, optimiser, loggers) and hands them to the ``Trainer``. Nothing below
this module imports Hydra.
"""

from __future__ import annotations

import logging
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
from distillbench.data.loaders import make_loaders
from distillbench.engine.checkpoint import CHECKPOINT_NAMES, CheckpointError, load_model_weights
from distillbench.engine.preemption import Preempted
from distillbench.engine.seeding import seed_everything
from distillbench.engine.trainer import CHECKPOINT_DIR, DivergenceError, Trainer
from distillbench.errors import ConfigError, RunDirError
from distillbench.loggers import ConsoleLogger, FileLogger, LoggerGroup, RunInfo, WandbLogger
from distillbench.loggers.files import INIT_METRICS_FILE, METRICS_FILE, SUMMARY_FILE
from distillbench.models import create_model

log = logging.getLogger("distillbench")

# The repository's configs/ (the package is installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

USER_ERRORS = (ConfigError, RunDirError, DatasetNotFoundError, DatasetCorruptError, CheckpointError, DivergenceError)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
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


def build_loggers(cfg: DictConfig) -> LoggerGroup:
    loggers = []
    if cfg.logger.console:
        loggers.append(ConsoleLogger())
    if cfg.logger.files:
        loggers.append(FileLogger())
    if cfg.logger.wandb.mode != "disabled":
        loggers.append(WandbLogger(cfg.logger.wandb.project, cfg.logger.wandb.entity, cfg.logger.wandb.mode))
    return LoggerGroup(loggers)


def run_job(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one model as ``cfg`` says, in ``run_dir``; return its summary."""
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, cfg.resume, cfg.overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("jobs", None)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))

    device = resolve_device(cfg.trainer.device)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark)
    seed_everything(cfg.seed)
    num_classes = cfg.dataset.num_classes
    # Models and the teacher checkpoint first: a wrong name fails before any data is read. The trained
    # network is built first, so one seed gives it the same initial weights whatever the method.
    if cfg.role not in ("student", "teacher"):
        raise ConfigError(f"role must be 'student' or 'teacher', got '{cfg.role}'.")
    trained = cfg.teacher if cfg.role == "teacher" else cfg.student
    model = create_model(trained.arch, num_classes=num_classes)
    teacher, distiller, ce_weight, job_type, method = None, None, 1.0, "teacher", "none"
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
    if cfg.dataset.loader == "device":
        train_loader, test_loader = make_device_loaders(
            train_set, test_set, cfg.dataset.batch_size, cfg.dataset.test_batch_size, device, seed=cfg.seed)
    elif cfg.dataset.loader == "torch":
        train_loader, test_loader = make_loaders(
            train_set, test_set, cfg.dataset.batch_size, cfg.dataset.test_batch_size,
            cfg.dataset.num_workers, cfg.dataset.test_num_workers, device, seed=cfg.seed,
        )
    else:
        raise ConfigError(f"dataset.loader must be 'torch' or 'device', got '{cfg.dataset.loader}'.")

    tags = {"method": method, "arch": trained.arch, "dataset": cfg.dataset.name, "eval_split": eval_split}
    if teacher is not None:
        tags["teacher"] = cfg.teacher.arch
        tags["student"] = cfg.student.arch
    published = {"published_acc1": cfg.published.acc1} if cfg.get("published") else {}
    info = RunInfo(name=cfg.name, job_type=job_type, run_dir=str(run_dir), seed=cfg.seed, config=config, tags=tags,
                   summary_fields=published)
    trainer = Trainer(
        model=model,
        train_loader=train_loader,
        test_loader=test_loader,
        make_optimizer=instantiate(cfg.optim),
        make_scheduler=instantiate(cfg.sched),
        epochs=cfg.trainer.epochs,
        run_dir=run_dir,
        logger=build_loggers(cfg),
        info=info,
        device=device,
        teacher=teacher,
        distiller=distiller,
        ce_weight=ce_weight,
        seed=cfg.seed,
        resume=cfg.resume,
        expected_teacher_acc1=cfg.teacher.expected_acc1 if teacher is not None else None,
        teacher_acc1_tolerance=cfg.trainer.teacher_acc1_tolerance,
        check_finite_every=cfg.trainer.check_finite_every,
        checkpoint_every_steps=cfg.trainer.checkpoint_every_steps,
        detect_anomaly=cfg.trainer.detect_anomaly,
        progress=cfg.trainer.progress,
    )
    return trainer.fit()


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
        summary = run_job(cfg, run_dir)
        return summary[cfg.optimized_metric] if cfg.get("optimized_metric") else None
    except USER_ERRORS as err:
        log.error("%s", err)
        sys.exit(1)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(128 + err.signum)  # as if killed by the signal, but with the work saved
