"""What one command trains: one run, an experiment's ``jobs`` in sequence, or one config over several seeds
side by side; and the table that reports them.

A run whose directory already holds it, finished (the same identity), is not trained again: its summary
is reported with one line that says so (``FinishedRun``). Running the quickstart twice therefore reuses the
finished teacher and students instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distillbench.build import build_trainer
from distillbench.engine.callbacks import Callback
from distillbench.engine.side_by_side import fit_side_by_side
from distillbench.errors import ConfigError
from distillbench.rundir import FinishedRun
from distillbench.runtime import distributed

log = logging.getLogger("distillbench")

# distillbench's log lines, beside the run's other files (written once the directory is claimed).
LOG_FILE = "train.log"


def run_job(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None, job: str | None = None,
            callbacks: Sequence[Callback] = ()) -> dict:
    """Train one model as ``cfg`` says, in ``run_dir``; return its summary. ``overrides`` are the
    command line's, recorded with the run (they name its variant); ``job`` its name among ``cfg.jobs``;
    ``callbacks`` see the loop's events (engine/callbacks.py).
    Raises ``FinishedRun`` when ``run_dir`` already holds this run, finished."""
    trainer = build_trainer(cfg, run_dir, overrides=overrides, job=job, callbacks=callbacks)
    with log_file(Path(run_dir) / LOG_FILE):
        return trainer.fit()


def run_or_reuse(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None, job: str | None = None) -> dict:
    """``run_job``, or, when ``run_dir`` already holds this very run finished, its stored summary."""
    try:
        return run_job(cfg, run_dir, overrides, job)
    except FinishedRun as done:
        report_reuse(done)
        return done.summary


def report_reuse(done: FinishedRun) -> None:
    """One line: which finished run stands for this one, its result, and how to train it again."""
    result = done.summary
    scores = (f"top-1 last {result['acc1_last']:.2f}, best {result['acc1_best']:.2f}; "
              if {"acc1_last", "acc1_best"} <= set(result) else "")
    log.info("Reusing the finished run in %s (%snothing trained); pass overwrite=true to train it again, or "
             "choose another seed.", done.run_dir, scores)


@contextlib.contextmanager
def log_file(path: Path):
    """Also write distillbench's log lines to ``path`` while the run trains (appended on resume)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_jobs(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, dict]:
    """Run ``cfg.jobs`` in order, each as ``cfg`` with its patch merged in, in ``run_dir/<job>``; a job
    already finished there is reused, not trained again."""
    summaries = {}
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "jobs"])
    for name, patch in cfg.jobs.items():
        job_cfg = OmegaConf.merge(base, patch)
        job_cfg.run_dir = str(run_dir)
        log.info("== job %s ==", name)
        summaries[name] = run_or_reuse(job_cfg, run_dir / name, overrides, job=name)
    return summaries


def run_side_by_side(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> list[dict]:
    """``cfg`` once per seed of ``side_by_side_seeds``, all in this process: run directories ``seed<s>``
    beside ``run_dir``, steps interleaved (``engine.side_by_side``). Seeds already finished there are
    reused; the summaries come back in the order of the seeds."""
    seeds = list(cfg.side_by_side_seeds)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"side_by_side_seeds must not repeat a seed, got {seeds}.")
    if distributed.launcher_environment() is not None:
        raise ConfigError("side_by_side_seeds packs runs into one process; it does not combine with torchrun or "
                          "SLURM tasks. Launch one of them.")
    trainers, reused = {}, {}
    try:
        for seed in seeds:
            seed_cfg = cfg.copy()
            seed_cfg.seed = seed
            seed_cfg.side_by_side_seeds = None
            seed_cfg.trainer.progress = False  # one bar per run would garble the console
            try:
                trainers[seed] = build_trainer(seed_cfg, Path(run_dir).parent / f"seed{seed}", f"[seed {seed}] ",
                                               overrides=overrides)
            except FinishedRun as done:
                report_reuse(done)
                reused[seed] = done.summary
    except BaseException:
        for trainer in trainers.values():  # free the directories already claimed
            if trainer.run_lock is not None:
                trainer.run_lock.release()
        raise
    trained = dict(zip(trainers, fit_side_by_side(list(trainers.values())), strict=True)) if trainers else {}
    return [trained[seed] if seed in trained else reused[seed] for seed in seeds]


def results_table(summaries: dict[str, dict]) -> str:
    rows = ["| job | network | method | top-1 last | top-1 best |", "|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['arch']} | {s['method']} | {s['acc1_last']:.2f} | {s['acc1_best']:.2f} |")
    return "\n".join(rows)
