"""The runtime object: one mesh and rule set per role, from the config or a command's flags."""

from __future__ import annotations

import argparse

import jax
import pytest

from umr_jax.config import load_config
from umr_jax.errors import InputError
from umr_jax.runtime import PER_HOST, Runtime, add_runtime_flags, parse_mesh, runtime_config

CONFIG = '''
import ml_collections
from umr_jax.runtime import runtime_config

def get_config():
    c = ml_collections.ConfigDict()
    c.runtime = runtime_config(train=dict(mesh="data=-1,fsdp=2,model=1", rules="fsdp"))
    return c
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG)
    return path


def test_parse_mesh():
    assert parse_mesh("data=-1,fsdp=2") == {"data": -1, "fsdp": 2}
    assert parse_mesh(" data=2 , model=4 ") == {"data": 2, "model": 4}
    assert parse_mesh({"data": 2, "fsdp": "4"}) == {"data": 2, "fsdp": 4}
    with pytest.raises(InputError, match="axis=size"):
        parse_mesh("data:2")


def test_each_role_gets_its_own_mesh_and_rules_from_the_config(config_file):
    runtime = Runtime.from_config(load_config(config_file))
    assert jax.device_count() == 8
    assert dict(runtime.mesh("train").shape) == {"data": 4, "fsdp": 2, "model": 1} and ("embed", "fsdp") in runtime.rules("train")
    assert dict(runtime.mesh("score").shape) == {"data": 1, "fsdp": 8, "model": 1} and ("embed", "fsdp") in runtime.rules("score")
    assert dict(runtime.mesh("encode").shape) == {"data": 8, "fsdp": 1, "model": 1} and runtime.rules("encode") == (("batch", ("data", "fsdp")),)
    assert PER_HOST == {"encode": True, "score": False, "train": False}
    c = load_config(config_file, ["runtime.score.mesh=data=1,fsdp=-1,model=4", "runtime.score.rules=fsdp_tp",
                                  "runtime.train.rules=[('batch', ('data', 'fsdp')), ('mlp', 'model')]"])
    runtime = Runtime.from_config(c)
    assert dict(runtime.mesh("score").shape) == {"data": 1, "fsdp": 2, "model": 4} and ("heads", "model") in runtime.rules("score")
    assert runtime.rules("train") == (("batch", ("data", "fsdp")), ("mlp", "model"))
    assert Runtime.from_config(None).layouts == Runtime.from_config(load_config(config_file, ["runtime.train.mesh=data=-1,fsdp=1,model=1",
                                                                                             "runtime.train.rules=data_parallel"])).layouts


def test_flags_set_their_roles_keys_only(config_file):
    parser = argparse.ArgumentParser()
    add_runtime_flags(parser, role="score")
    args = parser.parse_args(["--mesh", "data=2,fsdp=-1", "--rules", "data_parallel"])
    runtime = Runtime.from_config(load_config(config_file), args, role="score")
    assert dict(runtime.mesh("score").shape) == {"data": 2, "fsdp": 4, "model": 1} and runtime.rules("score") == (("batch", ("data", "fsdp")),)
    assert dict(runtime.mesh("train").shape) == {"data": 4, "fsdp": 2, "model": 1}  # untouched
    with pytest.raises(InputError, match=r"^--mesh 'data=3': .*needs 3 devices"):
        Runtime.from_args(parser.parse_args(["--mesh", "data=3"]), role="score").mesh("score")
    defaults = Runtime.from_args(parser.parse_args([]), role="score")
    assert dict(defaults.mesh("score").shape) == {"data": 1, "fsdp": 8, "model": 1}


def test_bad_layouts_are_one_line_errors(config_file):
    with pytest.raises(InputError, match=r"runtime.train.mesh 'data=3,fsdp=2': .*needs 6 devices"):
        Runtime.from_config(load_config(config_file, ["runtime.train.mesh=data=3,fsdp=2"])).mesh("train")
    with pytest.raises(InputError, match=r"runtime.score.mesh 'batch=2': unknown axes \['batch'\]"):
        Runtime.from_config(load_config(config_file, ["runtime.score.mesh=batch=2"]))
    with pytest.raises(InputError, match=r"runtime.encode.rules 'zero3': unknown rule set"):
        Runtime.from_config(load_config(config_file, ["runtime.encode.rules=zero3"]))
    with pytest.raises(ValueError, match="unknown role"):
        runtime_config(scorer=dict(mesh="data=1"))
