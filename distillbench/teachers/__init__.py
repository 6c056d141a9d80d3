"""The released CIFAR-100 teachers, fetched and verified in one command (scripts/fetch_teachers.py).

RepDistiller's original server (http://shape2prog.csail.mit.edu/repo/) is gone; the teachers are taken
from mdistiller's release asset ``cifar_teachers.tar`` (see ``release``) and land in RepDistiller's layout
under ``paths.teachers``, where configs/teacher/*.yaml look for them. Scoring them on CIFAR-100 lives in
``distillbench.teachers.evaluate`` (it imports the model zoo; fetching alone needs only the standard library).
"""

from distillbench.teachers.errors import DownloadFailed, TeachersError
from distillbench.teachers.fetch import FetchResult, Teacher, fetch_teachers, offline_message
from distillbench.teachers.release import ARCHIVE_NAME, ARCHIVE_URL, RELEASED_ARCHS, teacher_relpath

__all__ = [
    "ARCHIVE_NAME", "ARCHIVE_URL", "RELEASED_ARCHS", "DownloadFailed", "FetchResult", "Teacher", "TeachersError",
    "fetch_teachers", "offline_message", "teacher_relpath",
]
