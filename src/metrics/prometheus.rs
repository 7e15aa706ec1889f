//! A run's counters as a Prometheus scrape target: `GET /metrics` in the text exposition format
//! (0.0.4), served on the runtime for as long as the run lasts. Counters are read when scraped,
//! not when the status line is drawn, so a scrape is never older than the request.

use super::{LatencyHistogram, Metrics};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One exported metric family, read from the counter `key`.
pub struct Family {
    key: &'static str,
    name: &'static str,
    kind: Kind,
    /// Multiplies the stored value into the metric's base unit (e.g. microseconds → seconds).
    scale: f64,
    help: &'static str,
}

#[derive(PartialEq)]
enum Kind {
    Counter,
    Gauge,
    /// A gauge of Unix time, left out until it is first set.
    Timestamp,
}

const fn counter(key: &'static str, name: &'static str, help: &'static str) -> Family {
    Family {
        key,
        name,
        kind: Kind::Counter,
        scale: 1.0,
        help,
    }
}

const fn gauge(key: &'static str, name: &'static str, scale: f64, help: &'static str) -> Family {
    Family {
        key,
        name,
        kind: Kind::Gauge,
        scale,
        help,
    }
}

const fn unix_us(key: &'static str, name: &'static str, help: &'static str) -> Family {
    Family {
        key,
        name,
        kind: Kind::Timestamp,
        scale: 1e-6,
        help,
    }
}

