//! S3, and every server that speaks its API, as [`Storage`]: [`S3Options`] and
//! [`Storage::s3`].
//!
//! A user configures S3 through weir's own [`S3Options`] — bucket, prefix, region, endpoint,
//! credentials, retries and timeouts — so an application needs neither a dependency on opendal
//! nor its exact version. The operator built from them is opendal's S3 service wrapped in its
//! timeout layer (each attempt bounded) and its retry layer (temporary failures retried with
//! exponential back-off and jitter, each retry logged).
//!
//! What weir relies on from the server: a completed `PutObject` is durable and atomic, and
//! `PutObject` with `If-None-Match: *` refuses to replace an existing object (Amazon S3 since
//! August 2024; MinIO; moto). A retried conditional write whose first attempt did land is
//! told apart from a real conflict by the object store layer ([`object`](super::object)):
//! it reads the object back and accepts it if it holds exactly the bytes written.
//!
//! What a crash leaves behind: whatever objects were completely written; never a partial one.

use std::fmt;
use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryEvent, RetryInterceptor, RetryLayer, TimeoutLayer};
use opendal::services::S3;

use super::location::{Storage, StorageError};

/// Where and how to reach an S3 bucket (Amazon S3, or any S3-compatible server such as MinIO,
/// Ceph, Garage or moto), for [`Storage::s3`].
///
/// Credentials left unset are taken, as the AWS SDKs take them, from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`), the
/// shared config files (`~/.aws/config`, `~/.aws/credentials`, `AWS_PROFILE`), or the
/// instance's metadata service. Its `Debug` output never shows the secret key or the token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Options {
    /// The bucket. It must exist: weir does not create buckets.
    pub bucket: String,
    /// The key prefix every object of this storage is placed under (`""` for the bucket's
    /// root; a trailing `/` is added if missing).
    pub prefix: String,
    /// The bucket's region (default `us-east-1`; most S3-compatible servers accept any).
    pub region: String,
    /// The endpoint URL, e.g. `http://127.0.0.1:9000` for a local server (default: Amazon
    /// S3's endpoint for the region).
    pub endpoint: Option<String>,
    /// The access key id (default: from the environment or the shared config files).
    pub access_key_id: Option<String>,
    /// The secret access key (default: as for `access_key_id`).
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// Address the bucket as `https://BUCKET.host/` instead of `https://host/BUCKET/`
    /// (default: path style, which every S3-compatible server accepts).
    pub virtual_host_style: bool,
    /// How many times a request that failed with a temporary error (a timeout, a dropped
    /// connection, a 5xx, a throttling answer) is retried before its error is returned
    /// (default 5).
    pub max_retries: usize,
    /// The first retry's delay; each next one doubles, up to `max_retry_delay`, with jitter
    /// (default 100 ms).
    pub min_retry_delay: Duration,
    /// The longest delay between two attempts (default 5 s).
    pub max_retry_delay: Duration,
    /// The longest a request without a body stream (stat, delete, list page) may take, per
    /// attempt (default 30 s).
    pub request_timeout: Duration,
    /// The longest one read or write of a body may wait for the network, per attempt
    /// (default 30 s).
    pub io_timeout: Duration,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("virtual_host_style", &self.virtual_host_style)
            .field("max_retries", &self.max_retries)
            .field("min_retry_delay", &self.min_retry_delay)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("request_timeout", &self.request_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

/// Why an `s3://` URL could not be turned into [`S3Options`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3UrlError {
    /// It does not start with `s3://`.
    #[error("{url:?} is not an s3:// URL")]
    NotS3 {
        /// The URL given.
        url: String,
    },
    /// `s3://` with no bucket name.
    #[error("{url:?} names no bucket (write s3://BUCKET/PREFIX)")]
    NoBucket {
        /// The URL given.
        url: String,
    },
    /// A query parameter weir does not know, or a value it cannot use.
    #[error("{url:?}: {problem}")]
    BadParameter {
        /// The URL given.
        url: String,
        /// What is wrong, in one sentence.
        problem: String,
    },
}

