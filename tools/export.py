#!/usr/bin/env python
"""Export a model to ONNX (decoding and NMS inside), checked with onnxruntime. ``python tools/export.py help``."""

from vision.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
