"""Distiller configs composed from shared parts: the combined methods from their terms' configs, the contrastive
methods from one memory block, and one address per tuned weight. The composed values are pinned against the
resolved distiller nodes of commit 4db8f62 (tests/distillers/data/), from before the configs were shared."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from distillbench.errors import ConfigError
from distillbench.identity import identity_fields
from distillbench.tuning import suggest_tuned_weight, tuned_weight_key, tuned_weight_range
from tests.helpers import CONFIG_DIR

BEFORE = json.loads((Path(__file__).parent / "data" / "resolved_distillers_4db8f62.json").read_text())
EXPERIMENTS = sorted(BEFORE["experiments"])
# Keys the distiller configs gained since 4db8f62; every other key must resolve as it did.
ADDED = {"tune_weight"}
# The methods whose configs are composed from shared parts (configs/distiller/method/, configs/distiller/memory/).
SHARED = {"kd", "kd_dot", "crd", "crd_kd", "crcd", "wcord", "wcord_kd", "rrd", "rrd_kd", "rrd_2025", "rrd_momentum",
          "ckd"}
COMBINED = {"crd_kd": ("kd", "crd"), "rrd_kd": ("kd", "rrd"), "wcord_kd": ("kd", "wcord")}


OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "distiller").glob("*.yaml"))


@pytest.fixture(scope="module")
def options() -> dict:
    """Every distiller option composed once, as a weight search would run it: name -> config."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return {name: compose(config_name="config", overrides=[f"distiller={name}", "hparams_search=weight_optuna"])
                for name in OPTIONS}


def distiller_of(cfg) -> dict:
    return OmegaConf.to_container(cfg.distiller, resolve=True)


def expected(section: str, name: str) -> dict:
    return BEFORE["nodes"][BEFORE[section][name]]


def one_per_node(names: list[str]) -> list[str]:
    """The first experiment of each distinct 4db8f62 node among ``names``: every value pinned, few composes."""
    chosen, seen = [], set()
    for name in names:
        if BEFORE["experiments"][name] not in seen:
            chosen.append(name)
            seen.add(BEFORE["experiments"][name])
    return chosen


def resolved_distillers(overrides: list[list[str]]) -> list[dict]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return [OmegaConf.to_container(compose(config_name="config", overrides=o).distiller, resolve=True)
                for o in overrides]


def assert_as_before(now: dict, before: dict, label: str) -> None:
    assert {k: v for k, v in now.items() if k not in ADDED} == before, label
    if before["method"] and before["method"]["_target_"].endswith("Combined"):  # parts are set up in this order
        assert [k for k in now["method"] if k != "_target_"] == [k for k in before["method"] if k != "_target_"]


@pytest.mark.parametrize("experiments", [
    pytest.param(EXPERIMENTS, id="all", marks=pytest.mark.slow),
    pytest.param(one_per_node([e for e in EXPERIMENTS if expected("experiments", e)["name"] in SHARED]),
                 id="one_per_node_of_shared_methods"),
])
def test_every_experiment_resolves_its_distiller_as_at_4db8f62(experiments):
    for name, now in zip(experiments, resolved_distillers([[f"experiment={e}"] for e in experiments]), strict=True):
        assert_as_before(now, expected("experiments", name), name)


def test_every_distiller_option_resolves_as_at_4db8f62(options):
    assert OPTIONS == sorted(BEFORE["options"])
    for name, cfg in options.items():
        assert_as_before(distiller_of(cfg), expected("options", name), name)


def test_combined_distillers_are_their_parts_with_only_the_kd_weight_changed(options):
    nodes = {name: distiller_of(cfg) for name, cfg in options.items()}
    for combined, parts in COMBINED.items():
        method = nodes[combined]["method"]
        assert method["_target_"] == "distillbench.distillers.combined.Combined"
        contrastive = parts[1]
        assert method[contrastive] == nodes[contrastive]["method"], combined
        kd_alone = {**nodes["kd"]["method"], "_target_": "distillbench.distillers.kd.KD"}  # one class, two names
        assert method["kd"] == {**kd_alone, "weight": 1.0} and kd_alone["weight"] == 0.9, combined


def load(path: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "distiller" / path).read_text())


