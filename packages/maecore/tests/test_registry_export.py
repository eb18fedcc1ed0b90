"""The model registry and the safetensors + config.json export: names, arguments, exact round
trips, and a DataError naming the file for every broken export folder. No network, no pickle."""

from __future__ import annotations

import json
import math
import pickle
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from maecore.errors import ConfigError, DataError, MAEError, missing_extra
from maecore.models import (
    MaskedAutoencoder,
    create_model,
    list_models,
    load_pretrained,
    model_arguments,
    model_package,
)
from maecore.models import registry as R
from maecore.models.sizes import VIT_SIZES, vit_size

TINY = {"ndim": 2, "group_channels": [2, 1], "patch_size": 4}


def _tiny(**overrides) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", **{**TINY, **overrides})


# ---------------------------------------------------------------------------------------- registry
def test_list_models_has_every_vit_size():
    assert {f"mae_vit_{s}" for s in VIT_SIZES} <= set(list_models())
    assert list_models("mae_vit_") == sorted(f"mae_vit_{s}" for s in VIT_SIZES)
    assert list_models("no_such_model") == []


def test_unknown_model_lists_the_known_names():
    with pytest.raises(ConfigError, match=r"unknown model 'vit_giant'; known models: .*mae_vit_base, .*mae_vit_tiny"):
        create_model("vit_giant")
    with pytest.raises(KeyError, match=r"unknown model 'vit_giant'"):  # a ConfigError is a KeyError
        model_arguments("vit_giant")


