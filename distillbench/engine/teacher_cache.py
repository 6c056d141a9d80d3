"""The teacher's outputs for every crop-and-flip view of every training image, computed once.

A frozen teacher in eval mode is a fixed function of its input, and the recipe's augmentation
gives each training image a small set of views (CIFAR's zero-padded 32x32 crop and flip: 9 x 9
x 2 = 162). Methods that read only the teacher's logits and pooled embedding
(``Distiller.teacher_cacheable``) can therefore look the teacher's outputs up instead of running
it every step. Building the cache costs fewer teacher forwards than one 240-epoch run, and every
run with the same teacher weights and training set reuses the file.

The cache is keyed by a checksum of the teacher's weights (parameters and BN statistics) and of
the training images and augmentation recipe, so a different checkpoint or dataset never reads
a stale file.

It is stored in float32 (exact) unless ``trainer.teacher_cache_dtype`` asks for bf16 or fp16,
which halve the file and the device copy at the price of rounding the teacher's outputs
(``scripts/teacher_cache_precision.py`` measures how far); the dtype is part of the file's key
and of the run's identity. Its size is logged before it is built, and a disk without room for
it is a clear error before any teacher forward.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from distillbench.data.device_loader import DeviceLoader, EpochPlan
from distillbench.distillers.base import Distiller
from distillbench.engine.checkpoint import save_atomic
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput, forward_features, probe_shapes
from distillbench.runtime import distributed

log = logging.getLogger("distillbench")

CACHE_FORMAT = 1
# trainer.teacher_cache_dtype -> how the outputs are stored. float32 is exact; the others halve the size.
CACHE_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Room the cache's disk must keep beyond the file itself (the archive's headers, the file system).
DISK_MARGIN_BYTES = 64 * 2**20
# While ``shared_teacher_caches()`` is active: the caches loaded so far, by file, shared by every run.
_shared: dict[Path, TeacherCache] | None = None


@dataclass
class TeacherCache:
    """``logits[i, v]`` and ``pooled[i, v]``: the teacher's outputs for training image i in view v."""

    logits: Tensor
    pooled: Tensor

    def lookup(self, index: Tensor, view: Tensor) -> ModelOutput:
        """The teacher's outputs for a batch, in the layout a live forward gives (feats = [pooled])."""
        return ModelOutput(self.logits[index, view].float(), [self.pooled[index, view].float()])

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + self.pooled.nbytes


class TeacherCacheDoesNotFit(ConfigError):
    """The cache would not fit in the device's memory or on its folder's disk."""


def cache_dtype(name: str | torch.dtype) -> torch.dtype:
    """The storage dtype a ``trainer.teacher_cache_dtype`` value names (a torch dtype passes through)."""
    if isinstance(name, torch.dtype) and name in CACHE_DTYPES.values():
        return name
    if name not in CACHE_DTYPES:
        raise ConfigError(f"trainer.teacher_cache_dtype must be one of {', '.join(CACHE_DTYPES)}, got '{name}'. "
                          "float32 stores the teacher's outputs exactly; bf16 and fp16 take half the space.")
    return CACHE_DTYPES[name]


def cache_nbytes(teacher: nn.Module, loader: DeviceLoader, dtype: torch.dtype) -> int:
    """The cache's size: one row of logits and pooled embedding per (image, view), in ``dtype``."""
    probe = probe_shapes(teacher, (2, *loader.dataset[0][0].shape))
    per_view = probe.logits.shape[1] + probe.pooled.flatten(1).shape[1]
    return len(loader.dataset) * loader.num_views * per_view * dtype.itemsize


