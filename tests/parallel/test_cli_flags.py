"""Shared mesh / multi-host flags."""

import argparse

import pytest

from umr_jax.errors import InputError
from umr_jax.parallel.cli_flags import add_mesh_flags, mesh_from_args, parse_mesh


def test_parse_mesh():
    assert parse_mesh("data=-1,fsdp=2") == {"data": -1, "fsdp": 2}
    assert parse_mesh(" data=2 , model=4 ") == {"data": 2, "model": 4}
    with pytest.raises(InputError, match="axis=size"):
        parse_mesh("data:2")


def test_mesh_from_args():
    parser = argparse.ArgumentParser()
    add_mesh_flags(parser)
    mesh, rules = mesh_from_args(parser.parse_args(["--mesh", "data=2,fsdp=-1", "--rules", "fsdp"]))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "model": 1} and ("embed", "fsdp") in rules
    with pytest.raises(InputError, match="needs 6 devices"):
        mesh_from_args(parser.parse_args(["--mesh", "data=3,fsdp=2"]))
