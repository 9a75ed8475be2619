"""The suite's Markdown table (the JSON is the report dict itself)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def flatten(numbers: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of a nested dict."""
    out: list[tuple[str, Any]] = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: header, targets, parts, every number."""
    dev = report["device"]
    dirty = " (with uncommitted changes)" if report["git"].get("dirty") else ""
    mode = "DRY RUN (toy sizes on the CPU; targets not judged)" if report["dry_run"] else "full run"
    lines = [
        f"# vision-zoo GPU suite: {dev.get('name')}",
        "",
        f"- {mode}, {report['date']}, {report['wall_s']:.0f} s of {report['budget_s']:.0f} s budget",
        f"- device: {', '.join(f'{k} {v}' for k, v in dev.items() if v is not None)}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items() if v)}",
        f"- commit: {report['git'].get('commit') or '-'}{dirty}",
        f"- exit code {report['exit_code']}: {report['summary']}",
        "",
        "## Targets",
        "",
        "| target | value | wanted | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for t in report["targets"]:
        wanted = f"{t['op']} {_fmt(t['threshold'])}"
        lines.append(f"| {t['text']} | {_fmt(t['value'])} | {wanted} | {t['verdict']} |")
    lines += [
        "",
        "## Parts",
        "",
        "| # | part | status | seconds | budget | reason |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, p in enumerate(report["parts"], 1):
        reason = _fmt(p["reason"]) if p.get("reason") else ""
        lines.append(f"| {i} | {p['title']} | {p['status']} | {p['seconds']:.1f} | {p['budget_s']:.0f} | {reason} |")
    for p in report["parts"]:
        lines += ["", f"### {p['title']}", ""]
        if p["numbers"]:
            lines += ["| number | value |", "| --- | --- |"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in flatten(p["numbers"])]
        for key, why in p.get("skipped", {}).items():
            lines.append(f"- skipped {key}: {why}")
        for key, err in p.get("errors", {}).items():
            lines.append(f"- ERROR {key}: {_fmt(err.splitlines()[0] if err else err)}")
    return "\n".join(lines) + "\n"
