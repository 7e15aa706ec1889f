-- The same table in DuckDB, the embedded default warehouse. The primary key is enforced here.
CREATE TABLE IF NOT EXISTS stock_prices (
    symbol          VARCHAR        NOT NULL,
    price           DECIMAL(18, 8) NOT NULL,
    volume          DOUBLE,
    trade_ts        TIMESTAMP      NOT NULL,
    conditions      VARCHAR,
    received_ts     TIMESTAMP,
    source          VARCHAR,
    kafka_partition INTEGER        NOT NULL,
    kafka_offset    BIGINT         NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset)
);
