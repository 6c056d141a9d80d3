"""Runs as records: from run directories on disk, or from W&B through its API.

A run directory holds ``config.yaml`` (the resolved config), ``run.json`` (what the run is: experiment,
variant, identity and group hashes, the decided ``auto`` settings, whether its data were generated),
``metrics.jsonl`` (one line per epoch) and, once finished, ``summary.json``. Every run found becomes a
record, finished or not; which of them may stand against a published number is decided in ``tables.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from distillbench.reporting.protocol import Protocol
from distillbench.reporting.wandb_access import fetch_errors, project_unreachable, wandb_api

# The run directory's files (distillbench.loggers.files and the run record writer name them the same);
# read here with no import of the training side, so tables build wherever the files were copied to.
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class RunRecord:
    """One run: the table cell it belongs to, what it is (identity), how far it got and its accuracies."""

    dataset: str
    method: str  # a distiller name, or vanilla_teacher / vanilla_student
    teacher: str | None
    student: str | None
    seed: int
    acc1_last: float | None  # None: no epoch evaluated yet
    acc1_best: float | None
    source: str
    experiment: str | None = None  # cfg.name
    variant: str = DEFAULT_VARIANT
    overrides: tuple[str, ...] = ()
    identity: str | None = None
    group: str | None = None  # the identity without the seed: the runs of one mean ± std
    precision: str | None = None
    data_generated: bool = False
    finished: bool = True
    has_run_record: bool = True  # False: written before run.json existed
    epochs_done: int | None = None
    epochs_planned: int | None = None
    protocol: Protocol | None = None
    code_revision: str | None = None  # the distillbench commit it ran (12 digits; +dirty: uncommitted changes)

    @property
    def status(self) -> str:
        """``ok`` for a run that may stand against a published number (given its variant); else why not."""
        if not self.has_run_record:
            return "no run record"
        if not self.finished:
            return f"unfinished ({self.epochs_done or 0}/{self.epochs_planned or '?'} epochs)"
        if self.data_generated:
            return "generated data"
        if self.epochs_done is not None and self.epochs_planned is not None and self.epochs_done < self.epochs_planned:
            return f"fewer epochs ({self.epochs_done}/{self.epochs_planned})"
        return "ok"

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


# The published tables name networks as their papers do; ours carry a dataset prefix or suffix where one name
# would otherwise mean two networks (torchvision's ResNet-34 vs the CIFAR zoo, mdistiller's Tiny-ImageNet nets).
PUBLISHED_ARCH = {
    "imagenet_resnet18": "resnet18", "imagenet_resnet34": "resnet34", "imagenet_resnet50": "resnet50",
    "imagenet_mobilenetv1": "mobilenetv1", "ResNet18": "resnet18", "MobileNetV2_tinyimagenet": "mobilenetv2",
    "ShuffleV2_tinyimagenet": "shufflenetv2",
}


def published_arch(arch: str | None) -> str | None:
    return PUBLISHED_ARCH.get(arch, arch) if arch is not None else None


def cell_of(job_type: str | None, method: str | None, arch: str | None, teacher: str | None,
            student: str | None) -> tuple[str, str | None, str | None]:
    """(method row, teacher, student) of a run, networks named as the published tables name them: teachers
    and networks trained alone get their own rows."""
    arch, teacher, student = published_arch(arch), published_arch(teacher), published_arch(student)
    if job_type == "teacher":
        return "vanilla_teacher", arch, None
    if method in (None, "none"):
        return "vanilla_student", None, arch
    return method, teacher, student


def _cell_from_config(config: dict) -> dict | None:
    """The summary's cell fields for a run that has not written one yet (from its config.yaml)."""
    role = config.get("role", "student")
    dataset = (config.get("dataset") or {}).get("name")
    if dataset is None or (config.get("dataset") or {}).get("holdout"):
        return None
    teacher, student = (config.get("teacher") or {}).get("arch"), (config.get("student") or {}).get("arch")
    if role in ("teacher", "eval"):  # trained alone, or a released teacher evaluated
        return {"dataset": dataset, "job_type": "teacher", "method": "none", "arch": teacher}
    if role == "probe":
        probe = config.get("probe") or {}
        return {"dataset": probe.get("table"), "job_type": "probe", "method": probe.get("method"),
                "arch": probe.get("arch"), "teacher": probe.get("teacher"), "student": probe.get("student")}
    method = (config.get("distiller") or {}).get("name", "none")
    return {"dataset": dataset, "job_type": "student", "method": method, "arch": student, "teacher": teacher,
            "student": student}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def code_revision(run: dict, fields: dict) -> str | None:
    """The code revision run.json's environment records (or the same keys in a W&B summary)."""
    environment = run.get("environment") or {}
    commit = environment.get("git_commit") or fields.get("git_commit")
    if not commit:
        return None
    dirty = environment.get("git_dirty", fields.get("git_dirty"))
    return str(commit)[:12] + ("+dirty" if dirty else "")


