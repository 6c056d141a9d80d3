"""Several ranks on the CPU (gloo): sharding, consistent contrastive memories, and a torchrun run of the CLI
against the single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distillbench.data.sampling import EpochShuffleSampler
from distillbench.distillers.memory import build_contrast_memory
from distillbench.distillers.rrd import RRD
from distillbench.errors import ConfigError
from distillbench.loggers import read_metrics
from distillbench.models import create_model
from distillbench.models.outputs import ModelOutput
from distillbench.runtime.distributed import gather_batch

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n", [256, 250])
def test_ranks_share_every_global_batch_like_one_process(n) -> None:
    single = EpochShuffleSampler(n, seed=3, batch_size=64)
    single.set_epoch(2)
    ranks = [EpochShuffleSampler(n, seed=3, rank=r, world_size=WORLD, batch_size=32) for r in range(WORLD)]
    for sampler in ranks:
        sampler.set_epoch(2)
    order, shares = list(single), [list(s) for s in ranks]
    rebuilt = []
    for start in range(0, n, 32):  # per-rank batches of 32, the tail split in two halves
        for share in shares:
            step = start // 32
            rebuilt += share[step * 32:(step + 1) * 32]
    assert sorted(rebuilt) == sorted(order)
    assert [len(s) for s in shares] == [len(s) for s in ranks]
    # Global batch k = rank 0's k-th batch, then rank 1's.
    steps = -(-n // 64)
    for k in range(steps):
        tail = min(64, n - 64 * k)
        joined = shares[0][32 * k:32 * k + tail // 2] + shares[1][32 * k:32 * k + tail - tail // 2]
        assert joined == order[64 * k:64 * k + tail]
    # Skipping counts samples of the whole epoch.
    for r, sampler in enumerate(ranks):
        sampler.set_epoch(2, skip=128)
        assert list(sampler) == shares[r][64:]


def memory_steps(rank: int, world: int, port: int, out: str) -> None:
    """CRD's banks, Z and negatives, and RRD's queue, after 3 steps fed with this rank's share of each batch."""
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    labels = torch.arange(40) % 5
    memory, sampler = build_contrast_memory(labels, feat_dim=8, num_negatives=6, temperature=0.07, momentum=0.5,
                                            mode="exact")
    rrd = RRD(queue_size=16, feat_dim=4)
    rrd.setup(ModelOutput(torch.zeros(2, 3), [torch.zeros(2, 6)]), ModelOutput(torch.zeros(2, 3), [torch.zeros(2, 5)]),
              labels)
    draws = []
    for step in range(3):
        index = torch.arange(8) * 5 + step  # a global batch of 8
        emb_s = torch.sin(torch.arange(64.0) + step).reshape(8, 8)
        emb_t = torch.cos(torch.arange(64.0) * 0.5 + step).reshape(8, 8)
        share = slice(rank * 8 // world, (rank + 1) * 8 // world)
        contrast = sampler.draw(index[share], labels[index[share]], epoch=1)
        memory(emb_s[share], emb_t[share], index[share], contrast)
        draws.append(gather_batch(contrast))
        rrd.queue_loss(emb_s[share, :6], emb_t[share, :5])
    if rank == 0:
        torch.save({"student": memory.student.bank, "teacher": memory.teacher.bank, "z": memory.student.z,
                    "draws": torch.stack(draws), "queue": rrd.queue, "ptr": rrd.queue_ptr}, out)
    if world > 1:
        dist.destroy_process_group()


def test_contrastive_memories_on_two_ranks_equal_the_single_process_ones(tmp_path) -> None:
    memory_steps(0, 1, 0, str(tmp_path / "single.pt"))
    mp.spawn(memory_steps, args=(WORLD, free_port(), str(tmp_path / "ranks.pt")), nprocs=WORLD, join=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=True)
    assert torch.equal(ranks["draws"], single["draws"])  # the same negatives, drawn for the global batch
    assert torch.equal(ranks["student"], single["student"]) and torch.equal(ranks["teacher"], single["teacher"])
    assert torch.equal(ranks["queue"], single["queue"]) and torch.equal(ranks["ptr"], single["ptr"])
    torch.testing.assert_close(ranks["z"], single["z"], rtol=1e-6, atol=0)


def run_cli(args: list[str], run_dir: Path, ranks: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                f"--master_port={free_port()}"] if ranks > 1 else [sys.executable]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "distillbench", *args, f"hydra.run.dir={run_dir}"], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def crd_runs(fake_cifar_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, tmp / "teacher.pth")
    args = ["distiller=crd", "distiller.method.num_negatives=64", "teacher=resnet8", "student=resnet8",
            f"teacher.checkpoint={tmp / 'teacher.pth'}", f"dataset.root={fake_cifar_root}",
            "dataset.verify_checksums=false", "dataset.num_workers=0", "dataset.test_num_workers=0",
            "dataset.batch_size=64", "dataset.test_batch_size=64", "trainer.device=cpu", "trainer.progress=false",
            "trainer.epochs=1", "logger.wandb.mode=disabled"]
    runs = {"args": args}
    for ranks in (1, WORLD):
        result = run_cli(args, tmp / f"ranks{ranks}", ranks)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[ranks] = tmp / f"ranks{ranks}"
    return runs


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_when_rank_0_refuses_the_run_directory_every_rank_stops_at_once(crd_runs) -> None:
    # The finished run again: rank 0 reports it, and every rank ends without training.
    summary = (crd_runs[WORLD] / "summary.json").read_text()
    result = run_cli(crd_runs["args"], crd_runs[WORLD], WORLD)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Reusing the finished run" in output and "epoch 1/1" not in output
    assert (crd_runs[WORLD] / "summary.json").read_text() == summary
    # Another identity in its directory: rank 0 refuses it, and rank 1 stops too instead of waiting for it.
    result = run_cli([*crd_runs["args"], "optim.lr=0.2"], crd_runs[WORLD], WORLD)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "optim.lr: 0.05 -> 0.2" in output  # rank 0's paragraph
    assert "Rank 0 could not take the run directory" in output


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_two_rank_run_matches_the_single_process_run(crd_runs) -> None:
    single, ddp = read_metrics(crd_runs[1]), read_metrics(crd_runs[WORLD])
    assert len(ddp) == len(single) == 1  # one set of metrics: rank 0's, reduced over both ranks
    for a, b in zip(single, ddp, strict=True):
        # Same batches, negatives and memory; only BatchNorm sees 32 instead of 64 images per rank.
        for key in ("train/loss", "train/loss_ce", "train/loss_crd", "test/loss"):
            assert b[key] == pytest.approx(a[key], rel=2e-2), key
    summary = json.loads((crd_runs[WORLD] / "summary.json").read_text())
    assert summary["epochs"] == 1 and (crd_runs[WORLD] / "model.pth").is_file()


