"""The Colab TPU notebook: it targets Colab's v5e-1 runtime, opens from its badge, clones the default
repository when REPO_URL is unset, never imports jax in the kernel (the TPU belongs to the umr-jax
subprocesses), and runs top to bottom on CPU with the demo configs (as CI runs it, in the slow set),
so it cannot rot: the demo's table, the scaling report and the inline plot must all come out."""

from __future__ import annotations

import ast
import base64
import json
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tpu" / "colab_tpu.ipynb"


def _code_cells():
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebook_is_valid_and_colab_ready():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # Colab's v5e-1 TPU runtime, as Colab itself writes it when one picks it
    assert nb.metadata["accelerator"] == "TPU" and nb.metadata["colab"]["gpuType"] == "V5E1"
    sources = "\n".join(cell.source for cell in nb.cells)
    assert 'umr_jax_cli("demo"' in sources and "configs/demo_scaling.py" in sources
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit the notebook without outputs"


def test_notebook_opens_in_colab_from_its_badge():
    first = json.loads(NOTEBOOK.read_text())["cells"][0]
    badge = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             "(https://colab.research.google.com/github/umr-jax/umr-jax/blob/main/tpu/colab_tpu.ipynb)")
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith(badge)


def test_the_kernel_never_imports_jax():
    """A TPU is held by one process: if the kernel imported jax (and so took the TPU), every
    `python -m umr_jax.cli` subprocess would fall back to the CPU. The kernel imports nothing that
    imports jax, and the TPU check runs in a subprocess."""
    banned = {"jax", "jaxlib", "flax", "optax", "orbax", "umr_jax"}
    cells = _code_cells()
    for index, source in enumerate(cells):
        for node in ast.walk(ast.parse(source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & banned, (index, names)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("import_module", "__import__"):
                pytest.fail(f"cell {index} imports a module by name: {ast.unparse(node)}")
    probe = next(i for i, s in enumerate(cells) if "jax.devices()" in s)
    first_command = next(i for i, s in enumerate(cells) if s.startswith("umr_jax_cli("))
    assert probe < first_command and "subprocess.run(" in cells[probe] and 'assert PLATFORM == "tpu"' in cells[probe]


def _cell_function(name):
    for source in _code_cells():
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                namespace = {"os": os, "pathlib": pathlib}
                exec(compile(ast.Module([node], []), str(NOTEBOOK), "exec"), namespace)
                return namespace[name]
    raise AssertionError(f"no function {name} in the notebook")


def test_the_notebook_knows_a_tpu_runtime(tmp_path):
    tpu_runtime = _cell_function("tpu_runtime")
    dev = tmp_path / "dev"
    (dev / "vfio").mkdir(parents=True)
    (dev / "vfio" / "vfio").touch()    # the control node every VFIO host has: no TPU
    assert not tpu_runtime({}, dev)
    assert tpu_runtime({"TPU_ACCELERATOR_TYPE": "v5litepod-1"}, dev) and tpu_runtime({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, dev)
    (dev / "vfio" / "0").touch()       # v5e and later
    assert tpu_runtime({}, dev)
    other = tmp_path / "dev2"
    other.mkdir()
    (other / "accel0").touch()         # v2-v4
    assert tpu_runtime({}, other)


@pytest.mark.parametrize("env_url, expected", [(None, "https://github.com/umr-jax/umr-jax"),
                                               ("https://github.com/me/umr-jax.git", "https://github.com/me/umr-jax.git")])
def test_outside_a_checkout_the_notebook_clones_repo_url(tmp_path, env_url, expected):
    """Run as Colab runs it, in a folder that is no checkout: with UMR_JAX_REPO_URL unset the first
    cell clones the default repository, with it set that one (a fake git records the clone)."""
    bin_dir, work = tmp_path / "bin", tmp_path / "content"
    bin_dir.mkdir()
    work.mkdir()
    git = bin_dir / "git"
    git.write_text(f"#!{sys.executable}\n"
                   "import pathlib, sys\n"
                   "pathlib.Path(sys.argv[-1], 'umr_jax').mkdir(parents=True)\n"
                   "pathlib.Path(sys.argv[-1], 'pyproject.toml').write_text('')\n"
                   "pathlib.Path(sys.argv[-1], 'cloned-from').write_text(' '.join(sys.argv[1:]))\n")
    git.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "UMR_JAX_REPO_URL"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if env_url:
        env["UMR_JAX_REPO_URL"] = env_url
    result = subprocess.run([sys.executable, "-c", _code_cells()[0]], cwd=work, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert (work / "umr-jax" / "cloned-from").read_text() == f"clone --depth 1 {expected} umr-jax"
    assert result.stdout.strip() == f"umr-jax at {work / 'umr-jax'}"


@pytest.mark.slow
def test_notebook_executes_on_cpu(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    out = tmp_path / "out"
    monkeypatch.setenv("UMR_JAX_NOTEBOOK_OUTPUT", str(out))
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the notebook runs on the machine's own devices
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "stream")
    assert "XOR-Retrieve on the demo dev questions" in text and "average R@2kt" in text
    assert "| webfaq |" in text and "| translated |" in text and "| umr |" in text
    images = [o["data"]["image/png"] for cell in nb.cells for o in cell.get("outputs", [])
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "demo" / "demo_summary.json").is_file()
    assert len(list((out / "demo_scaling" / "points").glob("*/*/result.json"))) == 9
    assert os.path.isfile(out / "demo_scaling" / "report" / "scaling.svg")
