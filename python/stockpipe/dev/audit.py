"""The fault suite's audit: every record in S3 and in Kafka checked against the simulator's ledger
(lost, duplicated, reordered), one :class:`Result` per scenario, and the table of results."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Result", "as_dicts", "check", "claims_chain_problems", "identity", "object_extent", "read_ledger", "table"]

Trade = tuple[str, str, str, int]


@dataclass
class Result:
    """One scenario's counts, checked record by record."""

    scenario: str
    control: bool
    sent: int = 0
    acked: int = 0
    in_kafka: int = 0
    in_s3: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    detect_s: float | None = None
    recover_s: float | None = None
    note: str = ""
    seconds: float = 0.0
    #: How often the injected fault acted (requests refused, …), where the scenario can count it.
    faults_fired: int | None = None
    #: What is wrong with the sink's claims chain (see :func:`claims_chain_problems`).
    chain_problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def gates_hold(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.reordered == 0 and not self.chain_problems

    @property
    def ok(self) -> bool:
        """A normal scenario must hold the gates; a control run must break them."""
        return self.gates_hold != self.control


_OBJECT = re.compile(r"(?P<topic>.+)\+(?P<p>\d+)\+(?P<start>\d{20})-(?P<end>\d{20})\.jsonl(\.gz)?")


def object_extent(key: str) -> tuple[str, int, int, int]:
    """``…/<topic>+<partition>+<start>-<end>.jsonl[.gz]`` → (topic, partition, start, end); ValueError
    for a key the sink does not write."""
    m = _OBJECT.fullmatch(key.rsplit("/", 1)[-1])
    if m is None:
        raise ValueError(f"{key}: not a sink object")
    return m["topic"], int(m["p"]), int(m["start"]), int(m["end"])


def claims_chain_problems(claims: list[dict[str, Any]], object_keys: list[str], topic: str) -> list[str]:
    """The sink's claims for ``topic``, checked as docs/sink-exactly-once.md states them: per partition
    contiguous (each starts where the previous ended) and so never overlapping, each claim's batches
    spanning it exactly, and every data object one batch of one claim."""
    problems: list[str] = []
    chains: dict[int, list[dict[str, Any]]] = {}
    for c in claims:
        if c.get("topic") == topic:
            chains.setdefault(int(c["partition"]), []).append(c)
    batches: set[tuple[int, int, int]] = set()
    for p, chain in sorted(chains.items()):
        chain.sort(key=lambda c: int(c["start"]))
        for a, b in itertools.pairwise(chain):
            if int(b["start"]) != int(a["end"]) + 1:
                problems.append(f"partition {p}: claim {a['start']}..{a['end']} is followed by one at {b['start']}")
        for c in chain:
            cuts = c.get("batches") or [[c["start"], c["end"]]]
            if (cuts[0][0], cuts[-1][1]) != (c["start"], c["end"]) or any(
                x[1] + 1 != y[0] for x, y in itertools.pairwise(cuts)
            ):
                problems.append(f"partition {p}: claim {c['start']}..{c['end']} has batches {cuts}")
            batches.update((p, int(s), int(e)) for s, e in cuts)
    for key in object_keys:
        try:
            t, p, s, e = object_extent(key)
        except ValueError as err:
            problems.append(str(err))
            continue
        if t == topic and (p, s, e) not in batches:
            problems.append(f"{key} belongs to no claim")
    return problems


def identity(rec: dict[str, Any]) -> Trade:
    return (str(rec["symbol"]), str(rec["price"]), str(rec["volume"]), int(rec["trade_ts"]))


def read_ledger(path: Path) -> list[Trade]:
    with open(path) as handle:
        return [identity(json.loads(line)) for line in handle if line.strip()]


def check(
    sent: list[Trade],
    acked: int,
    in_kafka: list[Trade],
    in_s3: list[tuple[int, int, Trade]],
) -> dict[str, int]:
    """Counts loss, duplicates and reordering of S3's records against the ledger."""
    want = Counter(sent)
    got = Counter(trade for _, _, trade in in_s3)
    matched = sum(min(n, got[t]) for t, n in want.items())
    offsets = Counter((p, o) for p, o, _ in in_s3)
    duplicated = sum(max(0, n - want[t]) for t, n in got.items()) + sum(n - 1 for n in offsets.values() if n > 1)
    # Each S3 record takes the first unused ledger position of its trade; per symbol, in offset
    # order, positions must rise.
    positions: dict[Trade, list[int]] = defaultdict(list)
    for i, t in enumerate(sent):
        positions[t].append(i)
    used: Counter[Trade] = Counter()
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for _, _, t in sorted(set(in_s3)):
        k = used[t]
        used[t] += 1
        if k < len(positions[t]):
            by_symbol[t[0]].append(positions[t][k])
    reordered = sum(1 for seq in by_symbol.values() for a, b in itertools.pairwise(seq) if b < a)
    return {
        "sent": len(sent),
        "in_kafka": len(in_kafka),
        "in_s3": len(in_s3),
        "lost": max(0, acked - matched),
        "duplicated": duplicated,
        "reordered": reordered,
    }


def table(results: list[Result]) -> str:
    head = (
        "| scenario | sent | acked | in Kafka | in S3 | lost | duplicated | reordered | detect s | recover s "
        "| fault fired | claims chain | gates |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for r in results:

        def secs(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        if r.control:
            verdict = "fail (expected: control)" if not r.gates_hold else "**PASS: control did not fail**"
        else:
            verdict = "hold" if r.gates_hold else "**FAIL**"
        rows.append(
            f"| {r.scenario} | {r.sent} | {r.acked} | {r.in_kafka} | {r.in_s3} | {r.lost} | {r.duplicated} | "
            f"{r.reordered} | {secs(r.detect_s)} | {secs(r.recover_s)} | "
            f"{'-' if r.faults_fired is None else r.faults_fired} | "
            f"{'ok' if not r.chain_problems else f'{len(r.chain_problems)} problems'} | {verdict} |"
        )
    return head + "\n".join(rows) + "\n"


def as_dicts(results: list[Result]) -> list[dict[str, Any]]:
    return [dict(dataclasses.asdict(r), gates_hold=r.gates_hold, ok=r.ok) for r in results]
