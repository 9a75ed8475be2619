#!/usr/bin/env python
"""Evaluate a model without training. ``python tools/val.py help`` lists the keys."""

from vision.cli.val import main

if __name__ == "__main__":
    raise SystemExit(main())
