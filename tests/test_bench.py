"""scripts/bench.py: the paths are timed in interleaved rounds inside epochs, compared with the plain loop,
tiny sets get fewer CRD negatives, and the host operations of a step are counted (no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from distillbench.benchmark.interleave import Contestant, run_rounds, warm_up
from distillbench.benchmark.op_count import count_step_ops, no_sync

spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench"] = bench  # its dataclasses look their module up
spec.loader.exec_module(bench)

PATHS = ["reference_loop", "reference", "fast"]


def run_bench(folder, paths: list[str]) -> tuple[dict, str]:
    """A CPU-sized run with op counts: CRD resnet8 -> resnet8 on 24 images, batch 8 (3 steps per epoch)."""
    bench.main(["--teacher", "resnet8", "--student", "resnet8", "--images", "24", "--test-images", "8",
                "--batch-size", "8", "--rounds", "2", "--steps", "2", "--warmup", "1", "--workers", "0",
                "--device", "cpu", "--paths", ",".join(paths), "--count-ops", "--ops-steps", "1",
                "--json", str(folder / "bench.json"), "--out", str(folder / "bench.txt")])
    return json.loads((folder / "bench.json").read_text()), (folder / "bench.txt").read_text()


@pytest.fixture(scope="module")
def tiny_crd(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench"), PATHS)


def test_paths_are_timed_in_interleaved_rounds_against_the_plain_loop(tiny_crd) -> None:
    result, text = tiny_crd
    assert result["order"] == PATHS * 2
    rows = {row["path"]: row for row in result["paths"]}
    assert list(rows) == PATHS
    for row in rows.values():
        assert len(row["step_s"]) == 2 and row["step_s_min"] == min(row["step_s"]) <= row["step_s_median"]
        assert row["images_per_s_median"] == pytest.approx(8 / row["step_s_median"])
        assert math.isfinite(row["tflops_median"]) and row["tflops_median"] > 0
        assert f"| {row['path']} | " in text
    assert rows["reference_loop"]["speedup_vs_reference_loop_min"] == 1.0
    ref = rows["reference"]
    assert ref["speedup_vs_reference_loop_median"] == pytest.approx(
        rows["reference_loop"]["step_s_median"] / ref["step_s_median"])
    # 24 images at batch 8: 3 steps per epoch, so a round takes 2 steps, never across an epoch's end.
    assert result["settings"]["steps_per_round"] == 2
    assert set(result["settings"]["steps_per_epoch"].values()) == {3}
    machine = result["machine"]
    assert machine["device"] == "cpu" and machine["torch"] == torch.__version__ and machine["cpu"]
    assert "git_commit" in machine and len(result["load_average"]["before"]) == 3
    assert "host load average" in text


def test_a_tiny_set_gets_fewer_crd_negatives_and_says_so(tiny_crd) -> None:
    result, text = tiny_crd
    (note,) = [n for n in result["notes"] if "num_negatives" in n]
    assert "lowered from 16384 to 23" in note and note in text


def test_eager_steps_count_aten_ops_only(tiny_crd) -> None:
    for row in tiny_crd[0]["paths"]:
        counts = row["ops_per_step"]
        assert counts["aten_ops"] > 100 and counts["generated_kernels"] == 0 and counts["device_launches"] is None
        assert counts["host_ops"] == counts["aten_ops"]


@pytest.mark.slow
def test_the_teacher_cache_removes_the_teachers_ops_from_the_step(tmp_path) -> None:
    result, _ = run_bench(tmp_path, ["fast", "fast_cached"])
    ops = {row["path"]: row["ops_per_step"]["aten_ops"] for row in result["paths"]}
    # The same step but the teacher's forward: resnet8's convolutions, BNs, ReLUs and additions.
    assert ops["fast"] - ops["fast_cached"] > 20
    assert {row["path"]: row["teacher_cached"] for row in result["paths"]} == {"fast": False, "fast_cached": True}


def test_timed_chunks_never_hold_an_epochs_end() -> None:
    """A loop of 4 steps per epoch timed 3 steps at a time: the chunks' steps (between the syncs) never include
    a first step of an epoch after the first, which pays for the previous epoch's end."""
    events = []

    def loop():
        step = 0
        while True:
            step += 1
            events.append(step)
            yield

    contestants = [Contestant("a", loop(), 4)]
    warm_up(contestants[0], 2, no_sync)
    run_rounds(contestants, 5, 3, sync=lambda: events.append("|"))
    chunks, current, inside = [], [], False
    for event in events:
        if event == "|":
            if inside:
                chunks.append(current)
            inside, current = not inside, []
        elif inside:
            current.append(event)
    assert len(chunks) == 5 and all(len(chunk) == 3 for chunk in chunks)
    assert not any((step - 1) % 4 == 0 for chunk in chunks for step in chunk)
    assert contestants[0].step_s and len(contestants[0].step_s) == 5


