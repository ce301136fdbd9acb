"""Turn the YAML of one rule into a Rule, reporting every mistake with its line and a hint."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from pipeline.durations import HINT as DURATION_HINT
from pipeline.durations import format_duration, parse_duration
from pipeline.rules.catalogue import LATENCY_QUANTILES, QUANTILE, WINDOW, MetricInfo, lookup, suggest
from pipeline.rules.model import MATCH_OPS, OPS, SEVERITIES, Heartbeat, Matcher, Rule
from pipeline.rules.source import Path, Source, did_you_mean
from pipeline.rules.templates import template_errors

COMMON_FIELDS = ("name", "severity", "for", "keep_firing_for", "service", "labels", "annotations")
METRIC_FIELDS = ("metric", "window", "where", "by", "quantile", "op", "threshold", "resolve_threshold")
RULE_FIELDS = (*COMMON_FIELDS, *METRIC_FIELDS, "heartbeat")
HEARTBEAT_FIELDS = ("service", "unhealthy", "absent_for")
RULE_NAME = re.compile(r"[a-z][a-z0-9_]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = ("alertname", "severity")
OP_HINT = 'use one of > >= < <= == != and quote it in YAML (op: ">"), since a bare > starts a block'
THRESHOLD_HINT = "write a number (0.05), a percentage ('5%') or, for *_seconds metrics, a duration ('2000ms')"


def parse_rule(raw: Any, path: Path, src: Source, windows: Sequence[float]) -> Rule | None:
    """Parse one rule; report its mistakes to `src` and return None if it has any."""
    if not isinstance(raw, dict):
        src.report(path, "a rule must be a mapping of fields", "start it with `- name: my_rule`")
        return None
    before = len(src.problems)
    src.unknown_keys(raw, path, RULE_FIELDS, "a rule")
    fields: dict[str, Any] = {
        "name": _name(raw, path, src),
        "severity": _severity(raw, path, src),
        "for_s": _duration(raw, "for", path, src),
        "keep_firing_for_s": _duration(raw, "keep_firing_for", path, src),
        "service": _text(raw, "service", path, src),
        "labels": _labels(raw, path, src),
    }
    labels: Collection[str] | None = ()
    if "metric" in raw and "heartbeat" in raw:
        src.report(
            (*path, "heartbeat"), "a rule has `metric` or `heartbeat`, not both", "split it in two rules"
        )
    elif "heartbeat" in raw:
        fields["heartbeat"] = _heartbeat(raw, path, src)
        labels = ("service",)
    elif "metric" in raw:
        metric_fields, labels = _metric(raw, path, src, windows)
        fields.update(metric_fields)
    else:
        src.report(
            path,
            "missing field: a rule needs `metric` or `heartbeat`",
            "add `metric: o4o_error_ratio` (threshold rule) or `heartbeat: {service: NAME}` (deadman rule)",
        )
    if labels is not None:
        labels = {*labels, *fields["labels"], *RESERVED_LABELS}
    fields["annotations"] = _annotations(raw, path, src, labels, fields)
    if len(src.problems) > before:
        return None
    return Rule(**fields)


def _name(raw: dict[str, Any], path: Path, src: Source) -> str:
    name = raw.get("name")
    if name is None:
        src.report(path, "missing field 'name'", "add `name: my_rule` (lowercase letters, digits, _)")
    elif not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        src.report(
            (*path, "name"),
            f"bad rule name {name!r}",
            "use lowercase letters, digits and _, e.g. high_error_rate",
        )
    return name if isinstance(name, str) else ""


def _severity(raw: dict[str, Any], path: Path, src: Source) -> str:
    severity = raw.get("severity")
    if severity is None:
        src.report(path, "missing field 'severity'", "add `severity: critical` (or high, medium, low)")
        return ""
    if severity not in SEVERITIES:
        hint = f"one of {', '.join(SEVERITIES)}"
        close = did_you_mean(str(severity).lower(), SEVERITIES)
        src.report(
            (*path, "severity"), f"bad severity {severity!r}", f"{close} ({hint})" if "?" in close else hint
        )
        return ""
    return str(severity)


def _duration(raw: dict[str, Any], key: str, path: Path, src: Source, default: float = 0.0) -> float:
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ValueError:
        src.report((*path, key), f"bad duration {raw[key]!r} for {key!r}", DURATION_HINT)
        return default


def _text(raw: dict[str, Any], key: str, path: Path, src: Source) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        src.report(
            (*path, key), f"{key!r} must be a non-empty string, not {value!r}", f"e.g. `{key}: payment`"
        )
        return None
    return value


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def _labels(raw: dict[str, Any], path: Path, src: Source) -> dict[str, str]:
    value = raw.get("labels")
    if value is None:
        return {}
    if not isinstance(value, dict):
        src.report((*path, "labels"), "`labels` must be a mapping", "e.g. `labels: {team: platform}`")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        where = (*path, "labels", str(key))
        text = _scalar(item)
        if not LABEL_NAME.fullmatch(str(key)):
            src.report(
                where, f"bad label name {key!r}", "use letters, digits and _, not starting with a digit"
            )
        elif key in RESERVED_LABELS:
            src.report(where, f"label {key!r} is set by the rule itself", "remove it from `labels`")
        elif text is None:
            src.report(where, f"label {key!r} must have a string value", f'quote it: `{key}: "..."`')
        else:
            out[str(key)] = text
    return out


def _heartbeat(raw: dict[str, Any], path: Path, src: Source) -> Heartbeat | None:
    for key in raw:
        if key in METRIC_FIELDS:
            src.report((*path, key), f"field {key!r} does not apply to heartbeat rules", "remove it")
    body = raw["heartbeat"]
    where = (*path, "heartbeat")
    if not isinstance(body, dict):
        src.report(
            where, "`heartbeat` must be a mapping", "e.g. `heartbeat: {service: payment, absent_for: 60s}`"
        )
        return None
    src.unknown_keys(body, where, HEARTBEAT_FIELDS, "heartbeat")
    unhealthy = body.get("unhealthy", False)
    if not isinstance(unhealthy, bool):
        src.report((*where, "unhealthy"), f"`unhealthy` must be true or false, not {unhealthy!r}", "")
        unhealthy = False
    absent_for = _duration(body, "absent_for", where, src, default=-1.0) if "absent_for" in body else None
    if absent_for is not None and absent_for <= 0:
        if absent_for == 0:
            src.report(
                (*where, "absent_for"), "`absent_for` must be longer than 0s", "e.g. `absent_for: 60s`"
            )
        absent_for = None
    elif not unhealthy and absent_for is None and "absent_for" not in body:
        src.report(
            where, "a heartbeat rule needs a condition", "add `unhealthy: true` and/or `absent_for: 60s`"
        )
    return Heartbeat(_text(body, "service", where, src), unhealthy, absent_for)


def _metric(
    raw: dict[str, Any], path: Path, src: Source, windows: Sequence[float]
) -> tuple[dict[str, Any], Collection[str] | None]:
    info = _metric_info(raw, path, src)
    out: dict[str, Any] = {"metric": raw["metric"] if info else None}
    out["window"] = _window(raw, path, src, info, windows)
    out["quantile"] = _quantile(raw, path, src, info)
    out["where"] = _where(raw, path, src, info)
    out["by"] = _by(raw, path, src, info, out["where"])
    out["op"] = _op(raw, path, src)
    out["threshold"] = _threshold(raw, "threshold", path, src, info, required=True)
    out["resolve_threshold"] = _threshold(raw, "resolve_threshold", path, src, info, required=False)
    _check_resolve_side(out, path, src)
    labels = out["by"] if out["by"] is not None else (info.labels if info else ())
    return out, labels


def _metric_info(raw: dict[str, Any], path: Path, src: Source) -> MetricInfo | None:
    metric = raw["metric"]
    where = (*path, "metric")
    if not isinstance(metric, str) or not metric:
        src.report(where, f"bad metric {metric!r}", "write an exported metric name, e.g. o4o_error_ratio")
        return None
    info = lookup(metric)
    if info is None:
        close = suggest(metric)
        hint = f"did you mean {close[0]!r}?" if close else "see GET /metrics; gauge events are o4o_<name>"
        src.report(where, f"unknown metric {metric!r}", hint)
    return info


def _configured(windows: Sequence[float]) -> str:
    return ", ".join(format_duration(w) for w in windows)


def _applies(
    raw: dict[str, Any], path: Path, src: Source, info: MetricInfo, field: str, applies: bool, what: str
) -> bool:
    """Whether `field` applies to the rule's metric; when it does not but is given, report it."""
    if not applies and field in raw:
        src.report((*path, field), f"metric {info.name!r} has no {what}", f"remove `{field}`")
    return applies


