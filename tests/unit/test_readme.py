"""The README and docs/ document every setting and every exported metric, and their links resolve."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.telemetry import PipelineMetrics
from pipeline.config.settings import ENV_VARS, Config
from pipeline.readout.names import LATENCY_METRICS, TOTAL_FAMILIES, WINDOW_METRICS

ROOT = Path(__file__).resolve().parents[2]
README_PATH = ROOT / "README.md"
DOCS = ROOT / "docs"
README = README_PATH.read_text(encoding="utf-8")
CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
METRICS = (DOCS / "metrics.md").read_text(encoding="utf-8")

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README_PATH, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but '-' and '_' removed, spaces to '-'."""
    text = re.sub(r"`|\*\*|__", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def relative_links(path: Path) -> list[str]:
    """The targets of every relative link of a Markdown file (no scheme, no mail address)."""
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`(?!\])", "", line)  # inline code that is not a link's text
        for match in LINK.finditer(line):
            target = match.group(1)
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                targets.append(target)
    return targets


def config_keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            keys.extend(config_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_environment_variable_is_documented() -> None:
    missing = [var.name for var in ENV_VARS if f"`{var.name}`" not in CONFIGURATION]
    assert not missing


def test_the_environment_column_names_each_setting_s_variable() -> None:
    """Each row of the settings table names the variable whose `Env` mark the setting carries, or none."""
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| ([^|]*?) \|", CONFIGURATION, re.M))
    marked = {".".join(var.path): f"`{var.name}`" for var in ENV_VARS}
    assert len(rows) > len(marked) >= 50
    assert {key: rows.get(key) for key in marked} == marked
    unmarked = {key: column for key, column in rows.items() if key not in marked}
    assert unmarked == dict.fromkeys(unmarked, "—")


def test_every_config_key_is_documented() -> None:
    missing = [key for key in config_keys(Config) if f"`{key}`" not in CONFIGURATION]
    assert not missing


def test_every_metric_is_documented() -> None:
    names = {m.name for m in WINDOW_METRICS}
    names |= {name for name, _ in LATENCY_METRICS.values()}
    names |= {name for name, _, _ in TOTAL_FAMILIES}
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    missing = sorted(name for name in names if name not in METRICS)
    assert not missing


def test_the_first_screen_has_the_picture_and_the_two_commands() -> None:
    first = README.splitlines()[:40]
    opening = [i for i, line in enumerate(first) if line.strip() == "```mermaid"]
    assert opening, "no ```mermaid block in the README's first 40 lines"
    closing = [line for line in first[opening[0] + 1 :] if line.strip() == "```"]
    assert closing, "the mermaid block ends after line 40"
    assert any("make demo" in line for line in first)
    assert any("make test" in line for line in first)


def test_every_relative_link_resolves() -> None:
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            file_part, _, fragment = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            name = f"{path.relative_to(ROOT)}: {target}"
            if not resolved.exists():
                broken.append(f"{name} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{name} (no such heading)")
    assert not broken


def test_the_readme_and_every_doc_link_each_other() -> None:
    linked = {(README_PATH.parent / t.partition("#")[0]).resolve() for t in relative_links(README_PATH)}
    assert sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in linked) == []
    for path in DOCS.glob("*.md"):
        first = path.read_text(encoding="utf-8").split("\n\n")[:2]
        assert "(../README.md)" in "\n".join(first), f"{path.name} does not start with a link to the README"


def test_the_anchor_rule() -> None:
    assert anchor("Private Faust and aiokafka names") == "private-faust-and-aiokafka-names"
    assert anchor("The guide's Prometheus metrics") == "the-guides-prometheus-metrics"
    assert anchor("What you will see in the first minute") == "what-you-will-see-in-the-first-minute"
    assert anchor("`pulse up` and `snake_case`") == "pulse-up-and-snake_case"
