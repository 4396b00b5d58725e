//! Object-store locations: URL parsing, store construction (credentials,
//! endpoint, retries) and the tokio runtime the sync API runs on.

use super::ObjectStoreError;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// How to reach a store. Credentials are never options: they come from the
/// usual environment of each store (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
/// / AWS_SESSION_TOKEN / AWS_REGION / web identity; AZURE_STORAGE_*;
/// GOOGLE_SERVICE_ACCOUNT / application default credentials).
#[derive(Debug, Clone)]
pub struct ObjectStoreOptions {
    /// S3 endpoint URL; default AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL,
    /// then AWS itself. Plain `http://` endpoints are allowed only here.
    pub s3_endpoint: Option<String>,
    /// Requests retried on throttling (429, 503 SlowDown), 5xx and
    /// connection errors, with exponential backoff.
    pub max_retries: usize,
    /// Give up retrying one request after this long.
    pub retry_timeout: Duration,
    /// First backoff delay (doubled per retry, with jitter).
    pub initial_backoff: Duration,
    /// Upper bound of one backoff delay.
    pub max_backoff: Duration,
    /// Bodies are uploaded in one request up to this size, in parts of
    /// this size above it (S3 needs at least 5 MiB).
    pub part_size: usize,
    /// Parts uploaded at once per body (memory: part_size times this).
    pub upload_concurrency: usize,
}

impl Default for ObjectStoreOptions {
    fn default() -> ObjectStoreOptions {
        ObjectStoreOptions {
            s3_endpoint: None,
            max_retries: 10,
            retry_timeout: Duration::from_mins(3),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 4,
        }
    }
}

impl ObjectStoreOptions {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// One opened location: a store, a prefix in it, and the runtime its
/// requests run on. Cheap to share by reference across threads.
pub struct ObjectLocation {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: ObjectPath,
    url: String,
    /// For `file://` locations: the local store, whose conditional updates
    /// are done with a file lock (object_store's local store has none).
    pub(crate) local: Option<Arc<object_store::local::LocalFileSystem>>,
    pub(crate) part_size: usize,
    pub(crate) upload_concurrency: usize,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for ObjectLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLocation")
            .field("url", &self.url)
            .finish()
    }
}

/// True when `s` is a object-store URL this module opens (`s3://`, `s3a://`,
/// `az://`, `azure://`, `gs://`, `file://`), false for plain paths.
pub fn is_object_url(s: &str) -> bool {
    ["s3://", "s3a://", "az://", "azure://", "gs://", "file://"]
        .iter()
        .any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p))
}

/// Opens `url` (see the module docs). Makes no request: a missing bucket or
/// bad credentials show at first use (re-wraps and inventories check first).
pub fn open_location(
    url: &str,
    opts: &ObjectStoreOptions,
) -> Result<ObjectLocation, ObjectStoreError> {
    let parsed =
        url::Url::parse(url).map_err(|e| ObjectStoreError::InvalidUrl(format!("{url}: {e}")))?;
    let scheme = parsed.scheme().to_ascii_lowercase();
    let bucket = parsed.host_str().unwrap_or_default().to_string();
    if scheme != "file" && bucket.is_empty() {
        return Err(ObjectStoreError::InvalidUrl(format!(
            "{url}: no bucket or container name"
        )));
    }
    let bad = |e: object_store::Error| ObjectStoreError::InvalidUrl(format!("{url}: {e}"));
    let mut local = None;
    let (store, prefix): (Arc<dyn ObjectStore>, String) = match scheme.as_str() {
        "s3" | "s3a" => (
            Arc::new(s3_store(&bucket, opts).map_err(bad)?),
            parsed.path().into(),
        ),
        "az" | "azure" => {
            let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&bucket)
                .with_retry(opts.retry())
                .build()
                .map_err(bad)?;
            (Arc::new(store), parsed.path().into())
        }
        "gs" => {
            let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&bucket)
                .with_retry(opts.retry())
                .build()
                .map_err(bad)?;
            (Arc::new(store), parsed.path().into())
        }
        "file" => {
            if !bucket.is_empty() && bucket != "localhost" {
                return Err(ObjectStoreError::InvalidUrl(format!(
                    "{url}: file URLs name a local folder (file:///path)"
                )));
            }
            let dir = parsed
                .to_file_path()
                .map_err(|()| ObjectStoreError::InvalidUrl(format!("{url}: not a local path")))?;
            std::fs::create_dir_all(&dir).map_err(|e| ObjectStoreError::io(dir.display(), e))?;
            let dir =
                std::fs::canonicalize(&dir).map_err(|e| ObjectStoreError::io(dir.display(), e))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(bad)?;
            let store = Arc::new(store);
            local = Some(Arc::clone(&store));
            (store, String::new())
        }
        other => {
            return Err(ObjectStoreError::InvalidUrl(format!(
                "{url}: unsupported scheme {other:?} (use s3, az, gs or file)"
            )))
        }
    };
    let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| bad(e.into()))?;
    let mut loc = ObjectLocation::from_store(store, prefix, opts)?;
    loc.url = url.trim_end_matches('/').to_string();
    loc.local = local;
    Ok(loc)
}

fn s3_store(
    bucket: &str,
    opts: &ObjectStoreOptions,
) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let endpoint = opts
        .s3_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty());
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(opts.retry());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    if let Some(e) = endpoint {
        b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
    }
    b.build()
}

impl ObjectLocation {
    /// A location over an already built store (tests, embedding, or a
    /// store configured in ways the URL cannot say). `prefix` is the folder
    /// inside the store.
    pub(crate) fn from_store(
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        opts: &ObjectStoreOptions,
    ) -> Result<ObjectLocation, ObjectStoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rewrap-objstore")
            .enable_all()
            .build()
            .map_err(|e| ObjectStoreError::Store(format!("cannot start the I/O runtime: {e}")))?;
        Ok(ObjectLocation {
            url: format!("{store}/{prefix}"),
            store,
            prefix,
            local: None,
            part_size: opts.part_size.max(5 * 1024 * 1024),
            upload_concurrency: opts.upload_concurrency.max(1),
            rt,
        })
    }

    /// The location as given (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying store (for tools and tests that need raw access).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store path of the body of object `name` (relative to the prefix).
    pub(crate) fn body_path(&self, name: &str) -> Result<ObjectPath, ObjectStoreError> {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.ends_with(super::KEY_SUFFIX) {
            return Err(ObjectStoreError::Usage(format!(
                "{name:?} is not a blob name (empty, or ends with {:?})",
                super::KEY_SUFFIX
            )));
        }
        let full = if self.prefix.as_ref().is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| ObjectStoreError::Usage(format!("{name:?}: {e}")))
    }

    /// The store path of the key object of object `name`.
    pub(crate) fn key_path(&self, name: &str) -> Result<ObjectPath, ObjectStoreError> {
        let body = self.body_path(name)?;
        Ok(ObjectPath::from(format!("{body}{}", super::KEY_SUFFIX)))
    }

    /// How object `name` is shown in reports: the location URL and the name.
    pub(crate) fn display_name(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// Runs a future on the location's runtime, from a sync caller.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// One listing request: says clearly if the bucket is missing or the
    /// credentials are refused, before a run starts.
    pub fn probe(&self) -> Result<(), ObjectStoreError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        self.block_on(self.store.list_with_delimiter(prefix))
            .map(|_| ())
            .map_err(|e| ObjectStoreError::from_store(&self.url, e))
    }
}
