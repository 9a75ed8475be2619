"""``tools/train.py``: train a model from a recipe and ``key=value`` overrides.

Usage::

    python tools/train.py                                   # the built-in default recipe
    python tools/train.py recipe=resnet18_digits epochs=5 device=cpu
    python tools/train.py model=resnet50 data=path/to/imagefolder weights=tv2_in1k epochs=10
    torchrun --nproc_per_node 2 tools/train.py recipe=resnet18_digits      # DDP
    python tools/train.py resume=runs/classification/train                  # continue a run exactly

Keys every task shares: ``recipe model data epochs batch lr device workers weights resume seed deterministic project
name``; ``python tools/train.py help`` lists all keys with their defaults. The last line printed names the run folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from vision.cli.common import INTERRUPTED, USER_ERRORS, fail, interrupted, one_line_warnings, user_message, wants_help

__all__ = ["DEFAULT_RECIPE", "main"]

#: what ``python tools/train.py`` with no arguments trains
DEFAULT_RECIPE = "yolo_n_synthetic"


def main(argv: Sequence[str] | None = None, *, prog: str = "python tools/train.py") -> int:
    """Entry point of ``tools/train.py`` (``prog``: the command as the user typed it, for the line a Ctrl-C prints)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    one_line_warnings()
    from vision.engine.config import list_recipes, resolve_args
    from vision.engine.trainer import NonFiniteLossError, Trainer

    trainer: Trainer | None = None
    try:
        if wants_help(argv):
            resolved = resolve_args([a for a in argv if "=" in a], default_recipe=DEFAULT_RECIPE)
            print(__doc__)
            print("recipes:", ", ".join(list_recipes()))
            print("resolved keys for these arguments:")
            print(yaml.safe_dump(resolved, sort_keys=False))
            return 0
        args = resolve_args(argv, default_recipe=DEFAULT_RECIPE)
        trainer = Trainer(args)
        trainer.fit()
    except NonFiniteLossError as err:
        fail(str(err), code=3)
    except USER_ERRORS as err:
        fail(user_message(err))
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") not in ("", "0"):  # each DDP process gets the Ctrl-C: the first one says it
            raise SystemExit(INTERRUPTED) from None
        interrupted(_interrupted_line(trainer, prog))
    return 0


def _interrupted_line(trainer: object, prog: str) -> str:
    """What a Ctrl-C prints: how to continue the run when its folder exists (its ``args.yaml`` is all ``resume=``
    needs; the newest complete checkpoint, if any, is where it goes on)."""
    run_dir = getattr(trainer, "run_dir", None)
    if run_dir is None or not (Path(run_dir) / "args.yaml").is_file():
        return "interrupted before the run folder was made: nothing to resume"
    return f"interrupted; continue with: {prog} resume={run_dir}"
