-- One load, run as a single transaction (the Data API's batch_execute_statement, or BEGIN/COMMIT on a
-- direct connection). Rerunning it with the same manifest changes nothing: rows already present
-- (same kafka_partition, kafka_offset) are updated in place, new ones inserted.
CREATE TEMP TABLE stock_prices_staging (LIKE {schema}.stock_prices);
COPY stock_prices_staging FROM '{manifest}' IAM_ROLE '{iam_role}' FORMAT AS PARQUET MANIFEST;
SELECT COUNT(*) AS matched FROM stock_prices_staging s JOIN {schema}.stock_prices t ON t.kafka_partition = s.kafka_partition AND t.kafka_offset = s.kafka_offset;
MERGE INTO {schema}.stock_prices t USING stock_prices_staging s ON t.kafka_partition = s.kafka_partition AND t.kafka_offset = s.kafka_offset WHEN MATCHED THEN UPDATE SET symbol = s.symbol, price = s.price, volume = s.volume, trade_ts = s.trade_ts, conditions = s.conditions, received_ts = s.received_ts, source = s.source WHEN NOT MATCHED THEN INSERT (symbol, price, volume, trade_ts, conditions, received_ts, source, kafka_partition, kafka_offset) VALUES (s.symbol, s.price, s.volume, s.trade_ts, s.conditions, s.received_ts, s.source, s.kafka_partition, s.kafka_offset);
DROP TABLE stock_prices_staging;