/// What one stage exports: its families, a gauge per partition, its latency histogram.
pub struct Stage {
    prefix: &'static str,
    families: &'static [Family],
    /// (counter prefix, metric name, help) of a labelled gauge keyed by Kafka partition.
    per_partition: Option<(&'static str, &'static str, &'static str)>,
    /// (metric name, help) of the latency histogram, in seconds.
    latency: Option<(&'static str, &'static str)>,
}

/// The producer (`[producer] mode = ws` or `quotes`: families of the other mode are left out).
#[rustfmt::skip]
pub static PRODUCER: Stage = Stage {
    prefix: "stockpipe_producer_",
    families: &[
        counter("frames", "frames_total", "WebSocket frames received"),
        counter("bytes", "frame_bytes_total", "bytes of WebSocket frames received"),
        counter("trades", "trades_total", "trades read from frames (quotes mode: quote snapshots)"),
        counter("rejected", "rejected_total", "frames or trades that failed validation"),
        counter("duplicates", "duplicates_total", "whole messages received again and dropped"),
        counter("pings", "pings_total", "ping messages received"),
        counter("server_errors", "server_errors_total", "error messages sent by the server"),
        counter("other_messages", "other_messages_total", "messages of unknown types"),
        counter("connections", "connections_total", "connections opened"),
        counter("reconnects", "reconnects_total", "reconnections after a lost connection"),
        counter("silence_timeouts", "silence_timeouts_total", "connections dropped after a silence"),
        counter("rate_limited", "rate_limited_total", "HTTP 429 answers from the source"),
        counter("trades_sent", "records_sent_total", "records handed to Kafka"),
        counter("acked", "records_acked_total", "records acknowledged by Kafka"),
        counter("failed", "records_failed_total", "records Kafka did not take"),
        counter("dlq", "dead_letters_total", "records sent to the dead-letter topic"),
        counter("dlq_acked", "dead_letters_acked_total", "dead letters acknowledged by Kafka"),
        counter("queue_full_waits", "queue_full_waits_total", "waits for room in the Kafka queue"),
        counter("unqueued_at_stop", "unqueued_at_stop_total", "trades not queued after a stop"),
        counter("quote_requests", "quote_requests_total", "REST quote requests"),
        counter("unknown_symbols", "unknown_symbols_total", "quotes for symbols the source does not know"),
        counter("unchanged", "unchanged_total", "quotes not published: unchanged since the last"),
        counter("http_errors", "http_errors_total", "failed REST requests"),
        gauge("kafka_ready", "kafka_ready", 1.0, "1 once the brokers answered and the topics exist"),
        unix_us("first_frame_unix_us", "first_frame_timestamp_seconds", "when the first frame arrived"),
        unix_us("last_ack_unix_us", "last_ack_timestamp_seconds", "when Kafka last acknowledged a record"),
    ],
    per_partition: None,
    latency: Some(("ack_latency_seconds", "frame received to Kafka acknowledgement")),
};

/// The sink.
#[rustfmt::skip]
pub static SINK: Stage = Stage {
    prefix: "stockpipe_sink_",
    families: &[
        counter("records_in", "records_read_total", "records read from Kafka"),
        counter("records_written", "records_written_total", "records written to storage"),
        counter("redelivered", "redelivered_total", "records read again, already written"),
        counter("objects", "objects_total", "objects written"),
        counter("bytes", "bytes_written_total", "bytes of objects written"),
        counter("batches", "batches_total", "batches closed"),
        counter("claims_adopted", "claims_honoured_total", "claims of an earlier run honoured"),
        counter("dlq", "dead_letters_total", "records sent to the dead-letter topic"),
        counter("s3_errors", "storage_errors_total", "failed storage requests (retried)"),
        counter("kafka_errors", "kafka_errors_total", "errors reported by the Kafka client"),
        counter("commits", "commits_total", "offset commits"),
        gauge("partitions", "partitions_assigned", 1.0, "partitions assigned to this sink"),
        gauge("kafka_ready", "kafka_ready", 1.0, "1 once the brokers answered"),
        gauge("lag", "lag_records", 1.0, "records in Kafka not yet written"),
        gauge("buffered", "buffered_records", 1.0, "records read and not yet written"),
        gauge("oldest_buffered_ms", "oldest_buffered_seconds", 1e-3, "age of the oldest buffered record"),
        unix_us("first_record_unix_us", "first_record_timestamp_seconds", "when the first record was read"),
        unix_us("last_write_unix_us", "last_write_timestamp_seconds", "when a batch's objects were last written"),
    ],
    per_partition: Some(("lag_p", "partition_lag_records", "records in Kafka not yet written, by partition")),
    latency: None,
};

/// Histogram bounds in microseconds, each rounded up to a boundary of [`LatencyHistogram`] so
/// every bucket's count is exact (1 ms is reported as 1.024 ms).
const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The text exposition of `metrics` as `stage`'s families.
pub fn render(stage: &Stage, metrics: &Metrics) -> String {
    // One snapshot for the whole page: a total and its per-partition parts agree.
    let values = metrics.snapshot().values;
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP stockpipe_build_info stockpipe's version\n# TYPE stockpipe_build_info gauge"
    );
    let _ = writeln!(
        out,
        "stockpipe_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    for f in stage.families.iter().filter(|f| metrics.has(f.key)) {
        let value = values.get(f.key).copied().unwrap_or(0.0);
        if f.kind == Kind::Timestamp && value == 0.0 {
            continue;
        }
        let kind = if f.kind == Kind::Counter {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {p}{n} {h}\n# TYPE {p}{n} {kind}",
            p = stage.prefix,
            n = f.name,
            h = f.help
        );
        let _ = writeln!(out, "{}{} {}", stage.prefix, f.name, value * f.scale);
    }
    if let Some((key, name, help)) = stage.per_partition {
        let _ = writeln!(
            out,
            "# HELP {p}{name} {help}\n# TYPE {p}{name} gauge",
            p = stage.prefix
        );
        let parts = values
            .iter()
            .filter(|(k, _)| !metrics.has(k))
            .filter_map(|(k, v)| Some((k.strip_prefix(key)?, v)));
        for (partition, value) in parts {
            let _ = writeln!(
                out,
                "{}{name}{{partition=\"{partition}\"}} {value}",
                stage.prefix
            );
        }
    }
    if let Some((name, help)) = stage.latency {
        let h = metrics.latency();
        let _ = writeln!(
            out,
            "# HELP {p}{name} {help}\n# TYPE {p}{name} histogram",
            p = stage.prefix
        );
        for bound in LATENCY_BOUNDS_US.map(LatencyHistogram::boundary_at_least) {
            let le = bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{}{name}_bucket{{le=\"{le}\"}} {}",
                stage.prefix,
                h.count_below(bound)
            );
        }
        let _ = writeln!(
            out,
            "{}{name}_bucket{{le=\"+Inf\"}} {}",
            stage.prefix,
            h.count()
        );
        let _ = writeln!(out, "{}{name}_sum {}", stage.prefix, h.sum() as f64 / 1e6);
        let _ = writeln!(out, "{}{name}_count {}", stage.prefix, h.count());
    }
    out
}

/// Serves `GET /metrics` while it lives; dropping it stops listening.
pub struct Exporter {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Listens on `address` (`HOST:PORT`; port 0 picks a free one) on the runtime behind `rt`.
    pub fn start(
        address: &str,
        stage: &'static Stage,
        metrics: Arc<Metrics>,
        rt: &tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let address = listener.local_addr()?;
        let task = rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let response = respond(&req, stage, &metrics);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    // One request per connection, and none left open after the run: Prometheus
                    // connects for each scrape anyway.
                    let conn = http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                });
            }
        });
        Ok(Self { address, task })
    }

    /// Where it listens (the port chosen when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond<B>(req: &Request<B>, stage: &Stage, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(stage, metrics),
        ),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "see /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = kind.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_the_run_and_exact_histogram_buckets() {
        let mut names = crate::source::client::COUNTERS.to_vec();
        names.extend_from_slice(crate::kafka::producer::COUNTERS);
        let m = Metrics::new(&names);
        m.add("acked", 41);
        for us in [700, 900, 3_000, 2_000_000] {
            m.record_latency_us(us);
        }
        let text = render(&PRODUCER, &m);
        assert!(text.contains("# TYPE stockpipe_producer_records_acked_total counter\n"));
        assert!(text.contains("\nstockpipe_producer_records_acked_total 41\n"));
        assert!(text.contains("\nstockpipe_producer_kafka_ready 0\n"));
        assert!(
            !text.contains("quote_requests"),
            "quotes families only in quotes mode"
        );
        assert!(
            !text.contains("last_ack_timestamp"),
            "no timestamp before the first ack"
        );
        assert!(text.contains("stockpipe_producer_ack_latency_seconds_bucket{le=\"0.000512\"} 0\n"));
        assert!(text.contains("stockpipe_producer_ack_latency_seconds_bucket{le=\"0.001024\"} 2\n"));
        assert!(text.contains("stockpipe_producer_ack_latency_seconds_bucket{le=\"2.62144\"} 4\n"));
        assert!(text.contains("stockpipe_producer_ack_latency_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("stockpipe_producer_ack_latency_seconds_sum 2.0046\n"));
    }

    #[test]
    fn partitions_are_labels() {
        let m = Metrics::new(crate::sink::COUNTERS);
        m.set_with_parts(
            "lag",
            12,
            "lag_p",
            [("lag_p0".to_string(), 5), ("lag_p2".to_string(), 7)],
        );
        let text = render(&SINK, &m);
        assert!(text.contains("\nstockpipe_sink_lag_records 12\n"));
        assert!(text.contains("\nstockpipe_sink_partition_lag_records{partition=\"0\"} 5\n"));
        assert!(text.contains("\nstockpipe_sink_partition_lag_records{partition=\"2\"} 7\n"));
        assert!(text.contains("# TYPE stockpipe_sink_oldest_buffered_seconds gauge\n"));
    }
}