def disk_free_bytes(folder: Path) -> int:
    """Free bytes on the disk ``folder`` will live on (its nearest existing ancestor's)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk_room(folder: Path, needed: int, dtype: torch.dtype) -> None:
    """Raise ``TeacherCacheDoesNotFit`` before any work when the cache file cannot be written in ``folder``."""
    free = disk_free_bytes(folder)
    if needed + DISK_MARGIN_BYTES <= free:
        return
    smaller = ("store it in half the space with trainer.teacher_cache_dtype=bf16 (lossy: each of the teacher's "
               "values moves by up to 0.39%), " if dtype.itemsize > 2 else "")
    raise TeacherCacheDoesNotFit(
        f"The teacher-output cache needs {needed / 1e9:.2f} GB on disk in {folder} "
        f"({str(dtype).removeprefix('torch.')} values), but only "
        f"{free / 1e9:.2f} GB is free there. Point paths.cache at a disk with room (e.g. "
        f"paths.cache=/scratch/distillbench_cache), {smaller}or run the teacher live with "
        "trainer.teacher_cache=false. Nothing was computed or written."
    )


def device_free_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device; None elsewhere (host memory is not checked)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


def weights_checksum(model: nn.Module) -> str:
    """sha256 of every parameter and buffer, by name: what the teacher computes, whatever its file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(teacher_checksum: str, loader: DeviceLoader, dtype: torch.dtype, preact: bool) -> str:
    """What the cached outputs depend on: teacher weights, the images, the recipe, the storage dtype."""
    digest = hashlib.sha256()
    for part in (f"format={CACHE_FORMAT}", teacher_checksum, repr(loader.recipe), str(dtype), f"preact={preact}"):
        digest.update(part.encode())
    digest.update(loader.images.cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


@torch.inference_mode()
def compute_teacher_cache(
    teacher: nn.Module,
    loader: DeviceLoader,
    *,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    preact: bool = False,
) -> TeacherCache:
    """Run the eval-mode ``teacher`` on all (image, view) pairs of ``loader``'s dataset.

    The pairs are taken in order of image then view, ``batch_size`` at a time; each input is
    built by the loader's own ``make_batch``, so it is exactly the image a student step sees.
    """
    was_training = teacher.training
    teacher.eval()
    n, views = len(loader.dataset), loader.num_views
    device = loader.device
    logits = pooled = None
    try:
        for start in range(0, n * views, batch_size):
            pair = torch.arange(start, min(start + batch_size, n * views), device=device)
            index, view = pair // views, pair % views
            images = loader.make_batch(EpochPlan.of_views(index, view, loader.spans))[0]
            out = forward_features(teacher, images, preact=preact)
            batch_pooled = out.pooled.flatten(1)
            if logits is None:
                logits = torch.empty(n, views, out.logits.shape[1], dtype=dtype, device=device)
                pooled = torch.empty(n, views, batch_pooled.shape[1], dtype=dtype, device=device)
            logits[index, view] = out.logits.to(dtype)
            pooled[index, view] = batch_pooled.to(dtype)
    finally:
        teacher.train(was_training)
    return TeacherCache(logits, pooled)


def load_or_compute_teacher_cache(
    teacher: nn.Module,
    loader: DeviceLoader,
    cache_dir: str | Path,
    *,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    preact: bool = False,
) -> TeacherCache:
    """The cache for this teacher and training set: read from ``cache_dir``, else computed and saved there.

    A file that cannot be read or does not match is recomputed (it holds nothing that cannot
    be derived again), with a warning naming it. Before computing, the size is logged and the
    disk checked (``TeacherCacheDoesNotFit`` when it has no room).
    """
    key = cache_key(weights_checksum(teacher), loader, dtype, preact)
    path = Path(cache_dir) / f"teacher_outputs_{key}.pt"
    if _shared is not None and path in _shared:
        return _shared[path]
    expected = (len(loader.dataset), loader.num_views)
    if path.is_file():
        try:
            state = torch.load(path, map_location=loader.device, weights_only=True)
            cache = TeacherCache(state["logits"], state["pooled"])
            if tuple(cache.logits.shape[:2]) == expected and tuple(cache.pooled.shape[:2]) == expected:
                log.info("teacher outputs read from %s (%.2f GB)", path, cache.nbytes / 1e9)
                return _remember(path, cache)
            log.warning("The teacher-output cache %s does not match this dataset; computing it again.", path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
            log.warning("The teacher-output cache %s could not be read (%s); computing it again.", path, err)
    needed = cache_nbytes(teacher, loader, dtype)
    log.info("teacher-output cache: %d images x %d views in %s = %.2f GB, to be computed and saved to %s",
             *expected, str(dtype).removeprefix("torch."), needed / 1e9, path)
    check_disk_room(path.parent, needed, dtype)
    cache = compute_teacher_cache(teacher, loader, batch_size=batch_size, dtype=dtype, preact=preact)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"logits": cache.logits, "pooled": cache.pooled}, path)
    log.info("teacher outputs saved to %s (%.2f GB)", path, cache.nbytes / 1e9)
    return _remember(path, cache)


