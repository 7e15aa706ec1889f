"""Raw-zone fixtures for the transform tests: clean trades, a dirty line for every rule, and
duplicates, laid out as the sink writes them (``raw.data/year=/month=/day=/…jsonl[.gz]``)."""

from __future__ import annotations

import datetime as dt
import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path

from stockpipe import rules

DAY_MS = 86_400_000
DAYS = (dt.date(2024, 3, 8), dt.date(2024, 3, 9))
SYMBOLS = ("AAPL", "MSFT", "BINANCE:BTCUSDT", "OANDA:EUR_USD", "IC MARKETS:1", "BRK.B")


def day_start_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _line(p: int, o: int, body: str) -> str:
    return "{" + body + f',"kafka_partition":{p},"kafka_offset":{o}' + "}"


def dirty_lines(day: dt.date, p: int, first_offset: int) -> list[tuple[str, bytes]]:
    """(expected reason, line) for every reason of the rules, several ways each."""
    t = day_start_ms(day) + 3_600_000
    o = iter(range(first_offset, first_offset + 1000))
    ok = f'"symbol":"AAPL","price":1.5,"trade_ts":{t}'

    def rec(body: str) -> bytes:
        return _line(p, next(o), body).encode()

    cases: list[tuple[str, bytes]] = [
        ("not_json", b'{"symbol":'),
        ("not_json", b"NaN"),
        ("not_json", rec(ok + ',"price":2')),  # "price" twice
        ("not_json", rec(ok + ',"x":"\\ud800"')),
        ("not_json", rec(ok + ',"x":"\\udc00\\ud83d"')),
        ("not_json", b'{"symbol":"\xff\xfe","price":1}'),
        ("not_json", rec(ok + ',"x":' + "[" * 70 + "]" * 70)),
        ("not_json", rec(ok + ',"x":NaN')),
        ("not_json", b"\xef\xbb\xbf" + rec(ok)),
        ("not_object", b"[1,2,3]"),
        ("not_object", b'"AAPL"'),
        ("not_object", b"1e999"),
        ("bad_schema_version", rec(ok + ',"schema_version":2')),
        ("bad_schema_version", rec(ok + ',"schema_version":1.0')),
        ("missing_lineage", f'{{{ok},"kafka_partition":{p}}}'.encode()),
        ("missing_lineage", f'{{{ok},"kafka_partition":-1,"kafka_offset":5}}'.encode()),
        ("missing_lineage", f'{{{ok},"kafka_partition":"1","kafka_offset":5}}'.encode()),
        ("missing_symbol", rec(f'"symbol":" \\t ","price":1.5,"trade_ts":{t}')),
        ("missing_symbol", rec(f'"price":1.5,"trade_ts":{t}')),
        ("bad_symbol", rec(f'"symbol":123,"price":1.5,"trade_ts":{t}')),
        ("bad_symbol", rec(f'"symbol":"\\u00e9","price":1.5,"trade_ts":{t}')),
        ("bad_symbol", rec(f'"symbol":"{"X" * 65}","price":1.5,"trade_ts":{t}')),
        ("missing_price", rec(f'"symbol":"AAPL","price":null,"trade_ts":{t}')),
        ("bad_price", rec(f'"symbol":"AAPL","price":"129.5","trade_ts":{t}')),
        ("bad_price", rec(f'"symbol":"AAPL","price":1e10,"trade_ts":{t}')),
        ("bad_price", rec(f'"symbol":"AAPL","price":true,"trade_ts":{t}')),
        ("bad_price", rec(f'"symbol":"AAPL","price":9999999999.999999995,"trade_ts":{t}')),
        ("non_positive_price", rec(f'"symbol":"AAPL","price":0,"trade_ts":{t}')),
        ("non_positive_price", rec(f'"symbol":"AAPL","price":-1.5,"trade_ts":{t}')),
        ("non_positive_price", rec(f'"symbol":"AAPL","price":0.000000004,"trade_ts":{t}')),
        ("non_positive_price", rec(f'"symbol":"AAPL","price":-0.0,"trade_ts":{t}')),
        ("missing_time", rec('"symbol":"AAPL","price":1.5')),
        ("bad_time", rec(f'"symbol":"AAPL","price":1.5,"trade_ts":{t}.0')),
        ("bad_time", rec(f'"symbol":"AAPL","price":1.5,"trade_ts":{t * 1000}')),
        ("bad_time", rec('"symbol":"AAPL","price":1.5,"trade_ts":"x"')),
        ("bad_volume", rec(ok + ',"volume":-1')),
        ("bad_volume", rec(ok + ',"volume":"1"')),
        ("bad_volume", rec(ok + ',"volume":1e999')),
        ("bad_volume", rec(ok + ',"volume":' + "9" * 400)),
        ("bad_conditions", rec(ok + ',"conditions":"1"')),
        ("bad_conditions", rec(ok + ',"conditions":[1]')),
        ("bad_conditions", rec(ok + ',"conditions":["a,b"]')),
        ("bad_received_ts", rec(ok + ',"received_ts":"x"')),
        ("bad_received_ts", rec(ok + ',"received_ts":5')),
        ("bad_source", rec(ok + ',"source":5')),
        ("wrong_partition", rec(f'"symbol":"AAPL","price":1.5,"trade_ts":{t + DAY_MS}')),
    ]
    assert {r for r, _ in cases} == set(rules.REASONS), "every reason of the rules needs a dirty line here"
    return cases


