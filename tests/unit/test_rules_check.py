"""The rules checker: every class of mistake is reported with its line and a hint; good files load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import RulesError
from pipeline.readout.names import LATENCY_METRICS, STATE_FAMILIES, TOTAL_FAMILIES, WINDOW_METRICS
from pipeline.rules import CATALOGUE, Problem, check_rules, default_rules, load_rules
from pipeline.rules.catalogue import lookup

GOOD = """\
rules:
  - name: high_error_rate
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 5%
    severity: critical
"""


def problems(text: str, **kwargs: object) -> list[Problem]:
    return check_rules(text, "rules.yaml", **kwargs)  # type: ignore[arg-type]


def only(text: str, **kwargs: object) -> Problem:
    found = problems(text, **kwargs)
    assert len(found) == 1, [str(p) for p in found]
    assert found[0].hint, "every problem carries a hint"
    return found[0]


def rule(*lines: str, head: str = "rules:\n  - name: r1\n    severity: high\n") -> str:
    return head + "".join(f"    {line}\n" for line in lines)


METRIC = ("metric: o4o_error_ratio", "window: 5m", 'op: ">"', "threshold: 0.05")


def test_a_good_file_has_no_problems() -> None:
    assert problems(GOOD) == []


def test_unknown_metric_suggests_the_closest_name() -> None:
    p = only(GOOD.replace("o4o_error_ratio", "o4o_eror_ratio"))
    assert p.line == 3
    assert "unknown metric 'o4o_eror_ratio'" in p.message
    assert str(p) == (
        "rules.yaml line 3: unknown metric 'o4o_eror_ratio' — hint: did you mean 'o4o_error_ratio'?"
    )


def test_unknown_metric_without_o4o_prefix() -> None:
    p = only(GOOD.replace("o4o_error_ratio", "error_rate").replace("    window: 5m\n", ""))
    assert (p.line, p.message) == (3, "unknown metric 'error_rate'")


def test_other_o4o_names_are_gauges() -> None:
    assert problems(rule("metric: o4o_db_pool_usage", 'op: ">="', "threshold: 0.9")) == []
    assert lookup("o4o_db_pool_usage") is not None and lookup("o4o_db_pool_usage").labels is None  # type: ignore[union-attr]


def test_bad_duration() -> None:
    p = only(GOOD + "    for: 5 minutes\n")
    assert p.line == 8
    assert "bad duration '5 minutes'" in p.message
    assert "5m" in p.hint


@pytest.mark.parametrize("op", ['"=>"', '"gt"', "5"])
def test_bad_operator(op: str) -> None:
    p = only(GOOD.replace('op: ">"', f"op: {op}"))
    assert p.line == 5
    assert p.message.startswith("bad operator")
    assert "quote" in p.hint


def test_unquoted_greater_than_is_explained() -> None:
    p = only(GOOD.replace('op: ">"', "op: >"))
    assert p.line == 5 and p.message == "bad operator ''"
    assert 'op: ">"' in p.hint


def test_unknown_field_suggests_the_closest_one() -> None:
    found = problems(GOOD.replace("threshold:", "treshold:"))
    unknown = [p for p in found if "unknown field" in p.message]
    assert [(p.line, p.message, p.hint) for p in unknown] == [
        (6, "unknown field 'treshold' in a rule", "did you mean 'threshold'?")
    ]
    assert any(p.message == "missing field 'threshold'" and p.line == 2 for p in found)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("    severity: critical\n", "missing field 'severity'"),
        ("  - name: high_error_rate\n", "missing field 'name'"),
        ('    op: ">"\n', "missing field 'op'"),
        ("    window: 5m\n", "missing field 'window' (metric 'o4o_error_ratio' is windowed)"),
    ],
)
def test_missing_field(drop: str, message: str) -> None:
    text = GOOD.replace(drop, "  - metric: o4o_error_ratio\n" if "name" in drop else "")
    if "name" in drop:
        text = text.replace("    metric: o4o_error_ratio\n", "", 1)
    p = only(text)
    assert p.message == message
    assert p.line == 2


def test_a_rule_needs_metric_or_heartbeat() -> None:
    p = only("rules:\n  - name: r1\n    severity: low\n")
    assert (p.line, p.message) == (2, "missing field: a rule needs `metric` or `heartbeat`")


def test_duplicate_name_points_at_the_first() -> None:
    p = only(GOOD + GOOD.removeprefix("rules:\n"))
    assert (p.line, p.message) == (8, "duplicate rule name 'high_error_rate'")
    assert "line 2" in p.hint


def test_bad_severity() -> None:
    p = only(GOOD.replace("severity: critical", "severity: critcal"))
    assert (p.line, p.message) == (7, "bad severity 'critcal'")
    assert "did you mean 'critical'?" in p.hint and "low" in p.hint


def test_bad_regex() -> None:
    text = rule(
        "metric: o4o_route_error_ratio",
        "window: 5m",
        'where: {service: api, route: "=~/api/("}',
        'op: ">"',
        "threshold: 0.1",
    )
    p = only(text)
    assert p.line == 6
    assert p.message.startswith("bad regex '/api/('")


def test_window_must_be_configured() -> None:
    p = only(GOOD.replace("window: 5m", "window: 10m"))
    assert (p.line, p.message) == (4, "window 10m is not configured")
    assert "1m, 5m, 1h" in p.hint
    assert problems(GOOD.replace("window: 5m", "window: 10m"), windows=(60, 600)) == []


def test_window_on_a_metric_without_windows() -> None:
    p = only(rule("metric: o4o_out_of_stock_products", "window: 5m", 'op: ">"', "threshold: 10"))
    assert (p.line, p.message) == (5, "metric 'o4o_out_of_stock_products' has no window")


ROUTE = ("metric: o4o_route_error_ratio", "window: 5m", 'op: ">"', "threshold: 10%")


def test_by_must_not_merge_series() -> None:
    p = only(rule(*ROUTE, "by: [route]"))
    assert p.line == 8
    assert p.message == "bad `by`: it leaves out service of 'o4o_route_error_ratio'"
    assert "exactly one series" in p.hint


def test_by_is_fine_when_the_left_out_label_is_pinned() -> None:
    assert problems(rule(*ROUTE, "by: [route]", "where: {service: api}")) == []
    # A regex does not pin a label to one value.
    assert len(problems(rule(*ROUTE, "by: [route]", 'where: {service: "=~api|web"}'))) == 1


def test_by_unknown_label() -> None:
    found = problems(rule(*ROUTE, "by: [service, rout]"))
    assert [(p.line, p.message) for p in found] == [
        (8, "metric 'o4o_route_error_ratio' has no label 'rout'"),
        (8, "bad `by`: it leaves out route of 'o4o_route_error_ratio'"),
    ]
    assert found[0].hint == "did you mean 'route'?"


def test_where_unknown_label_and_window_label() -> None:
    found = problems(rule(*METRIC, "where: {service: api, window: 1m}"))
    assert [(p.line, p.message) for p in found] == [
        (8, "metric 'o4o_error_ratio' has no label 'service'"),
        (8, "label 'window' is chosen by the rule's own field"),
    ]


def test_unknown_template_name() -> None:
    text = GOOD + "    annotations:\n      summary: 'rate {{ valeu | percent }} over {{ window }}'\n"
    p = only(text)
    assert (p.line, p.message) == (9, "unknown template name 'valeu'")
    assert "did you mean 'value'?" in p.hint


def test_template_label_filter_and_braces() -> None:
    text = rule(
        *ROUTE,
        "where: {service: api}",
        "by: [route]",
        "annotations:",
        "  summary: '{{ labels.rout }} {{ labels.route }} {{ value | percnt }}'",
        "  description: 'rate {{ value '",
    )
    found = problems(text)
    assert [(p.line, p.message) for p in found] == [
        (11, "template label 'rout' is not a label of this rule's alerts"),
        (11, "unknown template filter 'percnt'"),
        (12, "unbalanced '{{' or '}}' in template"),
    ]
    assert "route" in found[0].hint and found[1].hint.startswith("did you mean 'percent'?")


def test_yaml_syntax_error_has_its_line() -> None:
    p = only(GOOD + "  - name: [oops\n")
    assert p.line == 9
    assert p.message.startswith("not valid YAML")


def test_yaml_duplicate_key() -> None:
    p = only(GOOD + "    severity: high\n")
    assert (p.line, p.message) == (8, "field 'severity' is given twice")
    assert "line 7" in p.hint


def test_quantiles() -> None:
    latency = ("metric: o4o_response_time_seconds", "window: 5m", 'op: ">"', "threshold: 2000ms")
    assert problems(rule(*latency, "quantile: 0.95")) == []
    assert only(rule(*latency)).message.startswith("missing field 'quantile'")
    p = only(rule(*latency, "quantile: 0.9"))
    assert (p.line, p.message, p.hint) == (8, "bad quantile 0.9", "one of 0.5, 0.95, 0.99")
    assert only(rule(*METRIC, "quantile: 0.5")).message == "metric 'o4o_error_ratio' has no quantiles"


def test_thresholds() -> None:
    assert only(GOOD.replace("5%", "2s")).message == (
        "threshold '2s' is a duration but 'o4o_error_ratio' is not in seconds"
    )
    assert only(GOOD.replace("5%", "lots")).message == "bad threshold 'lots'"
    p = only(GOOD + "    resolve_threshold: 6%\n")
    assert (p.line, p.message) == (8, "resolve_threshold 0.06 is above threshold 0.05")
    below = GOOD.replace('">"', '"<"') + "    resolve_threshold: 4%\n"
    assert only(below).message == "resolve_threshold 0.04 is below threshold 0.05"
    assert problems(GOOD + "    resolve_threshold: 4%\n") == []


def test_heartbeat_rules() -> None:
    head = "rules:\n  - name: hb\n    severity: critical\n"
    assert problems(head + "    heartbeat: {service: payment, absent_for: 60s}\n") == []
    assert only(head + "    heartbeat: {service: payment}\n").message == "a heartbeat rule needs a condition"
    p = only(head + "    heartbeat: {unhealthy: true}\n    op: '>'\n")
    assert (p.line, p.message) == (5, "field 'op' does not apply to heartbeat rules")
    p = only(head + "    heartbeat: {unhealthy: true}\n    metric: o4o_service_up\n")
    assert p.message == "a rule has `metric` or `heartbeat`, not both"
    found = problems(head + "    heartbeat:\n      absent: 60s\n")
    assert [(p.line, p.message) for p in found] == [
        (4, "a heartbeat rule needs a condition"),
        (5, "unknown field 'absent' in heartbeat"),
    ]
    assert found[1].hint == "did you mean 'absent_for'?"


def test_labels_may_not_override_alertname() -> None:
    p = only(GOOD + "    labels: {alertname: x, team: platform}\n")
    assert (p.line, p.message) == (8, "label 'alertname' is set by the rule itself")


def test_several_mistakes_are_all_reported_in_line_order() -> None:
    text = """\
