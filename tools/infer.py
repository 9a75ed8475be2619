#!/usr/bin/env python
"""Run a model on images, folders, globs or videos. ``python tools/infer.py help`` lists the keys."""

from vision.cli.infer import main

if __name__ == "__main__":
    raise SystemExit(main())
