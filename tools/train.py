#!/usr/bin/env python
"""Train a model: ``python tools/train.py [recipe=NAME] [key=value ...]``; ``help`` lists the keys."""

from vision.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