rules:
  - name: Bad-Name
    metric: o4o_eror_ratio
    op: "=>"
    threshold: 5%
    severity: urgent
    for: soon
  - name: second
    heartbeat: {service: payment, absent_for: 60s}
    severity: critical
    annotations: {summary: "{{ nope }}"}
"""
    found = problems(text)
    assert [(p.line, p.message.split(" '")[0]) for p in found] == [
        (2, "bad rule name"),
        (3, "unknown metric"),
        (4, "bad operator"),
        (6, "bad severity"),
        (7, "bad duration"),
        (11, "unknown template name"),
    ]
    assert all(p.hint for p in found)


def test_three_file_forms_are_accepted() -> None:
    body = GOOD.removeprefix("rules:\n")
    as_list = "\n".join(line[2:] for line in body.splitlines())
    assert problems(as_list) == []
    assert (
        problems("groups:\n  - name: api\n    rules:\n" + "\n".join("  " + x for x in body.splitlines()))
        == []
    )
    assert problems("extends: defaults\n" + GOOD) == []
    assert problems("extends: defaults\n") == []


def test_bad_top_level() -> None:
    assert only("").message == "the rules file is empty"
    assert only("rulez: []\n" + GOOD).hint == "did you mean 'rules'?"
    assert only("extends: mine\n" + GOOD).message == "cannot extend 'mine'"
    assert only("just text").message == "a rules file must be a list of rules or a mapping"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_rules_raises_with_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("critical", "urgent").replace("5m", "10m"))
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.splitlines()[0] == f"2 problems in rules file {path}:"
    assert f"{path} line 4: window 10m is not configured" in message
    assert f"{path} line 7: bad severity 'urgent'" in message
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.yaml")


def test_load_rules_replaces_or_extends_the_defaults(tmp_path: Path) -> None:
    assert load_rules(None) == default_rules()
    assert [r.name for r in default_rules().rules] == [
        "high_error_rate",
        "payment_system_down",
        "slow_response_time",
        "low_stock_critical",
    ]
    own = GOOD.replace("5%", "10%") + GOOD.removeprefix("rules:\n").replace("high_error_rate", "mine")
    replaced = load_rules(write(tmp_path, own))
    assert [r.name for r in replaced.rules] == ["high_error_rate", "mine"]
    extended = load_rules(write(tmp_path, "extends: defaults\n" + own))
    assert [r.name for r in extended.rules] == [r.name for r in default_rules().rules] + ["mine"]
    assert extended.rules[0].threshold == 0.1
    assert extended.source == f"defaults + {tmp_path / 'rules.yaml'}"
    forced = load_rules(write(tmp_path, own), extend_defaults=True)
    assert forced.rules == extended.rules


def test_defaults_need_their_windows() -> None:
    with pytest.raises(RulesError, match="window 5m is not configured"):
        default_rules(windows=(60, 3600))
    assert check_rules("extends: defaults\n", "r.yaml", windows=(60, 3600))[0].file == "defaults"


def test_to_dict_loads_back_to_the_same_rules(tmp_path: Path) -> None:
    rules = load_rules(Path(__file__).parents[2] / "examples" / "rules" / "route_rules.yaml").rules
    text = yaml.safe_dump({"rules": [r.to_dict() for r in rules]}, allow_unicode=True)
    assert problems(text) == []
    assert load_rules(write(tmp_path, text)).rules == rules


def test_catalogue_covers_every_exported_family_with_labels() -> None:
    names = {m.name for m in WINDOW_METRICS} | {n for n, _ in LATENCY_METRICS.values()}
    names |= {n for n, _ in STATE_FAMILIES}
    names |= {
        n + s
        for n, kind, _ in TOTAL_FAMILIES
        for s in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
    }
    assert set(CATALOGUE) == names
    assert all(info.labels is not None for info in CATALOGUE.values())
    assert CATALOGUE["o4o_route_error_ratio"].labels == ("service", "route")
    assert CATALOGUE["o4o_service_up"].labels == ("service",)


FIELD_NAMES = [
    "name",
    "metric",
    "heartbeat",
    "window",
    "where",
    "by",
    "quantile",
    "op",
    "threshold",
    "resolve_threshold",
    "for",
    "keep_firing_for",
    "severity",
    "service",
    "labels",
    "annotations",
    "unhealthy",
    "absent_for",
    "route",
    "rules",
    "groups",
    "extends",
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["5m", "5%", ">", "=~(", "o4o_error_ratio", "critical", "{{ value }}", "{{", "payment", ""]
    ),
)
TREES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=6)
    ),
    max_leaves=30,
)


RULE_SHAPES = st.dictionaries(st.sampled_from(FIELD_NAMES), TREES, max_size=10).map(
    lambda rule: {"rules": [rule]}
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(TREES, RULE_SHAPES))
def test_checker_never_crashes_on_any_yaml_shape(tree: object) -> None:
    text = yaml.safe_dump(tree)
    found = check_rules(text, "fuzz.yaml")
    assert all(isinstance(p, Problem) and p.message for p in found)
