"""The ``vision`` console command (also ``python -m vision``).

Subcommands::

    vision list [PATTERN] [--task T] [--pretrained] [--markdown]   registered models (and their weight tags)
    vision info NAME                                                a model's builder, capabilities and cards
    vision plugins                                                  installed plugins and their status
    vision train key=value ...                                      same as tools/train.py
    vision infer key=value ...                                      same as tools/infer.py
    vision val key=value ...                                        same as tools/val.py
    vision prune weights=... ratio=0.5 [method=l1|taylor] [data=... epochs=N]   structured pruning + report
    vision export key=value ...                                     same as tools/export.py (ONNX, checked; int8)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "markdown_table"]


def markdown_table() -> str:
    """The README's model table, generated from the registry and its cards."""
    from vision.registry import all_entries

    lines = [
        "| model | task | weights (tag: ImageNet-1K top-1 or COCO box mAP, from the card) | params (M) |",
        "| --- | --- | --- | --- |",
    ]
    for _, entry in all_entries():
        if not entry.cards:
            lines.append(f"| `{entry.name}` | {entry.task or '-'} | - | - |")
            continue
        cells = []
        params = None
        for tag, card in entry.cards.items():
            metric = card.top_metric()
            cells.append(f"`{tag}`: {metric[1]:.2f}" if metric else f"`{tag}`")
            params = card.num_params
        shown = f"{params / 1e6:.1f}" if params else "-"
        lines.append(f"| `{entry.name}` | {entry.task or '-'} | {', '.join(cells)} | {shown} |")
    return "\n".join(lines)


def _cmd_list(ns: argparse.Namespace) -> int:
    import vision

    if ns.markdown:
        print(markdown_table())
        return 0
    names = vision.list_models(ns.pattern, task=ns.task, pretrained=ns.pretrained, capability=ns.capability)
    for name in names:
        print(name)
    if not names:
        from vision.registry import close_matches

        close = close_matches(ns.pattern, vision.list_models())
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        print(f"no model matches {ns.pattern!r}{hint}", file=sys.stderr)
        return 1
    return 0


def _cmd_info(ns: argparse.Namespace) -> int:
    import contextlib
    import inspect

    from vision.registry import resolve_entry, split_name

    arch, tag = split_name(ns.name)
    entry = resolve_entry(arch)
    if tag is not None and tag not in entry.cards and "self-weights" not in entry.tags:
        known = ", ".join(sorted(entry.cards)) or "none"
        raise KeyError(f"{entry.name} has no weights tagged {tag!r}; its tags: {known}")
    print(f"name:      {entry.name}")
    print(f"task:      {entry.task}")
    print(f"tags:      {', '.join(sorted(entry.tags))}")
    print(f"source:    {entry.source}")
    with contextlib.suppress(TypeError, ValueError):
        print(f"arguments: {inspect.signature(entry.builder)}")
    if "features" in entry.tags:  # a backbone: its declared levels, built on the meta device (nothing allocated)
        import torch

        import vision

        with torch.device("meta"):
            body = vision.create_backbone(entry.name)
        print("levels:    name, channels, nominal stride (maps are ceil(H/stride) x ceil(W/stride))")
        for spec in body.feature_info:
            print(f"  {spec.name:<10} {spec.channels:>5} {spec.stride:>4}")
        if len({s.stride for s in body.feature_info}) == 1:
            print("  single-scale: detectors add a simple feature pyramid (neck simple_pyramid)")
    for tag, card in entry.cards.items():
        default = " (default)" if tag == entry.default_tag else ""
        print(f"\nweights {entry.name}.{tag}{default}")
        print(f"  url:         {card.url}")
        print(f"  sha256:      {card.sha256}")
        print(f"  parameters:  {card.num_params:,}")
        print(f"  classes:     {card.num_classes}")
        pre = card.preprocess
        print(
            f"  preprocess:  resize {pre.resize_size} ({pre.interpolation}), crop {pre.input_size}, "
            f"mean {pre.mean}, std {pre.std}"
        )
        for dataset, values in card.metrics.items():
            print(f"  {dataset}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
        if card.gflops:
            print(f"  GFLOPs:      {card.gflops}")
        print(f"  licence:     {card.license}")
        print(f"  source:      {card.source}")
    return 0


def _cmd_plugins(ns: argparse.Namespace) -> int:
    from vision.registry import discover_plugins

    status = discover_plugins()
    if not status:
        print("no plugins installed (entry-point group 'vision.models')")
    for name, state in sorted(status.items()):
        print(f"{name}: {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vision`` command: a user's mistake is one ``error:`` line (exit 2); a closed stdout
    (``vision list | head``) ends quietly."""
    from vision.cli.common import one_line_warnings

    one_line_warnings()
    try:
        return _main(argv)
    except BrokenPipeError:
        import os

        # the reader went away: send what is left to nowhere, so that the interpreter's final flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "val":
        from vision.cli.val import main as val_main

        return val_main(argv[1:])

    if argv and argv[0] == "prune":
        from vision.cli.prune import main as prune_main

        return prune_main(argv[1:])

    if argv and argv[0] == "export":
        from vision.cli.export import main as export_main

        return export_main(argv[1:])
    if argv and argv[0] in ("train", "infer"):
        if argv[0] == "train":
            from vision.cli.train import main as train_main

            return train_main(argv[1:])
        from vision.cli.infer import main as infer_main

        return infer_main(argv[1:])
    parser = argparse.ArgumentParser(prog="vision", description="vision-zoo model registry")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list registered models")
    p_list.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*' or 'timm/convnext*'")
    p_list.add_argument("--task", default=None)
    p_list.add_argument("--capability", default=None)
    p_list.add_argument("--pretrained", action="store_true", help="list arch.tag names of published weights")
    p_list.add_argument("--markdown", action="store_true", help="print the README model table")
    p_list.set_defaults(func=_cmd_list)
    p_info = sub.add_parser("info", help="show a model's builder and weight cards")
    p_info.add_argument("name")
    p_info.set_defaults(func=_cmd_info)
    p_plugins = sub.add_parser("plugins", help="show installed plugins")
    p_plugins.set_defaults(func=_cmd_plugins)
    sub.add_parser("train", help="train (same as tools/train.py key=value ...)")
    sub.add_parser("infer", help="infer (same as tools/infer.py key=value ...)")
    sub.add_parser("val", help="evaluate without training (same as tools/val.py key=value ...)")
    sub.add_parser("prune", help="prune channels, fine-tune, report (vision prune help)")
    sub.add_parser("export", help="export to ONNX (same as tools/export.py key=value ...)")
    ns = parser.parse_args(argv)
    from vision.cli.common import USER_ERRORS, fail, user_message

    try:
        return int(ns.func(ns))
    except USER_ERRORS as err:  # unknown model names and tags, bad arguments
        fail(user_message(err))
    return 2
