"""Rule unit tests in the spirit of `promtool test rules`: input series in, expected firing alerts out.

A test file names its rule files (relative to itself, or `defaults`), an evaluation_interval, and tests
of input_series (see pipeline.rules.notation) and alert_rule_test cases. Each case evaluates the rules
from t=0 to eval_time every evaluation_interval, carrying alert state, with every series at its latest
entry at or before t (none when that entry is `_` or `stale`; the last entry holds after the end). The
alerts FIRING at eval_time are compared with exp_alerts: labels exactly (alertname added), annotations
for the keys given.

When the input has o4o_service_up for a service but no o4o_service_last_heartbeat_timestamp_seconds,
the heartbeat time is synthesized: each o4o_service_up entry with a value is one heartbeat at its own
time, so after the last one its age grows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from pipeline.durations import HINT as DURATION_HINT
from pipeline.durations import format_duration, parse_duration
from pipeline.rules.catalogue import Sample, Snapshot
from pipeline.rules.engine import AlertState, State, alert_labels, evaluate, render_annotations
from pipeline.rules.load import DEFAULT_WINDOWS, DEFAULTS_NAME, default_rules, extend, parse_text
from pipeline.rules.model import Problem, Rule, RuleSet
from pipeline.rules.notation import parse_series, parse_values
from pipeline.rules.observe import LAST_HEARTBEAT, UP, gone, observe
from pipeline.rules.source import Path, Source, read_yaml

_TOP_FIELDS = ("rule_files", "evaluation_interval", "tests")
_TEST_FIELDS = ("name", "interval", "input_series", "alert_rule_test")
_SERIES_FIELDS = ("series", "values")
_CASE_FIELDS = ("eval_time", "alertname", "exp_alerts")
_ALERT_FIELDS = ("exp_labels", "exp_annotations")
_MAX_STEPS = 100_000  # Why: a typo like `eval_time: 30d` with a 1s interval would otherwise run for minutes


@dataclass
class TestReport:
    """The outcome of one rule-test file: a line per case, failures showing expected vs got."""

    __test__ = False  # not a pytest test class, despite the name

    lines: list[str] = field(default_factory=list)
    cases: int = 0
    failures: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file was valid and every case passed."""
        return not self.problems and self.failures == 0


