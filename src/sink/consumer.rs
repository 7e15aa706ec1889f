//! Starting the sink: the store answers and takes writes, the dead-letter topic exists, the
//! consumer is made with its rebalance callbacks; then [`poller`](super::poller) reads and writes
//! until the stop.

use super::fetch::{Fetch, Route};
use super::poller::Sink;
use super::rebalance::{consumer_config, InFlight, SinkContext};
use super::{Error, Result};
use crate::config::{KafkaConfig, S3Config, SinkConfig};
use crate::kafka::TradeProducer;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Encryption, Probe, Store};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;

/// Consumes `kafka.topic` and writes JSONL objects until `shutdown`, then flushes what it holds.
/// Blocking: call it from a thread of its own; `rt` runs the storage calls.
pub fn run_sink(
    kcfg: &KafkaConfig,
    scfg: &SinkConfig,
    s3: &S3Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    rt: Handle,
) -> Result<()> {
    scfg.check().map_err(Error::Other)?;
    let encryption = Encryption::from_config(&scfg.sse, scfg.sse_kms_key_id.as_deref());
    // A stop while the store does not answer yet ends the sink here: nothing was read.
    let Some(store) = rt.block_on(shutdown.or(Store::open(&scfg.output, s3, encryption))) else {
        return Ok(());
    };
    let store = store?;
    // A bucket that does not exist or refuses these credentials is a setting to fix, not an
    // outage to wait out; a server that does not answer yet is, and writes retry until it does.
    match rt.block_on(shutdown.or(store.probe())) {
        None => return Ok(()),
        Some(Ok(())) => {}
        Some(Err(Probe::Refused(e))) => {
            return Err(Error::Other(format!(
                "cannot write to {}: {e}",
                store.describe()
            )))
        }
        Some(Err(Probe::Unreachable(e))) => log::warn!(
            "sink: {} does not answer yet ({e}); writes will retry until it does",
            store.describe()
        ),
    }
    // Dead letters need somewhere to go (brokers may not auto-create topics).
    rt.block_on(crate::kafka::ensure_topics(
        kcfg,
        &[(kcfg.dlq_topic.clone(), 1)],
        Duration::from_secs(30),
        &shutdown,
    ))?;
    metrics.set("kafka_ready", 1);
    // A sink may start before its producer; a topic that never appears is more likely a typo.
    let exists = crate::kafka::topic_exists(kcfg, &kcfg.topic, Duration::from_secs(10));
    if let Some(Ok(false)) = rt.block_on(shutdown.or(exists)) {
        log::warn!(
            "sink: topic {} does not exist yet; waiting for it (the producer and `stockpipe topics` \
             create it)",
            kcfg.topic
        );
    }
    log::info!("sink: {} → {}", kcfg.topic, store.describe());
    let inflight = Arc::new(InFlight::default());
    let context = SinkContext {
        store: store.clone(),
        topic: kcfg.topic.clone(),
        rt: rt.clone(),
        events: Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
        inflight: inflight.clone(),
        route: Route::default(),
    };
    let consumer: BaseConsumer<SinkContext> =
        consumer_config(kcfg)?.create_with_context(context)?;
    // Before the first assignment, so every assigned partition's records come through it.
    let mut fetch = Fetch::new(&consumer, &consumer.context().route);
    consumer.subscribe(&[&kcfg.topic])?;
    // Made on the first dead letter (an idle producer's polling thread still costs CPU); its
    // settings are checked now, so a bad one stops the sink here rather than at that record.
    TradeProducer::check(kcfg)?;
    let mut sink = Sink::new(kcfg, scfg, store, rt, metrics, inflight, &shutdown);
    sink.run(&consumer, &mut fetch, &shutdown);
    Ok(())
}
