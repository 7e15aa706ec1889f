//! Clean rows → Arrow record batch → Parquet bytes, in the processed schema.

use super::rules::{Row, COLUMNS, PRICE_PRECISION, PRICE_SCALE};
use arrow::array::{
    ArrayRef, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::{Arc, OnceLock};

/// The Arrow type of a rule-set column type.
fn arrow_type(t: &str) -> DataType {
    match t {
        "string" => DataType::Utf8,
        "double" => DataType::Float64,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "timestamp_ms_utc" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        t if t == format!("decimal({PRICE_PRECISION},{PRICE_SCALE})") => {
            DataType::Decimal128(PRICE_PRECISION as u8, PRICE_SCALE as i8)
        }
        other => unreachable!("column type {other} has no Arrow type"),
    }
}

/// The processed schema, every column nullable (as Spark writes it).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(
                COLUMNS
                    .iter()
                    .map(|(name, t)| Field::new(*name, arrow_type(t), true))
                    .collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// A row with the strings of the object it was read from.
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    pub row: &'a Row,
    pub strings: &'a [Box<str>],
}

impl<'a> RowRef<'a> {
    fn text(&self, id: u32) -> &'a str {
        &self.strings[id as usize]
    }
}

/// Builds one record batch from rows (in the order given).
pub fn to_batch(rows: &[RowRef]) -> RecordBatch {
    let utc = |v: Vec<Option<i64>>| TimestampMillisecondArray::from(v).with_timezone("UTC");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.text(r.row.symbol)),
        )),
        Arc::new(
            Decimal128Array::from_iter_values(rows.iter().map(|r| r.row.price as i128))
                .with_precision_and_scale(PRICE_PRECISION as u8, PRICE_SCALE as i8)
                .expect("valid decimal precision"),
        ),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.row.volume()))),
        Arc::new(utc(rows.iter().map(|r| Some(r.row.trade_ts)).collect())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.row.conditions().map(|c| r.text(c))),
        )),
        Arc::new(utc(rows.iter().map(|r| r.row.received_ts()).collect())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.row.source().map(|c| r.text(c))),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.row.kafka_partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.row.kafka_offset),
        )),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match the schema")
}

/// Writer settings for a compression name (`zstd`, `snappy` or `none`).
pub fn properties(compression: &str) -> Result<WriterProperties, String> {
    let c = match compression {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?),
        "snappy" => Compression::SNAPPY,
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        other => {
            return Err(format!(
                "[transform] compression = {other:?}: expected zstd, snappy or none"
            ))
        }
    };
    Ok(WriterProperties::builder()
        .set_compression(c)
        .set_max_row_group_size(1 << 20)
        .set_created_by(format!("stockpipe {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Encodes rows as one Parquet file.
pub fn write(
    rows: &[RowRef],
    props: &WriterProperties,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let mut out = Vec::with_capacity(rows.len() * 24 + 4096);
    let mut w = ArrowWriter::try_new(&mut out, schema(), Some(props.clone()))?;
    for chunk in rows.chunks(64 * 1024) {
        w.write(&to_batch(chunk))?;
    }
    w.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn files_carry_the_processed_schema() {
        let line = br#"{"symbol":"AAPL","price":129.575,"volume":1,"trade_ts":1672348887785,"source":"finnhub","kafka_partition":0,"kafka_offset":1}"#;
        let (row, strings) = crate::transform::rules::clean(line, None).unwrap();
        let strings = strings.into_values();
        let row = RowRef {
            row: &row,
            strings: &strings,
        };
        let bytes = write(&[row], &properties("zstd").unwrap()).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.num_rows(), 1);
        let cols: Vec<String> = meta
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let want: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        assert_eq!(cols, want);
        // DECIMAL(18,8) fits INT64; timestamps are INT64 milliseconds adjusted to UTC.
        let price = meta.schema_descr().column(1);
        assert_eq!(price.physical_type(), parquet::basic::Type::INT64);
        assert!(properties("lz4").is_err());
    }
}
