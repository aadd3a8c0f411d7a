"""Reading the tensors of a Hugging Face model folder: one safetensors file, a sharded
`model.safetensors.index.json`, or PyTorch pickles (`pytorch_model.bin[.index.json]`, read through
torch with `weights_only=True`, never anything else). Unreadable, truncated or unsafe files raise
`ModelLoadError` naming the file. Part of `hf_io`, the only place that knows the HF layout.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from umr_jax.errors import ModelLoadError


class CheckpointTensors:
    """Lazy, read-only view of the tensors in a HF model folder: `names`, `get(name) -> np.ndarray`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._files: dict[str, Path] = {}
        self._torch_cache: dict[Path, dict[str, Any]] = {}
        st_index = self.folder / "model.safetensors.index.json"
        pt_index = self.folder / "pytorch_model.bin.index.json"
        if (self.folder / "model.safetensors").is_file():
            self._add_safetensors(self.folder / "model.safetensors")
        elif st_index.is_file():
            for name, fname in _weight_map(st_index).items():
                self._files[name] = self.folder / fname
        elif (self.folder / "pytorch_model.bin").is_file():
            self._add_torch(self.folder / "pytorch_model.bin")
        elif pt_index.is_file():
            for name, fname in _weight_map(pt_index).items():
                self._files[name] = self.folder / fname
        else:
            raise ModelLoadError(
                f"{self.folder}: no weights found; expected model.safetensors, model.safetensors.index.json, "
                "pytorch_model.bin or pytorch_model.bin.index.json"
            )

    def _add_safetensors(self, path: Path) -> None:
        with _open_safetensors(path) as f:
            for name in f.keys():
                self._files[name] = path

    def _add_torch(self, path: Path) -> None:
        for name in self._torch_state(path):
            self._files[name] = path

    def _torch_state(self, path: Path) -> dict[str, Any]:
        if path not in self._torch_cache:
            try:
                import torch
            except ImportError:
                raise ModelLoadError(
                    f"{path}: PyTorch pickle weights need torch to read (weights_only=True). Install it "
                    "(`pip install torch==2.13.0` or the `umr-jax[torch]` extra), or convert the folder "
                    "to model.safetensors."
                ) from None
            self._torch_cache[path] = _torch_load(torch, path)
        return self._torch_cache[path]

    @property
    def names(self) -> set[str]:
        return set(self._files)

    def get(self, name: str) -> np.ndarray:
        path = self._files[name]
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError

            with _open_safetensors(path) as f:
                try:
                    return np.asarray(f.get_tensor(name))
                except SafetensorError as err:
                    raise ModelLoadError(f"{path}: tensor {name!r} cannot be read ({err}); {_REFETCH}") from None
        tensor = self._torch_state(path)[name]
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()
        return tensor.numpy()


_REFETCH = "expected a complete file: it may be cut short by an interrupted download or copy; fetch or export it again"


def _open_safetensors(path: Path):
    """`safe_open(path)`, or a ModelLoadError naming the file when it is missing or not whole."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; the checkpoint index names it, so the folder is incomplete")
    try:
        return safe_open(str(path), framework="numpy")
    except SafetensorError as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err}); {_REFETCH}") from None


def _torch_load(torch, path: Path) -> dict[str, Any]:
    """A PyTorch pickle checkpoint's state dict, read with `weights_only=True` (never anything
    else: unpickling arbitrary objects can run code). Zip-format files (torch >= 1.6) are memory
    mapped; the legacy format cannot be, so it is read whole."""
    import pickle
    import zipfile

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; the checkpoint index names it, so the folder is incomplete")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)}); {_REFETCH}") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"a pickled {found[1]}" if found else "pickled objects"
        raise ModelLoadError(
            f"{path}: refused for safety: torch.load(weights_only=True) found {what} besides tensors, and unpickling it "
            "could run code; expected plain tensors. Convert the checkpoint to safetensors where you trust its source: "
            "load the model with the code that saved it and call save_pretrained(DIR, safe_serialization=True), or "
            "safetensors.torch.save_file(state_dict, 'DIR/model.safetensors')"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)}); {_REFETCH}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a state dict (tensor name -> tensor), got {type(state).__name__} "
                             "holding other values")
    return state


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"


def _weight_map(index_path: Path) -> dict[str, str]:
    try:
        return json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{index_path}: not a valid sharded-checkpoint index ({type(err).__name__}: {err})") from None
