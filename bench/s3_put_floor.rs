//! The S3 server's own floor for the sink benchmark: `N` objects of `R` JSONL records each (the
//! sink's record shape), SSE-S3, `C` PUTs in flight, through the same client the sink uses.
//! Prints one JSON line: objects, records, active_s, and the busy window on CLOCK_MONOTONIC
//! (Python's `time.perf_counter()` clock), so the bench can read the server's CPU within it.
//!
//! usage: s3_put_floor ENDPOINT BUCKET PREFIX OBJECTS RECORDS_PER_OBJECT IN_FLIGHT
//! (credentials and region from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use stockpipe::config::S3Config;
use stockpipe::store::{Encryption, Store};

#[path = "clock.rs"]
mod clock;
use clock::monotonic_s;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!(
            "usage: s3_put_floor ENDPOINT BUCKET PREFIX OBJECTS RECORDS_PER_OBJECT IN_FLIGHT"
        );
        std::process::exit(2);
    }
    let number = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("s3_put_floor: {} is not a number", args[i]);
            std::process::exit(2)
        })
    };
    let (objects, per_object, in_flight) = (number(4), number(5), number(6));
    let s3 = S3Config {
        endpoint_url: Some(args[1].clone()),
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
        session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        force_path_style: true,
    };
    let uri = format!("s3://{}/{}", args[2], args[3]);
    let store = match Store::open(&uri, &s3, Encryption::SseS3).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s3_put_floor: {e}");
            std::process::exit(1);
        }
    };
    let mut body = Vec::new();
    for i in 0..per_object {
        body.extend_from_slice(
            format!(
                r#"{{"symbol":"AAPL","price":129.5{i:03},"volume":{i},"trade_ts":1700000000{i:03},"conditions":["1","12"],"received_ts":1700000000{i:03},"source":"finnhub","schema_version":1,"kafka_partition":0,"kafka_offset":{i}}}"#
            )
            .as_bytes(),
        );
        body.push(b'\n');
    }
    // FLOOR_CREATE_NEW=1: conditional PUTs (If-None-Match: *), as the sink's claims.
    let create_new = std::env::var("FLOOR_CREATE_NEW").is_ok_and(|v| v == "1");
    let next = Arc::new(AtomicUsize::new(0));
    let first = monotonic_s();
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight.max(1))
        .map(|_| {
            let (store, next, body) = (store.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= objects {
                        return Ok::<(), stockpipe::store::Error>(());
                    }
                    store
                        .put(&format!("floor/{i:08}.jsonl"), body.clone(), create_new)
                        .await?;
                }
            })
        })
        .collect();
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("s3_put_floor: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("s3_put_floor: {e}");
                std::process::exit(1);
            }
        }
    }
    let active = started.elapsed().as_secs_f64();
    let last = monotonic_s();
    println!(
        r#"{{"objects": {objects}, "records": {}, "bulk_records": {}, "active_s": {active}, "window": [{first}, {last}]}}"#,
        objects * per_object,
        objects * per_object
    );
}
