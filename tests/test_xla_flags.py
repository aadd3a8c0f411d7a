"""umr_jax.xla_flags: the XLA:CPU settings `import umr_jax` adds to XLA_FLAGS, and when it must not."""

import json
import os
import subprocess
import sys

import pytest

from umr_jax import xla_flags

FLAG = xla_flags.CPU_FLAGS[0]
MEASURED = (xla_flags._jaxlib_version() or "").startswith(xla_flags.MEASURED_JAXLIB)

PROBE = """
import json, os, sys
{before}
import umr_jax
import jax, jax.numpy as jnp
x = jnp.ones((128, 128), jnp.float32)
hlo = jax.jit(lambda a, b: a @ b).lower(x, x).compile().as_text()
print("RESULT " + json.dumps({{"flags": os.environ.get("XLA_FLAGS", ""), "ynn_dot": "__ynn_fusion" in hlo}}))
"""


def _probe(env_changes: dict, before: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT_ENV)}
    env.update(env_changes, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.skipif(not MEASURED, reason="the flags apply only to the jaxlib versions they were measured on")
def test_import_hands_dots_to_xla_not_ynnpack():
    on = _probe({})
    assert on["flags"] == FLAG
    assert not on["ynn_dot"]
    off = _probe({xla_flags.OPT_OUT_ENV: "0"})  # XLA's own default: the dot is a YNNPACK fusion
    assert off["flags"] == ""
    assert off["ynn_dot"]


def test_too_late_once_jax_has_a_backend():
    assert xla_flags.apply_cpu_defaults({}, jaxlib_version="0.10.2", backends_started=True) == []
    late = _probe({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, before="import jax; jax.devices()")
    assert late["flags"] == "--xla_force_host_platform_device_count=2"


def test_user_flags_are_kept_and_nothing_is_added_twice():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2", backends_started=False) == [FLAG]
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {FLAG}"
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2", backends_started=False) == []
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {FLAG}"
    own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}  # the user's own choice wins
    assert xla_flags.apply_cpu_defaults(own, jaxlib_version="0.10.2", backends_started=False) == []
    assert own["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="


@pytest.mark.parametrize("version", ["0.9.2", "0.11.0", "1.0.0"])
def test_unmeasured_jaxlib_gets_nothing(version):
    env = {}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version=version, backends_started=False) == []
    assert "XLA_FLAGS" not in env


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_opt_out(value):
    env = {xla_flags.OPT_OUT_ENV: value}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2", backends_started=False) == []
    assert "XLA_FLAGS" not in env
