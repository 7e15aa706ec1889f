//! Property and mutation tests of the sink's record decoder and the transform's JSONL reader:
//! arbitrary and mutated input never panics, every refusal has a reason, and what is accepted
//! keeps the invariants the next stage relies on.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockpipe::sink::encode::{encode, Day};
use stockpipe::transform::assemble::parse_object;
use stockpipe::transform::rules::{clean, Row, TIME_MAX_MS, TIME_MIN_MS};

const RECORD: &str = r#"{"symbol":"AAPL","price":129.575,"volume":1,"trade_ts":1672348887785,"conditions":["1","24","12"],"received_ts":1672348887790,"source":"finnhub","schema_version":1,"kafka_partition":2,"kafka_offset":77}"#;
const DAY_MS: i64 = 1_672_348_887_785;

fn check_row(r: &Row, strings: &[Box<str>]) {
    let symbol = &*strings[r.symbol as usize];
    assert!(!symbol.is_empty() && symbol.len() <= 64);
    assert!(symbol.bytes().all(|b| (b' '..=b'~').contains(&b)));
    assert_eq!(symbol, symbol.to_ascii_uppercase());
    assert!(r.price > 0 && r.price < 1_000_000_000_000_000_000);
    assert!((TIME_MIN_MS..TIME_MAX_MS).contains(&r.trade_ts));
    assert!(r.volume().is_none_or(|v| v >= 0.0 && v.is_finite()));
    assert!(r
        .received_ts()
        .is_none_or(|t| (TIME_MIN_MS..TIME_MAX_MS).contains(&t)));
    assert!(r.kafka_partition >= 0 && r.kafka_offset >= 0);
}

fn check_line(bytes: &[u8]) {
    // The sink: any value either becomes a line that is a JSON object with the lineage keys, or
    // is refused with a reason.
    match encode(Some(bytes), 3, 41, Some(DAY_MS)) {
        Ok(line) => {
            // The raw zone keeps the value as it came (even what strict parsers refuse, such as
            // 1e999 or a lone surrogate escape): the lineage is appended, and the line is JSON
            // by the grammar (validated without converting numbers or strings).
            assert!(line
                .text
                .ends_with(br#""kafka_partition":3,"kafka_offset":41}"#));
            serde_json::from_slice::<serde::de::IgnoredAny>(&line.text).expect("lines are JSON");
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line.text) {
                assert_eq!(
                    (&v["kafka_partition"], &v["kafka_offset"]),
                    (&3.into(), &41.into())
                );
            }
        }
        Err(reason) => assert!(!reason.as_str().is_empty()),
    }
    // The transform: clean rows keep their invariants.
    match clean(bytes, Some(Day::from_millis(DAY_MS))) {
        Ok((row, strings)) => check_row(&row, &strings.into_values()),
        Err(reason) => assert!(!reason.as_str().is_empty()),
    }
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.random_range(0..bytes.len());
        match rng.random_range(0..6) {
            0 => bytes[i] = rng.random(),
            1 => bytes.truncate(i),
            2 => bytes.insert(i, b"{}[]\",:0-9.eE\\ntrue"[rng.random_range(0..19)]),
            3 => {
                bytes.remove(i);
            }
            4 => {
                bytes.splice(i..i, b"\\ud800".iter().copied());
            }
            _ => {
                let j = rng.random_range(i..bytes.len());
                let chunk: Vec<u8> = bytes[i..j].to_vec();
                bytes.splice(i..i, chunk);
            }
        }
    }
    bytes
}

#[test]
fn half_a_million_mutated_records_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xdec0de);
    let (mut refused, mut accepted) = (0u64, 0u64);
    for _ in 0..500_000 {
        let bytes = mutate(&mut rng, RECORD.as_bytes());
        match clean(&bytes, Some(Day::from_millis(DAY_MS))) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
        check_line(&bytes);
    }
    assert!(
        refused > 50_000 && accepted > 10_000,
        "refused {refused}, accepted {accepted}"
    );
}

#[test]
fn mutated_objects_are_read_line_by_line() {
    let mut rng = StdRng::seed_from_u64(7);
    let day = Day::from_millis(DAY_MS);
    for _ in 0..2_000 {
        let lines: Vec<Vec<u8>> = (0..rng.random_range(0..20))
            .map(|_| mutate(&mut rng, RECORD.as_bytes()))
            .collect();
        let mut body = lines.join(&b'\n');
        if rng.random_bool(0.3) {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&body).unwrap();
            body = gz.finish().unwrap();
            if rng.random_bool(0.2) && body.len() > 12 {
                let cut = rng.random_range(10..body.len());
                body.truncate(cut); // a torn gzip object is an error, never a panic
            }
        }
        if let Ok(parsed) = parse_object("raw.data/x.jsonl", body, day) {
            assert_eq!(
                parsed.lines as usize,
                parsed.rows.len() + parsed.quarantined.len()
            );
            parsed
                .rows
                .iter()
                .for_each(|r| check_row(r, &parsed.strings));
        }
    }
}

/// Cases per target: 20 000 in the test command; `make fuzz` (FUZZ_CASES) runs longer.
fn fuzz_cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_line(&bytes);
    }

    #[test]
    fn json_shaped_records_never_panic(text in r#"\{("(symbol|price|trade_ts|volume|conditions|received_ts|source|schema_version|kafka_partition|kafka_offset)":(\[|\{|"[a-z ,]{0,4}"|-?[0-9.eE+-]{1,24}|null|true|\[("[0-9,]{0,3}",?){0,3}\])[,\]}]{0,2}){0,10}\}?"#) {
        check_line(text.as_bytes());
    }
}
