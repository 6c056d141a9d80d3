"""The command line, ``python -m distillbench experiment=NAME [overrides]``: parse, build, run, report.

Hydra composes the config; ``distillbench.jobs`` builds (``distillbench.build``) and trains what it asks
for; this module reports the outcome: a results table, the value a sweeper optimises, or a user's mistake
as one paragraph with exit code 2. Nothing below this module reads Hydra's runtime.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from distillbench.catalog import CONFIG_DIR, experiment_names
from distillbench.engine.preemption import Preempted
from distillbench.errors import EXIT_USER_ERROR, ConfigError, UserError
from distillbench.helptext import help_text
from distillbench.identity import variant_name
from distillbench.jobs import results_table, run_jobs, run_or_reuse, run_side_by_side
from distillbench.runtime import distributed

log = logging.getLogger("distillbench")


def current_overrides() -> list[str]:
    """The command line's overrides for this job (a sweep's job sees its own values)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run (configs composed in tests)
        return []


# The run directory's variant part, from the overrides of the job being launched (configs/config.yaml), and
# the experiments of --help, grouped by paper (configs/hydra/help/distillbench.yaml).
OmegaConf.register_new_resolver("distillbench.variant", lambda: variant_name(current_overrides()), replace=True)
OmegaConf.register_new_resolver("distillbench.abspath", lambda path: os.path.abspath(str(path)), replace=True)
OmegaConf.register_new_resolver("distillbench.help", help_text, replace=True)


def report_user_error(err: UserError) -> None:
    """One paragraph, no traceback: the message says what is wrong and what to do."""
    log.error("%s", " ".join(str(err).split()))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` of the run's summary, for hyperparameter sweepers."""
    run_dir, overrides = Path(HydraConfig.get().runtime.output_dir), current_overrides()
    try:
        if cfg.get("jobs"):
            print("\n" + results_table(run_jobs(cfg, run_dir, overrides)) + "\n", flush=True)
        elif cfg.get("side_by_side_seeds"):
            run_side_by_side(cfg, run_dir, overrides)
        else:
            summary = run_or_reuse(cfg, run_dir, overrides)
            return summary[cfg.optimized_metric] if cfg.get("optimized_metric") else None
        return None
    except UserError as err:
        report_user_error(err)
        sys.exit(EXIT_USER_ERROR)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(128 + err.signum)  # as if killed by the signal, but with the work saved
    finally:
        distributed.shutdown()


def check_experiment_name(argv: list[str]) -> None:
    """An unknown ``experiment=NAME``: a short error naming the closest experiments, before Hydra would list
    all of them. Sweeps and globs (``a,b``, ``glob(...)``) are left to Hydra."""
    known = experiment_names()
    for arg in argv:
        key, sep, name = arg.partition("=")
        if key.lstrip("+") != "experiment" or not sep or any(c in name for c in ",()*?[") or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"There is no experiment '{name}'.{hint} Experiments are the files of "
                          f"{CONFIG_DIR / 'experiment'} ({len(known)} of them; `python -m distillbench --help` "
                          "lists them by paper).")


def entry() -> None:
    """``python -m distillbench`` and the ``distillbench`` command: names checked, then Hydra's ``main``."""
    try:
        check_experiment_name(sys.argv[1:])
    except UserError as err:
        print(f"Error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    main()
