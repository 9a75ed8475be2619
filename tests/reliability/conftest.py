"""The tiny classifier plugin of ``tests/engine`` (``tiny_convnet``), shared with the reliability tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_engine_conftest", Path(__file__).parents[1] / "engine" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)

plugin_path = _engine.plugin_path
tiny_model = _engine.tiny_model
