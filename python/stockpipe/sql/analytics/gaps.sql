-- Gaps in the data: consecutive trades of a symbol more than 60 seconds apart.
WITH t AS (
    SELECT symbol, trade_ts,
           LAG(trade_ts) OVER (PARTITION BY symbol ORDER BY trade_ts, kafka_partition, kafka_offset) AS previous_ts
    FROM stock_prices
)
SELECT symbol, previous_ts AS gap_start, trade_ts AS gap_end, DATEDIFF(second, previous_ts, trade_ts) AS seconds
FROM t
WHERE previous_ts IS NOT NULL AND DATEDIFF(second, previous_ts, trade_ts) > 60
ORDER BY seconds DESC, symbol, gap_start;
