//! Topic creation through the Kafka admin API: `stock-data` with 3 partitions and a replication
//! factor of `min(2, live brokers)`, plus the dead-letter and quote topics.

use super::config::{client_config, Role};
use super::{Error, Result};
use crate::config::KafkaConfig;
use crate::shutdown::Shutdown;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use std::sync::Arc;
use std::time::Duration;

fn connect(cfg: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>> {
    Ok(client_config(cfg, Role::Admin)?.create()?)
}

/// librdkafka's blocking metadata request, on a blocking thread: the caller's task stays free to
/// be dropped (a stop while the brokers do not answer).
async fn fetch_metadata(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: Option<&str>,
    timeout: Duration,
) -> KafkaResult<Metadata> {
    let (admin, topic) = (admin.clone(), topic.map(str::to_owned));
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(topic.as_deref(), timeout))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// The last connection-level reason librdkafka queued (a refused TLS handshake, a failed SASL
/// login, a plaintext client on a TLS port). The admin client never polls its main queue, where
/// librdkafka puts logs and errors, so it is drained here once a request has failed.
fn last_broker_error(admin: &AdminClient<DefaultClientContext>) -> Option<String> {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;
    let mut last: Option<String> = None;
    // "N/N brokers are down" follows the reason that matters; it only fills in when nothing else came.
    let mut keep = |text: String| {
        if last.is_none() || !text.contains("brokers are down") {
            last = Some(text);
        }
    };
    // SAFETY: the handle outlives this call; each polled event is destroyed exactly once and
    // the strings read from it are copied before that.
    unsafe {
        let queue = rd::rd_kafka_queue_get_main(admin.inner().native_ptr());
        loop {
            let event = rd::rd_kafka_queue_poll(queue, 0);
            if event.is_null() {
                break;
            }
            match rd::rd_kafka_event_type(event) {
                rd::RD_KAFKA_EVENT_ERROR => {
                    let text = rd::rd_kafka_event_error_string(event);
                    if !text.is_null() {
                        keep(CStr::from_ptr(text).to_string_lossy().into_owned());
                    }
                }
                rd::RD_KAFKA_EVENT_LOG => {
                    let (mut fac, mut msg, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                    if rd::rd_kafka_event_log(event, &mut fac, &mut msg, &mut level) == 0
                        && level <= 4
                        && !msg.is_null()
                    {
                        keep(CStr::from_ptr(msg).to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    last
}

/// "cannot reach HOSTS: ERROR (WHY)".
fn unreachable(
    cfg: &KafkaConfig,
    admin: &AdminClient<DefaultClientContext>,
    e: impl std::fmt::Display,
) -> Error {
    let mut why = last_broker_error(admin)
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    if cfg.security_protocol.eq_ignore_ascii_case("plaintext") {
        why.push_str("; if the brokers listen with TLS or SASL, set [kafka] security_protocol");
    }
    Error::Other(format!("cannot reach {}: {e}{why}", cfg.bootstrap_servers))
}

/// A topic as it exists after [`ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub name: String,
    pub partitions: usize,
    pub replication_factor: usize,
    pub created: bool,
}

/// Creates each `(name, partitions)` topic that does not exist yet. Existing topics are left as
/// they are and reported with their real layout. A `stop` while the brokers have not answered
/// yet ends the wait with the "cannot reach" error, and librdkafka's reason so far.
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    topics: &[(String, usize)],
    timeout: Duration,
    stop: &Shutdown,
) -> Result<Vec<TopicState>> {
    let admin = Arc::new(connect(cfg)?);
    let md = match stop.or(fetch_metadata(&admin, None, timeout)).await {
        Some(md) => md.map_err(|e| unreachable(cfg, &admin, e))?,
        None => return Err(unreachable(cfg, &admin, "stopped before they answered")),
    };
    let brokers = md.brokers().len();
    let rf = brokers.clamp(1, 2) as i32;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            let mut t = NewTopic::new(name, *partitions as i32, TopicReplication::Fixed(rf));
            if rf > 1 {
                t = t.set("min.insync.replicas", "1");
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let mut created = Vec::new();
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::Other(format!("create topic {name}: {code}"))),
        }
    }
    // Report what really exists (a pre-existing topic keeps its own layout). New topics take a
    // moment to appear in metadata with a leader for every partition.
    let deadline = std::time::Instant::now() + timeout;
    let mut states = Vec::new();
    for (name, _) in topics {
        loop {
            let md = fetch_metadata(&admin, Some(name), timeout).await?;
            let topic = md.topics().iter().find(|t| t.name() == name);
            let ready = topic.filter(|t| {
                !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if let Some(t) = ready {
                states.push(TopicState {
                    name: name.clone(),
                    partitions: t.partitions().len(),
                    replication_factor: t
                        .partitions()
                        .first()
                        .map(|p| p.replicas().len())
                        .unwrap_or(0),
                    created: created.contains(name),
                });
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "topic {name} has no leader after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(states)
}

/// Whether topic `name` exists, from the metadata of every topic (asking for the one topic would
/// create it on brokers that auto-create topics).
pub async fn topic_exists(cfg: &KafkaConfig, name: &str, timeout: Duration) -> Result<bool> {
    let admin = Arc::new(connect(cfg)?);
    let md = fetch_metadata(&admin, None, timeout).await?;
    Ok(md.topics().iter().any(|t| t.name() == name))
}

/// The brokers the cluster reports as live: `(id, host, port)`.
pub fn cluster_brokers(cfg: &KafkaConfig, timeout: Duration) -> Result<Vec<(i32, String, i32)>> {
    let admin = connect(cfg)?;
    let md = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| unreachable(cfg, &admin, e))?;
    Ok(md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect())
}