def test_model_package_names_the_registering_package():
    assert model_package("mae_vit_tiny") == "maecore"
    assert model_package("simmim_swin_tiny") == "maecore"
    with pytest.raises(ConfigError, match=r"unknown model 'vit_giant'; known models: "):
        model_package("vit_giant")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depthh": 3}, r"model 'mae_vit_tiny' has no argument\(s\) \['depthh'\]; valid arguments: .*depth, "),
        ({"zz": 1, "aa": 2}, r"has no argument\(s\) \['aa', 'zz'\]; valid arguments: decoder_depth, .*patch_size"),
    ],
)
def test_unknown_argument_lists_the_valid_ones(overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_model("mae_vit_tiny", **overrides)


def test_model_arguments_and_defaults():
    args = model_arguments("mae_vit_tiny")
    assert {"ndim", "group_channels", "patch_size", "group_names", "mask", "loss", "norm_pix",
            "grad_checkpointing", "embed_dim", "depth"} <= set(args)
    assert args["ndim"] == 2 and args["patch_size"] == 16 and args["loss"] == "mse" and args["depth"] is None


def test_create_model_records_name_and_arguments():
    model = create_model("mae_vit_tiny", **TINY, depth=1)
    assert model.model_name == "mae_vit_tiny"
    assert model.model_kwargs == {**TINY, "depth": 1}
    assert len(model.encoder.blocks) == 1 and model.embed_dim == VIT_SIZES["tiny"]["embed_dim"]


@pytest.mark.parametrize("name", [f"mae_vit_{s}" for s in VIT_SIZES])
def test_every_vit_builds_and_runs(name):
    # shrunk by overrides so the test is fast; the catalogue itself is checked below
    small = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}
    model = create_model(name, ndim=1, group_channels=[1, 2], patch_size=4, **small)
    out = model({"x": torch.randn(2, 3, 32)}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.pred.shape == (2, 16, 8)


def test_size_catalogue():
    assert vit_size("base") == {"embed_dim": 768, "depth": 12, "num_heads": 12,
                                "decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16}
    assert vit_size("large")["embed_dim"] == 1024 and vit_size("large")["depth"] == 24
    vit_size("tiny")["depth"] = 99  # a copy: the catalogue is not changed
    assert VIT_SIZES["tiny"]["depth"] == 2
    with pytest.raises(ValueError, match=r"unknown size 'huge'; known sizes: tiny, small, base, large"):
        vit_size("huge")


def test_vit_base_encoder_matches_the_paper_size():
    model = create_model("mae_vit_base", ndim=2, group_channels=[3], patch_size=16)
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.", "tokenizer.")))
    assert math.isclose(enc / 1e6, 85.8, abs_tol=0.5)  # ViT-B/16 encoder without a head: ~86 M


def test_register_model_refuses_a_second_factory_under_a_taken_name(monkeypatch):
    monkeypatch.setattr(R, "_REGISTRY", dict(R._REGISTRY))

    @R.register_model("my_model")
    def first(**kw):
        return torch.nn.Linear(1, 1)

    assert R.register_model("my_model")(first) is first  # re-registering the same factory is fine
    with pytest.raises(ValueError, match=r"model name 'my_model' is already registered by "):
        R.register_model("my_model")(lambda **kw: torch.nn.Linear(1, 1))
    assert "my_model" in list_models()


# ------------------------------------------------------------------------------------------ errors
def test_data_error_names_the_file_and_survives_pickling():
    err = DataError(Path("data/scan.nii.gz"), "a NIfTI image", "12 bytes")
    assert str(err) == "data/scan.nii.gz: expected a NIfTI image, found 12 bytes"
    assert isinstance(err, ValueError) and isinstance(err, MAEError)
    back = pickle.loads(pickle.dumps(err))  # crosses DataLoader worker processes
    assert type(back) is DataError and str(back) == str(err) and back.path == "data/scan.nii.gz"
    assert str(DataError(None, "3 bands", "4")) == "expected 3 bands, found 4"


def test_config_error_message_is_plain():
    err = ConfigError("unknown key 'lr'; valid keys: a, b")
    assert isinstance(err, KeyError) and str(err) == "unknown key 'lr'; valid keys: a, b"


def test_missing_extra_names_the_pip_extra():
    err = missing_extra("nibabel", "medmae", "nifti")
    assert isinstance(err, ImportError)
    assert str(err) == "nibabel is needed for this and is not installed; install it with `pip install 'medmae[nifti]'`"


# ------------------------------------------------------------------------------------------ export
def _no_pickle_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} must not be used when loading an exported model")

        return fail

    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(pickle, "load", refuse("pickle.load"))
    monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
    monkeypatch.setattr(socket, "socket", refuse("the network"))
    monkeypatch.setattr(socket, "create_connection", refuse("the network"))


def test_export_round_trip_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = _tiny(mask={"kind": "loss_guided", "ratio": 0.6}, group_names=["rgb", "nir"], norm_pix=True)
    model.meta = {"bands": ["r", "g", "b", "nir"], "mean": [0.1, 0.2, 0.3, 0.4], "spacing": [1.0, 1.0]}
    assert model.save_pretrained(tmp_path) == tmp_path
    _no_pickle_no_network(monkeypatch)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is MaskedAutoencoder
    assert loaded.meta == model.meta
    assert loaded.model_name == "mae_vit_tiny" and loaded.model_kwargs == model.model_kwargs
    assert loaded.mask_cfg == model.mask_cfg and loaded.norm_pix and loaded.tokenizer.group_names == ["rgb", "nir"]
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for k, v in ref.items():
        assert torch.equal(v, got[k]), k
    batch = {"x": torch.randn(2, 3, 16, 16)}
    a = model.eval()(batch, generator=torch.Generator().manual_seed(0))
    b = loaded.eval()(batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.pred, b.pred) and torch.equal(a.loss, b.loss)


def test_from_pretrained_classmethod(tmp_path: Path):
    model = _tiny()
    model.save_pretrained(tmp_path)
    loaded = MaskedAutoencoder.from_pretrained(tmp_path)
    assert torch.equal(loaded.tokenizer.group_embed, model.tokenizer.group_embed)


def test_export_files_are_safetensors_and_json(tmp_path: Path):
    model = _tiny()
    model.meta = {"mean": torch.tensor([0.5, 0.25])}  # tensors are stored as lists
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"] == "mae_vit_tiny" and cfg["kwargs"] == TINY and cfg["format_version"] == 1
    assert cfg["meta"] == {"mean": [0.5, 0.25]}
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"] == {"model": "mae_vit_tiny"}
    assert header["tokenizer.group_embed"]["shape"] == [2, 64] and header["tokenizer.group_embed"]["dtype"] == "F32"
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # not a pickle, not a torch zip


def test_save_pretrained_overwrites_an_older_export(tmp_path: Path):
    _tiny().save_pretrained(tmp_path)
    torch.manual_seed(5)
    newer = create_model("mae_vit_tiny", **TINY)
    newer.save_pretrained(tmp_path)
    assert torch.equal(load_pretrained(tmp_path).mask_token, newer.mask_token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_only_registry_models_can_be_exported(tmp_path: Path):
    from maecore.tokenizers import PatchTokenizer

    model = MaskedAutoencoder(PatchTokenizer(2, [1], 4, 32), embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"only models built with maecore.create_model\(...\) can be exported"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_unstorable_meta_is_refused(tmp_path: Path):
    model = _tiny()
    model.meta = {"reader": object()}
    with pytest.raises(TypeError, match=r"cannot store object in config.json"):
        model.save_pretrained(tmp_path)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    _tiny().save_pretrained(folder)
    return folder


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        cfg["kwargs"][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_folder_or_config(tmp_path: Path, exported: Path):
    with pytest.raises(DataError, match=r"nowhere: expected an exported model folder with config.json and model.safetensors, found no config.json"):
        load_pretrained(tmp_path / "nowhere")
    (exported / "config.json").unlink()
    with pytest.raises(DataError, match=r"export: expected an exported model folder .*found no config.json"):
        load_pretrained(exported)


def test_missing_weights(exported: Path):
    (exported / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"export: expected an exported model folder with model.safetensors, found no model.safetensors"):
        load_pretrained(exported)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"config.json: expected valid JSON, found a parse error \(Expecting property name"),
        ("", r"config.json: expected valid JSON, found a parse error"),
        ("[1, 2]", r"config.json: expected keys 'model' and 'kwargs', found list"),
        ('{"model": "mae_vit_tiny"}', r"config.json: expected keys 'model' and 'kwargs', found keys \['model'\]"),
    ],
)
def test_corrupt_config(exported: Path, text: str, message: str):
    (exported / "config.json").write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_pretrained(exported)
    assert info.value.path == str(exported / "config.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model": "medmae_vit_base"}, r"found unknown model 'medmae_vit_base'; known models: .*mae_vit_tiny"),
        ({"kwargs": {**TINY, "depthh": 2}}, r"found model 'mae_vit_tiny' has no argument\(s\) \['depthh'\]"),
        ({"kwargs": {**TINY, "ndim": 5}}, r"found ndim must be 1, 2 or 3, got 5"),
        ({"kwargs": [1, 2]}, r"found .*must be a mapping"),
    ],
)
def test_config_the_installation_cannot_build(exported: Path, edit, message):
    cfg = json.loads((exported / "config.json").read_text())
    (exported / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(DataError, match=r"config.json: expected a model this installation can build, " + message):
        load_pretrained(exported)


def test_weights_of_another_shape(exported: Path):
    _edit_config(exported, group_channels=[1, 1, 1])  # a different tokenizer than the one saved
    with pytest.raises(DataError, match=r"model.safetensors: expected the weights of 'mae_vit_tiny' as configured in config.json, found .*size mismatch"):
        load_pretrained(exported)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask": {"kind": "loss_guided", "ratio": 0.75}}, r"found missing \['difficulty.bias', 'difficulty.weight'\] / unexpected \[\]"),
        ({"depth": 1}, r"found missing \[\] / unexpected \['encoder.blocks.1.attn.proj.bias', "),
    ],
)
def test_weights_with_missing_or_unexpected_tensors(exported: Path, change, message):
    _edit_config(exported, **change)
    with pytest.raises(DataError, match=r"model.safetensors: expected the weights of 'mae_vit_tiny', " + message):
        load_pretrained(exported)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"garbage" * 10,
        lambda raw: raw[: len(raw) // 2],
        lambda raw: b"",
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_weights(exported: Path, damage, monkeypatch: pytest.MonkeyPatch):
    weights = exported / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    _no_pickle_no_network(monkeypatch)
    with pytest.raises(DataError, match=r"model.safetensors: expected a readable safetensors file, found SafetensorError"):
        load_pretrained(exported)


def test_foreign_safetensors_file(exported: Path):
    save_file({"something.else": torch.zeros(2)}, str(exported / "model.safetensors"))
    with pytest.raises(DataError, match=r"expected the weights of 'mae_vit_tiny', found missing \['decoder.blocks"):
        load_pretrained(exported)
