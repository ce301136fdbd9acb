"""Load and check rules files.

A rules file takes one of three forms:
- a list of rules;
- a mapping `{rules: [...]}`, optionally with `extends: defaults` to keep the built-in rules and add to
  or override them by name (without it, the file replaces the built-in rules);
- a mapping `{groups: [{name, rules: [...]}]}` (Prometheus style), which may also say `extends: defaults`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pipeline.errors import RulesError
from pipeline.rules.model import Problem, Rule, RuleSet
from pipeline.rules.parse import parse_rule
from pipeline.rules.source import Path, Source, read_yaml

DEFAULT_WINDOWS: tuple[float, ...] = (60.0, 300.0, 3600.0)
DEFAULTS_NAME = "defaults"
_DEFAULTS_FILE = "defaults.yaml"
_TOP_FIELDS = ("rules", "groups", "extends")
_GROUP_FIELDS = ("name", "rules")
_FORM_HINT = "write `rules:` followed by a list of rules (or a list of rules, or `groups:`)"


@dataclass
class Parsed:
    """The rules of one file, whether it extends the defaults, and every problem found."""

    rules: list[Rule] = field(default_factory=list)
    extends: bool = False
    problems: list[Problem] = field(default_factory=list)


def parse_text(text: str, filename: str, windows: Sequence[float] = DEFAULT_WINDOWS) -> Parsed:
    """Parse a rules file's text, collecting every problem instead of stopping at the first."""
    src = read_yaml(text, filename)
    parsed = Parsed()
    if src.problems and src.data is None:
        parsed.problems = src.problems
        return parsed
    items, parsed.extends = _rule_items(src)
    names: dict[str, int | None] = {}
    for path, raw in items:
        rule = parse_rule(raw, path, src, windows)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in names:
            src.report(
                (*path, "name"),
                f"duplicate rule name {name!r}",
                f"rule names must be unique; the first {name!r} is on line {names[name]}",
            )
        elif isinstance(name, str):
            names[name] = src.line((*path, "name"))
        if rule is not None:
            parsed.rules.append(rule)
    if parsed.extends:
        src.problems.extend(parse_text(_defaults_text(), DEFAULTS_NAME, windows).problems)
    parsed.problems = sorted(src.problems, key=lambda p: (p.file != filename, p.line or 0))
    return parsed


def _rule_items(src: Source) -> tuple[list[tuple[Path, Any]], bool]:
    data = src.data
    if data is None:
        src.report((), "the rules file is empty", _FORM_HINT)
        return [], False
    if isinstance(data, list):
        return [((i,), item) for i, item in enumerate(data)], False
    if not isinstance(data, dict):
        src.report((), "a rules file must be a list of rules or a mapping", _FORM_HINT)
        return [], False
    src.unknown_keys(data, (), _TOP_FIELDS, "the rules file")
    extends = data.get("extends")
    if extends is not None and extends != DEFAULTS_NAME:
        src.report(("extends",), f"cannot extend {extends!r}", "the only value is `extends: defaults`")
    if "rules" not in data and "groups" not in data and extends is None:
        src.report((), "missing field 'rules'", _FORM_HINT)
    items = _list_items(src, ("rules",), data.get("rules"))
    groups = data.get("groups")
    for g, group in enumerate(groups if isinstance(groups, list) else []):
        if not isinstance(group, dict):
            src.report(("groups", g), "a group must be a mapping {name, rules}", "e.g. `- name: api`")
            continue
        src.unknown_keys(group, ("groups", g), _GROUP_FIELDS, "a group")
        items += _list_items(src, ("groups", g, "rules"), group.get("rules"))
    if groups is not None and not isinstance(groups, list):
        src.report(("groups",), "`groups` must be a list", "e.g. `groups: [{name: api, rules: [...]}]`")
    return items, extends == DEFAULTS_NAME


def _list_items(src: Source, path: Path, value: Any) -> list[tuple[Path, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        src.report(path, f"`{path[-1]}` must be a list of rules", "start each rule with `- name: ...`")
        return []
    return [((*path, i), item) for i, item in enumerate(value)]


def check_rules(text: str, filename: str, windows: Sequence[float] = DEFAULT_WINDOWS) -> list[Problem]:
    """Return every problem of a rules file, each with its line and a hint; empty when it loads."""
    return parse_text(text, filename, windows).problems


def _defaults_text() -> str:
    return resources.files("pipeline.rules").joinpath(_DEFAULTS_FILE).read_text(encoding="utf-8")


def _raise_problems(filename: str, problems: list[Problem]) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = "\n".join(str(problem) for problem in problems)
    raise RulesError(f"{count} in rules file {filename}:\n{lines}")


def default_rules(windows: Sequence[float] = DEFAULT_WINDOWS) -> RuleSet:
    """The built-in rules (the monitoring guide's four), parsed from the package's defaults.yaml."""
    parsed = parse_text(_defaults_text(), DEFAULTS_NAME, windows)
    if parsed.problems:
        _raise_problems(f"{DEFAULTS_NAME} ({_DEFAULTS_FILE})", parsed.problems)
    return RuleSet(tuple(parsed.rules), DEFAULTS_NAME)


def load_rules(
    path: str | os.PathLike[str] | None,
    windows: Sequence[float] = DEFAULT_WINDOWS,
    extend_defaults: bool = False,
) -> RuleSet:
    """Load a rules file (None: the built-in rules); raise RulesError listing every problem."""
    if path is None:
        return default_rules(windows)
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise RulesError(f"cannot read rules file {filename}: {exc.strerror}; check PULSE_RULES") from exc
    parsed = parse_text(text, filename, windows)
    if parsed.problems:
        _raise_problems(filename, parsed.problems)
    if not (parsed.extends or extend_defaults):
        return RuleSet(tuple(parsed.rules), filename)
    return RuleSet(extend(default_rules(windows).rules, parsed.rules), f"{DEFAULTS_NAME} + {filename}")


def extend(base: Sequence[Rule], own: Sequence[Rule]) -> tuple[Rule, ...]:
    """Rules of `base` with those of `own` replacing them by name, then the rest of `own`."""
    by_name = {rule.name: rule for rule in own}
    merged = [by_name.pop(rule.name, rule) for rule in base]
    return (*merged, *by_name.values())