def _remember(path: Path, cache: TeacherCache) -> TeacherCache:
    if _shared is not None:
        _shared[path] = cache
    return cache


@contextlib.contextmanager
def shared_teacher_caches() -> Iterator[None]:
    """Inside, runs that load the same cache file get one shared copy (runs side by side in one process)."""
    global _shared
    _shared = {}
    try:
        yield
    finally:
        _shared = None


def why_not_cacheable(distiller: Distiller, loader: object) -> str | None:
    """None when the cache can stand in for this method's teacher on this loader; else why not."""
    if not distiller.teacher_cacheable or distiller.teacher_train_mode or distiller.teacher_grad:
        return (f"{type(distiller).__name__} reads more of the teacher than its logits and pooled embedding of a "
                "frozen eval-mode teacher, so its teacher's outputs cannot be cached.")
    if not hasattr(loader, "num_views"):
        return ("The teacher-output cache needs the device loader (dataset.loader=device), which numbers each "
                "sample's crop-and-flip view.")
    return None


def teacher_cache_for(
    teacher: nn.Module,
    distiller: Distiller,
    loader: DeviceLoader,
    cache_dir: str | Path,
    *,
    optional: bool = False,
    dtype: str | torch.dtype = "float32",
) -> TeacherCache | None:
    """The cache a run asked for, after checking it applies and fits; None when ``optional`` and it does not fit
    (device memory or disk).

    ``dtype`` is ``trainer.teacher_cache_dtype``. On several ranks rank 0 computes and saves the
    file and the others then read it.
    """
    reason = why_not_cacheable(distiller, loader)
    if reason is not None:
        raise ConfigError(f"{reason} Set trainer.teacher_cache=auto or false.")
    dtype = cache_dtype(dtype)
    try:
        _check_device_room(cache_nbytes(teacher, loader, dtype), loader.device, dtype)
    except TeacherCacheDoesNotFit as err:
        return _live_instead(err, optional)
    is_main = distributed.rank() == 0
    if not is_main:
        distributed.barrier()
    try:
        cache = load_or_compute_teacher_cache(teacher, loader, cache_dir, dtype=dtype, preact=distiller.preact)
    except TeacherCacheDoesNotFit as err:  # no room on the disk
        cache = _live_instead(err, optional)
    if is_main:
        distributed.barrier()
    return cache


def _live_instead(err: TeacherCacheDoesNotFit, optional: bool) -> None:
    """``trainer.teacher_cache=auto``: a warning and the live teacher; ``true``: the error."""
    if not optional:
        raise err
    log.warning("%s The teacher runs live instead (trainer.teacher_cache=auto).", err)
    return None


def _check_device_room(needed: int, device: torch.device, dtype: torch.dtype) -> None:
    """At most half the device's free memory, else ``TeacherCacheDoesNotFit``."""
    free = device_free_bytes(device)
    if free is None or needed <= free / 2:
        return
    smaller = ", store it in half the space with trainer.teacher_cache_dtype=bf16" if dtype.itemsize > 2 else ""
    raise TeacherCacheDoesNotFit(
        f"The teacher-output cache needs {needed / 1e9:.1f} GB, more than half of the {free / 1e9:.1f} GB free on "
        f"{device}. Set trainer.teacher_cache=auto or false{smaller}, or free device memory.")
