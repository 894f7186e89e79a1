"""The notebooks: committed clean, and run headless against a real pipeline run and MLflow store."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPLORE = NOTEBOOKS / "01_explore_data.ipynb"
COMPARE = NOTEBOOKS / "02_compare_runs.ipynb"
KERNEL = "ganomaly-tests"


# --- the committed files (fast) --------------------------------------------------------


@pytest.mark.parametrize("path", [EXPLORE, COMPARE], ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    raw = json.loads(path.read_text())
    assert raw["nbformat"] == 4
    code = [cell for cell in raw["cells"] if cell["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell["outputs"] == [], cell["source"][:3]
        assert cell["execution_count"] is None, cell["source"][:3]
        ast.parse("".join(cell["source"]))  # valid Python, no magics


@pytest.mark.parametrize("path", [EXPLORE, COMPARE], ids=lambda p: p.name)
def test_first_cell_says_how_to_run_it(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert f"notebooks/{path.name}" in first.source.splitlines()[0]


# --- executed headless -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that runs this interpreter (the venv's), whatever ``python3`` points at."""
    pytest.importorskip("nbclient")
    from ipykernel.kernelspec import write_kernel_spec

    folder = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(folder / "kernels" / KERNEL)
    spec = json.loads((folder / "kernels" / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return folder


@pytest.fixture
def notebook_env(kernel_dir, pipeline_run, mlflow_uri, monkeypatch):
    """The kernel's environment: the run, the experiment and the store of the fixture run."""
    config, run_path = pipeline_run
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("GANOMALY_RUN_DIR", str(run_path))
    monkeypatch.setenv("GANOMALY_EXPERIMENT", config.experiment_name())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("GANOMALY_METRIC", raising=False)
    return config, run_path


def _execute(path: Path):
    """The notebook executed from notebooks/, as Jupyter would; a cell error fails here."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", (output.ename, output.evalue)
    return notebook


def _outputs(cell, mime: str) -> list[str]:
    return [o.data[mime] for o in cell.outputs if mime in o.get("data", {})]


def _streams(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def _cell_after(notebook, heading: str):
    """The first code cell after the markdown cell whose first line starts with ``heading``."""
    cells = notebook.cells
    start = next(i for i, c in enumerate(cells) if c.source.startswith(heading))
    return next(c for c in cells[start + 1 :] if c.cell_type == "code")


@pytest.mark.slow
def test_explore_notebook_runs_on_a_pipeline_run(notebook_env):
    import pandas as pd

    _, run_path = notebook_env
    notebook = _execute(EXPLORE)
    manifest = pd.read_csv(run_path / "ingest" / "manifest.csv")
    assert f"{run_path}: {len(manifest)} images accepted" in _streams(notebook.cells[1])
    counts = _outputs(_cell_after(notebook, "## Counts"), "text/html")
    assert counts and all(t in counts[0] for t in ("scratch", "stain", "total", "train", "test"))
    sizes = _outputs(_cell_after(notebook, "## Image sizes"), "text/plain")
    assert sizes and "64" in sizes[0]
    assert _outputs(_cell_after(notebook, "## Samples"), "image/png")


@pytest.mark.slow
def test_compare_notebook_runs_on_the_experiment(notebook_env):
    from pipeline import compare

    config, run_path = notebook_env
    notebook = _execute(COMPARE)
    assert f"experiment {config.experiment_name()}" in _streams(notebook.cells[1])
    table = _outputs(_cell_after(notebook, "## Settings that differ"), "text/html")
    assert table and "<td>tiny</td>" in table[0] and "image_auroc" in table[0]
    side = _outputs(_cell_after(notebook, "## All test metrics"), "text/html")
    assert side and "tiny" in side[0] and "pixel_auroc" in side[0]
    assert _outputs(_cell_after(notebook, "## Validation curves"), "image/png")
    histograms = _cell_after(notebook, "## Test scores")
    assert _outputs(histograms, "image/png")
    assert "tiny:" not in _streams(histograms)  # its scores.csv was found

    # The best run in this store (other tests may have logged runs) and its overlays.
    runs = compare.sort_runs(compare.load_runs(config.experiment_name()), "image_auroc")
    best = compare.run_labels(runs)[0]
    overlays = list((compare.run_artifacts_dir(runs[0]) / "evaluate" / "overlays").glob("*.png"))
    worst = _cell_after(notebook, "## The best run's worst cases")
    captions = _outputs(worst, "text/markdown")
    assert f"**{best}**" in captions[0]
    assert len(_outputs(worst, "image/png")) == len(overlays)
    if (compare.run_artifacts_dir(runs[0]) / "evaluate" / "report.md").is_file():
        # In the order of the report's galleries, each under its heading.
        assert all(c.startswith("Worst false") for c in captions[1:]), captions
    if best == "tiny":
        assert overlays and compare.run_artifacts_dir(runs[0]) == run_path.resolve()