def _window(
    raw: dict[str, Any], path: Path, src: Source, info: MetricInfo | None, windows: Sequence[float]
) -> float | None:
    if info is None or not _applies(raw, path, src, info, "window", info.windowed, "window"):
        return None
    if "window" not in raw:
        src.report(
            path,
            f"missing field 'window' (metric {info.name!r} is windowed)",
            f"add one of: {_configured(windows)}",
        )
        return None
    window = _duration(raw, "window", path, src, default=-1.0)
    if window < 0:
        return None
    if not any(abs(window - w) < 1e-9 for w in windows):
        src.report(
            (*path, "window"),
            f"window {format_duration(window)} is not configured",
            f"configured windows: {_configured(windows)} (windows.windows in the pulse config)",
        )
        return None
    return window


def _quantile(raw: dict[str, Any], path: Path, src: Source, info: MetricInfo | None) -> float | None:
    choices = ", ".join(f"{q:g}" for q in LATENCY_QUANTILES)
    if info is None or not _applies(raw, path, src, info, "quantile", info.latency, "quantiles"):
        return None
    value = raw.get("quantile")
    if value is None:
        src.report(
            path, f"missing field 'quantile' (metric {info.name!r} is a latency)", f"add one of {choices}"
        )
        return None
    if isinstance(value, bool) or value not in LATENCY_QUANTILES:
        src.report((*path, "quantile"), f"bad quantile {value!r}", f"one of {choices}")
        return None
    return float(value)


