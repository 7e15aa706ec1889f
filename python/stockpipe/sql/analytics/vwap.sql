-- Volume-weighted average price per symbol and UTC day, beside the plain average and the volume.
SELECT symbol,
       DATE_TRUNC('day', trade_ts) AS day,
       ROUND(SUM(CAST(price AS DOUBLE PRECISION) * volume) / NULLIF(SUM(volume), 0), 8) AS vwap,
       ROUND(AVG(CAST(price AS DOUBLE PRECISION)), 8) AS avg_price,
       SUM(volume) AS volume,
       COUNT(*) AS trades
FROM stock_prices
GROUP BY symbol, DATE_TRUNC('day', trade_ts)
ORDER BY symbol, day;
