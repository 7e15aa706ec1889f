//! librdkafka's own floor for the sink benchmark: a consumer with the sink's settings and its
//! hand-over (`stockpipe::sink::fetch`: bursts from one application queue) that reads `N` records
//! of a topic, every partition from its beginning, and copies each value into a buffer of lines
//! (what any sink does at least once), with no validation, no lineage and no storage. Prints one JSON line: records,
//! active_s, and the busy window on CLOCK_MONOTONIC (Python's `time.perf_counter()` clock), so
//! the bench can read the broker's and this process's cores within it.
//!
//! usage: kafka_read_floor BOOTSTRAP TOPIC GROUP N

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use stockpipe::config::KafkaConfig;
use stockpipe::sink::fetch::{Fetch, Route};

#[path = "clock.rs"]
mod clock;
use clock::monotonic_s;

/// Lines held before the buffer is reused (the sink's large-batch policy).
const BATCH: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: kafka_read_floor BOOTSTRAP TOPIC GROUP N");
        std::process::exit(2);
    }
    let n: usize = args[4].parse().unwrap_or_else(|_| {
        eprintln!("kafka_read_floor: {} is not a number", args[4]);
        std::process::exit(2)
    });
    let kcfg: KafkaConfig = serde_json::from_value(serde_json::json!({
        "bootstrap_servers": args[1], "topic": args[2], "dlq_topic": "unused", "quotes_topic": "unused",
        "group_id": args[3], "security_protocol": "plaintext", "compression": "none",
        "linger_ms": 0, "batch_size_bytes": 0, "idempotence": true,
    }))
    .expect("a KafkaConfig");
    let consumer: BaseConsumer = stockpipe::sink::consumer_config(&kcfg)
        .and_then(|c| Ok(c.create()?))
        .unwrap_or_else(|e| fail(&e));
    let metadata = consumer
        .fetch_metadata(Some(&args[2]), Duration::from_secs(10))
        .unwrap_or_else(|e| fail(&e));
    let route = Route::default();
    let mut fetch = Fetch::new(&consumer, &route);
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        route.forward(&consumer, &args[2], p.id());
        tpl.add_partition_offset(&args[2], p.id(), Offset::Beginning)
            .unwrap_or_else(|e| fail(&e));
    }
    consumer.assign(&tpl).unwrap_or_else(|e| fail(&e));
    let mut lines: Vec<u8> = Vec::with_capacity(BATCH * 256);
    let (mut records, mut held, mut bytes) = (0usize, 0usize, 0usize);
    let (mut first, mut started) = (0.0, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while records < n {
        if Instant::now() > deadline {
            eprintln!("kafka_read_floor: {records} of {n} records in 600 s");
            std::process::exit(1);
        }
        let _ = consumer.poll(Duration::ZERO);
        if fetch.take(Duration::from_millis(100)) > 0 && started.is_none() {
            first = monotonic_s();
            started = Some(Instant::now());
        }
        for r in fetch.records() {
            if let Some(e) = &r.error {
                eprintln!("kafka_read_floor: {e}");
                continue;
            }
            lines.extend_from_slice(r.payload.unwrap_or_default());
            lines.push(b'\n');
            records += 1;
            held += 1;
            if held == BATCH {
                bytes += lines.len();
                lines.clear();
                held = 0;
            }
        }
    }
    let active = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let last = monotonic_s();
    bytes += lines.len();
    println!(
        r#"{{"records": {records}, "bulk_records": {records}, "bytes": {bytes}, "active_s": {active}, "window": [{first}, {last}]}}"#
    );
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("kafka_read_floor: {e}");
    std::process::exit(1)
}