def make_record(source: str, summary: dict | None, run: dict | None, config: dict | None,
                metrics: list[dict] | None = None) -> RunRecord | None:
    """A record from whatever a run left: ``summary`` (finished runs), ``run`` (run.json, or the same keys in
    a W&B summary), ``config`` and the per-epoch ``metrics``. None for runs that are not table runs
    (quickstart, or tuning runs scored on held-out training images)."""
    config = config or {}
    fields = dict(summary) if summary else _cell_from_config(config)
    if not fields or fields.get("dataset") is None or fields.get("eval_split", "test") != "test":
        return None
    method, teacher, student = cell_of(fields.get("job_type"), fields.get("method"), fields.get("arch"),
                                       fields.get("teacher"), fields.get("student"))
    run = run or {}
    resolved = run.get("resolved") or {}
    finished = bool(summary) and summary.get("finished", True) is not False
    metrics = metrics or []
    tests = [m["test/acc1"] for m in metrics if "test/acc1" in m]
    if summary:
        acc1_last, acc1_best = _number(summary.get("acc1_last")), _number(summary.get("acc1_best"))
    else:
        acc1_last, acc1_best = (tests[-1], max(tests)) if tests else (None, None)
    planned = (config.get("trainer") or {}).get("epochs")
    done = int(metrics[-1]["epoch"]) if metrics and "epoch" in metrics[-1] else None
    if summary and done is None:
        done = summary.get("epochs")
    seed = (summary or {}).get("seed", run.get("seed", config.get("seed", 0)))
    protocol = Protocol.from_config(config.get("protocol"))
    return RunRecord(
        dataset=fields["dataset"], method=method, teacher=teacher, student=student, seed=int(seed),
        acc1_last=acc1_last, acc1_best=acc1_best, source=source,
        experiment=run.get("experiment") or fields.get("experiment") or fields.get("name") or config.get("name"),
        variant=run.get("variant") or fields.get("variant") or DEFAULT_VARIANT,
        overrides=tuple(run.get("overrides") or ()),
        identity=run.get("identity") or fields.get("identity"),
        group=run.get("group") or fields.get("group"),
        precision=resolved.get("trainer.precision") or resolved.get("precision") or fields.get("precision"),
        data_generated=bool((run.get("data") or {}).get("generated", fields.get("data_generated", False))),
        finished=finished,
        has_run_record=bool(run.get("group") or fields.get("group")),
        epochs_done=done, epochs_planned=planned if planned is not None else (summary or {}).get("epochs"),
        protocol=protocol,
        code_revision=code_revision(run, fields),
    )


def record_from_summary(summary: dict, source: str, config: dict | None = None) -> RunRecord | None:
    """A finished run from its summary alone (the identity keys are part of it since run.json exists)."""
    return make_record(source, summary, None, config)


def read_metrics(run_dir: Path) -> list[dict]:
    """The epochs a run logged; a torn last line (the process died while appending it) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_directories(root: Path) -> list[Path]:
    """Folders below ``root`` that hold a run (any of its files), checkpoints excluded."""
    found = set()
    for name in (RUN_FILE, SUMMARY_FILE, METRICS_FILE):
        found.update(p.parent for p in Path(root).rglob(name))
    return sorted(found)


def load_run_dir(run_dir: Path) -> RunRecord | None:
    config_path = run_dir / CONFIG_FILE
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    return make_record(str(run_dir), _read_json(run_dir / SUMMARY_FILE), _read_json(run_dir / RUN_FILE), config,
                       read_metrics(run_dir))


def load_local_runs(roots: list[Path]) -> list[RunRecord]:
    """Every run below the given folders, finished or not."""
    records = []
    for root in roots:
        for run_dir in run_directories(root):
            record = load_run_dir(run_dir)
            if record is not None:
                records.append(record)
    return records


def load_wandb_runs(path: str, api=None) -> list[RunRecord]:
    """Finished runs of a W&B project ``entity/project``, from their summaries and configs.

    Each run's summary holds the same fields as ``summary.json`` (the trainer logs it whole, identity keys
    included) and its config the resolved config (with the experiment's ``protocol``), so a table can be
    rebuilt from W&B alone. Without credentials, or when the project cannot be read, a ``WandbAccessError``
    says how to log in or to use the local run directories instead.
    """
    if api is None:
        api = wandb_api(path)
    try:
        fetched = [(run.id, dict(run.summary), dict(getattr(run, "config", None) or {}))
                   for run in api.runs(path, filters={"state": "finished"})]
    except fetch_errors() as err:
        raise project_unreachable(path, err) from None
    records = []
    for run_id, summary, config in fetched:
        record = make_record(f"wandb:{path}/{run_id}", summary, None, config)
        if record is not None:
            records.append(record)
    return records