impl S3Options {
    /// Options for `bucket`, with every other setting at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: String::new(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            virtual_host_style: false,
            max_retries: 5,
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
        }
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the region.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets the endpoint URL.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets static credentials.
    #[must_use]
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Sets the retry policy: at most `max_retries` retries, delays from `min` doubling to
    /// `max`.
    #[must_use]
    pub fn retries(mut self, max_retries: usize, min: Duration, max: Duration) -> Self {
        self.max_retries = max_retries;
        self.min_retry_delay = min;
        self.max_retry_delay = max.max(min);
        self
    }

    /// Sets the per-attempt timeouts (see [`request_timeout`](Self::request_timeout) and
    /// [`io_timeout`](Self::io_timeout)).
    #[must_use]
    pub fn timeouts(mut self, request: Duration, io: Duration) -> Self {
        self.request_timeout = request;
        self.io_timeout = io;
        self
    }

    /// Parses `s3://BUCKET/PREFIX?region=R&endpoint=URL&retries=N&timeout_ms=T` (every query
    /// parameter optional; also `io_timeout_ms`, `min_retry_delay_ms`, `max_retry_delay_ms`
    /// and `virtual_host_style=true`). Credentials never go in a URL: they come from the
    /// environment (see [`S3Options`]).
    ///
    /// # Errors
    ///
    /// [`S3UrlError`] naming what is wrong.
    pub fn from_url(url: &str) -> Result<Self, S3UrlError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| S3UrlError::NotS3 {
            url: url.to_owned(),
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(S3UrlError::NoBucket {
                url: url.to_owned(),
            });
        }
        let mut options = S3Options::new(bucket).prefix(prefix);
        let bad = |problem: String| S3UrlError::BadParameter {
            url: url.to_owned(),
            problem,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| {
                        bad(format!(
                            "{key} must be a whole number of milliseconds, not {value:?}"
                        ))
                    })
            };
            match key {
                "region" => options.region = value.to_owned(),
                "endpoint" => options.endpoint = Some(value.to_owned()),
                "retries" => {
                    options.max_retries = value.parse().map_err(|_| {
                        bad(format!("retries must be a whole number, not {value:?}"))
                    })?;
                }
                "min_retry_delay_ms" => options.min_retry_delay = millis()?,
                "max_retry_delay_ms" => options.max_retry_delay = millis()?,
                "timeout_ms" => options.request_timeout = millis()?,
                "io_timeout_ms" => options.io_timeout = millis()?,
                "virtual_host_style" => {
                    options.virtual_host_style = value.parse().map_err(|_| {
                        bad(format!(
                            "virtual_host_style must be true or false, not {value:?}"
                        ))
                    })?;
                }
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {key:?} (known: region, endpoint, retries, \
                         min_retry_delay_ms, max_retry_delay_ms, timeout_ms, io_timeout_ms, \
                         virtual_host_style)"
                    )));
                }
            }
        }
        Ok(options)
    }

    /// The `s3://bucket/prefix` this names (no parameters), for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, normalized_prefix(&self.prefix))
    }
}

/// `prefix` without leading slashes and with one trailing slash (empty stays empty).
fn normalized_prefix(prefix: &str) -> String {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() || p.ends_with('/') {
        p.to_owned()
    } else {
        format!("{p}/")
    }
}

/// Logs each retry of a request to the object store.
#[derive(Debug)]
struct LogRetries;

impl RetryInterceptor for LogRetries {
    fn intercept(&self, event: RetryEvent<'_>) {
        tracing::warn!(operation = %event.op, attempt = event.attempt,
            retry_in_ms = event.retry_after.as_millis() as u64, error = %event.err,
            "an S3 request failed; retrying");
    }
}

