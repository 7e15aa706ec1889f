//! Kafka → object storage: partition → batch → encode → put → ack.
