-- Change from each symbol's first to its last trade on the latest UTC day with data, largest first.
WITH latest AS (
    SELECT DATE_TRUNC('day', MAX(trade_ts)) AS day FROM stock_prices
),
t AS (
    SELECT p.symbol, p.price,
           ROW_NUMBER() OVER (PARTITION BY p.symbol ORDER BY p.trade_ts, p.kafka_partition, p.kafka_offset) AS first_n,
           ROW_NUMBER() OVER (PARTITION BY p.symbol ORDER BY p.trade_ts DESC, p.kafka_partition DESC, p.kafka_offset DESC) AS last_n
    FROM stock_prices p JOIN latest l ON DATE_TRUNC('day', p.trade_ts) = l.day
),
ends AS (
    SELECT symbol,
           MAX(CASE WHEN first_n = 1 THEN price END) AS first_price,
           MAX(CASE WHEN last_n = 1 THEN price END) AS last_price
    FROM t
    GROUP BY symbol
)
SELECT symbol, first_price, last_price,
       ROUND(100 * (CAST(last_price AS DOUBLE PRECISION) / CAST(first_price AS DOUBLE PRECISION) - 1), 4) AS change_pct
FROM ends
ORDER BY ABS(CAST(last_price AS DOUBLE PRECISION) / CAST(first_price AS DOUBLE PRECISION) - 1) DESC, symbol;
