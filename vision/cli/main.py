"""The ``vision`` console command (also ``python -m vision``).

Subcommands (``vision help`` and ``vision <command> help`` print their help)::

    vision list [PATTERN] [--task T] [--capability C] [--pretrained] [--markdown]   registered models (weight tags,
                                                                    the README table of those listed)
    vision info NAME                                                a model's builder, capabilities and cards
    vision plugins                                                  installed plugins and their status
    vision train key=value ...                                      same as tools/train.py
    vision infer key=value ...                                      same as tools/infer.py
    vision val key=value ...                                        same as tools/val.py
    vision prune weights=... ratio=0.5 [method=l1|taylor] [data=... epochs=N]   structured pruning + report
    vision export key=value ...                                     same as tools/export.py (ONNX, checked; int8)

A user's mistake (argparse's own too) is one ``error:`` line on stderr naming what is at fault, exit status 2; a
``vision list`` that finds nothing names the pattern or the option that removed its matches. Ctrl-C is one line on
stderr, exit status 130 (``vision train`` names the run to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Sequence
from typing import NoReturn

__all__ = ["main", "markdown_table"]


def markdown_table(names: Collection[str] | None = None) -> str:
    """The README's model table, generated from the registry and its cards: a row per model (of ``names`` only, when
    given: architecture names as ``vision list`` prints them)."""
    from vision.registry import all_entries

    lines = [
        "| model | task | weights (tag: ImageNet-1K top-1 or COCO box mAP, from the card) | params (M) |",
        "| --- | --- | --- | --- |",
    ]
    for _, entry in all_entries():
        if names is not None and entry.name not in names:
            continue
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


def _check_choice(option: str, value: str | None, choices: set[str], what: str, plural: str) -> None:
    """Refuse an option value that no registered model has, naming the option, the known values and close ones."""
    if value is None or value in choices:
        return
    from vision.registry import close_matches
    from vision.utils.keys import ArgumentError

    close = close_matches(value, choices, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ArgumentError(f"{option} {value}: no such {what}{hint}; {plural}: {', '.join(sorted(choices))}")


def _why_empty(ns: argparse.Namespace) -> str:
    """Why ``vision list`` with these options finds nothing: the pattern, or the option that removes its matches."""
    import vision
    from vision.registry import close_matches

    pattern = ns.pattern
    matching = vision.list_models(pattern)
    if not matching:
        close = close_matches(pattern, vision.list_models())
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        return f"no model matches {pattern!r}{hint}"
    n = f"{len(matching)} model{'s' if len(matching) > 1 else ''} matching {pattern!r}"
    if ns.task is not None and not vision.list_models(pattern, task=ns.task):
        return f"--task {ns.task}: none of the {n} is a {ns.task} model (vision list {pattern!r} lists them)"
    if ns.capability is not None and not vision.list_models(pattern, capability=ns.capability):
        return f"--capability {ns.capability}: none of the {n} has it (vision list {pattern!r} lists them)"
    if ns.pretrained and not vision.list_models(pattern, pretrained=True):
        return f"--pretrained: none of the {n} has published weights (vision list {pattern!r} lists them)"
    given = [f"--task {ns.task}" if ns.task else "", f"--capability {ns.capability}" if ns.capability else "",
             "--pretrained" if ns.pretrained else ""]  # fmt: skip
    return f"{' '.join(g for g in given if g)}: none of the {n} passes these options together"


def _cmd_list(ns: argparse.Namespace) -> int:
    import vision
    from vision.cli.common import fail
    from vision.registry import all_entries, split_name
    from vision.utils.keys import ArgumentError

    entries = [entry for _, entry in all_entries()]
    timm = ns.pattern.startswith("timm/")
    _check_choice("--task", ns.task, {e.task for e in entries if e.task}, "task", "tasks")
    if not timm:  # a timm name has tags of its own (timm, self-weights)
        _check_choice("--capability", ns.capability, {t for e in entries for t in e.tags}, "capability", "capabilities")
    elif ns.markdown:
        raise ArgumentError(f"--markdown tables the registry's models, not timm's: leave out {ns.pattern!r}")
    names = vision.list_models(ns.pattern, task=ns.task, pretrained=ns.pretrained, capability=ns.capability)
    if not names:
        fail(_why_empty(ns))
    if ns.markdown:  # the rows of the models listed (every model: the README's table)
        print(markdown_table({split_name(name)[0] for name in names}))
        return 0
    for name in names:
        print(name)
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


class _Parser(argparse.ArgumentParser):
    """argparse with the project's rule for a user's mistake: one ``error:`` line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        from vision.cli.common import fail

        fail(f"{self.prog}: {message}" if " " in self.prog else message)  # a subcommand's mistake names it