impl Storage {
    /// S3 or an S3-compatible server, from weir's [`S3Options`]: every object under the
    /// options' prefix in their bucket. Nothing is contacted yet; the first operation that
    /// needs the bucket reports a wrong endpoint, credentials or bucket.
    ///
    /// # Errors
    ///
    /// [`StorageError::Object`] if opendal refuses the configuration (e.g. an endpoint that is
    /// not a URL).
    pub fn s3(options: &S3Options) -> Result<Storage, StorageError> {
        // opendal's HTTP client (reqwest, rustls) as the process-wide default; idempotent.
        // weir does not turn on opendal's `auto-register-services`, which would do this from
        // a constructor before `main`.
        opendal::install_default();
        let mut builder = S3::default()
            .bucket(&options.bucket)
            .region(&options.region)
            .root("/");
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(id) = &options.access_key_id {
            builder = builder.access_key_id(id);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.secret_access_key(secret);
        }
        if let Some(token) = &options.session_token {
            builder = builder.session_token(token);
        }
        if options.virtual_host_style {
            builder = builder.enable_virtual_host_style();
        }
        let op = Operator::new(builder)
            .map_err(|source| StorageError::Object {
                op: "configure",
                path: options.url(),
                source: Box::new(source),
            })?
            // Innermost first: each attempt is bounded by the timeouts, and the retry layer
            // retries attempts (a timed-out attempt is a temporary error).
            .layer(
                TimeoutLayer::new()
                    .with_timeout(options.request_timeout)
                    .with_io_timeout(options.io_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(options.max_retries)
                    .with_min_delay(options.min_retry_delay)
                    .with_max_delay(options.max_retry_delay.max(options.min_retry_delay))
                    .with_jitter()
                    .with_notify(LogRetries),
            );
        Ok(Storage::Object {
            op,
            prefix: normalized_prefix(&options.prefix),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_bucket_prefix_and_parameters() {
        let o = S3Options::from_url(
            "s3://jobs/wc/prod?region=eu-west-1&endpoint=http://127.0.0.1:9000&retries=2&timeout_ms=1500&io_timeout_ms=700&min_retry_delay_ms=10&max_retry_delay_ms=90&virtual_host_style=true",
        )
        .unwrap();
        assert_eq!(o.bucket, "jobs");
        assert_eq!(o.prefix, "wc/prod");
        assert_eq!(o.region, "eu-west-1");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(o.max_retries, 2);
        assert_eq!(o.request_timeout, Duration::from_millis(1500));
        assert_eq!(o.io_timeout, Duration::from_millis(700));
        assert_eq!(o.min_retry_delay, Duration::from_millis(10));
        assert_eq!(o.max_retry_delay, Duration::from_millis(90));
        assert!(o.virtual_host_style);
        assert_eq!(o.url(), "s3://jobs/wc/prod/");
        let bare = S3Options::from_url("s3://jobs").unwrap();
        assert_eq!(
            (bare.prefix.as_str(), bare.url()),
            ("", "s3://jobs/".to_owned())
        );
    }

    #[test]
    fn a_bad_url_is_refused_with_what_is_wrong() {
        assert!(matches!(
            S3Options::from_url("/tmp/x"),
            Err(S3UrlError::NotS3 { .. })
        ));
        assert!(matches!(
            S3Options::from_url("s3:///x"),
            Err(S3UrlError::NoBucket { .. })
        ));
        let err = S3Options::from_url("s3://b/p?retry=3").unwrap_err();
        assert!(
            err.to_string().contains("unknown parameter \"retry\""),
            "{err}"
        );
        let err = S3Options::from_url("s3://b/p?timeout_ms=soon").unwrap_err();
        assert!(err.to_string().contains("timeout_ms must be"), "{err}");
    }

    #[test]
    fn debug_hides_the_secret_and_the_token() {
        let mut o = S3Options::new("b").credentials("AKID", "very-secret");
        o.session_token = Some("tok-123".to_owned());
        let shown = format!("{o:?}");
        assert!(shown.contains("AKID"), "{shown}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-123"),
            "{shown}"
        );
    }

    #[test]
    fn a_location_is_an_s3_url_or_else_a_directory() {
        match Storage::from_location("s3://b/jobs/x?endpoint=http://127.0.0.1:1") {
            Ok(Storage::Object { prefix, .. }) => assert_eq!(prefix, "jobs/x/"),
            other => panic!("an s3:// location is object storage: {other:?}"),
        }
        assert!(matches!(
            Storage::from_location("weir-data/s3:/x"),
            Ok(Storage::Local(_))
        ));
        let err = Storage::from_location("s3://").unwrap_err();
        assert!(err.to_string().contains("names no bucket"), "{err}");
    }

    #[test]
    fn the_storage_is_under_the_normalized_prefix() {
        let storage = Storage::s3(
            &S3Options::new("b")
                .prefix("/a/b")
                .endpoint("http://127.0.0.1:1")
                .credentials("k", "s"),
        )
        .unwrap();
        match storage {
            Storage::Object { prefix, .. } => assert_eq!(prefix, "a/b/"),
            Storage::Local(_) => panic!("an S3 storage is an object storage"),
        }
    }
}
