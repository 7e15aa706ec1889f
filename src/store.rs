//! Object storage shared by the sink and the transform: `s3://bucket/prefix` through the AWS
//! SDK (any S3-compatible endpoint) and `file:///path` with atomic renames.
