#!/usr/bin/env python
"""Train the digits feature network behind ``fd_digits`` and write ``vision/assets/digits_features.safetensors``.

Usage::

    python tools/train_digits_features.py                      # writes the shipped file, prints its card numbers
    python tools/train_digits_features.py out=/tmp/digits.safetensors epochs=30 seed=0

Training is deterministic (seeded, one CPU thread, deterministic algorithms): the same command on the same software
gives the same file. After re-training, copy the printed ``sha256``, ``num_params``, ``file_size`` and accuracy into
``DIGITS_FEATURES_CARD`` in ``vision/engine/gen_metrics.py``; loading verifies the file against that card.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from vision.hub.download import sha256_file
    from vision.tasks.generation.metrics import train_digits_feature_net
    from vision.utils.keys import parse_overrides

    args = parse_overrides(
        sys.argv[1:] if argv is None else argv,
        {"out": str(ROOT / "vision" / "assets" / "digits_features.safetensors"), "epochs": 30, "seed": 0},
    )
    t0 = time.perf_counter()
    net, acc = train_digits_feature_net(epochs=int(args["epochs"]), seed=int(args["seed"]), log=print)
    meta = {
        "model": "DigitsFeatureNet",
        "trained_by": "tools/train_digits_features.py",
        "epochs": int(args["epochs"]),
        "seed": int(args["seed"]),
        "val_top1": round(acc, 4),
        "data": "scikit-learn digits, Digits('train', size=32, val_fraction=0.2, seed=0)",
    }
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # one metadata entry: safetensors writes several in hash order, which would change the file (and its SHA-256)
    save_file(state, str(out), metadata={"vision_zoo": json.dumps(meta, sort_keys=True)})
    params = sum(p.numel() for p in net.parameters())
    print(f"trained in {time.perf_counter() - t0:.0f}s; val top-1 {acc:.4f}")
    print(f"wrote {out}: {out.stat().st_size} bytes, {params} parameters")
    print(f"sha256 {sha256_file(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
