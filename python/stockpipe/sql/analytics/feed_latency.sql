-- Feed latency per symbol and minute: how long after its trade time each trade reached stockpipe
-- (received_ts - trade_ts, milliseconds): count, median, 99th percentile and maximum.
WITH t AS (
    SELECT symbol, DATE_TRUNC('minute', trade_ts) AS bucket,
           CAST(DATEDIFF(millisecond, trade_ts, received_ts) AS DOUBLE PRECISION) AS latency_ms
    FROM stock_prices
)
SELECT symbol, bucket, COUNT(*) AS trades,
       PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
       PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms,
       MAX(latency_ms) AS max_ms
FROM t
GROUP BY symbol, bucket
ORDER BY symbol, bucket;