def _check_label(label: str, where: Path, src: Source, info: MetricInfo | None) -> bool:
    if not LABEL_NAME.fullmatch(label):
        src.report(where, f"bad label name {label!r}", "use letters, digits and _, not starting with a digit")
    elif label in (WINDOW, QUANTILE):
        src.report(where, f"label {label!r} is chosen by the rule's own field", f"use `{label}:` instead")
    elif info is not None and info.labels is not None and label not in info.labels:
        hint = did_you_mean(label, info.labels) if info.labels else "it has none besides window/quantile"
        src.report(where, f"metric {info.name!r} has no label {label!r}", hint)
    else:
        return True
    return False


def _where(raw: dict[str, Any], path: Path, src: Source, info: MetricInfo | None) -> tuple[Matcher, ...]:
    value = raw.get("where")
    if value is None:
        return ()
    if not isinstance(value, dict):
        src.report((*path, "where"), "`where` must be a mapping label: value", "e.g. `where: {service: api}`")
        return ()
    matchers = []
    for label, item in value.items():
        where = (*path, "where", str(label))
        text = _scalar(item)
        if not _check_label(str(label), where, src, info):
            continue
        if text is None:
            src.report(where, f"filter of {label!r} must be a string", 'e.g. `route: "=~/api/.*"`')
            continue
        op = next((prefix for prefix in MATCH_OPS if text.startswith(prefix)), "=")
        pattern = text if op == "=" else text[len(op) :]
        if op in ("=~", "!~") and not _regex_ok(pattern, where, src):
            continue
        matchers.append(Matcher(str(label), op, pattern))
    # Sorted by label: a canonical order, so equal filters make equal rules whatever the YAML order.
    return tuple(sorted(matchers, key=lambda m: m.label))


def _regex_ok(pattern: str, where: Path, src: Source) -> bool:
    try:
        re.compile(pattern)
    except re.error as exc:
        src.report(
            where, f"bad regex {pattern!r}: {exc}", "Python regex syntax, matched against the whole value"
        )
        return False
    return True


def _by(
    raw: dict[str, Any], path: Path, src: Source, info: MetricInfo | None, where: tuple[Matcher, ...]
) -> tuple[str, ...] | None:
    if "by" not in raw:
        return None
    value = raw["by"]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        src.report((*path, "by"), "`by` must be a list of label names", "e.g. `by: [service, route]`")
        return None
    for i, label in enumerate(value):
        if label in value[:i]:
            src.report((*path, "by", i), f"label {label!r} is listed twice in `by`", "remove one")
        else:
            _check_label(label, (*path, "by", i), src, info)
    if info is not None and info.labels is not None:
        pinned = {m.label for m in where if m.op == "="}
        left = [label for label in info.labels if label not in value and label not in pinned]
        if left:
            src.report(
                (*path, "by"),
                f"bad `by`: it leaves out {', '.join(left)} of {info.name!r}",
                "one alert instance must be exactly one series, else series would overwrite each other; "
                f"add {', '.join(left)} to `by`, or pin them with an equality filter in `where`",
            )
    return tuple(value)


