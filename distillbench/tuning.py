"""The search space of ``hparams_search=weight_optuna``: the distillation term's weight, wherever the method keeps it.

A single method keeps its weight at ``distiller.method.weight``; a combined one keeps each part's under the part's
name (``distiller.method.crd.weight`` for CRD+KD), and some name it otherwise (``global_weight``, ``crcd_weight``).
So each distiller config names its tuned weight in ``tune_weight``, a dotted key from the config root, and Optuna's
sweeper asks ``suggest_tuned_weight`` for it on every trial (``hydra.sweeper.custom_search_space``): one search
config then serves every method.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from distillbench.errors import EXIT_USER_ERROR, ConfigError

log = logging.getLogger("distillbench")

RANGE_KEY = "tune_weight_range"


def tuned_weight_key(cfg: DictConfig) -> str:
    """The dotted key of the weight to tune, checked to name a number in ``cfg``."""
    name = cfg.distiller.get("name")
    key = cfg.distiller.get("tune_weight")
    if key is None:
        raise ConfigError(
            f"distiller={name} has no loss weight for hparams_search=weight_optuna to tune (its config sets "
            "tune_weight: null). Name the value to search with distiller.tune_weight=<dotted key>, or search other "
            "knobs alone with hydra.sweeper.custom_search_space=null hydra.sweeper.params='{KEY: interval(LOW, HIGH)}'."
        )
    value = OmegaConf.select(cfg, str(key), default=None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"distiller.tune_weight={key} (distiller={name}) does not name a number in the composed config (found "
            f"{value!r}). Set it to the dotted key of the weight to tune, e.g. distiller.method.weight, as printed by "
            "`python -m distillbench experiment=NAME --cfg job`."
        )
    return str(key)


def tuned_weight_range(cfg: DictConfig) -> tuple[float, float]:
    """(low, high) of the log-scale search, from ``tune_weight_range`` (configs/hparams_search/weight_optuna.yaml):
    absolute, or with ``relative: true`` multiples of the weight the method's config sets."""
    bounds = cfg.get(RANGE_KEY)
    low, high = (bounds.get("low"), bounds.get("high")) if bounds is not None else (None, None)
    if not all(isinstance(b, int | float) and not isinstance(b, bool) for b in (low, high)) or not 0 < low < high:
        raise ConfigError(
            f"{RANGE_KEY} must hold two numbers 0 < low < high for the log-scale weight search, got {bounds!r}. "
            f"Set them with {RANGE_KEY}.low=... {RANGE_KEY}.high=... (hparams_search=weight_optuna sets 0.05 and 20)."
        )
    if bounds.get("relative", False):  # multiples of the method's own weight: PKT's 30000 and KD's 0.9 alike
        default = float(OmegaConf.select(cfg, tuned_weight_key(cfg)))
        if default <= 0:
            raise ConfigError(f"{RANGE_KEY}.relative=true scales the search by the method's weight, which is "
                              f"{default} here; give absolute bounds with {RANGE_KEY}.relative=false.")
        return float(low) * default, float(high) * default
    return float(low), float(high)


def suggest_tuned_weight(cfg: DictConfig, trial) -> None:
    """Optuna's ``custom_search_space`` hook: draw the tuned weight on a log scale under its own dotted key, which
    the sweeper passes to the trial as the override ``KEY=VALUE``."""
    try:
        key, (low, high) = tuned_weight_key(cfg), tuned_weight_range(cfg)
    except ConfigError as err:
        # Raised inside Hydra's sweeper, the message would end a long traceback: one paragraph and exit code 2
        # instead, as the command line reports every error a user can fix.
        log.error("%s", " ".join(str(err).split()))
        sys.exit(EXIT_USER_ERROR)
    trial.suggest_float(key, low, high, log=True)
