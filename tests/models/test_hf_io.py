"""Strict loading: unknown architectures and missing, extra or mis-shaped tensors are named."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from umr_jax.errors import ModelLoadError
from umr_jax.models import hf_io
from tests.models.hf_reference import make_bert, make_mt5


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    make_bert(folder)
    return folder


def _copy_with(tmp_path, folder, edit):
    out = tmp_path / "edited"
    out.mkdir()
    (out / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_unknown_architecture_is_named(tmp_path, bert_folder):
    out = _copy_with(tmp_path, bert_folder, lambda t: None)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"unknown architecture model_type='gpt2'.*supported: t5, mt5, bert"):
        hf_io.load_model(out)


def test_missing_tensor_is_named(tmp_path, bert_folder):
    out = _copy_with(tmp_path, bert_folder, lambda t: t.pop("encoder.layer.1.output.dense.weight"))
    with pytest.raises(ModelLoadError, match=r"missing tensors: encoder\.layer\.1\.output\.dense\.weight"):
        hf_io.load_bert(out)


def test_extra_tensor_is_named(tmp_path, bert_folder):
    def add(t):
        t["encoder.layer.7.output.dense.weight"] = np.zeros((3, 3), np.float32)

    out = _copy_with(tmp_path, bert_folder, add)
    with pytest.raises(ModelLoadError, match=r"unexpected tensors: encoder\.layer\.7\.output\.dense\.weight"):
        hf_io.load_bert(out)


def test_misshaped_tensor_is_named_with_shapes(tmp_path, bert_folder):
    def shrink(t):
        t["encoder.layer.0.attention.self.query.weight"] = t["encoder.layer.0.attention.self.query.weight"][:16]

    out = _copy_with(tmp_path, bert_folder, shrink)
    with pytest.raises(ModelLoadError, match=r"mis-shaped tensors: encoder\.layer\.0\.attention\.self\.query\.weight \(has \(16, 32\), expected \(32, 32\)\)"):
        hf_io.load_bert(out)


def test_legacy_gamma_beta_names_load(tmp_path, bert_folder):
    def rename(t):
        for name in [n for n in t if n.endswith("LayerNorm.weight")]:
            t[name.replace(".weight", ".gamma")] = t.pop(name)

    out = _copy_with(tmp_path, bert_folder, rename)
    a, b = hf_io.load_bert(out), hf_io.load_bert(bert_folder)
    np.testing.assert_array_equal(a.params["layers_1"]["output_norm"]["scale"], b.params["layers_1"]["output_norm"]["scale"])


def _save_pytorch_bin(model, folder):
    """A legacy PyTorch-pickle folder (transformers 5 only writes safetensors)."""
    import torch

    folder.mkdir()
    model.config.to_json_file(folder / "config.json")
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")


def test_pytorch_bin_and_sharded_safetensors_equal_single_file(tmp_path):
    model = make_mt5(tmp_path / "single")
    _save_pytorch_bin(model, tmp_path / "bin")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "bin" / "pytorch_model.bin").exists()
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ref = hf_io.load_t5(tmp_path / "single").params
    for name in ("bin", "sharded"):
        other = hf_io.load_t5(tmp_path / name).params
        flat_ref, flat_other = hf_io.flatten_tree(ref), hf_io.flatten_tree(other)
        assert flat_ref.keys() == flat_other.keys()
        for key in flat_ref:
            np.testing.assert_array_equal(flat_ref[key], flat_other[key])


def test_pytorch_bin_without_torch_gives_clear_error(tmp_path, monkeypatch):
    _save_pytorch_bin(make_mt5(tmp_path / "single"), tmp_path / "bin")
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin: PyTorch pickle weights need torch"):
        hf_io.load_t5(tmp_path / "bin")


def test_folder_without_weights_or_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        hf_io.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="no weights found"):
        hf_io.load_model(tmp_path)
