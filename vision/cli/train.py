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

import sys
from collections.abc import Sequence

import yaml

from vision.cli.common import USER_ERRORS, fail, one_line_warnings, user_message, wants_help

__all__ = ["DEFAULT_RECIPE", "main"]

#: what ``python tools/train.py`` with no arguments trains
DEFAULT_RECIPE = "yolo_n_synthetic"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/train.py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    one_line_warnings()
    from vision.engine.config import list_recipes, resolve_args
    from vision.engine.trainer import NonFiniteLossError, Trainer

    if wants_help(argv):
        print(__doc__)
        print("recipes:", ", ".join(list_recipes()))
        print("resolved keys for these arguments:")
        print(
            yaml.safe_dump(resolve_args([a for a in argv if "=" in a], default_recipe=DEFAULT_RECIPE), sort_keys=False)
        )
        return 0
    try:
        args = resolve_args(argv, default_recipe=DEFAULT_RECIPE)
        Trainer(args).fit()
    except NonFiniteLossError as err:
        fail(str(err), code=3)
    except USER_ERRORS as err:
        fail(user_message(err))
    return 0