def test_batch_sizes_that_do_not_split_are_config_errors() -> None:
    from distillbench.batching import per_rank_batch

    assert per_rank_batch(64, 50_000, 2) == 32
    with pytest.raises(ConfigError, match="split evenly"):
        per_rank_batch(63, 50_000, 2)
    with pytest.raises(ConfigError, match="last batch of 1"):
        per_rank_batch(64, 65, 2)


def test_process_group_settings_come_from_torchrun_or_slurm(monkeypatch) -> None:
    from distillbench.runtime.distributed import launcher_environment

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert launcher_environment() is None
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    env = launcher_environment()
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                   "MASTER_PORT": str(20000 + 4242)}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launcher_environment()["RANK"] == "1"  # torchrun's variables win


def test_slurm_launcher_gives_one_task_per_gpu() -> None:
    from hydra import compose, initialize_config_dir

    from tests.helpers import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm_gpus", "hydra.launcher.gpus_per_node=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.max_num_timeout > 0


def test_a_requeued_slurm_job_resumes_its_run(fake_cifar_root, tmp_path, monkeypatch) -> None:
    from distillbench.build import build_trainer
    from distillbench.errors import RunDirError
    from distillbench.jobs import run_job
    from tests.helpers import compose_config, tiny_run_overrides

    overrides = ["distiller=none", "student=resnet8", "trainer.epochs=2",
                 *tiny_run_overrides(fake_cifar_root, tmp_path)]
    cfg = compose_config(overrides, run_dir=tmp_path / "run")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    trainer = build_trainer(cfg, tmp_path / "run")
    steps = trainer.steps()
    with trainer.stop:
        for _ in range(5):  # epoch 1 and its checkpoint, then the job is preempted
            next(steps)
    steps.close()
    with pytest.raises(RunDirError):
        run_job(cfg, tmp_path / "run")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_job(cfg, tmp_path / "run")
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2]
