"""``python -m distillbench.eval experiment=NAME checkpoint=/path/model.pth [overrides]``: score any checkpoint.

Prints the test top-1, top-5 and mean cross-entropy of the network in ``checkpoint`` on the test split of the
experiment's dataset. The network is the experiment's student (its teacher for ``role: teacher`` and
``role: eval`` experiments, the linear probe for transfer ones), or ``arch=NAME``. The config is composed as
``python -m distillbench`` composes it, so every override works (``dataset.root=/data``,
``trainer.device=cpu``, ``debug=fast`` for a subset), but nothing is trained and nothing is written: no run
directory is created or touched. Any ``{'model': state_dict}`` file loads: distillbench's ``model.pth`` and
``model_best.pth``, RepDistiller's and mdistiller's ``ckpt_epoch_240.pth``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from distillbench.build import build_object, resolve_device
from distillbench.catalog import CONFIG_DIR
from distillbench.cli import report_user_error
from distillbench.data.subset import apply_subset
from distillbench.engine.evaluation import evaluate
from distillbench.errors import EXIT_USER_ERROR, ConfigError, UserError
from distillbench.models import create_model
from distillbench.weights import CheckpointError, load_file, load_model_weights

log = logging.getLogger("distillbench")

USAGE = """usage: python -m distillbench.eval [experiment=NAME] checkpoint=/path/model.pth [arch=NAME] [overrides]

Scores the network in checkpoint on the test split of the experiment's dataset (top-1, top-5, loss).
  checkpoint=PATH  a {'model': state_dict} file: model.pth, model_best.pth, RepDistiller/mdistiller checkpoints
  arch=NAME        the network's architecture (default: the experiment's student; its teacher for role=teacher)
  overrides        as for python -m distillbench, e.g. dataset.root=/data trainer.device=cpu
Nothing is written."""

# Arguments of this command that are not config keys.
OPTIONS = ("checkpoint", "arch")


def split_arguments(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``checkpoint=`` and ``arch=`` (with or without a leading ``+``) apart from the Hydra overrides."""
    options, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key in OPTIONS:
            options[key] = value
        else:
            overrides.append(arg)
    return options, overrides


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config ``python -m distillbench OVERRIDES`` would run, composed without a Hydra run (no directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        reason = str(err).split("Config search path")[0].strip()
        raise ConfigError(f"The overrides {' '.join(overrides) or '(none)'} do not compose: {reason}") from None


def build_network(cfg: DictConfig, arch: str | None = None) -> tuple[torch.nn.Module, str, str]:
    """The network a checkpoint of ``cfg``'s runs holds, with its architecture name and the config keys that chose
    it (for the error message when a file does not fit)."""
    num_classes = cfg.dataset.num_classes
    if arch is not None:
        return create_model(arch, num_classes=num_classes), arch, "arch and dataset.num_classes"
    if cfg.role == "probe":  # a transfer run's model.pth: the frozen backbone and its linear head
        from distillbench.models.linear_probe import LinearProbe
        from distillbench.models.outputs import probe_shapes

        probe = cfg.probe
        backbone = create_model(probe.arch, num_classes=probe.source_num_classes)
        size = cfg.dataset.get("size", 32)
        dim = probe_shapes(backbone, (2, 3, size, size)).pooled.shape[1]
        return LinearProbe(backbone, dim, num_classes), probe.arch, "probe.arch and dataset.num_classes"
    role = "teacher" if cfg.role in ("teacher", "eval") else "student"
    arch = cfg[role].arch
    return create_model(arch, num_classes=num_classes), arch, f"{role}.arch (or arch=) and dataset.num_classes"


def evaluate_checkpoint(cfg: DictConfig, checkpoint: str | Path, arch: str | None = None) -> dict:
    """Top-1/top-5 (percent) and mean cross-entropy of the network in ``checkpoint`` on ``cfg``'s test split.

    Also returns the architecture, the dataset, the number of test images, and the ``acc1``/``epoch`` the file
    records (distillbench's files; None for others)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"The checkpoint '{path}' does not exist. Pass checkpoint=/path/to/file: a run keeps model.pth (the last "
            "epoch) and model_best.pth (the best test top-1) in its directory, <paths.runs>/<experiment>/<variant>/"
            "seed<seed>/; RepDistiller's and mdistiller's ckpt_epoch_240.pth load too."
        )
    stored = load_file(path)
    stored = stored if isinstance(stored, dict) else {}
    model, arch, fields = build_network(cfg, arch)
    try:
        load_model_weights(model, path, arch, fields=fields)
    except CheckpointError as err:
        recorded = stored.get("arch")
        hint = f" The file records arch '{recorded}': pass arch={recorded}." if recorded and recorded != arch else ""
        raise CheckpointError(f"{err}{hint}") from None
    train_set, test_set = build_object(cfg.dataset.build)
    _, test_set = apply_subset(train_set, test_set, cfg.dataset.get("subset"))
    device = resolve_device(cfg.trainer.device)
    loader = DataLoader(test_set, batch_size=cfg.dataset.test_batch_size, shuffle=False,
                        num_workers=cfg.dataset.test_num_workers, pin_memory=device.type == "cuda")
    scores = evaluate(model.to(device), loader, device)
    return {**scores, "arch": arch, "dataset": cfg.dataset.name, "split": "test", "images": len(test_set),
            "checkpoint": str(path), "recorded_acc1": stored.get("acc1"), "recorded_epoch": stored.get("epoch")}


def format_result(result: dict) -> str:
    line = (f"{result['arch']} on {result['dataset']} {result['split']} ({result['images']} images): "
            f"top-1 {result['acc1']:.2f}  top-5 {result['acc5']:.2f}  loss {result['loss']:.4f}  "
            f"[{result['checkpoint']}]")
    if result.get("recorded_acc1") is not None:
        line += f"\n(the file records top-1 {result['recorded_acc1']:.2f} at epoch {result.get('recorded_epoch')})"
    return line


def main(argv: Sequence[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return None
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    options, overrides = split_arguments(argv)
    try:
        if not options.get("checkpoint"):
            raise ConfigError("No checkpoint given: pass checkpoint=/path/model.pth, e.g. `python -m distillbench.eval "
                              "experiment=kd_resnet32x4_8x4 checkpoint=runs/kd_resnet32x4_8x4/default/seed0/model.pth "
                              "dataset.root=/data`.")
        cfg = compose(overrides)
        result = evaluate_checkpoint(cfg, options["checkpoint"], options.get("arch") or None)
    except UserError as err:
        report_user_error(err)
        sys.exit(EXIT_USER_ERROR)
    print(format_result(result), flush=True)
    return result


if __name__ == "__main__":
    main()
