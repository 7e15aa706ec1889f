-- stock_prices: one row per trade, loaded from processed.data/ Parquet (columns in file order).
--
-- Distribution: KEY on kafka_offset. Every load MERGEs a staging table into this one on the Kafka
-- lineage key (kafka_partition, kafka_offset); with both tables distributed on kafka_offset that join
-- runs on each slice without moving rows. Offsets are dense and increasing, so rows spread evenly,
-- whereas DISTKEY(symbol) would skew badly with the handful of symbols one feed carries. The analytics
-- aggregate per symbol, which redistributes only small partial aggregates.
-- Sort key: trade_ts first, since nearly every question is about a time range (zone maps skip the
-- rest), then symbol for the per-symbol scans within it.
CREATE TABLE IF NOT EXISTS {schema}.stock_prices (
    symbol          VARCHAR(64)      NOT NULL ENCODE zstd,
    price           DECIMAL(18, 8)   NOT NULL ENCODE az64,
    volume          DOUBLE PRECISION          ENCODE raw,
    trade_ts        TIMESTAMP        NOT NULL ENCODE az64,
    conditions      VARCHAR(512)              ENCODE zstd,
    received_ts     TIMESTAMP                 ENCODE az64,
    source          VARCHAR(64)               ENCODE zstd,
    kafka_partition INTEGER          NOT NULL ENCODE az64,
    kafka_offset    BIGINT           NOT NULL ENCODE az64,
    PRIMARY KEY (kafka_partition, kafka_offset)  -- informational only: Redshift does not enforce it, the MERGE does
)
DISTSTYLE KEY
DISTKEY (kafka_offset)
COMPOUND SORTKEY (trade_ts, symbol);
