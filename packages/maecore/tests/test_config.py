"""Config loading: shipped defaults are the schema, overrides are validated and typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from maecore.config import deep_merge, load_config, parse_override, read_yaml, resolve_config_file
from maecore.errors import ConfigError


def test_default_loads_with_model_and_train_sections():
    cfg = load_config("maecore")
    assert cfg["model"]["name"] == "mae_vit_tiny"
    assert cfg["train"]["max_steps"] == 500
    assert cfg["data"]["chip_size"] == 32


def test_shipped_named_config_merges_over_default():
    cfg = load_config("maecore", "tiny")
    assert cfg["train"]["max_steps"] == 20  # from tiny.yaml
    assert cfg["train"]["lr"] == pytest.approx(1e-3)  # kept from default.yaml


@pytest.mark.parametrize(
    ("item", "parts", "value"),
    [
        ("train.lr=1e-3", ["train", "lr"], 1e-3),
        ("train.max_steps=7", ["train", "max_steps"], 7),
        ("train.progress=false", ["train", "progress"], False),
        ("model.group_channels=[1, 2]", ["model", "group_channels"], [1, 2]),
        ("model.mask.kind=block", ["model", "mask", "kind"], "block"),
    ],
)
def test_parse_override_types_values(item, parts, value):
    assert parse_override(item) == (parts, value)


def test_override_applies_and_keeps_sibling_keys():
    cfg = load_config("maecore", overrides=["model.mask.ratio=0.5", "train.seed=3"])
    assert cfg["model"]["mask"] == {"kind": "random", "ratio": 0.5}
    assert cfg["train"]["seed"] == 3


def test_unknown_train_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.learning_rate'.*valid keys in train: .*lr"):
        load_config("maecore", overrides=["train.learning_rate=1"])


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer'; valid keys: data, finetune, model, train"):
        load_config("maecore", overrides=["trainer.x=1"])


def test_unknown_model_argument_lists_the_models_arguments():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.depthh' for model 'mae_vit_tiny'.*depth"):
        load_config("maecore", overrides=["model.depthh=3"])


def test_switching_model_drops_the_old_models_arguments():
    cfg = load_config("maecore", overrides=["model.name=mae_vit_small"])
    assert cfg["model"] == {"name": "mae_vit_small"}


def test_unknown_model_name_lists_known_models():
    with pytest.raises(ConfigError, match=r"unknown model 'vit_huge'; known models: .*mae_vit_tiny"):
        load_config("maecore", overrides=["model.name=vit_huge"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"--set expects KEY=VALUE"):
        parse_override("train.lr")


def test_user_yaml_file_is_validated(tmp_path: Path):
    good = tmp_path / "run.yaml"
    good.write_text("train:\n  max_steps: 5\n")
    assert load_config("maecore", str(good))["train"]["max_steps"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_stepz'"):
        load_config("maecore", str(bad))


def test_yaml_errors_name_the_file(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML"):
        read_yaml(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping at top level, found list"):
        read_yaml(listy)


def test_yaml_is_loaded_safely(tmp_path: Path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        read_yaml(evil)


def test_missing_or_unknown_config_name(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown config 'nosuch': not a file and not one of the shipped configs \['default', 'tiny'\]"):
        resolve_config_file("nosuch", "maecore")
    with pytest.raises(ConfigError, match=r"does not exist"):
        resolve_config_file(str(tmp_path / "missing.yaml"), "maecore")


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}}
    assert base == {"a": {"b": 1, "c": 2}}
