"""The Colab TPU notebook runs top to bottom on CPU with the demo configs (as CI runs it), so it
cannot rot: the demo's table, the scaling report and the inline plot must all come out."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tpu" / "colab_tpu.ipynb"


def test_notebook_is_valid_and_colab_ready():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["accelerator"] == "TPU" and nb.metadata["kernelspec"]["name"] == "python3"
    sources = "\n".join(cell.source for cell in nb.cells)
    assert 'umr_jax_cli("demo"' in sources and "configs/demo_scaling.py" in sources
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit the notebook without outputs"


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
