"""Rule unit tests (`pulse rules test`): the shipped examples pass, failures show expected vs got, and
mistakes in test files are reported with their lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rules import run_rule_tests
from pipeline.rules.notation import parse_series, parse_values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"


def write(tmp_path: Path, text: str, name: str = "t_test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"seed.yaml", "seed_test.yaml", "route_rules.yaml", "route_rules_test.yaml"} <= names


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*_test.yaml")), ids=lambda p: p.name)
def test_every_example_passes(path: Path) -> None:
    report = run_rule_tests(path)
    assert report.ok, "\n".join(report.lines)
    assert report.cases >= 5 and report.failures == 0
    assert sum(line.startswith("PASS") for line in report.lines) == report.cases
    assert report.lines[-1].endswith(f"{report.cases} cases, 0 failed: ok")


def test_seed_example_is_the_defaults() -> None:
    from pipeline.rules import default_rules, load_rules

    assert load_rules(EXAMPLES / "seed.yaml").rules == default_rules().rules


FAILING = """\
rule_files: [defaults]
evaluation_interval: 15s
tests:
  - name: wrong expectations
    interval: 1m
    input_series:
      - series: 'o4o_error_ratio{window="5m"}'
        values: '0.1x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: high_error_rate
        exp_alerts:
          - exp_labels: {severity: critical}
      - eval_time: 6m
        alertname: high_error_rate
        exp_alerts:
          - exp_labels: {severity: high}
      - eval_time: 6m
        alertname: high_error_rate
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations: {summary: "wrong text"}
      - eval_time: 6m
        alertname: high_error_rate
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "API 에러율이 10%로 임계치(5%)를 초과했습니다."
"""


def test_a_failing_file_shows_expected_versus_got(tmp_path: Path) -> None:
    report = run_rule_tests(write(tmp_path, FAILING))
    assert not report.ok
    assert (report.cases, report.failures) == (4, 3)
    text = "\n".join(report.lines)
    assert "FAIL  wrong expectations: high_error_rate at 4m\n" in text
    assert (
        '      expected: {alertname="high_error_rate", severity="critical"}\n      got:      no firing alerts'
        in text
    )
    assert '      expected: {alertname="high_error_rate", severity="high"}\n' in text
    assert '      got:      {alertname="high_error_rate", severity="critical"}\n' in text
    assert "annotations summary='wrong text'" in text
    assert "annotations summary='API 에러율이 10%로 임계치(5%)를 초과했습니다.'" in text
    assert "PASS  wrong expectations: high_error_rate at 6m: 1 firing" in text
    assert report.lines[-1].endswith("4 cases, 3 failed: FAILED")


def test_mistakes_in_a_test_file_have_lines(tmp_path: Path) -> None:
    text = """\
rule_files: [defaults, missing.yaml]
evaluation_interval: fast
tests:
  - name: broken
    intervall: 1m
    input_series:
      - series: 'o4o_error_ratio{window=5m}'
        values: '0.1x10'
      - series: 'o4o_error_ratio{window="5m"}'
        values: '0.1 lots'
    alert_rule_test:
      - eval_time: 1m
        alertname: high_eror_rate
      - alertname: high_error_rate
        exp_alerts:
          - exp_label: {severity: critical}
"""
    report = run_rule_tests(write(tmp_path, text))
    assert not report.ok and report.cases == 0
    found = [(p.line, p.message) for p in report.problems]
    assert found == [
        (1, f"cannot read rule file {str(tmp_path / 'missing.yaml')!r}: No such file or directory"),
        (2, "bad duration 'fast' for 'evaluation_interval'"),
        (5, "unknown field 'intervall' in a test"),
        (7, """bad series 'o4o_error_ratio{window=5m}': labels are written {name="value", ...}"""),
        (10, "bad value 'lots': write a number, a+bxN, a-bxN, axN, _ or stale"),
        (13, "no rule named 'high_eror_rate' in the rule files"),
        (14, "missing field 'eval_time'"),
        (16, "unknown field 'exp_label' in an expected alert"),
    ]
    assert all(p.hint for p in report.problems)
    assert report.problems[4].hint.startswith("promtool notation")
    assert any(line.startswith(f"{tmp_path / 't_test.yaml'} line 5: unknown field") for line in report.lines)


def test_problems_of_the_rule_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "rules:\n  - name: r\n    metric: o4o_eror_ratio\n", name="rules.yaml")
    report = run_rule_tests(write(tmp_path, "rule_files: [rules.yaml]\ntests:\n  - interval: 1m\n"))
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert f"{tmp_path / 'rules.yaml'} line 2: missing field 'severity'" in messages[0]
    assert any("unknown metric 'o4o_eror_ratio'" in m and "line 3" in m for m in messages)
    bad_yaml = run_rule_tests(write(tmp_path, "rule_files: [defaults\n"))
    assert [p.line for p in bad_yaml.problems] == [2] and "not valid YAML" in bad_yaml.problems[0].message


def test_heartbeat_time_comes_from_input_when_given(tmp_path: Path) -> None:
    # The explicit heartbeat timestamps stay fresh (120s at 2m) although o4o_service_up entries stop at 0s.
    text = """\
rule_files: [defaults]
evaluation_interval: 30s
tests:
  - interval: 1m
    input_series:
      - series: 'o4o_service_up{service="payment"}'
        values: '1'
      - series: 'o4o_service_last_heartbeat_timestamp_seconds{service="payment"}'
        values: '0+60x5'
    alert_rule_test:
      - eval_time: 3m
        alertname: payment_system_down
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'o4o_service_up{service="payment"}'
        values: '1'
    alert_rule_test:
      - eval_time: 1m
        alertname: payment_system_down
        exp_alerts:
          - exp_labels: {service: payment, severity: critical}
"""
    report = run_rule_tests(write(tmp_path, text))
    assert report.ok, "\n".join(report.lines)
    assert report.cases == 2


def test_values_notation() -> None:
    assert parse_values("1 2.5 _ stale") == [1.0, 2.5, None, None]
    assert parse_values("0+10x3 5-1x2 7x2") == [0.0, 10.0, 20.0, 30.0, 5.0, 4.0, 3.0, 7.0, 7.0, 7.0]
    assert parse_values("_x3 -1x1 1e3") == [None, None, None, -1.0, -1.0, 1000.0]
    with pytest.raises(ValueError, match="no values"):
        parse_values("  ")
    with pytest.raises(ValueError, match="bad value '1x'"):
        parse_values("1x")


def test_series_notation() -> None:
    assert parse_series('o4o_route_error_ratio{service="api", route="/a\\"b",window="5m"}') == (
        "o4o_route_error_ratio",
        {"service": "api", "route": '/a"b', "window": "5m"},
    )
    assert parse_series("o4o_out_of_stock_products") == ("o4o_out_of_stock_products", {})
    assert parse_series("o4o_x{}") == ("o4o_x", {})
    for bad in ('{a="b"}', 'o4o_x{a="b"', 'o4o_x{a="b" c="d"}'):
        with pytest.raises(ValueError, match="bad series"):
            parse_series(bad)
