"""The house plan: imports point down, stages never import each other, the stage table rules.

models/          networks, losses, the GANomaly, the scorer: imports no project layer above
pipeline/core/   config, errors, artifacts, stages, records, modeling: imports models/ only
components/      the stages and their helpers: import pipeline/core/ and models/
pipeline/        entry points (cli, tracking, score_table, predict): import any layer below
benchmarks/      make bench, make benchmark: import anything; nothing imports them
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.core import stages

ROOT = Path(__file__).resolve().parent.parent
STAGE_MODULES = {f"components.{name}" for name in stages.STAGE_NAMES}
PACKAGES = ("models", "components", "pipeline", "benchmarks")


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at top level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _modules(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    return {
        _module_name(path, root): _project_imports(path)
        for path in sorted((root / package).rglob("*.py"))
    }


def _violations(modules: dict[str, set[str]], allowed) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in modules.items()
        for name in sorted(names)
        if not allowed(module, name)
    ]


def _models_rule(module: str, name: str) -> bool:
    return name.startswith("models")


def test_models_import_neither_components_nor_pipeline():
    assert _violations(_modules("models"), _models_rule) == []


def test_the_import_rule_refuses_a_module_that_breaks_it(tmp_path):
    # The checker fed a models/ tree that imports upwards, at top level and in a function.
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "good.py").write_text("import numpy\nfrom models import losses\n")
    (tmp_path / "models" / "sub" / "bad.py").write_text(
        "import pipeline.tracking\n\ndef f():\n    from components.localize import image_size\n"
    )
    assert _violations(_modules("models", tmp_path), _models_rule) == [
        "models.sub.bad imports components.localize",
        "models.sub.bad imports components.localize.image_size",
        "models.sub.bad imports pipeline.tracking",
    ]


def test_the_core_imports_only_itself_and_models():
    core = {m: n for m, n in _modules("pipeline").items() if m.startswith("pipeline.core")}
    allowed = lambda module, name: name.startswith(("pipeline.core", "models"))  # noqa: E731
    assert core and _violations(core, allowed) == []


def test_components_import_only_the_core_models_and_helpers():
    def allowed(module: str, name: str) -> bool:
        if name.startswith("pipeline"):
            return name.startswith("pipeline.core")
        return not name.startswith("benchmarks")

    assert _violations(_modules("components"), allowed) == []


def test_no_stage_module_is_imported_by_another_component():
    # Shared code lives in pipeline/core/ or a helper module, never in a stage.
    def allowed(module: str, name: str) -> bool:
        stage = next((s for s in STAGE_MODULES if name == s or name.startswith(s + ".")), None)
        return stage is None or stage == module

    assert _violations(_modules("components"), allowed) == []


def _not_benchmarks(module: str, name: str) -> bool:
    return name.split(".")[0] != "benchmarks"


@pytest.mark.parametrize("package", ["models", "components", "pipeline"])
def test_nothing_imports_the_benchmarks(package):
    assert _violations(_modules(package), _not_benchmarks) == []


def test_the_benchmarks_import_the_layers_below_and_the_rule_refuses_the_reverse(tmp_path):
    # benchmarks/ is the top: it imports entry points, stages and models (seen here,
    # function-level imports included) and may; the same import from below is refused.
    serving = _modules("benchmarks")["benchmarks.serving"]
    assert {"pipeline.predict", "components.export", "models.serving"} <= serving
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "cli.py").write_text("def f():\n    from benchmarks import model\n")
    assert _violations(_modules("pipeline", tmp_path), _not_benchmarks) == [
        "pipeline.cli imports benchmarks",
        "pipeline.cli imports benchmarks.model",
    ]


def test_the_checks_see_a_violation():
    # Guards the checks themselves: a parse that missed imports would pass everything.
    imports = _modules("pipeline")["pipeline.score_table"]
    assert "components.evaluate" in imports  # a function-level import, found


def test_every_stage_has_its_module_with_a_run_function():
    for name in stages.STAGE_NAMES:
        module = importlib.import_module(f"components.{name}")
        assert callable(module.run), name


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_each_stage_docstring_names_its_inputs_and_outputs(stage):
    doc = importlib.import_module(f"components.{stage.name}").__doc__
    for read in stage.reads:
        assert f"artifacts/<run>/{read}/" in doc, read
    for output in stage.writes:
        if "*" not in output.name:
            assert output.name.rstrip("/") in doc, output.name


def test_stages_read_only_earlier_stages_and_depend_on_their_sections():
    seen: list[str] = []
    for stage in stages.STAGES:
        assert set(stage.reads) <= set(seen), stage.name
        for read in stage.reads:
            for part in stages.stage(read).sections:  # a section, or one key of it
                covered = part in stage.sections or part.split(".")[0] in stage.sections
                assert covered, (stage.name, read, part)
        seen.append(stage.name)


def test_the_makefile_rules_come_from_the_table():
    database = subprocess.run(
        ["make", "-p", "-n", "-C", str(ROOT), "help", "RUN=probe"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for stage in stages.STAGES:
        rule = re.search(rf"^artifacts/probe/{stage.name}/_SUCCESS: (.*)$", database, re.MULTILINE)
        assert rule, stage.name
        prerequisites = rule.group(1).split()
        assert prerequisites == [
            *(f"artifacts/probe/{read}/_SUCCESS" for read in stage.reads),
            f"artifacts/probe/.stamps/{stage.name}.yaml",
        ]
