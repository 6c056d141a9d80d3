"""Fetch the released CIFAR-100 teachers into paths.teachers, verified, and say where each one is.

    python scripts/fetch_teachers.py                                  # into paths.teachers (default teachers/)
    python scripts/fetch_teachers.py --archive ~/cifar_teachers.tar   # a tar downloaded by hand
    python scripts/fetch_teachers.py --evaluate paths.data=/data      # and score each on the CIFAR-100 test split

The teachers come from mdistiller's release asset cifar_teachers.tar (RepDistiller's original server is gone)
and land at <paths.teachers>/<arch>_vanilla/ckpt_epoch_240.pth, the teacher configs' default checkpoint.
Trailing key=value arguments are config overrides (paths.teachers, paths.data, dataset.root, ...), read as
``python -m distillbench`` reads them, configs/local/default.yaml included. Exit code 2 with one paragraph
on any failure the user can fix (no network: what to download by hand and where to put it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distillbench.catalog import CONFIG_DIR  # noqa: E402 (the configs inside the package)
from distillbench.errors import EXIT_USER_ERROR, ConfigError, UserError
from distillbench.teachers import ARCHIVE_NAME, ARCHIVE_URL, FetchResult, fetch_teachers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, help="folder for the teachers (default: paths.teachers)")
    parser.add_argument("--url", default=ARCHIVE_URL, help=f"where to download {ARCHIVE_NAME} (a mirror)")
    parser.add_argument("--archive", type=Path, help=f"a {ARCHIVE_NAME} already downloaded; nothing is downloaded")
    parser.add_argument("--sha256", help="the archive's expected sha256 (none is published; see the README)")
    parser.add_argument("--force", action="store_true",
                        help="replace teacher files that differ from the released ones (kept otherwise)")
    parser.add_argument("--evaluate", action="store_true",
                        help="report each teacher's CIFAR-100 test top-1 (dataset root: dataset.root / paths.data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. paths.teachers=/data/teachers")
    return parser.parse_args(argv)


def compose(overrides: list[str]):
    """The base config with ``overrides``: where paths.teachers and the dataset lie on this machine."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        reason = str(err).split("Config search path")[0].strip()
        raise ConfigError(f"The overrides {' '.join(overrides)} do not compose: {reason}") from None


def print_result(result: FetchResult, configured: Path) -> None:
    print(f"Teachers in {result.dest}:")
    for teacher in result.teachers:
        print(f"  {teacher.arch:<11} {teacher.path}  ({teacher.status})")
    if result.absent:
        print(f"  not in the archive: {', '.join(result.absent)}")
    print(f"sha256 of each file: {result.manifest}")
    if result.dest != configured.resolve():
        print(f"Experiments find them with paths.teachers={result.dest} (or set paths.teachers in "
              "configs/local/default.yaml).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = compose(args.overrides)
        configured = Path(cfg.paths.teachers)
        result = fetch_teachers(args.dest or configured, url=args.url, archive=args.archive, sha256=args.sha256,
                                force=args.force, progress=not args.quiet)
        print_result(result, configured)
        if args.evaluate:
            from distillbench.teachers.evaluate import evaluate_teachers  # the model zoo: only when scoring

            root = Path(cfg.dataset.root)
            print(f"CIFAR-100 test top-1 ({root}):", flush=True)
            for score in evaluate_teachers({t.arch: t.path for t in result.teachers}, root,
                                           verify_checksums=cfg.dataset.verify_checksums,
                                           download=cfg.dataset.download,
                                           num_workers=cfg.dataset.test_num_workers):
                expected = "" if score.expected_acc1 is None else (
                    f"  (published {score.expected_acc1:.2f}, {score.acc1 - score.expected_acc1:+.2f})")
                print(f"  {score.arch:<11} {score.acc1:6.2f}{expected}", flush=True)
    except UserError as err:
        print(" ".join(str(err).split()), file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
