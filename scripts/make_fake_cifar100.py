"""Write random stand-in CIFAR-100 files for smoke runs on machines without the dataset."""

from __future__ import annotations

import argparse

from distillbench.data.fake import write_fake_cifar100


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="dataset root; files go to <root>/cifar-100-python/")
    parser.add_argument("--train", type=int, default=500, help="number of training images")
    parser.add_argument("--test", type=int, default=100, help="number of test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace files already there")
    args = parser.parse_args(argv)
    folder = write_fake_cifar100(
        args.root, n_train=args.train, n_test=args.test, seed=args.seed, overwrite=args.overwrite
    )
    print(
        f"wrote fake CIFAR-100 ({args.train} train, {args.test} test images) to {folder}; "
        f"train on it with dataset.root={args.root} dataset.verify_checksums=false"
    )


if __name__ == "__main__":
    main()
