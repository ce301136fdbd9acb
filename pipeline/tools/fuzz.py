"""Fuzz stage 1's event path: random and mutated bytes through decode, validate and pre-aggregate.

    python -m pipeline.tools.fuzz --inputs 1000000 --seed 1     # `make fuzz`
    python -m pipeline.tools.fuzz --inputs 20000 --engine random  # no atheris: seeded mutations only

The harness drives the code the worker runs, without Kafka: `pipeline.ingest.intake.buffer_records`
(the fast typed decoder, the precise path that names the reason and keeps each refused element's bytes,
the dead-letter headers), the accumulators of `pipeline.ingest.preagg`, and every `flush_every` inputs
of a type, a flush: `parts` with the label guard and the calendar, then the partials message encoded
and decoded as stage 2 reads it. One input is one message value of one event type (its first byte
picks the type; 0xFF alone is a tombstone), read at a fixed record time with a 4 KiB size limit, so
that every reason code can occur. After each input it checks:

- nothing raises (out of `buffer_records`, out of a flush, out of the partials' round trip);
- every element is either counted (added to the accumulator) or dead-lettered, and their sum is the
  number of elements of the input: an envelope of n elements accounts for n, any other message for
  one (an empty envelope for none);
- every dead letter carries a reason code of the documented list (`REASON_CODES`, docs/events.md),
  its reason starts with its code, and its bytes are the message (a whole message) or exactly that
  element of the envelope;
- what the fast decoder accepts, the precise path accepts too, with the same events.

A broken property is a finding; the run goes on and reports each distinct one (its property, its
exception or message, the first input that showed it) in the JSON report, and exits 1 if there is
any. The engine is atheris (libFuzzer, coverage-guided over the `pipeline` and `schemas` code, with
structural JSON mutations mixed into libFuzzer's own), or `random`: the same mutations driven by a
seeded generator, keeping inputs whose outcome is new. Both are deterministic for a given seed,
corpus and PYTHONHASHSEED. The seeds are the corpus directory (tests/fuzz_corpus: every example
document and dead-letter case of the tests); new inputs go to a scratch directory, never there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

try:  # Linux x86_64 only (the dev extra pins it there): elsewhere the `random` engine runs.
    import atheris  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the platform
    atheris = None

# Run as `python -m pipeline.tools.fuzz` with atheris, the code under test is instrumented for coverage:
# it must be imported here, inside the hook, for the first time.
_HOOK: Any = contextlib.nullcontext()
if atheris is not None and __name__ == "__main__" and "random" not in sys.argv[1:]:
    _HOOK = atheris.instrument_imports(include=["pipeline", "schemas"], exclude=["pipeline.tools"])
with _HOOK:
    import orjson

    from pipeline.config.settings import Config
    from pipeline.ingest.guard import LabelGuard
    from pipeline.ingest.intake import (
        REASON_CODES,
        Buffer,
        Limits,
        buffer_records,
        dead_letter_headers,
        refuse_message,
    )
    from pipeline.ingest.preagg import ACCUMULATORS, Accumulator, FlushContext, Parts
    from pipeline.records import decode_partials, encode_partials
    from pipeline.state.calendar import Calendar
    from schemas.events import EVENT_FIELDS, EVENT_TYPES, MAX_TS_MS, TOPIC_OF_TYPE, Rejection, validator
    from schemas.typed import Event, fast_decoder

KINDS: Final = EVENT_TYPES
TOMBSTONE: Final = 0xFF
NOW_MS: Final = 1_796_035_000_000
"""The record timestamp of every input (2026-12-01): event times around it are on time, late or ahead."""
MAX_BYTES: Final = 4096
"""The message size limit while fuzzing (ingest.max_message_bytes): over it is `too_large`."""
FLUSH_EVERY: Final = 64
"""Inputs of one event type between two flushes."""
MAX_LEN: Final = 8192
"""The longest input the engines make (twice the size limit)."""
CORPUS: Final = Path(__file__).resolve().parents[2] / "tests" / "fuzz_corpus"


def encode_input(kind: str, value: bytes | None) -> bytes:
    """One fuzz input: the event type's index, then the message value (a lone 0xFF: a tombstone)."""
    if value is None:
        return bytes([TOMBSTONE])
    return bytes([KINDS.index(kind)]) + value