def _op(raw: dict[str, Any], path: Path, src: Source) -> str | None:
    if "op" not in raw:
        src.report(path, "missing field 'op'", OP_HINT)
        return None
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:
        src.report((*path, "op"), f"bad operator {op!r}", OP_HINT)
        return None
    return str(op)


def parse_threshold(value: Any, info: MetricInfo | None) -> float:
    """Return a threshold's number: plain, a percentage, or a duration in seconds (for *_seconds metrics)."""
    if isinstance(value, bool):
        raise ValueError(f"bad threshold {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"bad threshold {value!r}")
    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        pass
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"bad threshold {value!r}") from None
    if info is not None and not info.seconds:
        raise ValueError(f"threshold {value!r} is a duration but {info.name!r} is not in seconds")
    return seconds


def _threshold(
    raw: dict[str, Any], key: str, path: Path, src: Source, info: MetricInfo | None, required: bool
) -> float | None:
    if key not in raw:
        if required:
            src.report(path, f"missing field {key!r}", THRESHOLD_HINT)
        return None
    try:
        return parse_threshold(raw[key], info)
    except ValueError as exc:
        src.report((*path, key), str(exc), THRESHOLD_HINT)
        return None


def _check_resolve_side(out: dict[str, Any], path: Path, src: Source) -> None:
    op, threshold, resolve = out["op"], out["threshold"], out["resolve_threshold"]
    if resolve is None or op is None or threshold is None:
        return
    where = (*path, "resolve_threshold")
    if op in ("==", "!="):
        src.report(where, f"`resolve_threshold` does not apply to {op!r}", "remove it, or use <, <=, >, >=")
    elif op in (">", ">=") and resolve > threshold:
        src.report(
            where,
            f"resolve_threshold {resolve:g} is above threshold {threshold:g}",
            "for > and >= it must be <= threshold",
        )
    elif op in ("<", "<=") and resolve < threshold:
        src.report(
            where,
            f"resolve_threshold {resolve:g} is below threshold {threshold:g}",
            "for < and <= it must be >= threshold",
        )


def _annotations(
    raw: dict[str, Any], path: Path, src: Source, labels: Collection[str] | None, fields: dict[str, Any]
) -> dict[str, str]:
    value = raw.get("annotations")
    out: dict[str, str] = {}
    if value is not None and not isinstance(value, dict):
        src.report(
            (*path, "annotations"), "`annotations` must be a mapping", "e.g. `annotations: {summary: ...}`"
        )
    elif value is not None:
        for key, text in value.items():
            where = (*path, "annotations", str(key))
            if not isinstance(text, str):
                src.report(where, f"annotation {key!r} must be a string", "quote it")
                continue
            for message, hint in template_errors(text, labels):
                src.report(where, message, hint)
            out[str(key)] = text
    return {**default_annotations(fields), **out}


def _format_filter(metric: str) -> str:
    if "ratio" in metric:
        return "percent"
    return "ms" if metric.endswith("_seconds") else "round"


def default_annotations(fields: dict[str, Any]) -> dict[str, str]:
    """Summary and description for a rule that does not write its own; both show value and threshold.
    A resolve gets its own generic summary (`resolved_summary`), in the guide's language."""
    heartbeat = fields.get("heartbeat")
    if isinstance(heartbeat, Heartbeat):
        reasons = ["reports unhealthy"] if heartbeat.unhealthy else []
        if heartbeat.absent_for is not None:
            reasons.append(f"sent no heartbeat for {format_duration(heartbeat.absent_for)}")
        return {
            "summary": "service {{ labels.service }} is down: it " + " or ".join(reasons),
            "description": "{{ rule }}: {{ metric }} is {{ value }} (threshold {{ threshold }}), "
            "severity {{ severity }}",
            "resolved_summary": "{{ rule }} 해소: 서비스 {{ labels.service }} 정상 "
            "({{ metric }} = {{ value }})",
        }
    metric, op = fields.get("metric") or "", fields.get("op") or ""
    flt = _format_filter(metric)
    value, threshold = "{{ value | " + flt + " }}", "{{ threshold | " + flt + " }}"
    over = " over {{ window }}" if fields.get("window") is not None else ""
    held = f", for {format_duration(fields['for_s'])}" if fields.get("for_s") else ""
    return {
        "summary": "{{ rule }}: {{ metric }} is " + f"{value} ({op} {threshold})",
        "description": "{{ metric }}" + over + f" is {value}, {op} the threshold {threshold}{held}; "
        "severity {{ severity }}",
        "resolved_summary": "{{ rule }} 해소: 현재 값 " + value,
    }
