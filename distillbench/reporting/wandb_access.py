"""Access to W&B's API for ``make_tables.py --wandb``, refused in one paragraph when it cannot work.

Without credentials ``wandb.Api()`` either prompts for a key (on a terminal) or raises with a traceback;
both are checked for here first, without touching the network, so that the tables script can say what to
do instead: log in, or build the tables from the run directories every run writes anyway.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from distillbench.errors import UserError

LOGIN_HELP = ("Log in once with `wandb login` (it stores the key in ~/.netrc), or set WANDB_API_KEY=<your key> "
              "(find it at https://wandb.ai/authorize), then run the command again. Without W&B, build the tables "
              "from the run directories every run writes whether or not W&B is on: "
              "`python scripts/make_tables.py --runs runs/` (add the folders you copied runs to).")


class WandbAccessError(UserError, RuntimeError):
    """W&B cannot be read from here: no credentials, no wandb package, or the project cannot be reached."""


def _netrc_has_a_key() -> bool:
    """Any machine in the netrc file with a password: W&B may be logged in against any host."""
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        hosts = netrc.netrc(path).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any(entry[-1] for entry in hosts.values())


def has_credentials() -> bool:
    """A W&B key in the environment, an identity token file, or a netrc entry; read locally only."""
    return bool(os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
                or _netrc_has_a_key())


def wandb_api(project: str):
    """A ``wandb.Api``, or a ``WandbAccessError`` saying how to log in (or to use the local run directories)."""
    if not has_credentials():
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
