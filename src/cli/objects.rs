//! Object-store locations (`s3://`, `az://`, `gs://`, `file://`) in the
//! envelope commands: their flags, and turning a command's paths into a
//! worker [`Source`] or one object.

use rewrap::objstore::{self, ObjectLocation, ObjectStoreOptions};
use rewrap::worker::{
    ObjectWalkOptions, Shard, Source, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CONCURRENCY,
};
use std::path::PathBuf;

/// Object-store flags of the `rotate` and `inventory` commands (flatten into
/// their arguments). `inventory` uses only `--shard`, `--s3-endpoint` and
/// `--concurrency`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ObjectStoreArgs {
    /// Record progress in FILE every --checkpoint-every objects and resume
    /// from it (object-store locations only).
    #[arg(long, value_name = "FILE")]
    pub(crate) checkpoint: Option<PathBuf>,
    /// Objects between two checkpoint writes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub(crate) checkpoint_every: u64,
    /// Take only shard I of N (0-based) of the objects, by hash of the name.
    #[arg(long, value_name = "I/N")]
    pub(crate) shard: Option<Shard>,
    /// S3 endpoint URL (MinIO, Ceph, ...); default AWS_ENDPOINT_URL_S3 or
    /// AWS_ENDPOINT_URL, else AWS.
    #[arg(long, value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
    /// Objects in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
}

impl Default for ObjectStoreArgs {
    fn default() -> ObjectStoreArgs {
        ObjectStoreArgs {
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shard: None,
            s3_endpoint: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl ObjectStoreArgs {
    /// The options to open a location with.
    pub(crate) fn options(&self) -> ObjectStoreOptions {
        ObjectStoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            ..ObjectStoreOptions::default()
        }
    }

    /// How a run walks a location.
    pub(crate) fn walk(&self) -> ObjectWalkOptions {
        ObjectWalkOptions {
            checkpoint: self.checkpoint.clone(),
            checkpoint_every: self.checkpoint_every.max(1),
            shard: self.shard,
            concurrency: self.concurrency.max(1),
        }
    }
}

/// What the PATH arguments of `rotate` and `inventory` name, opened: file
/// trees, or one object-store location. [`Located::source`] lends it to the
/// worker.
pub(crate) enum Located {
    /// Files or folders.
    Tree {
        /// As given.
        roots: Vec<PathBuf>,
        /// `--follow-symlinks`.
        follow_links: bool,
    },
    /// One object-store location.
    Objects {
        /// Opened (no request made yet).
        location: ObjectLocation,
        /// Shard, checkpoint, concurrency.
        walk: ObjectWalkOptions,
    },
}

impl Located {
    /// Opens `paths`: one object-store URL and nothing else, or paths.
    /// The error is the message to print (exit code 2).
    pub(crate) fn open(
        paths: &[PathBuf],
        follow_links: bool,
        args: &ObjectStoreArgs,
    ) -> Result<Located, String> {
        match object_url(paths)? {
            Some(url) => Ok(Located::Objects {
                location: objstore::open_location(&url, &args.options())
                    .map_err(|e| format!("{url}: {e}"))?,
                walk: args.walk(),
            }),
            None => Ok(Located::Tree {
                roots: paths.to_vec(),
                follow_links,
            }),
        }
    }

    /// The worker's view of it.
    pub(crate) fn source(&self) -> Source<'_> {
        match self {
            Located::Tree {
                roots,
                follow_links,
            } => Source::Tree {
                roots: roots.clone(),
                follow_links: *follow_links,
            },
            Located::Objects { location, walk } => Source::Objects {
                location,
                walk: walk.clone(),
            },
        }
    }
}

/// The one object-store URL among `paths`, if any; mixing one with
/// anything else is an error (exit code 2).
fn object_url(paths: &[PathBuf]) -> Result<Option<String>, String> {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| objstore::is_object_url(p))
        .collect();
    match (urls.len(), paths.len()) {
        (0, _) => Ok(None),
        (1, 1) => Ok(urls.into_iter().next()),
        _ => Err(
            "give one object-store location (s3://, az://, gs://, file://) and nothing else".into(),
        ),
    }
}

/// One object named by a URL (`s3://bucket/prefix/name`): its location,
/// opened, and its name there.
pub(crate) struct ObjectRef {
    /// The URL as given (for messages).
    pub(crate) url: String,
    /// The location the object is in.
    pub(crate) location: ObjectLocation,
    /// The object's name in it.
    pub(crate) name: String,
}

/// Opens the object `url` names. `Ok(Err(code))` when the location cannot
/// be opened (the message is printed).
pub(crate) fn open_object(url: &str) -> anyhow::Result<Result<ObjectRef, i32>> {
    let (loc_url, name) = split_object(url)?;
    let options = ObjectStoreArgs::default().options();
    Ok(match objstore::open_location(loc_url, &options) {
        Ok(location) => Ok(ObjectRef {
            url: url.to_string(),
            location,
            name: name.to_string(),
        }),
        Err(e) => {
            let code = super::object_error_code(&e);
            let (name, message) = (loc_url.to_string(), e.to_string());
            return Err(super::ItemError {
                name,
                message,
                code,
            }
            .into());
        }
    })
}

/// Splits `s3://bucket/prefix/name` into the location and the object name.
fn split_object(url: &str) -> anyhow::Result<(&str, &str)> {
    match url.rsplit_once('/') {
        Some((loc, name))
            if !name.is_empty()
                && loc.contains("://")
                && !loc.ends_with(':')
                && !loc.ends_with(":/") =>
        {
            Ok((loc, name))
        }
        _ => Err(super::UsageError(format!(
            "{url}: name an object, e.g. s3://bucket/prefix/name"
        ))
        .into()),
    }
}