def test_eager_ops_are_counted_at_the_outermost_level() -> None:
    x, w = torch.ones(4, 3), torch.ones(3, 2)

    def step():
        y = x @ w  # aten::matmul, which calls aten::mm: one op
        y.add_(1).relu().sum()

    counts = count_step_ops(step, 3, no_sync, cuda=False)
    assert counts.aten_ops == 4 and counts.host_ops == 4 and counts.generated_kernels == 0


def test_negatives_are_lowered_only_below_the_memory_size() -> None:
    cfg = bench.compose(["distiller=crd"])
    assert bench.negatives_overrides(cfg, 512)[0] == ["distiller.method.num_negatives=511"]
    assert bench.negatives_overrides(cfg, 20_000) == ([], [])
    assert bench.negatives_overrides(bench.compose(["distiller=kd"]), 512) == ([], [])


def test_unknown_paths_are_refused_with_the_choices(capsys) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--paths", "reference,fastest"])
    assert "unknown fastest; choose from reference_loop" in capsys.readouterr().err


def test_flops_per_image_counts_the_teacher_only_when_it_runs() -> None:
    args = bench.parse_args(["--teacher", "resnet32x4", "--student", "resnet8x4"])
    live, cached = bench.flops_per_image(args, False), bench.flops_per_image(args, True)
    # performance.md: resnet8x4 fwd+bwd 1.061 GFLOP, resnet32x4 fwd 2.166 GFLOP per image.
    assert abs(cached / 1e9 - 1.061) < 0.01
    assert abs((live - cached) / 1e9 - 2.166) < 0.01


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def _training_step(net: torch.nn.Module, x: torch.Tensor):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def step():
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()

    return step


@pytest.mark.slow
def test_compiled_code_counts_generated_kernels_and_extern_calls_on_the_cpu(monkeypatch) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "enable_kernel_profile", True)
    net, x = _tiny_net(), torch.randn(4, 3, 16, 16)
    eager = count_step_ops(_training_step(net, x), 2, no_sync, cuda=False)
    compiled_step = _training_step(torch.compile(net), x)
    compiled_step(), compiled_step()
    compiled = count_step_ops(compiled_step, 2, no_sync, cuda=False)
    # Forward and backward graphs: fused C++ kernels, the convolutions and matmuls as extern calls.
    assert compiled.generated_kernels >= 2 and compiled.extern_calls >= 3
    assert compiled.aten_ops < eager.aten_ops


@pytest.mark.cuda
def test_on_cuda_triton_kernels_launches_and_graph_replays_are_counted() -> None:
    from distillbench.benchmark.op_count import cuda_sync

    x = torch.randn(64, 3, 32, 32, device="cuda")
    eager = count_step_ops(_training_step(_tiny_net().cuda(), x), 2, cuda_sync, cuda=True)
    assert eager.aten_ops > 20 and eager.device_launches >= 10
    for mode, replayed in (("default", False), ("reduce-overhead", True)):
        step = _training_step(torch.compile(_tiny_net().cuda(), mode=mode), x)
        for _ in range(4):  # CUDA graphs are recorded after a warm-up call
            step()
        counts = count_step_ops(step, 2, cuda_sync, cuda=True)
        if replayed:
            assert counts.graph_replays >= 1 and counts.generated_kernels == 0
        else:
            assert counts.generated_kernels >= 2 and counts.extern_calls >= 3 and counts.graph_replays == 0
        assert counts.host_ops < eager.host_ops
