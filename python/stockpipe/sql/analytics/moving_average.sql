-- Minute closes with their 5- and 20-minute simple moving averages, per symbol.
WITH t AS (
    SELECT symbol, DATE_TRUNC('minute', trade_ts) AS bucket, price,
           ROW_NUMBER() OVER (PARTITION BY symbol, DATE_TRUNC('minute', trade_ts)
                              ORDER BY trade_ts DESC, kafka_partition DESC, kafka_offset DESC) AS last_n
    FROM stock_prices
),
closes AS (
    SELECT symbol, bucket, CAST(price AS DOUBLE PRECISION) AS close FROM t WHERE last_n = 1
)
SELECT symbol, bucket, close,
       ROUND(AVG(close) OVER (PARTITION BY symbol ORDER BY bucket ROWS BETWEEN 4 PRECEDING AND CURRENT ROW), 8) AS ma_5,
       ROUND(AVG(close) OVER (PARTITION BY symbol ORDER BY bucket ROWS BETWEEN 19 PRECEDING AND CURRENT ROW), 8) AS ma_20
FROM closes
ORDER BY symbol, bucket;
