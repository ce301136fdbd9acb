"""Read a YAML document together with the line of every key and item, and report where things are."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.rules.model import Problem

Path = tuple[str | int, ...]


@dataclass
class Source:
    """A parsed YAML file: its data, the 1-based line of each path, and the problems found so far."""

    filename: str
    data: Any = None
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: Path) -> int | None:
        """The line of a path, or of its nearest ancestor that has one."""
        for depth in range(len(path), -1, -1):
            if path[:depth] in self.lines:
                return self.lines[path[:depth]]
        return None

    def report(self, path: Path, message: str, hint: str = "") -> None:
        """Record a problem at the line of `path`."""
        self.problems.append(Problem(self.filename, self.line(path), message, hint))

    def unknown_keys(self, mapping: dict[Any, Any], path: Path, known: Collection[str], what: str) -> None:
        """Report every key of `mapping` that is not in `known`, suggesting the closest known one."""
        for key in mapping:
            if key not in known:
                self.report(
                    (*path, str(key)), f"unknown field {key!r} in {what}", did_you_mean(str(key), known)
                )


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """A hint naming the closest choice (difflib), else listing them all."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known: " + ", ".join(sorted(choices))


def read_yaml(text: str, filename: str) -> Source:
    """Parse YAML text; a syntax error becomes a problem at the line YAML points to."""
    source = Source(filename)
    try:
        root = yaml.compose(text)
        source.data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        source.problems.append(
            Problem(
                filename,
                mark.line + 1 if mark is not None else None,
                f"not valid YAML: {problem}",
                "fix the YAML syntax; quote values that start with > | * & ! % @ or contain ': '",
            )
        )
        return source
    if root is not None:
        _walk(root, (), source)
    return source


def _walk(node: yaml.Node, path: Path, source: Source) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                source.problems.append(
                    Problem(
                        source.filename,
                        line,
                        f"field {key!r} is given twice",
                        f"YAML keeps only the last one; remove one (the first is on line {seen[key]})",
                    )
                )
            seen[key] = line
            source.lines[(*path, key)] = line
            _walk(value_node, (*path, key), source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            source.lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), source)