def test_contrastive_methods_take_their_memory_from_one_block(options):
    bank, queue = load("memory/momentum_bank.yaml"), load("memory/fifo_queue.yaml")
    nodes = {name: distiller_of(cfg) for name, cfg in options.items()}
    for name in ("crd", "wcord", "rrd_momentum"):
        assert {k: nodes[name]["method"][k] for k in bank} == bank, name
    # CRCD: CRD's bank with its own K (B^2 x (K+1) relation tensors) and tau.
    crcd = nodes["crcd"]["method"]
    assert {k: crcd[k] for k in bank} == {**bank, "num_negatives": 500, "temperature": 0.05}
    for name in ("rrd", "rrd_2025"):
        assert {k: nodes[name]["method"][k] for k in queue} == queue, name
        assert not (set(bank) - set(queue)) & set(nodes[name]["method"]), name  # no bank keys on a queue
    assert not (set(bank) - {"temperature"}) & set(nodes["ckd"]["method"])  # CKD's negatives: the batch
    # A changed block reaches every method that includes it: one address per value.
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for name, key in [("crd", "method"), ("crd_kd", "method.crd"), ("wcord_kd", "method.wcord"),
                          ("rrd_momentum", "method")]:
            cfg = compose(config_name="config", overrides=[f"distiller={name}",
                                                           "distiller/memory@distiller." + key + "=fifo_queue"])
            assert OmegaConf.select(cfg.distiller, key + ".queue_size") == 16384, name


@pytest.mark.parametrize("experiment, key, value", [
    ("crd_kd_resnet32x4_8x4", "distiller.method.crd.weight", 0.8),
    ("rrd_kd_wrn40_2_16_2", "distiller.method.rrd.weight", 1.0),
    ("kd_resnet56_20", "distiller.method.weight", 0.9),
    ("wcord_vgg13_vgg8", "distiller.method.global_weight", 0.8),
    ("crcd_resnet56_20", "distiller.method.crcd_weight", 1.0),
    ("ckd_resnet56_20", "distiller.method.weight", 10.0),
    ("pkt_resnet56_20", "distiller.method.weight", 30000.0),
])
def test_weight_search_draws_the_weight_each_distiller_names(experiment, key, value):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}", "hparams_search=weight_optuna"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper.custom_search_space == "distillbench.tuning.suggest_tuned_weight"
    assert tuned_weight_key(cfg) == key and OmegaConf.select(cfg, key) == value
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    trial = study.ask()
    suggest_tuned_weight(cfg, trial)
    # 1/20 to 20 times the method's own weight (tune_weight_range.relative)
    assert tuned_weight_range(cfg) == pytest.approx((0.05 * value, 20.0 * value))
    assert list(trial.params) == [key] and 0.05 * value <= trial.params[key] <= 20.0 * value
    # The drawn override lands on the existing number, and names no other key.
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        drawn = compose(config_name="config", overrides=[f"experiment={experiment}", f"{key}={trial.params[key]}"])
    assert OmegaConf.select(drawn, key) == pytest.approx(trial.params[key])
    assert OmegaConf.to_container(drawn.distiller.method).keys() == OmegaConf.to_container(cfg.distiller.method).keys()


def test_every_distiller_names_a_tunable_weight_or_none(options):
    for name, cfg in options.items():
        if name in ("ab", "fsp", "none"):  # no main-stage term to weight
            assert cfg.distiller.tune_weight is None
            with pytest.raises(ConfigError, match=f"distiller={name} has no loss weight"):
                tuned_weight_key(cfg)
        else:
            assert isinstance(OmegaConf.select(cfg, tuned_weight_key(cfg)), float), name
    wrong = options["crd_kd"].copy()
    wrong.distiller.tune_weight = "distiller.method.weight"  # CRD+KD has no such key
    with pytest.raises(ConfigError, match="does not name a number"):
        tuned_weight_key(wrong)


def test_a_search_without_a_weight_stops_with_one_paragraph_and_exit_code_2(options, caplog):
    trial = optuna.create_study().ask()
    with pytest.raises(SystemExit) as stopped:
        suggest_tuned_weight(options["fsp"], trial)
    assert stopped.value.code == 2 and not trial.params
    assert [r.getMessage() for r in caplog.records if r.name == "distillbench"] == [
        "distiller=fsp has no loss weight for hparams_search=weight_optuna to tune (its config sets tune_weight: "
        "null). Name the value to search with distiller.tune_weight=<dotted key>, or search other knobs alone with "
        "hydra.sweeper.custom_search_space=null hydra.sweeper.params='{KEY: interval(LOW, HIGH)}'."]


def test_the_tuned_weights_address_is_not_part_of_a_runs_identity():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config",
                      overrides=["experiment=crd_kd_resnet32x4_8x4", "hparams_search=weight_optuna"])
    cfg.run_dir = "/runs/x"
    fields = identity_fields(OmegaConf.to_container(cfg, resolve=True), {})
    assert "distiller.method.crd.weight" in fields
    assert not any(k.startswith(("distiller.tune_weight", "tune_weight_range")) for k in fields)