#: the subcommands that take ``key=value`` arguments, each with its own front end (and its own ``help``)
_FRONT_ENDS = {
    "train": "train (same as tools/train.py key=value ...)",
    "infer": "infer (same as tools/infer.py key=value ...)",
    "val": "evaluate without training (same as tools/val.py key=value ...)",
    "prune": "prune channels, fine-tune, report (vision prune help)",
    "export": "export to ONNX (same as tools/export.py key=value ...)",
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``vision`` parser and its subcommands' parsers by name."""
    parser = _Parser(prog="vision", description="vision-zoo model registry; vision <command> help: a command's help")
    sub = parser.add_subparsers(dest="command", metavar="command")
    p_list = sub.add_parser("list", help="list registered models")
    p_list.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*' or 'timm/convnext*'")
    p_list.add_argument("--task", default=None, help="only models of this task, e.g. detection")
    p_list.add_argument("--capability", default=None, help="only models with this capability, e.g. features")
    p_list.add_argument("--pretrained", action="store_true", help="list arch.tag names of published weights")
    p_list.add_argument("--markdown", action="store_true", help="print the README model table (of these models)")
    p_list.set_defaults(func=_cmd_list)
    p_info = sub.add_parser("info", help="show a model's builder and weight cards")
    p_info.add_argument("name")
    p_info.set_defaults(func=_cmd_info)
    p_plugins = sub.add_parser("plugins", help="show installed plugins")
    p_plugins.set_defaults(func=_cmd_plugins)
    for name, text in _FRONT_ENDS.items():
        sub.add_parser(name, help=text)
    return parser, {"list": p_list, "info": p_info, "plugins": p_plugins}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vision`` command: a user's mistake is one ``error:`` line (exit 2); a closed stdout
    (``vision list | head``) ends quietly; Ctrl-C is one ``interrupted`` line (exit 130)."""
    from vision.cli.common import interrupted, one_line_warnings

    one_line_warnings()
    try:
        return _main(argv)
    except BrokenPipeError:
        import os

        # the reader went away: send what is left to nowhere, so that the interpreter's final flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # a front end that names what to do next (vision train) says so itself
        interrupted()


def _front_end(command: str, argv: list[str]) -> int:
    """Run the ``key=value`` front end of ``command``."""
    if command == "train":
        from vision.cli.train import main as train_main

        return train_main(argv, prog="vision train")
    if command == "infer":
        from vision.cli.infer import main as run
    elif command == "val":
        from vision.cli.val import main as run
    elif command == "prune":
        from vision.cli.prune import main as run
    else:
        from vision.cli.export import main as run
    return run(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _FRONT_ENDS:
        return _front_end(argv[0], argv[1:])
    parser, subs = _parser()
    if argv[:1] == ["help"]:  # vision help [command]
        if argv[1:2] and argv[1] in _FRONT_ENDS:
            return _front_end(argv[1], ["help"])
        (subs.get(argv[1], parser) if len(argv) > 1 else parser).print_help()
        return 0
    if argv and argv[0] in subs and "help" in argv[1:]:  # vision list help, as vision train help
        subs[argv[0]].print_help()
        return 0
    known = [*subs, *_FRONT_ENDS, "help"]
    if not argv:
        parser.error(f"no command given; commands: {', '.join(known)} (vision help describes them)")
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        parser.error(f"unknown option {argv[0]}: give a command first; commands: {', '.join(known)}")
    if argv[0] not in known and not argv[0].startswith("-"):
        from vision.registry import close_matches

        close = close_matches(argv[0], known, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        parser.error(f"unknown command {argv[0]!r}{hint}; commands: {', '.join(known)}")
    ns, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand they were given to
        subs[ns.command].error(f"unrecognized arguments: {' '.join(extra)}")
    from vision.cli.common import USER_ERRORS, fail, user_message

    try:
        return int(ns.func(ns))
    except USER_ERRORS as err:  # unknown model names and tags, bad arguments
        fail(user_message(err))
