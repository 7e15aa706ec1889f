-- Open, high, low, close, volume, trade count and VWAP per symbol and {unit} (UTC): stockpipe query ohlcv_minute, ohlcv_hour or ohlcv_day.
WITH t AS (
    SELECT symbol, DATE_TRUNC('{unit}', trade_ts) AS bucket, price, volume,
           ROW_NUMBER() OVER (PARTITION BY symbol, DATE_TRUNC('{unit}', trade_ts)
                              ORDER BY trade_ts, kafka_partition, kafka_offset) AS first_n,
           ROW_NUMBER() OVER (PARTITION BY symbol, DATE_TRUNC('{unit}', trade_ts)
                              ORDER BY trade_ts DESC, kafka_partition DESC, kafka_offset DESC) AS last_n
    FROM stock_prices
)
SELECT symbol, bucket,
       MAX(CASE WHEN first_n = 1 THEN price END) AS open,
       MAX(price) AS high,
       MIN(price) AS low,
       MAX(CASE WHEN last_n = 1 THEN price END) AS close,
       SUM(volume) AS volume,
       COUNT(*) AS trades,
       ROUND(SUM(CAST(price AS DOUBLE PRECISION) * volume) / NULLIF(SUM(volume), 0), 8) AS vwap
FROM t
GROUP BY symbol, bucket
ORDER BY symbol, bucket;
