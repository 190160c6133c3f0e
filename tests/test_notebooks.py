"""notebooks/: committed without outputs, reading runs only through `evo.load` (and the metrics and plots
built on it), and executed headless with nbclient against a real run that the tests make."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from report_run import ReportRun, make_report_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["progress.ipynb", "diversity.ipynb"]
# What a notebook may import: the analysis API and what any notebook uses.
ALLOWED = {"os", "numpy", "pandas", "evo", "evo.report", "evo.report.metrics", "evo.report.plots"}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    return make_report_run(tmp_path_factory)


def _code(cell: dict) -> str:
    """A cell's Python, IPython magics (`%matplotlib inline`) left out."""
    return "\n".join(line for line in cell["source"].splitlines() if not line.lstrip().startswith("%"))


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, name
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (name, cell.source[:80])


@pytest.mark.parametrize("name", NAMES)
def test_first_cell_names_the_run_and_env_overrides_it(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "RUN_DIR" in first.source and "EVO_RUN_DIR" in first.source


@pytest.mark.parametrize("name", NAMES)
def test_uses_only_the_analysis_api(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_code(cell))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for mod in names:
                assert mod in ALLOWED, f"{name} imports {mod}: notebooks read runs through evo.load"


@pytest.mark.parametrize("name", NAMES)
def test_executes_headless_against_a_real_run(name: str, made: ReportRun, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    monkeypatch.setenv("EVO_RUN_DIR", str(made.run_dir))  # the kernel inherits the environment
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell raises
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    figures = sum("plots." in c.source for c in nb.cells if c.cell_type == "code" and "print(" not in c.source)
    assert len(images) >= figures >= 3, (len(images), figures)
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert str(made.run_dir) in text  # it read the test's run, not the default path