def decode_input(data: bytes) -> tuple[str, bytes | None]:
    """The event type and message value of one fuzz input."""
    if data == bytes([TOMBSTONE]):
        return KINDS[0], None
    if not data:
        return KINDS[0], b""
    return KINDS[data[0] % len(KINDS)], data[1:]


# -- the harness ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRecord:
    """What stage 1 reads of a Kafka record."""

    offset: int
    value: bytes | None
    key: bytes | None
    timestamp: int


class CountingAcc:
    """An accumulator that counts the events added to it."""

    def __init__(self, inner: Accumulator) -> None:
        self.inner = inner
        self.added = 0

    def add(self, event: Any, start: int, late: bool, ts: int) -> None:
        """Count the event and add it."""
        self.added += 1
        self.inner.add(event, start, late, ts)

    def parts(self, ctx: FlushContext) -> Parts:
        """The inner accumulator's parts."""
        return self.inner.parts(ctx)


@dataclass(eq=False)
class FuzzBuffer(Buffer):
    """The stage-1 buffer of one event type, with an accumulator that counts what is added to it."""

    acc: CountingAcc
    dead: list[tuple[int | None, Rejection, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    window: list[bytes] = field(default_factory=list)
    """The inputs buffered since the last flush (to find which ones a failed flush needs)."""


@dataclass
class Finding:
    """One distinct broken property, with the first input that showed it."""

    prop: str
    detail: str
    kind: str
    inputs: list[bytes]
    hits: int = 1
    where: str = ""

    def to_json(self) -> dict[str, Any]:
        """The finding for the report (inputs in hex: the input format of `encode_input`)."""
        return {
            "property": self.prop,
            "detail": self.detail,
            "kind": self.kind,
            "where": self.where,
            "hits": self.hits,
            "inputs": [data.hex() for data in self.inputs],
        }


def element_count(value: bytes | None, max_bytes: int) -> int:
    """How many elements a message accounts for: an envelope its elements, anything else one."""
    if value is None or len(value) > max_bytes:
        return 1
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return 1
    return len(data) if type(data) is list else 1


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same Python types, all the way down (floats by repr: -0.0 is not 0.0); without
    recursion, as elements may nest 1024 deep."""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif type(x) is list:
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif (repr(x) != repr(y)) if type(x) is float else x != y:
            return False
    return True


def _same_events(a: list[Event], b: list[Event]) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y) and all(_same(getattr(x, f), getattr(y, f)) for f in x.__struct_fields__)
        for x, y in zip(a, b, strict=True)
    )


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback in the project's code (file:line function)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/.venv/" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"


class Harness:
    """Stage 1's per-message logic and flushes for every event type, with the properties checked."""

    def __init__(self, max_bytes: int = MAX_BYTES, flush_every: int = FLUSH_EVERY) -> None:
        cfg = Config()
        self.limits = replace(Limits.of(cfg), max_bytes=max_bytes)
        self.calendar = Calendar(cfg.metrics.timezone)
        self.guard_limits = cfg.cardinality.limits()
        self.flush_every = flush_every
        self.buffers = {kind: self._buffer(kind) for kind in KINDS}
        self.guards = {kind: LabelGuard(self.guard_limits) for kind in KINDS}
        self.offset = 0
        self.findings: dict[tuple[str, str, str], Finding] = {}
        self.stats: dict[str, Any] = {
            "inputs": 0,
            "elements": 0,
            "counted": 0,
            "dead_lettered": 0,
            "fast_path": 0,
            "flushes": 0,
            "by_code": dict.fromkeys(REASON_CODES, 0),
            "by_kind": dict.fromkeys(KINDS, 0),
        }
        self.digest = hashlib.blake2b(digest_size=16)
        """Of every input run, in order: equal digests mean equal runs."""

    def _buffer(self, kind: str) -> FuzzBuffer:
        return FuzzBuffer(kind, CountingAcc(ACCUMULATORS[kind]()), fast_decoder(kind), validator(kind))

    def _found(self, prop: str, detail: str, kind: str, inputs: list[bytes], where: str = "") -> None:
        key = (prop, re.sub(r"\d+", "N", detail)[:120], where)
        seen = self.findings.get(key)
        if seen is not None:
            seen.hits += 1
            return
        self.findings[key] = Finding(prop, detail, kind, inputs, where=where)

    def _dead_letter(
        self, state: FuzzBuffer, record: Any, rejection: Rejection, index: int | None, original: bytes
    ) -> None:
        topic = TOPIC_OF_TYPE[state.kind]
        headers = dead_letter_headers(topic, 0, record.offset, rejection, index)
        state.dead.append((index, rejection, original, headers))

    def run(self, data: bytes) -> tuple[Any, ...]:
        """Run one input and check it; return a short signature of its outcome (for the engines)."""
        kind, value = decode_input(data)
        self.digest.update(len(data).to_bytes(4, "little") + data)
        stats = self.stats
        stats["inputs"] += 1
        stats["by_kind"][kind] += 1
        state = self.buffers[kind]
        state.window.append(data)
        self.offset += 1
        record = FakeRecord(self.offset, value, b"key", NOW_MS)
        added, count, dead = state.acc.added, state.count, len(state.dead)
        try:
            buffer_records(state, [record], self.limits, self._dead_letter)
        except Exception as exc:
            self._found("raises", f"{type(exc).__name__}: {exc}"[:300], kind, [data], _where(exc))
            self.buffers[kind] = self._buffer(kind)  # a worker would stop here: start afresh
            return ("raises", type(exc).__name__)
        counted = state.acc.added - added
        letters = state.dead[dead:]
        expected = element_count(value, self.limits.max_bytes)
        stats["elements"] += expected
        stats["counted"] += counted
        stats["dead_lettered"] += len(letters)
        if counted + len(letters) != expected or state.count - count != expected:
            self._found(
                "accounts",
                f"{expected} elements, {counted} counted, {len(letters)} dead-lettered, "
                f"{state.count - count} read",
                kind,
                [data],
            )
        codes = []
        for index, rejection, original, headers in letters:
            code = rejection.code
            codes.append(code)
            if code not in REASON_CODES:
                self._found("reason code", f"undocumented code {code!r}: {rejection}", kind, [data])
                continue
            stats["by_code"][code] += 1
            self._check_letter(kind, data, value, index, rejection, original, headers)
        fast = not letters and self._check_agree(kind, data, value)
        stats["fast_path"] += fast
        if len(state.window) >= self.flush_every:
            self.flush(kind)
        return (kind, fast, expected if expected < 3 else 3, tuple(sorted(set(codes))), counted > 0)

    def _check_letter(
        self,
        kind: str,
        data: bytes,
        value: bytes | None,
        index: int | None,
        rejection: Rejection,
        original: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        named = dict(headers)
        if not named["pulse.reason"].startswith(rejection.code.encode() + b": "):
            self._found("dead letter", f"reason does not start with its code: {rejection}", kind, [data])
        if index is None:
            if original != (value or b""):
                self._found("dead letter", "a whole message's dead letter is not its bytes", kind, [data])
            return
        try:
            element = orjson.loads(original)
            wanted = orjson.loads(value or b"")[index]
        except (orjson.JSONDecodeError, IndexError, TypeError) as exc:
            self._found("dead letter", f"element {index} is not cut out exactly: {exc}", kind, [data])
            return
        if not _same(element, wanted):
            self._found("dead letter", f"element {index}'s bytes are another element's", kind, [data])

    def _check_agree(self, kind: str, data: bytes, value: bytes | None) -> bool:
        """What the fast decoder accepts, the precise path must accept alike; return whether it did."""
        ok = value is not None and len(value) <= self.limits.max_bytes
        fast = self.buffers[kind].fast(value) if ok and value is not None else None
        if fast is None:
            return False  # the precise path took it and refused nothing: fine
        events, refused = refuse_message(kind, validator(kind), value, self.limits.max_bytes)
        if refused:
            self._found(
                "paths agree",
                f"the fast path accepts, the precise path refuses: {refused[0][1]}",
                kind,
                [data],
            )
        elif not _same_events(fast, events):
            self._found("paths agree", "the fast and precise paths give different events", kind, [data])
        return True

    def flush(self, kind: str) -> None:
        """Flush one event type's buffer: parts, then the partials message there and back."""
        state = self.buffers[kind]
        window = state.window
        self.buffers[kind] = self._buffer(kind)
        if not window:
            return
        self.stats["flushes"] += 1
        problem = self._flush(kind, state)
        if problem is None:
            return
        # Which inputs does it take? The first one that fails alone, else the whole window.
        culprit = window
        for data in window:
            alone = self._buffer(kind)
            with contextlib.suppress(Exception):
                buffer_records(
                    alone, [FakeRecord(1, decode_input(data)[1], None, NOW_MS)], self.limits, _drop
                )
            if self._flush(kind, alone, LabelGuard(self.guard_limits)) is not None:
                culprit = [data]
                break
        exc = problem
        self._found("flush raises", f"{type(exc).__name__}: {exc}"[:300], kind, culprit, _where(exc))

    def _flush(self, kind: str, state: FuzzBuffer, guard: LabelGuard | None = None) -> Exception | None:
        try:
            parts = state.acc.parts(FlushContext(self.calendar, guard or self.guards[kind]))
            block = {"source": f"{TOPIC_OF_TYPE[kind]}:0", "first": 0, "last": 1, "series": parts}
            decode_partials(encode_partials([block]), "a fuzzed flush")
        except Exception as exc:
            return exc
        return None

    def finish(self) -> None:
        """Flush every buffer."""
        for kind in KINDS:
            self.flush(kind)

    def report(self) -> dict[str, Any]:
        """The run's figures and findings."""
        return {
            **self.stats,
            "digest": self.digest.hexdigest(),
            "findings": [f.to_json() for f in self.findings.values()],
        }


def _drop(*_: Any) -> None:
    """A dead-letter sink that keeps nothing."""


# -- mutations --------------------------------------------------------------------------------------


class Raw:
    """JSON text to put where a value goes (valid or not)."""

    def __init__(self, text: str) -> None:
        self.text = text


FIELD_NAMES: Final = sorted(
    {f.name for fields in EVENT_FIELDS.values() for f in fields} | {"ts", "event_id", "x", "", "TS"}
)
INTERESTING: Final[list[Any]] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    200,
    599,
    600,
    99,
    -0.0,
    0.5,
    200.0,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
    MAX_TS_MS,
    MAX_TS_MS + 1,
    NOW_MS,
    NOW_MS - 400_000,
    NOW_MS + 120_000,
    "",
    " ",
    "x",
    "GET",
    "GET\n",
    "KRW",
    "krw",
    "created",
    "confirmed",
    "healthy",
    "registered",
    "db_pool",
    "1db",
    "x" * 512,
    "x" * 513,
    "\u00e9" * 512,
    "\U0001f600" * 513,
    "2024-01-01T00:00:00Z",
    "2026-12-01T00:00:00+09:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01t00:00:00z\n",
    [],
    {},
    [1],
    {"a": "b"},
    {"a": 1},
    {"": ""},
    Raw("1e400"),
    Raw("NaN"),
    Raw("-Infinity"),
    Raw("1" + "0" * 400),
    Raw("1e-400"),
    Raw("18446744073709551616"),
    Raw('"\\ud800"'),
    Raw('"\\ud83d\\ude00"'),
    Raw('"a\\u0000b"'),
    Raw("[" * 1000 + "]" * 1000),
    Raw("[" * 1100 + "]" * 1100),
    Raw("{}" * 2),
    Raw("2e2"),
    Raw("200.000"),
    Raw("-0"),
]
TOKENS: Final = [
    b"null",
    b"true",
    b"1e400",
    b"NaN",
    b"-0",
    b"1.7976931348623157e308",
    b"18446744073709551616",
    b"9223372036854775808",
    b'"\\ud800"',
    b'""',
    b"[]",
    b"{}",
    b",",
    b":",
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b"[" * 600,
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b" ",
    b"\n",
]
_VALUE_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false|null')


def render(doc: Any, rng: random.Random) -> bytes:
    """JSON text of a value that may hold `Raw` pieces and integers of any size."""
    raws: list[str] = []

    def plain(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\u0000RAW{len(raws) - 1}\u0000"
        if type(value) is dict:
            return {k: plain(v) for k, v in value.items()}
        if type(value) is list:
            return [plain(v) for v in value]
        return value

    indent = 1 if rng.random() < 0.1 else None
    text = json.dumps(plain(doc), ensure_ascii=rng.random() < 0.3, indent=indent)
    for n, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\u0000RAW{n}\u0000"), raw, 1)
    return text.encode("utf-8", "surrogatepass")


def _structural(doc: Any, rng: random.Random, pool: list[bytes]) -> Any:
    """One change to a decoded message: a field set, dropped or added, elements mixed, wrapped."""
    if type(doc) is dict:
        op = rng.randrange(5)
        if op == 0 and doc:
            del doc[rng.choice(list(doc))]
        elif op == 1:
            return [doc] if rng.random() < 0.7 else [doc, _seed_doc(rng, pool), rng.choice(INTERESTING)]
        else:
            doc[rng.choice(FIELD_NAMES)] = rng.choice(INTERESTING)
        return doc
    if type(doc) is list:
        op = rng.randrange(6)
        if op == 0 and doc:
            doc.append(doc[rng.randrange(len(doc))])
        elif op == 1 and doc:
            del doc[rng.randrange(len(doc))]
        elif op == 2:
            doc.insert(rng.randrange(len(doc) + 1), rng.choice(INTERESTING))
        elif op == 3:
            doc.insert(rng.randrange(len(doc) + 1), _seed_doc(rng, pool))
        elif op == 4 and doc:
            at = rng.randrange(len(doc))
            doc[at] = _structural(doc[at], rng, pool)
        else:
            rng.shuffle(doc)
        return doc
    return _seed_doc(rng, pool) if rng.random() < 0.5 else [doc]


def _seed_doc(rng: random.Random, pool: list[bytes]) -> Any:
    """A decoded object of the pool (or an empty one)."""
    for _ in range(4):
        try:
            doc = orjson.loads(decode_input(rng.choice(pool))[1] or b"")
        except orjson.JSONDecodeError:
            continue
        if type(doc) is list and doc:
            doc = rng.choice(doc)
        if type(doc) is dict:
            return doc
    return {}


def _textual(value: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One change to the bytes: a token replaced or inserted, bytes flipped, cut, spliced, nested."""
    op = rng.randrange(8)
    size = len(value)
    if op == 0:
        tokens = list(_VALUE_TOKEN.finditer(value))
        if tokens:
            match = rng.choice(tokens)
            raw = rng.choice(INTERESTING)
            text = raw.text.encode() if isinstance(raw, Raw) else render(raw, rng)
            return value[: match.start()] + text + value[match.end() :]
    if op <= 1:
        at = rng.randint(0, size)
        return value[:at] + rng.choice(TOKENS) + value[at:]
    if op == 2 and size:
        at = rng.randrange(size)
        return value[:at] + bytes([value[at] ^ (1 << rng.randrange(8))]) + value[at + 1 :]
    if op == 3 and size:
        at = rng.randrange(size)
        return value[:at] + value[at + rng.randint(1, 8) :]
    if op == 4:
        return value[: rng.randint(0, size)]
    if op == 5:
        other = decode_input(rng.choice(pool))[1] or b""
        a, b = rng.randint(0, len(other)), rng.randint(0, len(other))
        at = rng.randint(0, size)
        return value[:at] + other[min(a, b) : max(a, b)] + value[at:]
    if op == 6:
        depth = rng.choice([1, 2, 500, 1023, 1024, 1025])
        return b"[" * depth + value + b"]" * depth
    at = rng.randint(0, size)
    return value[:at] + value[at : at + rng.randint(1, 64)] * rng.randint(2, 40) + value[at:]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """A mutation of one fuzz input (its type is kept, mostly)."""
    kind, value = decode_input(data)
    if rng.random() < 0.05:
        kind = rng.choice(KINDS)
    if value is None or rng.random() < 0.02:
        return encode_input(kind, None) if rng.random() < 0.1 else encode_input(kind, b"{}")
    for _ in range(1 + int(rng.expovariate(1.0))):
        doc: Any = None
        if rng.random() < 0.5:
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(value)
        changed = None
        if doc is not None:
            with contextlib.suppress(RecursionError):  # a document nested too deep for `render`
                changed = render(_structural(doc, rng, pool), rng)
        value = changed if changed is not None else _textual(value, rng, pool)
    return encode_input(kind, value[: MAX_LEN - 1])


# -- engines ----------------------------------------------------------------------------------------


def load_corpus(directory: Path) -> list[bytes]:
    """The seed inputs, in file name order."""
    return [path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()]


def run_random(harness: Harness, seeds: list[bytes], inputs: int, seed: int, deadline: float) -> None:
    """Mutate seeded-randomly; keep an input whose outcome (signature) is new."""
    rng = random.Random(seed)
    pool = list(seeds)
    seen: set[tuple[Any, ...]] = set()
    for data in seeds[:inputs]:
        seen.add(harness.run(data))
    for n in range(len(seeds), inputs):
        if n % 1024 == 0 and time.monotonic() > deadline:
            break
        data = mutate(rng.choice(pool), rng, pool)
        signature = harness.run(data)
        if signature not in seen:
            seen.add(signature)
            pool.append(data)


def run_atheris(
    harness: Harness, corpus: Path, inputs: int, seed: int, deadline: float, done: Callable[[], None]
) -> None:
    """libFuzzer, coverage-guided, with `mutate` mixed into its own mutations; never returns."""
    pool = load_corpus(corpus)
    work = Path(tempfile.mkdtemp(prefix="pulse-fuzz-"))

    def one(data: bytes) -> None:
        harness.run(data)
        if harness.stats["inputs"] >= inputs or (
            harness.stats["inputs"] % 1024 == 0 and time.monotonic() > deadline
        ):
            shutil.rmtree(work, ignore_errors=True)
            done()

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.4:
            return bytes(atheris.Mutate(data, max_size))
        return mutate(data, rng, pool)[:max_size]

    argv = [
        sys.argv[0],
        f"-seed={seed}",
        f"-max_len={MAX_LEN}",
        "-runs=-1",
        "-print_final_stats=0",
        "-verbosity=0",
        str(work),
        str(corpus),
    ]
    atheris.Setup(argv, one, custom_mutator=mutator)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; print the report (JSON) to --report or stdout; exit 1 on any finding."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs to run (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: no limit)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed (default 1)")
    parser.add_argument("--engine", choices=["atheris", "random", "auto"], default="auto")
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help="the seed inputs (default tests/fuzz_corpus)"
    )
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris is not None and __name__ == "__main__" else "random"
    if engine == "atheris" and (atheris is None or __name__ != "__main__"):
        parser.error("the atheris engine needs atheris and `python -m pipeline.tools.fuzz`")
    started = time.monotonic()
    deadline = started + args.seconds if args.seconds > 0 else float("inf")
    harness = Harness()

    def finish() -> dict[str, Any]:
        harness.finish()
        report = {"engine": engine, "seed": args.seed, "seconds": round(time.monotonic() - started, 2)}
        report.update(harness.report())
        text = json.dumps(report, indent=2)
        if args.report is not None:
            args.report.write_text(text + "\n", encoding="utf-8")
        else:
            print(text)
        print(
            f"fuzz: {report['inputs']} inputs, {report['elements']} elements "
            f"({report['counted']} counted, {report['dead_lettered']} dead-lettered), "
            f"{len(report['findings'])} findings in {report['seconds']} s",
            file=sys.stderr,
        )
        return report

    def leave() -> None:
        report = finish()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if report["findings"] else 0)  # libFuzzer never returns: leave from here

    if engine == "atheris":
        run_atheris(harness, args.corpus, args.inputs, args.seed, deadline, leave)
    run_random(harness, load_corpus(args.corpus), args.inputs, args.seed, deadline)
    return 1 if finish()["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
