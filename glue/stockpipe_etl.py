"""AWS Glue job: raw JSONL → Parquet with stockpipe's shared cleaning rules.

`stockpipe glue deploy` uploads this script with the `stockpipe` package (pure Python, as a zip
in `--extra-py-files`) and creates or updates the job. The same file runs unchanged on a local
Spark when `awsglue` is absent:

    python glue/stockpipe_etl.py --input file:///data/lake --output file:///data/lake

Arguments (Glue passes them as `--name value`): --input, --output, --raw_prefix,
--processed_prefix, --quarantine_prefix, --compression, --rows_per_file, --date, --since,
--full true, --source s3|catalog, --database, --raw_table. With `--source catalog` the job
bookmark over the crawler's raw table picks the days that received new files.
"""

from stockpipe.spark_etl import main

if __name__ == "__main__":
    main()