def edge_clean_lines(day: dt.date, p: int, first_offset: int) -> list[bytes]:
    """Clean lines that exercise coercions (rounding, trimming, nulls, escapes, extra keys)."""
    t = day_start_ms(day) + 7_200_000
    bodies = [
        f'"symbol":" aapl ","price":129.575,"volume":1,"trade_ts":{t},"conditions":["1","24","12"]',
        f'"symbol":"BINANCE:BTCUSDT","price":0.000000015,"volume":0.00012,"trade_ts":{t}',
        f'"symbol":"MSFT","price":12E+2,"volume":0,"trade_ts":{t},"conditions":[]',
        f'"symbol":"MSFT","price":1.123456789012345678901,"volume":-0.0,"trade_ts":{t},"conditions":null',
        f'"symbol":"OANDA:EUR_USD","price":9999999999.99999999,"trade_ts":{t},"received_ts":null',
        f'"symbol":"X","price":1,"trade_ts":{t},"source":"caf\\u00e9","extra":{{"a":[1,{{"b":"\\ud83d\\ude00"}}]}}',
        f'"symbol":"Y","price":1e-8,"trade_ts":{t},"schema_version":1,"received_ts":{t + 5},"volume":1e308',
        f'"symbol":"Z","price":5,"trade_ts":{t},"huge":1e999,"deep":' + "[" * 60 + "]" * 60,
    ]
    return [_line(p, first_offset + i, b).encode() for i, b in enumerate(bodies)]


@dataclass
class RawSet:
    """What was written, and what the rules must make of it."""

    clean: int = 0
    dirty: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    objects: list[Path] = field(default_factory=list)


def write_raw(
    root: Path,
    *,
    clean_per_day: int,
    objects_per_day: int = 8,
    dirty_every: int = 0,
    seed: int = 7,
    raw_prefix: str = "raw.data",
) -> RawSet:
    """Writes the raw zone under ``root``: per day ``clean_per_day`` trades split over objects
    (every other one gzipped), one copy of every dirty case, more dirty lines every
    ``dirty_every`` clean ones (0: none), edge cases, blank lines and duplicated records."""
    rng = random.Random(seed)
    out = RawSet()
    for d_i, day in enumerate(DAYS):
        base = day_start_ms(day)
        p = d_i % 3
        lines: list[bytes] = []
        offset = 0
        dirty_proto = dirty_lines(day, p, 10**12)
        for i in range(clean_per_day):
            sym = SYMBOLS[i % len(SYMBOLS)]
            price = f"{rng.randint(1, 5000)}.{rng.randint(0, 99999):05d}"
            ts = base + (i * 7919) % DAY_MS
            lines.append(
                (
                    f'{{"symbol":"{sym}","price":{price},"volume":{rng.randint(0, 500)},"trade_ts":{ts},'
                    f'"conditions":["1","12"],"received_ts":{ts + 3},"source":"finnhub","schema_version":1,'
                    f'"kafka_partition":{p},"kafka_offset":{offset}}}'
                ).encode()
            )
            offset += 1
            if dirty_every and i % dirty_every == dirty_every - 1:
                reason, line = dirty_proto[(i // dirty_every) % len(dirty_proto)]
                lines.append(line)
                out.dirty += 1
                out.reasons[reason] = out.reasons.get(reason, 0) + 1
        out.clean += clean_per_day
        for reason, line in dirty_lines(day, p, 2 * 10**12):
            lines.append(line)
            out.dirty += 1
            out.reasons[reason] = out.reasons.get(reason, 0) + 1
        edge = edge_clean_lines(day, p, 3 * 10**12)
        lines.extend(edge)
        out.clean += len(edge)
        dups = lines[: min(25, clean_per_day)]
        out.duplicates += len(dups)
        lines.append(b"")
        lines.append(b"  \t\r")
        chunks = [lines[i::objects_per_day] for i in range(objects_per_day)]
        chunks.append(dups)
        folder = root / raw_prefix / f"year={day.year:04}/month={day.month:02}/day={day.day:02}"
        folder.mkdir(parents=True, exist_ok=True)
        for j, chunk in enumerate(chunks):
            body = b"\n".join(chunk) + b"\n"
            name = f"stock-data+{p}+{j:020}-{j:020}.jsonl"
            if j % 2:
                name += ".gz"
                body = gzip.compress(body)
            path = folder / name
            path.write_bytes(body)
            out.objects.append(path)
    return out
