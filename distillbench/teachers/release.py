"""Where the released CIFAR-100 teachers are published, and what is known about the files.

RepDistiller (CRD) trained the CIFAR-100 teachers the papers distil from and served them one file
at a time from ``http://shape2prog.csail.mit.edu/repo/<arch>_vanilla/ckpt_epoch_240.pth``
(its ``scripts/fetch_pretrained_teachers.sh``). That server is gone. The same teachers, in the same
layout, are published by mdistiller (DKD) as one release asset, ``cifar_teachers.tar``, whose files
unpack to ``cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth``.

Neither project publishes checksums. One file's sha256 is pinned here (``KNOWN_SHA256``, recorded
independently from the same release asset); every other file's sha256 is recorded in the destination's
manifest the first time it is fetched and checked on every later run.
"""

from __future__ import annotations

RELEASE_PAGE = "https://github.com/megvii-research/mdistiller/releases/tag/checkpoints"
ARCHIVE_NAME = "cifar_teachers.tar"
ARCHIVE_URL = f"https://github.com/megvii-research/mdistiller/releases/download/checkpoints/{ARCHIVE_NAME}"
# About 364 MB (six teachers, each with its optimizer state); used only to describe the download.
ARCHIVE_APPROX_MB = 364
# Every member of the archive lies under this folder, which maps onto paths.teachers.
ARCHIVE_FOLDER = "cifar_teachers"
# RepDistiller's original server, gone: named in messages so that no one looks for it.
DEAD_SERVER = "http://shape2prog.csail.mit.edu/repo/"

# The teachers of the CIFAR-100 tables (RepDistiller's fetch script and mdistiller's model table list the same six).
RELEASED_ARCHS = ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")
CHECKPOINT_NAME = "ckpt_epoch_240.pth"


def teacher_relpath(arch: str) -> str:
    """A teacher's file under paths.teachers: RepDistiller's layout, which configs/teacher/*.yaml expect."""
    return f"{arch}_vanilla/{CHECKPOINT_NAME}"


# sha256 of files inside the archive, by path under ARCHIVE_FOLDER.
KNOWN_SHA256 = {
    teacher_relpath("resnet32x4"): "22aa12e2b632b19ddde155ccf2388671842ddd304824b3095e0a7fff364beb4f",
}
