"""The pure rule engine: rules files, their checker and tests, and alert evaluation over metric samples.

No Kafka and no I/O besides reading rules files; agents feed it snapshots and a clock.
"""

from pipeline.rules.catalogue import CATALOGUE, MetricInfo, Snapshot
from pipeline.rules.engine import (
    AlertState,
    FlapPolicy,
    State,
    Transition,
    evaluate,
    fingerprint,
    is_flapping,
    prunable,
)
from pipeline.rules.load import DEFAULT_WINDOWS, check_rules, default_rules, load_rules
from pipeline.rules.model import Heartbeat, Matcher, Problem, Rule, RuleSet
from pipeline.rules.testing import TestReport, run_rule_tests

__all__ = [
    "CATALOGUE",
    "DEFAULT_WINDOWS",
    "AlertState",
    "FlapPolicy",
    "Heartbeat",
    "Matcher",
    "MetricInfo",
    "Problem",
    "Rule",
    "RuleSet",
    "Snapshot",
    "State",
    "TestReport",
    "Transition",
    "check_rules",
    "default_rules",
    "evaluate",
    "fingerprint",
    "is_flapping",
    "load_rules",
    "prunable",
    "run_rule_tests",
]
