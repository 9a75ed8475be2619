"""The front ends print vision's own warnings (bad samples, data summaries, downloads, plugins) as one ``warning:``
line, without Python's file, line number and source line; other libraries' warnings keep Python's format."""

from __future__ import annotations

import warnings
from pathlib import Path

import vision
from vision.cli.common import one_line_warnings
from vision.data._bad import BadSampleWarning


def test_visions_warnings_are_one_line(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    inside = str(Path(vision.__file__).parent / "data" / "coco.py")
    one_line_warnings()
    assert warnings.formatwarning("3 boxes dropped", UserWarning, inside, 237, "x") == "warning: 3 boxes dropped\n"
    assert warnings.formatwarning("bad", BadSampleWarning, "/elsewhere/x.py", 1, "x") == "warning: bad\n"
    other = warnings.formatwarning("deprecated", DeprecationWarning, "/site-packages/lib/x.py", 9, "call()")
    assert "/site-packages/lib/x.py:9: DeprecationWarning: deprecated" in other
