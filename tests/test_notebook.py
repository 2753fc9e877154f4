"""notebooks/colab.ipynb runs headless on configs/tiny.py (so it cannot rot) and shows its plot."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "colab.ipynb"


def test_notebook_runs_end_to_end_on_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPS_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "CONFIG = \"tiny\"" in "".join(c.source for c in nb.cells)
    # the kernel inherits this process's environment (RESPS_JAX_CACHE above)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "data" in o and "image/png" in o["data"]]
    assert images, "the notebook showed no plot"
    png = base64.b64decode(images[-1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    (tmp_path / "notebook_plot.png").write_bytes(png)
    report = (tmp_path / "runs" / "tiny" / "report" / "report.md").read_text()
    assert "resps" in report and "## Speed" in report
