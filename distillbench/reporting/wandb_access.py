"""Access to W&B's API for ``make_tables.py --wandb``, refused in one paragraph when it cannot work.

Without credentials ``wandb.Api()`` either prompts for a key (on a terminal) or raises with a traceback;
both are checked for here first, without touching the network, so that the tables script can say what to
do instead: log in, or build the tables from the run directories every run writes anyway.
"""

from __future__ import annotations

from distillbench.errors import UserError
from distillbench.loggers.wandb_logger import has_api_key

LOGIN_HELP = ("Log in once with `wandb login` (it stores the key in ~/.netrc), or set WANDB_API_KEY=<your key> "
              "(find it at https://wandb.ai/authorize), then run the command again. Without W&B, build the tables "
              "from the run directories every run writes whether or not W&B is on: "
              "`python scripts/make_tables.py --runs runs/` (add the folders you copied runs to).")


class WandbAccessError(UserError, RuntimeError):
    """W&B cannot be read from here: no credentials, no wandb package, or the project cannot be reached."""


def wandb_api(project: str):
    """A ``wandb.Api``, or a ``WandbAccessError`` saying how to log in (or to use the local run directories)."""
    if not has_api_key():
        raise WandbAccessError(
            f"Reading runs from W&B (--wandb {project}) needs a W&B API key, and none is configured on this "
            f"machine (no WANDB_API_KEY, no W&B entry in ~/.netrc). {LOGIN_HELP}")
    try:
        import wandb
    except ImportError as err:
        raise WandbAccessError(f"Reading runs from W&B (--wandb {project}) needs the wandb package ({err}): "
                               f"`pip install wandb`. {LOGIN_HELP}") from None
    try:
        return wandb.Api()
    except fetch_errors() as err:
        raise WandbAccessError(f"W&B refused the login for --wandb {project} ({err}). {LOGIN_HELP}") from None


def fetch_errors() -> tuple[type[Exception], ...]:
    """What W&B's client raises for a refused key, a missing project or no network (requests' errors are
    OSErrors)."""
    try:
        from wandb.errors import Error
    except ImportError:
        return OSError, ValueError
    return Error, OSError, ValueError


def project_unreachable(project: str, err: Exception) -> WandbAccessError:
    return WandbAccessError(
        f"The runs of W&B project {project} could not be read ({type(err).__name__}: {err}). Check that the "
        "name is ENTITY/PROJECT as W&B shows it, that this machine reaches W&B and that your key may read the "
        "project; or build the tables from the local run directories: `python scripts/make_tables.py --runs runs/`.")
