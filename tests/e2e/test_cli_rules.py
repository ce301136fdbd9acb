"""`pulse rules check` and `pulse rules test` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.procs import REPO
from tests.support.procs import run_pulse as pulse

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples" / "rules"


def test_check_accepts_the_shipped_rules() -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml") if not p.name.endswith("_test.yaml"))
    assert files
    done = pulse("rules", "check", *files)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": OK") == len(files)


def test_check_reports_every_mistake_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: a\n"
        "    metric: o4o_eror_ratio\n"
        "    window: 5m\n"
        '    op: ">"\n'
        "    threshold: 5%\n"
        "    for: soon\n"
        "    severity: critical\n"
    )
    done = pulse("rules", "check", str(bad))
    assert done.returncode == 1
    assert f"{bad} line 3: unknown metric 'o4o_eror_ratio'" in done.stderr
    assert "did you mean 'o4o_error_ratio'" in done.stderr
    assert f"{bad} line 7: bad duration 'soon'" in done.stderr


def test_rule_unit_tests_pass_and_a_wrong_expectation_fails(tmp_path: Path) -> None:
    tests = sorted(str(p) for p in EXAMPLES.glob("*_test.yaml"))
    assert tests
    done = pulse("rules", "test", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    wrong = tmp_path / "wrong_test.yaml"
    wrong.write_text(
        "rule_files: [defaults]\n"
        "evaluation_interval: 1m\n"
        "tests:\n"
        "  - name: stock-outs\n"
        "    interval: 1m\n"
        "    input_series:\n"
        "      - series: o4o_out_of_stock_products\n"
        "        values: '20x5'\n"
        "    alert_rule_test:\n"
        "      - eval_time: 3m\n"
        "        alertname: low_stock_critical\n"
        "        exp_alerts: []\n"
    )
    done = pulse("rules", "test", str(wrong))
    assert done.returncode == 1
    assert "FAIL" in done.stdout
