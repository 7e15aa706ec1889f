//! `s3://bucket/prefix` through the AWS SDK: AWS or any S3-compatible endpoint. "Create only if
//! absent" is a conditional PUT (`If-None-Match: *`).

use super::{Encryption, Error, ObjectMeta, Probe, Put, Result};
use crate::config::S3Config;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption};
use std::time::Duration;

/// A bucket and a key prefix.
#[derive(Clone)]
pub struct S3Store {
    pub(super) client: aws_sdk_s3::Client,
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) encryption: Encryption,
    /// Whether the server honours `If-None-Match: *`, checked once before the first create-only
    /// PUT (see [`S3Store::check_conditional`]).
    pub(super) conditional: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl S3Store {
    /// The object key of `key` under the prefix.
    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, create_new: bool) -> Result<Put> {
        let full = self.key(key);
        if create_new {
            if let Err(Probe::Refused(why) | Probe::Unreachable(why)) =
                self.check_conditional().await
            {
                return Err(Error::S3 {
                    op: "put",
                    uri: format!("s3://{}/{full}", self.bucket),
                    message: why,
                });
            }
        }
        match self.send_put(&full, body, create_new).await {
            Ok(put) => Ok(put),
            Err(e) => Err(s3_error("put", &self.bucket, &full, &e)),
        }
    }

    async fn send_put(
        &self,
        full: &str,
        body: Vec<u8>,
        create_new: bool,
    ) -> std::result::Result<Put, PutError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body));
        if create_new {
            req = req.if_none_match("*");
        }
        req = match &self.encryption {
            Encryption::None => req,
            Encryption::SseS3 => req.server_side_encryption(ServerSideEncryption::Aes256),
            Encryption::SseKms(id) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(id.clone()),
        };
        // The CRC32 checksum (a signed header, checked by the server) covers the body:
        // hashing it again with SHA-256 for the signature would only cost CPU.
        match req.customize().disable_payload_signing().send().await {
            Ok(_) => Ok(Put::Created),
            Err(e) => {
                // 412: the key exists. A 409 (ConditionalRequestConflict) says another
                // conditional write to the key is still in flight and must be retried: neither
                // writer knows yet whether its object will exist, so it is an error, not "exists".
                if create_new && e.raw_response().map(|r| r.status().as_u16()) == Some(412) {
                    Ok(Put::AlreadyExists)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The sink's claims rest on "create only if absent": a server that ignores `If-None-Match`
    /// (an older S3-compatible one) would let two writers both claim. Checked once per store, at
    /// start or, when the server did not answer then, before the first create-only PUT.
    pub async fn check_conditional(&self) -> std::result::Result<(), Probe> {
        self.conditional
            .get_or_try_init(|| self.probe_conditional())
            .await
            .map(|_| ())
    }

    async fn probe_conditional(&self) -> std::result::Result<(), Probe> {
        let full = self.key(&format!(
            "_stockpipe/probe/{:016x}.json",
            rand::random::<u64>()
        ));
        let put = || async {
            match tokio::time::timeout(
                Duration::from_secs(10),
                self.send_put(&full, b"{}".to_vec(), true),
            )
            .await
            {
                Ok(Ok(put)) => Ok(put),
                Ok(Err(e)) => Err(classify(&self.bucket, &full, &e)),
                Err(_) => Err(Probe::Unreachable("no answer within 10s".into())),
            }
        };
        put().await?;
        let second = put().await;
        let _ = self.delete_full(&full).await;
        match second? {
            Put::AlreadyExists => Ok(()),
            Put::Created => Err(Probe::Refused(format!(
                "s3://{}/{full}: the server does not honour conditional writes \
                 (If-None-Match: *): a second create-only PUT replaced the first, so the sink \
                 could not write every record exactly once there",
                self.bucket
            ))),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let full = self.key(key);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => {
                let data = out.body.collect().await.map_err(|e| Error::S3 {
                    op: "get",
                    uri: format!("s3://{}/{full}", self.bucket),
                    message: e.to_string(),
                })?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) => {
                if e.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                    Ok(None)
                } else {
                    Err(s3_error("get", &self.bucket, &full, &e))
                }
            }
        }
    }

    pub async fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let full_prefix = self.key(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.clone());
            if let Some(after) = start_after {
                req = req.start_after(self.key(after));
            }
            let page = req
                .send()
                .await
                .map_err(|e| s3_error("list", &self.bucket, &full_prefix, &e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key() {
                    out.push(ObjectMeta {
                        key: key[strip.min(key.len())..].to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    pub async fn probe(&self) -> std::result::Result<(), Probe> {
        let request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.prefix.as_str())
            .max_keys(1)
            .send();
        match tokio::time::timeout(Duration::from_secs(10), request).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&self.bucket, &self.prefix, &e)),
            Err(_) => Err(Probe::Unreachable("no answer within 10s".into())),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_full(&self.key(key)).await
    }

    async fn delete_full(&self, full: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| s3_error("delete", &self.bucket, full, &e))?;
        Ok(())
    }
}

type PutError = aws_sdk_s3::error::SdkError<
    aws_sdk_s3::operation::put_object::PutObjectError,
    aws_sdk_s3::config::http::HttpResponse,
>;

/// A refusal (a 4xx answer, or credentials no provider has: waiting will not help) or an outage.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    bucket: &str,
    key: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Probe {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let error = match s3_error("probe", bucket, key, e) {
        Error::S3 { message, .. } => message,
        other => other.to_string(),
    };
    // Credentials that no provider of the chain has will not appear by waiting, like a 4xx
    // answer; a provider that failed (an instance role's endpoint) may recover.
    let unsigned = matches!(
        credentials_error(e),
        Some(CredentialsError::CredentialsNotLoaded(_))
    );
    if unsigned || matches!(status, Some(300..=499) if !matches!(status, Some(408 | 429))) {
        Probe::Refused(error)
    } else {
        Probe::Unreachable(error)
    }
}

fn s3_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    bucket: &str,
    key: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error {
    let message = match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => format!(
            "{} ({})",
            se.err().message().unwrap_or("service error"),
            se.err().code().unwrap_or("?")
        ),
        other => no_credentials(other).unwrap_or_else(|| chain(other)),
    };
    Error::S3 {
        op,
        uri: format!("s3://{bucket}/{key}"),
        message,
    }
}

/// What a user reads when the SDK found no credentials to sign with; the same words as the Python
/// side's `stockpipe.aws.NO_AWS_CREDENTIALS`.
const NO_CREDENTIALS: &str = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
    (or [s3] access_key_id and secret_access_key), or AWS_PROFILE, or run where an IAM role applies";

/// An error and its sources, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The error of the SDK's credential chain (environment, profile, web identity, container,
/// instance role) that kept a request from being signed, if that is why it failed.
fn credentials_error(e: &dyn std::error::Error) -> Option<&CredentialsError> {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(ce) = s.downcast_ref::<CredentialsError>() {
            return Some(ce);
        }
        src = s.source();
    }
    None
}

