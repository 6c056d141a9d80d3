"""Run identity: which settings can change a run's result, and a stable hash of them.

A run's config mixes two kinds of keys. Models, data and augmentation, the recipe, the method
and its weights, the precision and the other switches that move the arithmetic, and the seed
can change the numbers a run ends with; the device index, progress bars, logging, paths and
worker counts cannot. The *identity* is a hash of the first kind only, taken after every
``auto`` has been decided (``bf16`` on this machine is not ``float32`` on that one). It names
what a run directory holds, guards ``resume=true``, and groups seeds in the tables: two runs
with different identities are never averaged together.

Everything counts unless it is listed in ``NOT_IDENTITY``: a new config key is part of the
identity until someone argues that it cannot change a result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Keys (and whole subtrees) that cannot change what a run computes. Matched against dotted keys.
NOT_IDENTITY = (
    # Where and how the run is launched and written.
    "experiment", "name", "run_dir", "resume", "overwrite", "jobs", "side_by_side_seeds", "optimized_metric",
    "hydra", "logger", "paths",
    # Which weight a tuning sweep draws, and from where (distillbench/tuning.py); the drawn value itself counts.
    "distiller.tune_weight", "tune_weight_range",
    # What the run is compared with, not what it computes.
    "published", "protocol", "teacher.expected_acc1",
    # Files are identified by their content (teacher.weights_sha256), not by where they lie.
    "teacher.checkpoint", "probe.checkpoint", "probe.source_experiment",
    # Where the data lies and how fast it is read; the images themselves are checked by their md5 sums.
    "dataset.root", "dataset.download", "dataset.build.root", "dataset.build.download",
    "dataset.num_workers", "dataset.test_num_workers",
    "dataset.test_batch_size", "dataset.device_test_batch_size",
    # Device choice, console, fault handling and bookkeeping.
    "trainer.device", "trainer.progress", "trainer.cudnn_benchmark", "trainer.check_finite_every",
    "trainer.checkpoint_every_steps", "trainer.detect_anomaly", "trainer.teacher_acc1_tolerance",
    "trainer.distributed.backend", "trainer.compile_backend", "trainer.device_type",
    # The teacher-output cache returns exactly what the live teacher computes (tests/engine/test_teacher_cache.py).
    "trainer.teacher_cache", "teacher_cache_planned",
)

# Settings added after runs existed, at the value that does what every run did before them: left out of the
# hash at that value, so adding a switch does not change the identity of runs that never used it.
NEUTRAL = {
    "trainer.compile_scope": "models",
    "trainer.teacher_cache_dtype": "float32",
}

# Command-line keys that name no config value of their own but pick the run's place or launcher.
_LAUNCH_KEYS = ("hydra/", "seed")

MAX_VARIANT_CHARS = 80
DEFAULT_VARIANT = "default"


def _listed(key: str, listed: Iterable[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in listed)


def counts_for_identity(key: str) -> bool:
    """Whether a dotted config key can change a run's result."""
    return not _listed(key, NOT_IDENTITY)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def identity_fields(config: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config keys that can change the result, with ``resolved`` (the decided ``auto``
    values and facts such as the teacher's weight checksum) written over them."""
    fields = {k: v for k, v in flatten(config).items() if counts_for_identity(k)}
    fields.update({k: v for k, v in resolved.items() if counts_for_identity(k)})
    return dict(sorted((k, v) for k, v in fields.items() if not (k in NEUTRAL and v == NEUTRAL[k])))


def stable_hash(fields: Mapping[str, Any], length: int = 16) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def identity_hash(fields: Mapping[str, Any]) -> str:
    """Everything that can change the result, the seed included."""
    return stable_hash(fields)


def group_hash(fields: Mapping[str, Any]) -> str:
    """The identity without the seed: the runs whose mean ± std over seeds form one table cell."""
    return stable_hash({k: v for k, v in fields.items() if k != "seed"})


def differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``key: stored -> requested`` for every key whose value differs (or exists on one side only)."""
    missing = "(absent)"
    lines = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key, missing), requested.get(key, missing)
        if json.dumps(a, default=str, sort_keys=True) != json.dumps(b, default=str, sort_keys=True):
            lines.append(f"{key}: {a} -> {b}")
    return lines


# ---------------------------------------------------------------------------- variants
def _canonical(value: Any) -> str:
    """One spelling per value: a sweep's job sees ``False`` and ``0.1`` where the command line said ``false``
    and ``0.10``; both must name the same directory."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, str | None]]:
    """(key, canonical value) per override, ``None`` for a deletion (``~key``), parsed as Hydra parses them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = []
    for override in overrides:
        try:
            (item,) = OverridesParser.create().parse_overrides([override])
        except Exception:  # noqa: BLE001 - an override Hydra itself would reject never reaches a run
            key, sep, value = override.lstrip("+~").partition("=")
            parsed.append((key.strip(), value.strip() if sep else None))
            continue
        parsed.append((item.key_or_group, None if item.is_delete() else _canonical(item.value())))
    return parsed


def variant_overrides(overrides: Iterable[str]) -> list[str]:
    """The command-line overrides that can change the result, in one canonical spelling, sorted by key.

    Group choices count like values (``dataset=digits``, ``trainer=fast``); the experiment, the seed,
    launcher and Hydra settings and the keys of ``NOT_IDENTITY`` do not.
    """
    kept = {}
    for key, value in parse_overrides(overrides):
        config_key = key.replace("/", ".")
        if _listed(key, _LAUNCH_KEYS) or key.startswith("hydra") or not counts_for_identity(config_key):
            continue
        kept[key] = f"~{key}" if value is None else f"{key}={value}"
    return [kept[k] for k in sorted(kept)]


def variant_name(overrides: Iterable[str]) -> str:
    """A directory name for a set of overrides, in Hydra's override-dirname style.

    ``default`` when nothing that can change the result was overridden; a long list is cut and
    completed with a hash of the whole, so the name stays readable, short and deterministic (a
    requeued job finds its directory again).
    """
    kept = variant_overrides(overrides)
    if not kept:
        return DEFAULT_VARIANT
    name = ",".join(kept)
    name = re.sub(r"[/\\\s]", "_", name)
    if len(name) > MAX_VARIANT_CHARS:
        digest = hashlib.sha256(",".join(kept).encode()).hexdigest()[:8]
        name = name[: MAX_VARIANT_CHARS - 9].rstrip(",") + "-" + digest
    return name
