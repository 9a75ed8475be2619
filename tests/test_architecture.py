"""The architecture, enforced: imports point down the layers (docs/architecture.md), the engine knows no task, models
build without the data pipeline, the engine or a task, and no source file grows past 500 lines."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vision"

#: the layers, bottom first; a module may import only from its own or a lower layer
LAYERS: dict[str, int] = {
    "hub": 1, "ops": 1, "io": 1, "viz": 1, "results": 1, "utils": 1,
    "registry": 2,
    "backbones": 3, "necks": 3,
    "models": 4, "data": 4, "_api": 4, "_loader": 4,
    "engine": 5,
    "tasks": 6,
    "deploy": 6,
    "cli": 7, "__main__": 7,
}  # fmt: skip
#: ``vision/__init__.py`` is the public face (the Python API); it sits with the API modules
TOP = 4
#: the same layer, but not each other: models and data never import one another
APART = {("models", "data"), ("data", "models")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    """The top-level part of a ``vision`` module name (``vision.models.x`` -> ``models``), ``""`` for ``vision``."""
    bits = module.split(".")
    if bits[0] != "vision":
        return None
    return bits[1] if len(bits) > 1 else ""


def _layer(part: str) -> int:
    if part == "":
        return TOP
    if part not in LAYERS:
        raise AssertionError(f"vision/{part} is in no layer: add it to LAYERS and docs/architecture.md")
    return LAYERS[part]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target == "vision":  # `from vision import x`: x may be a submodule
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        me = _part(module)
        for line, target in _imports(path, module):
            other = _part(target)
            if other is None or other == me:
                continue
            if other not in LAYERS and other != "" and target.count(".") == 1:
                other = ""  # `from vision import create_model`: a name of the public API, not a submodule
            if _layer(other) > _layer(me) or (me, other) in APART:
                bad.append(f"{path.relative_to(ROOT)}:{line} (layer {_layer(me)}, {me or 'vision'}) imports "
                           f"{target} (layer {_layer(other)})")  # fmt: skip
    return bad


def test_imports_point_down() -> None:
    bad = _violations()
    assert not bad, "imports against the layer direction:\n" + "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    probe = PACKAGE / "ops" / "_probe_upward.py"
    probe.write_text("from vision.engine import trainer\n", encoding="utf-8")
    try:
        assert any("_probe_upward.py:1" in v for v in _violations())
    finally:
        probe.unlink()


def _code_tokens(path: Path) -> str:
    """The source without comments and docstrings (string tokens that are whole statements)."""
    out = []
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            continue
        if tok.type == tokenize.STRING and (i == 0 or tokens[i - 1].type in (tokenize.NEWLINE, tokenize.INDENT,
                                                                            tokenize.DEDENT, tokenize.NL)):  # fmt: skip
            continue
        out.append(tok.string)
    return " ".join(out)


def test_engine_knows_no_task() -> None:
    words = re.compile(r"detection|classification|generation|coco|yolo", re.IGNORECASE)
    bad = []
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        hits = sorted({m.group(0).lower() for m in words.finditer(_code_tokens(path))})
        if hits:
            bad.append(f"{path.relative_to(ROOT)}: {hits}")
    assert not bad, "task names in the engine's code:\n" + "\n".join(bad)


def test_each_task_is_one_folder() -> None:
    import vision.tasks  # noqa: F401
    from vision.registry import TASKS

    for entry in TASKS.entries():
        if entry.source.startswith("vision."):
            assert entry.source.startswith(f"vision.tasks.{entry.name}."), (entry.name, entry.source)


def test_building_models_imports_no_data_engine_task_or_cli() -> None:
    code = (
        "import sys, vision; vision.create_model('yolo_n'); "
        "vision.create_model('faster_rcnn', backbone='resnet18', num_classes=3); vision.create_model('ddpm_unet_s'); "
        "bad=[m for m in sys.modules if m.startswith(('vision.engine','vision.tasks','vision.cli','vision.data'))]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("limit", [500])
def test_source_files_stay_small(limit: int) -> None:
    long = [f"{p.relative_to(ROOT)}: {n}" for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit]  # fmt: skip
    assert not long, f"files over {limit} lines:\n" + "\n".join(long)
