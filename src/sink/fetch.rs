//! The records of the sink's partitions, handed over in bursts.
//!
//! `BaseConsumer::poll` hands over one message per call, and each call pops librdkafka's queue,
//! reads the clock and allocates: about half of what reading a record costs the sink. Here each
//! assigned partition's queue is forwarded (before it is assigned, so no record of it goes
//! elsewhere) to one application queue, drained up to [`BURST`] messages a call by
//! `rd_kafka_consume_batch_queue`. Rebalance events, errors and commit results stay on the
//! consumer's own queue, still served by `BaseConsumer::poll`, so the claims see every rebalance as
//! before. Records fetched before a pause or an earlier assignment carry an outdated version and
//! are dropped by librdkafka, as on the consumer's queue.

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Duration;

/// Messages taken per call.
pub const BURST: usize = 1024;

/// The application queue, as the rebalance callback sees it: a pointer it may forward partitions
/// to while the [`Fetch`] that owns the queue lives.
#[derive(Default)]
pub struct Route(Mutex<Option<QueuePtr>>);

#[derive(Clone, Copy)]
struct QueuePtr(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues are thread-safe; the pointer is only used while its owner lives
// (`Fetch::drop` clears it under the same lock before destroying the queue).
unsafe impl Send for QueuePtr {}

impl Route {
    /// Sends `partition`'s records to the application queue. Call before assigning it.
    pub fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(q), Ok(topic)) = (*guard, CString::new(topic)) else {
            return;
        };
        // SAFETY: the client is alive (borrowed); `q` is alive while the lock is held.
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            );
            if !pq.is_null() {
                rd::rd_kafka_queue_forward(pq, q.0.as_ptr());
                rd::rd_kafka_queue_destroy(pq);
            }
        }
    }
}

/// Owns the application queue of one consumer.
pub struct Fetch<'r> {
    queue: QueuePtr,
    route: &'r Route,
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

/// One record handed over, borrowed from librdkafka until the next [`Fetch::take`].
pub struct Record<'a> {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    /// librdkafka's error for this partition, in place of a record.
    pub error: Option<String>,
}

impl<'r> Fetch<'r> {
    /// The application queue of `consumer`, made the destination of `route`. Borrowing the
    /// consumer keeps it alive (and its client undestroyed) while this lives.
    pub fn new<C: ConsumerContext>(consumer: &'r BaseConsumer<C>, route: &'r Route) -> Self {
        // SAFETY: the client is alive while `consumer` is borrowed; the queue is destroyed in
        // `drop`, within that borrow.
        let raw = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let queue = QueuePtr(NonNull::new(raw).expect("rd_kafka_queue_new returns a queue"));
        *route.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue);
        Fetch {
            queue,
            route,
            taken: Vec::with_capacity(BURST),
        }
    }

    /// Releases the records of the last call and takes up to [`BURST`] more: what is queued, or,
    /// with nothing queued, the first to arrive within `wait`.
    pub fn take(&mut self, wait: Duration) -> usize {
        self.release();
        let buf = self.taken.spare_capacity_mut();
        // SAFETY: the queue is alive; librdkafka writes at most `buf.len()` message pointers.
        let mut n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.0.as_ptr(),
                0,
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n == 0 && !wait.is_zero() {
            // librdkafka's batch call waits until the array is full or the time is up: ask for
            // one record to wake on the first, then take what queued behind it.
            let ms = wait.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: as above, one slot.
            n = unsafe {
                rd::rd_kafka_consume_batch_queue(
                    self.queue.0.as_ptr(),
                    ms,
                    buf.as_mut_ptr().cast(),
                    1,
                )
            };
            if n == 1 {
                // SAFETY: as above, the slots after the first.
                let more = unsafe {
                    rd::rd_kafka_consume_batch_queue(
                        self.queue.0.as_ptr(),
                        0,
                        buf[1..].as_mut_ptr().cast(),
                        buf.len() - 1,
                    )
                };
                n += more.max(0);
            }
        }
        let n = n.max(0) as usize;
        // SAFETY: librdkafka initialised the first `n` slots.
        unsafe { self.taken.set_len(n) };
        n
    }

    /// The records of the last [`take`](Self::take), in queue order.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.taken.iter().map(|&m| {
            // SAFETY: each pointer is a message librdkafka handed over and we have not destroyed.
            let m = unsafe { &*m };
            let error = (m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                .then(|| rdkafka::error::RDKafkaErrorCode::from(m.err).to_string());
            let payload = (!m.payload.is_null())
                // SAFETY: librdkafka's payload of `len` bytes, alive with the message.
                .then(|| unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) });
            let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a live message.
            let ts = unsafe { rd::rd_kafka_message_timestamp(m, &mut kind) };
            Record {
                partition: m.partition,
                offset: m.offset,
                payload,
                timestamp_ms: (kind
                    != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
                    .then_some(ts),
                error,
            }
        })
    }

    fn release(&mut self) {
        for m in self.taken.drain(..) {
            // SAFETY: handed over by librdkafka, destroyed once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        self.release();
        let mut route = self.route.0.lock().unwrap_or_else(|e| e.into_inner());
        *route = None;
        // SAFETY: no one else uses the pointer: the route is cleared under this lock.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.0.as_ptr()) };
    }
}
