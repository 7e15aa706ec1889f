//! Property and mutation tests of the frame parser: over a million arbitrary and mutated frames,
//! no panic, and every rejection carries a reason.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockpipe::source::frame::{parse, Frame};

const SEEDS: &[&str] = &[
    r#"{"type":"trade","data":[{"s":"AAPL","p":129.575,"t":1672348887785,"v":1,"c":["1","24","12"]},{"s":"BINANCE:BTCUSDT","p":0.00001234,"t":1672348887786,"v":0.5,"c":null}]}"#,
    r#"{"type":"trade","data":[{"s":"IC MARKETS:1","p":1.10423,"t":1672348887785,"v":0,"c":[]}]}"#,
    r#"{"type":"ping"}"#,
    r#"{"type":"error","msg":"Subscribing to too many symbols"}"#,
    r#"{"type":"news","data":[{"category":"company","datetime":1,"headline":"h","id":1,"related":"AAPL"}]}"#,
];

fn check(text: &str) {
    match parse(text) {
        Ok(Frame::Trades { trades, rejected }) => {
            for r in rejected {
                assert!(!r.reason.as_str().is_empty());
            }
            for t in trades {
                assert!(!t.symbol.trim().is_empty());
                assert!(t.price.parse::<f64>().unwrap().is_finite());
                assert!(t.trade_ts >= 0);
                let json = t.to_json(0, stockpipe::record::Source::Finnhub);
                let v: serde_json::Value =
                    serde_json::from_str(&json).expect("records are valid JSON");
                assert_eq!(v["symbol"].as_str(), Some(t.symbol.as_ref()));
            }
        }
        Ok(_) => {}
        Err(reason) => assert!(!reason.as_str().is_empty()),
    }
}

fn mutate(rng: &mut StdRng, seed: &str) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[i] = rng.random(),
            1 => bytes.truncate(i),
            2 => bytes.insert(i, b"{}[]\",:0-9.eE\\ntrue"[rng.random_range(0..19)]),
            3 => {
                bytes.remove(i);
            }
            _ => {
                let j = rng.random_range(i..bytes.len());
                let chunk: Vec<u8> = bytes[i..j].to_vec();
                bytes.splice(i..i, chunk);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_million_mutated_frames_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut rejected = 0u64;
    for n in 0..1_000_000u32 {
        let seed = SEEDS[n as usize % SEEDS.len()];
        let text = mutate(&mut rng, seed);
        if parse(&text).is_err() {
            rejected += 1;
        }
        check(&text);
    }
    // The mutations must actually exercise the rejection paths.
    assert!(rejected > 100_000, "only {rejected} rejections");
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
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        check(&text);
    }

    #[test]
    fn json_shaped_text_never_panics(text in r#"\{("(type|data|s|p|t|v|c)":(\[|\{|"trade"|"ping"|-?[0-9.eE]{1,6}|null|"[A-Z: ]{0,5}")[,\]}]{0,3}){0,8}"#) {
        check(&text);
    }

    #[test]
    fn valid_trades_round_trip_their_price_text(
        int in 0u64..1_000_000, frac in 0u64..100_000_000, sym in "[A-Z]{1,5}(:[A-Z_ ]{1,8})?", t in 0i64..4_102_444_800_000
    ) {
        let price = format!("{int}.{frac:08}");
        let text = format!(r#"{{"type":"trade","data":[{{"s":"{sym}","p":{price},"t":{t},"v":1}}]}}"#);
        match parse(&text).unwrap() {
            Frame::Trades { trades, rejected } => {
                prop_assert!(rejected.is_empty());
                prop_assert_eq!(trades[0].price, price.as_str());
                prop_assert_eq!(trades[0].trade_ts, t);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
