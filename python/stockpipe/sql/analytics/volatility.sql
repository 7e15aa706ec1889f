-- Volatility per symbol and UTC day: the sample standard deviation of minute log returns.
WITH t AS (
    SELECT symbol, DATE_TRUNC('minute', trade_ts) AS bucket, price,
           ROW_NUMBER() OVER (PARTITION BY symbol, DATE_TRUNC('minute', trade_ts)
                              ORDER BY trade_ts DESC, kafka_partition DESC, kafka_offset DESC) AS last_n
    FROM stock_prices
),
closes AS (
    SELECT symbol, bucket, CAST(price AS DOUBLE PRECISION) AS close FROM t WHERE last_n = 1
),
returns AS (
    SELECT symbol, DATE_TRUNC('day', bucket) AS day,
           LN(close / LAG(close) OVER (PARTITION BY symbol ORDER BY bucket)) AS r
    FROM closes
)
SELECT symbol, day, COUNT(r) AS returns, ROUND(STDDEV_SAMP(r), 10) AS volatility
FROM returns
GROUP BY symbol, day
ORDER BY symbol, day;