/// The one line for a request the credential chain kept from being signed (its own report lists
/// every provider on a line of its own). A provider that failed, rather than had nothing, is
/// named after the line.
fn no_credentials(e: &dyn std::error::Error) -> Option<String> {
    Some(match credentials_error(e)? {
        CredentialsError::CredentialsNotLoaded(_) => NO_CREDENTIALS.to_string(),
        failed => {
            let why = chain(failed);
            format!(
                "{NO_CREDENTIALS} ({})",
                why.lines().next().unwrap_or_default()
            )
        }
    })
}

/// The key pair of `[s3]` (with its session token, for temporary credentials), when set; else
/// the SDK's default chain applies (environment, profile, instance role).
pub(super) fn configured_credentials(cfg: &S3Config) -> Option<aws_sdk_s3::config::Credentials> {
    let (id, secret) = (cfg.access_key_id.as_ref()?, cfg.secret_access_key.as_ref()?);
    Some(aws_sdk_s3::config::Credentials::new(
        id,
        secret,
        cfg.session_token.clone(),
        None,
        "stockpipe-config",
    ))
}

/// An S3 client for the configured endpoint, region and credentials.
pub async fn s3_client(cfg: &S3Config) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(cfg.region.clone()));
    if let Some(credentials) = configured_credentials(cfg) {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.force_path_style)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = &cfg.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}