@dataclass(frozen=True)
class _Series:
    name: str
    labels: dict[str, str]
    interval_ms: int
    values: list[float | None]

    def entry(self, t_ms: int) -> int:
        return min(t_ms // self.interval_ms, len(self.values) - 1)

    def at(self, t_ms: int) -> float | None:
        return self.values[self.entry(t_ms)]

    def last_seen_ms(self, t_ms: int) -> int | None:
        for i in range(self.entry(t_ms), -1, -1):
            if self.values[i] is not None:
                return i * self.interval_ms
        return None


@dataclass(frozen=True)
class _Expected:
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class _Case:
    test: str
    eval_ms: int
    alertname: str
    expected: list[_Expected]


@dataclass
class _Test:
    name: str
    series: list[_Series] = field(default_factory=list)
    cases: list[_Case] = field(default_factory=list)


def run_rule_tests(path: str | os.PathLike[str], windows: Sequence[float] = DEFAULT_WINDOWS) -> TestReport:
    """Run every test of a rule-test file and report each case."""
    filename = os.fspath(path)
    report = TestReport()
    try:
        text = FilePath(filename).read_text(encoding="utf-8")
    except OSError as exc:
        report.problems.append(
            Problem(filename, None, f"cannot read test file: {exc.strerror}", "check the path")
        )
    else:
        _run(text, filename, windows, report)
    report.lines.extend(str(problem) for problem in report.problems)
    verdict = "ok" if report.ok else "FAILED"
    report.lines.append(f"{filename}: {report.cases} cases, {report.failures} failed: {verdict}")
    return report


def _run(text: str, filename: str, windows: Sequence[float], report: TestReport) -> None:
    src = read_yaml(text, filename)
    data = src.data
    if not src.problems and not isinstance(data, dict):
        src.report(
            (), "a rule-test file must be a mapping", "write rule_files:, evaluation_interval: and tests:"
        )
    if isinstance(data, dict):
        src.unknown_keys(data, (), _TOP_FIELDS, "the test file")
        rules = _rule_files(src, data, filename, windows, report)
        step_ms = _duration_ms(src, data, "evaluation_interval", (), 60_000)
        tests = _tests(src, data, step_ms, rules)
        if not src.problems and not report.problems:
            for test in tests:
                _run_test(test, rules, step_ms, report)
    report.problems[:0] = src.problems


def _rule_files(
    src: Source, data: dict[str, Any], filename: str, windows: Sequence[float], report: TestReport
) -> RuleSet:
    files = data.get("rule_files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        src.report(("rule_files",), "`rule_files` must be a list of paths", "e.g. `rule_files: [rules.yaml]`")
        return RuleSet((), "")
    rules: list[Rule] = []
    for i, name in enumerate(files):
        loaded = _rule_file(src, ("rule_files", i), name, FilePath(filename).parent, windows, report)
        for rule in loaded:
            if any(r.name == rule.name for r in rules):
                src.report(
                    ("rule_files", i), f"rule {rule.name!r} is defined in two rule files", "rename one"
                )
            rules.append(rule)
    return RuleSet(tuple(rules), ", ".join(files))


def _rule_file(
    src: Source, where: Path, name: str, base: FilePath, windows: Sequence[float], report: TestReport
) -> tuple[Rule, ...]:
    if name == DEFAULTS_NAME:
        return default_rules(windows).rules
    path = base / name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        src.report(
            where,
            f"cannot read rule file {str(path)!r}: {exc.strerror}",
            "paths are relative to the test file",
        )
        return ()
    parsed = parse_text(text, str(path), windows)
    report.problems.extend(parsed.problems)
    return extend(default_rules(windows).rules, parsed.rules) if parsed.extends else tuple(parsed.rules)


def _duration_ms(src: Source, data: dict[str, Any], key: str, path: Path, default: int) -> int:
    if key not in data:
        return default
    try:
        ms = round(parse_duration(data[key]) * 1000)
    except ValueError:
        src.report((*path, key), f"bad duration {data[key]!r} for {key!r}", DURATION_HINT)
        return default
    if ms <= 0 and key != "eval_time":
        src.report((*path, key), f"{key!r} must be longer than 0s", DURATION_HINT)
        return default
    return ms


def _tests(src: Source, data: dict[str, Any], step_ms: int, rules: RuleSet) -> list[_Test]:
    raw_tests = data.get("tests")
    if not isinstance(raw_tests, list) or not raw_tests:
        src.report(
            ("tests",),
            "`tests` must be a non-empty list",
            "e.g. `tests: [{interval: 1m, input_series: ...}]`",
        )
        return []
    tests = []
    for i, raw in enumerate(raw_tests):
        path: Path = ("tests", i)
        if not isinstance(raw, dict):
            src.report(
                path, "a test must be a mapping", "write interval:, input_series: and alert_rule_test:"
            )
            continue
        tests.append(_test(src, raw, i, step_ms, rules))
    return tests


def _test(src: Source, raw: dict[str, Any], index: int, step_ms: int, rules: RuleSet) -> _Test:
    path: Path = ("tests", index)
    src.unknown_keys(raw, path, _TEST_FIELDS, "a test")
    test = _Test(str(raw.get("name") or f"test {index + 1}"))
    interval_ms = _duration_ms(src, raw, "interval", path, step_ms)
    for j, item in enumerate(_list(src, raw, "input_series", path)):
        series = _series(src, item, (*path, "input_series", j), interval_ms)
        if series is not None:
            test.series.append(series)
    for j, item in enumerate(_list(src, raw, "alert_rule_test", path)):
        case = _case(src, item, (*path, "alert_rule_test", j), test.name, step_ms, rules)
        if case is not None:
            test.cases.append(case)
    return test


def _list(src: Source, raw: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        src.report((*path, key), f"`{key}` must be a list", "start each item with `- `")
        return []
    return value


def _series(src: Source, raw: Any, path: Path, interval_ms: int) -> _Series | None:
    if not isinstance(raw, dict) or "series" not in raw or "values" not in raw:
        src.report(
            path,
            "an input series needs `series` and `values`",
            "e.g. `- series: 'o4o_error_ratio{window=\"5m\"}'`",
        )
        return None
    src.unknown_keys(raw, path, _SERIES_FIELDS, "an input series")
    try:
        name, labels = parse_series(str(raw["series"]))
    except ValueError as exc:
        src.report((*path, "series"), str(exc), 'write name{label="value", ...}')
        return None
    try:
        values = parse_values(str(raw["values"]))
    except ValueError as exc:
        src.report((*path, "values"), str(exc), "promtool notation: '1 2 3', '0+1x10', '5x3', '_', 'stale'")
        return None
    return _Series(name, labels, interval_ms, values)


def _case(src: Source, raw: Any, path: Path, test: str, step_ms: int, rules: RuleSet) -> _Case | None:
    if not isinstance(raw, dict):
        src.report(
            path, "an alert_rule_test item must be a mapping", "write eval_time:, alertname: and exp_alerts:"
        )
        return None
    src.unknown_keys(raw, path, _CASE_FIELDS, "an alert_rule_test item")
    before = len(src.problems)
    if "eval_time" not in raw:
        src.report(path, "missing field 'eval_time'", "e.g. `eval_time: 10m`")
    eval_ms = _duration_ms(src, raw, "eval_time", path, 0)
    if eval_ms // step_ms > _MAX_STEPS:
        src.report(
            (*path, "eval_time"),
            f"eval_time needs more than {_MAX_STEPS} evaluations",
            "raise evaluation_interval",
        )
    alertname = raw.get("alertname")
    if not isinstance(alertname, str):
        src.report(path, "missing field 'alertname'", "name the rule whose alerts are expected")
    elif rules.rules and rules.get(alertname) is None:
        known = ", ".join(r.name for r in rules.rules)
        src.report((*path, "alertname"), f"no rule named {alertname!r} in the rule files", f"rules: {known}")
    expected = [
        _expected(src, item, (*path, "exp_alerts", k))
        for k, item in enumerate(_list(src, raw, "exp_alerts", path))
    ]
    if len(src.problems) > before:
        return None
    assert isinstance(alertname, str)
    return _Case(test, eval_ms, alertname, [e for e in expected if e is not None])


def _expected(src: Source, raw: Any, path: Path) -> _Expected | None:
    if not isinstance(raw, dict):
        src.report(path, "an expected alert must be a mapping", "write exp_labels: and exp_annotations:")
        return None
    src.unknown_keys(raw, path, _ALERT_FIELDS, "an expected alert")
    maps = {}
    for key in _ALERT_FIELDS:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            src.report((*path, key), f"`{key}` must be a mapping", "e.g. `{severity: critical}`")
            return None
        maps[key] = {str(k): str(v) for k, v in value.items()}
    return _Expected(maps["exp_labels"], maps["exp_annotations"])


def _snapshot(series: list[_Series], t_ms: int) -> Snapshot:
    samples: dict[str, list[Sample]] = {}
    for s in series:
        value = s.at(t_ms)
        if value is not None:
            samples.setdefault(s.name, []).append((s.labels, value))
    given = {tuple(sorted(s.labels.items())) for s in series if s.name == LAST_HEARTBEAT}
    for s in series:
        seen = s.last_seen_ms(t_ms) if s.name == UP and tuple(sorted(s.labels.items())) not in given else None
        if seen is not None:
            samples.setdefault(LAST_HEARTBEAT, []).append((s.labels, seen / 1000.0))
    return Snapshot(samples)


def _firing(rule: Rule, snapshot: Snapshot, states: dict[str, AlertState], t_ms: int) -> list[_Expected]:
    mine = [s for s in states.values() if s.rule == rule.name and s.state == State.FIRING]
    seen = observe(rule, snapshot, [s.labels for s in mine], lambda _r, _l: True, t_ms)
    out = []
    for state in mine:
        labels = alert_labels(rule, state.labels)
        obs = seen.get(state.fingerprint) or gone(rule, state.labels)
        out.append(_Expected(labels, render_annotations(rule, obs, labels)))
    return sorted(out, key=lambda e: sorted(e.labels.items()))


def _run_test(test: _Test, rules: RuleSet, step_ms: int, report: TestReport) -> None:
    wanted = {case.eval_ms for case in test.cases}
    last = max(wanted, default=0)
    times = sorted(set(range(0, last + 1, step_ms)) | wanted)
    states: dict[str, AlertState] = {}
    got: dict[tuple[int, str], list[_Expected]] = {}
    for t in times:
        snapshot = _snapshot(test.series, t)
        _, changed = evaluate(rules, snapshot, states, t)
        states.update(changed)
        for case in test.cases:
            rule = rules.get(case.alertname)
            if case.eval_ms == t and rule is not None:
                got[(t, case.alertname)] = _firing(rule, snapshot, states, t)
    for case in test.cases:
        _judge(case, got.get((case.eval_ms, case.alertname), []), report)


def _matches(expected: _Expected, actual: _Expected, alertname: str) -> bool:
    if {**expected.labels, "alertname": alertname} != actual.labels:
        return False
    return all(actual.annotations.get(k) == v for k, v in expected.annotations.items())


def _judge(case: _Case, actual: list[_Expected], report: TestReport) -> None:
    report.cases += 1
    # Labels are compared exactly and each firing alert has its own labels, so at most one can match.
    left = list(actual)
    ok = True
    for expected in case.expected:
        hit = next((a for a in left if _matches(expected, a, case.alertname)), None)
        if hit is None:
            ok = False
            break
        left.remove(hit)
    ok = ok and not left
    head = f"{case.test}: {case.alertname} at {format_duration(case.eval_ms / 1000)}"
    if ok:
        report.lines.append(f"PASS  {head}: {len(actual)} firing")
        return
    report.failures += 1
    keys = [key for expected in case.expected for key in expected.annotations]
    report.lines.append(f"FAIL  {head}")
    report.lines.append(f"      expected: {_show(case.expected, case.alertname)}")
    report.lines.append(f"      got:      {_show(actual, None, keys)}")


def _show(alerts: list[_Expected], alertname: str | None, keys: list[str] | None = None) -> str:
    if not alerts:
        return "no firing alerts"
    parts = []
    for alert in alerts:
        labels = alert.labels if alertname is None else {**alert.labels, "alertname": alertname}
        shown = (
            alert.annotations if keys is None else {k: v for k, v in alert.annotations.items() if k in keys}
        )
        text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        if shown:
            text += " annotations " + ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()))
        parts.append(text)
    return "; ".join(parts)
