"""Config files and their overrides."""

from __future__ import annotations

import pytest

from umr_jax.config import load_config
from umr_jax.errors import InputError

CONFIG = '''
import ml_collections

def get_config(arg="base"):
    c = ml_collections.ConfigDict()
    c.name = arg
    c.mesh = dict(data=-1, fsdp=2, model=1)
    c.train = dict(batch_size=16, learning_rate=2e-5)
    return c
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG)
    return path


def test_load_and_override(config_file):
    c = load_config(config_file, ["train.batch_size=64", "train.learning_rate=1e-4", "mesh.fsdp=4", "name=big"])
    assert c.train.batch_size == 64 and c.train.learning_rate == 1e-4 and c.mesh.fsdp == 4 and c.name == "big"
    assert load_config(f"{config_file}:small").name == "small"


def test_unknown_override_key_is_an_error(config_file):
    with pytest.raises(InputError, match=r"exp\.py: override 'train.batchsize=3': config has no key 'train.batchsize'"):
        load_config(config_file, ["train.batchsize=3"])
    with pytest.raises(InputError, match="must look like key=value"):
        load_config(config_file, ["train.batch_size"])


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return 1 / 0\n")
    with pytest.raises(InputError, match="ZeroDivisionError"):
        load_config(broken)
