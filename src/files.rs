//! Encrypting and decrypting files and streams as envelopes (whole trees:
//! [`crate::worker::transform_tree`]).
//!
//! Each envelope gets a fresh data key from the KMS (GenerateDataKey under
//! the caller's key, with the envelope's encryption context), the body is
//! sealed by [`crate::stream`], and the wrapped key goes into slot 0.
//! Decryption asks the KMS to unwrap the active slot's key (Decrypt, same
//! context) and verifies each chunk before writing it.
//!
//! Files are written crash-safely: to a temporary file in the destination
//! folder, flushed and fsynced, then renamed over the destination, and the
//! folder fsynced. A failure at any point removes the temporary file, so no
//! output that looks complete is ever left behind, and an original being
//! encrypted in place is never half-overwritten.

use crate::api::{DecryptRequest, EncryptionContext, GenerateDataKeyRequest};
use crate::envelope::{
    validate_context, EnvelopeError, Header, ParsedHeader, Slot, SlotWrapping, EMPTY_SLOT, MAGIC,
};
use crate::error::KmsError;
use crate::kms::Kms;
use crate::secret::Secret;
use serde::Serialize;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Prefix of the temporary files this module writes (walks skip them).
pub(crate) const TEMP_PREFIX: &str = ".rewrap-tmp-";
const IO_BUFFER: usize = 256 * 1024;

/// Why an encryption or decryption failed. Messages never contain key or
/// plaintext bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The envelope is malformed or did not authenticate.
    #[error("{0}")]
    Format(#[from] EnvelopeError),
    /// The KMS refused or failed (wrong key, missing rights, ...).
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The envelope's encryption context is not the one the caller expects.
    #[error("encryption context mismatch: {0}")]
    ContextMismatch(String),
    /// The request itself is not possible (e.g. a folder without `--recursive`).
    #[error("{0}")]
    Usage(String),
    /// A file the tree walker saw was replaced since (by a link, a FIFO, a
    /// folder): left alone, never followed or waited on.
    #[error("{0}")]
    Changed(String),
}

impl FileError {
    fn io(path: &Path, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A short, stable name for the kind of failure (for reports and tests):
    /// the AWS error name for KMS failures, else e.g. `ChunkAuth`.
    pub fn kind(&self) -> String {
        match self {
            FileError::Format(e) => e.kind().to_string(),
            FileError::Kms(e) => e.code.as_str().to_string(),
            FileError::Io { .. } => "Io".into(),
            FileError::ContextMismatch(_) => "ContextMismatch".into(),
            FileError::Usage(_) => "Usage".into(),
            FileError::Changed(_) => "Conflict".into(),
        }
    }
}

/// Result of file operations.
pub type Result<T, E = FileError> = std::result::Result<T, E>;

/// How to encrypt.
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    /// The KMS key (id, ARN, alias name or alias ARN) that wraps data keys.
    pub key_id: String,
    /// User encryption-context pairs, stored in the header and bound to the
    /// data key and the body.
    pub context: EncryptionContext,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// What the GenerateDataKey's audit record names as its object (the
    /// envelope's path; see [`crate::audit::AuditRecord::object`]).
    pub object: Option<String>,
}

impl EncryptOptions {
    /// Options with the default chunk size and no context.
    pub fn new(key_id: impl Into<String>) -> EncryptOptions {
        EncryptOptions {
            key_id: key_id.into(),
            context: EncryptionContext::new(),
            chunk_size: crate::envelope::DEFAULT_CHUNK_SIZE,
            object: None,
        }
    }
}

/// How to decrypt.
#[derive(Debug, Clone, Default)]
pub struct DecryptOptions {
    /// If set, the KMS refuses (IncorrectKeyException) unless the data key
    /// is wrapped under this key.
    pub key_id: Option<String>,
    /// Pairs the envelope's context must contain (checked before the KMS is
    /// asked).
    pub expect_context: EncryptionContext,
    /// What the Decrypt's audit record names as its object (the envelope's
    /// path; see [`crate::audit::AuditRecord::object`]).
    pub object: Option<String>,
}

/// What an encryption or decryption produced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EnvelopeInfo {
    /// The envelope's file id.
    pub file_id: String,
    /// ARN of the key that wraps the data key.
    pub key_arn: String,
    /// Key-material version of that key (0 when unknown).
    pub key_version: u32,
    /// Plaintext bytes.
    pub plaintext_bytes: u64,
}

/// Writes a new envelope of `input` onto `output`.
pub fn encrypt_stream(
    kms: &dyn Kms,
    opts: &EncryptOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<EnvelopeInfo> {
    validate_context(&opts.context)?;
    let header = Header::new(opts.chunk_size, opts.context.clone())?;
    let resp = kms.generate_data_key(&GenerateDataKeyRequest {
        key_id: opts.key_id.clone(),
        encryption_context: Some(header.kms_context()),
        key_spec: Some("AES_256".into()),
        object: opts.object.clone(),
        ..Default::default()
    })?;
    if resp.plaintext.len() != 32 {
        return Err(
            KmsError::internal("GenerateDataKey returned a key that is not 32 bytes").into(),
        );
    }
    let key_version =
        crate::ciphertext_blob::peek(&resp.ciphertext_blob.0).map_or(0, |b| b.key_version);
    let slot = Slot {
        sequence: 1,
        wrapped_at: chrono::Utc::now().timestamp(),
        key_version,
        key_arn: resp.key_id.clone(),
        wrapped_key: resp.ciphertext_blob.0,
        wrapping: SlotWrapping::Kms,
    };
    write_envelope(&header, &resp.plaintext, &slot, input, output)
}

/// Writes a new envelope of `input` without asking a KMS: a fresh data key
/// wrapped offline by RSA-OAEP (`wrapping`) under `public_key_der` (the
/// DER SubjectPublicKeyInfo GetPublicKey returns for the RSA
/// ENCRYPT_DECRYPT key `opts.key_id`, which must be its key ARN). The
/// envelope opens through Decrypt on that key, and `rewrap rotate`
/// re-wraps its slot under a symmetric key like any other.
pub fn encrypt_stream_offline(
    public_key_der: &[u8],
    wrapping: SlotWrapping,
    opts: &EncryptOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<EnvelopeInfo> {
    use aws_lc_rs::rsa;
    validate_context(&opts.context)?;
    let bad = |why: &str| FileError::Format(EnvelopeError::InvalidParameter(why.into()));
    let algorithm = match wrapping {
        SlotWrapping::RsaOaepSha1 => &rsa::OAEP_SHA1_MGF1SHA1,
        SlotWrapping::RsaOaepSha256 => &rsa::OAEP_SHA256_MGF1SHA256,
        SlotWrapping::Kms => return Err(bad("an offline wrap is RSA-OAEP")),
    };
    if !opts.key_id.starts_with("arn:") || !opts.key_id.contains(":key/") {
        return Err(bad("an offline wrap names its RSA key by key ARN"));
    }
    let public = rsa::PublicEncryptingKey::from_der(public_key_der)
        .ok()
        .and_then(|k| rsa::OaepPublicEncryptingKey::new(k).ok())
        .ok_or_else(|| bad("not an RSA public key (DER SubjectPublicKeyInfo)"))?;
    let header = Header::new(opts.chunk_size, opts.context.clone())?;
    let data_key = Secret::random(32);
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(algorithm, data_key.expose(), &mut wrapped, None)
        .map_err(|_| bad("RSA-OAEP encryption of the data key failed"))?
        .len();
    wrapped.truncate(n);
    let slot = Slot {
        sequence: 1,
        wrapped_at: chrono::Utc::now().timestamp(),
        key_version: 0,
        key_arn: opts.key_id.clone(),
        wrapped_key: wrapped,
        wrapping,
    };
    write_envelope(&header, &data_key, &slot, input, output)
}

/// Writes header, `slot` (slot 0; slot 1 empty) and the body of `input`
/// under `data_key`.
fn write_envelope(
    header: &Header,
    data_key: &Secret,
    slot: &Slot,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<EnvelopeInfo> {
    let encoded = slot.encode()?;
    let io = |e: std::io::Error| FileError::Format(EnvelopeError::Io(e));
    let mut head = Vec::with_capacity(header.len() + 2 * crate::envelope::SLOT_SIZE);
    head.extend_from_slice(header.as_bytes());
    head.extend_from_slice(&encoded);
    head.extend_from_slice(&EMPTY_SLOT);
    output.write_all(&head).map_err(io)?;
    // The body goes out in whole batches of chunks: no second buffer.
    let n = crate::stream::encrypt(data_key, header, input, output)?;
    output.flush().map_err(io)?;
    Ok(EnvelopeInfo {
        file_id: header.file_id().hyphenated().to_string(),
        key_arn: slot.key_arn.clone(),
        key_version: slot.key_version,
        plaintext_bytes: n,
    })
}

/// Asks the KMS to unwrap the data key of the active slot.
pub(crate) fn unwrap_data_key(
    kms: &dyn Kms,
    opts: &DecryptOptions,
    parsed: &ParsedHeader,
) -> Result<(Secret, Slot)> {
    check_context(&opts.expect_context, parsed.header.user_context())?;
    let (_, slot) = parsed.slots.active()?;
    // A slot wrapped offline under an RSA public key: Decrypt names the key
    // and the algorithm, and takes no context.
    let offline = slot.wrapping.rsa_algorithm();
    let resp = kms.decrypt(&DecryptRequest {
        ciphertext_blob: crate::api::CiphertextBlob(slot.wrapped_key.clone()),
        encryption_context: offline.is_none().then(|| parsed.header.kms_context()),
        key_id: match offline {
            Some(_) => Some(opts.key_id.clone().unwrap_or_else(|| slot.key_arn.clone())),
            None => opts.key_id.clone(),
        },
        encryption_algorithm: offline.map(str::to_string),
        object: opts.object.clone(),
        ..Default::default()
    })?;
    if resp.plaintext.len() != 32 {
        return Err(EnvelopeError::CorruptHeader("the wrapped data key is not 32 bytes").into());
    }
    Ok((resp.plaintext, slot.clone()))
}

fn check_context(expect: &EncryptionContext, actual: &EncryptionContext) -> Result<()> {
    for (k, v) in expect {
        match actual.get(k) {
            Some(a) if a == v => {}
            Some(_) => {
                return Err(FileError::ContextMismatch(format!(
                    "the envelope's {k:?} is not {v:?}"
                )))
            }
            None => {
                return Err(FileError::ContextMismatch(format!(
                    "the envelope has no {k:?}"
                )))
            }
        }
    }
    Ok(())
}

/// Decrypts an envelope from `input` onto `output`. Only authenticated
/// plaintext is written, but on an error `output` may have received the
/// chunks before the bad one: write to a temporary file when that matters
/// (as [`decrypt_file`] does).
pub fn decrypt_stream(
    kms: &dyn Kms,
    opts: &DecryptOptions,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<EnvelopeInfo> {
    let parsed = ParsedHeader::read_from(input)?;
    let (key, slot) = unwrap_data_key(kms, opts, &parsed)?;
    let mut out = BufWriter::with_capacity(IO_BUFFER, output);
    let n = crate::stream::decrypt(&key, &parsed.header, input, &mut out)?;
    out.flush().map_err(EnvelopeError::Io)?;
    Ok(EnvelopeInfo {
        file_id: parsed.header.file_id().hyphenated().to_string(),
        key_arn: slot.key_arn,
        key_version: slot.key_version,
        plaintext_bytes: n,
    })
}

/// Where a file operation writes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// Replace the input (atomically).
    InPlace,
    /// Write this path (atomically replacing it if it exists).
    To(&'a Path),
}

/// Encrypts the file `input` (crash-safe, see the module docs).
pub fn encrypt_file(
    kms: &dyn Kms,
    opts: &EncryptOptions,
    input: &Path,
    output: Output<'_>,
) -> Result<EnvelopeInfo> {
    transform_file(input, output, |src, out| {
        encrypt_stream(kms, opts, src, out)
    })
}

/// Decrypts the envelope file `input` (crash-safe: nothing is left at the
/// destination unless the whole envelope authenticated).
pub fn decrypt_file(
    kms: &dyn Kms,
    opts: &DecryptOptions,
    input: &Path,
    output: Output<'_>,
) -> Result<EnvelopeInfo> {
    transform_file(input, output, |src, out| {
        decrypt_stream(kms, opts, src, out)
    })
}

/// Opens a file to be replaced in place. The new file is renamed over the
/// name given, so a symbolic link would be replaced while its target keeps
/// the old bytes, and another hard link would keep them too: both are
/// refused (`O_NOFOLLOW`, then the link count of the opened file).
fn open_in_place(input: &Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(input)
        .map_err(|e| {
            if fs::symlink_metadata(input).is_ok_and(|m| m.file_type().is_symlink()) {
                FileError::Usage(format!(
                    "{}: is a symbolic link; in place, the link would be replaced and its \
                     target left as it is (name the target instead)",
                    input.display()
                ))
            } else {
                FileError::io(input, e)
            }
        })?;
    let links = file
        .metadata()
        .map_err(|e| FileError::io(input, e))?
        .nlink();
    if links > 1 {
        return Err(FileError::Usage(format!(
            "{}: has {links} hard links; in place, the other names would keep the old bytes",
            input.display()
        )));
    }
    Ok(file)
}

/// Opens a file the tree walker handed out, as it is now. It may have been
/// swapped since the walk saw it, so it is opened without blocking (a FIFO's
/// plain open would wait for a writer for ever), without following a link
/// unless `follow_links` (a link swapped in would pull a file from outside
/// the tree into the output), and kept only if it is still a regular file.
/// In place, other hard links are refused as by [`open_in_place`].
pub(crate) fn open_walked(path: &Path, follow_links: bool, in_place: bool) -> Result<File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut flags = OFlags::NONBLOCK;
    if in_place || !follow_links {
        flags |= OFlags::NOFOLLOW;
    }
    let changed = |what: &str| {
        FileError::Changed(format!(
            "{}: {what} (replaced while the tree was walked); left alone",
            path.display()
        ))
    };
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            // Asked to follow links but in place: the link itself would be
            // replaced, as `open_in_place` explains.
            return Err(if follow_links {
                open_in_place(path)
                    .err()
                    .unwrap_or_else(|| changed("is a symbolic link now"))
            } else {
                changed("is a symbolic link now")
            });
        }
        Err(e) => return Err(FileError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| FileError::io(path, e))?;
    if !meta.is_file() {
        return Err(changed("is not a regular file now"));
    }
    if in_place && meta.nlink() > 1 {
        return Err(FileError::Usage(format!(
            "{}: has {} hard links; in place, the other names would keep the old bytes",
            path.display(),
            meta.nlink()
        )));
    }
    Ok(file)
}

/// Streams `input` through `transform` into `output` (or back over `input`)
/// crash-safely, keeping the input's permissions.
fn transform_file(
    input: &Path,
    output: Output<'_>,
    transform: impl FnOnce(&mut File, &mut dyn Write) -> Result<EnvelopeInfo>,
) -> Result<EnvelopeInfo> {
    let dest = match output {
        Output::InPlace => input,
        Output::To(p) => p,
    };
    let mut src = if matches!(output, Output::InPlace) {
        open_in_place(input)?
    } else {
        File::open(input).map_err(|e| FileError::io(input, e))?
    };
    let perms = src.metadata().map(|m| m.permissions()).ok();
    write_atomically(dest, perms, |out| transform(&mut src, out))
}

/// Runs `fill` on a temporary file next to `dest`; on success fsyncs it,
/// renames it to `dest` and fsyncs the folder. On failure the temporary file
/// is removed and `dest` is untouched.
pub fn write_atomically<T>(
    dest: &Path,
    perms: Option<fs::Permissions>,
    fill: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| FileError::io(dir, e))?;
    let value = fill(tmp.as_file_mut())?;
    if let Some(p) = perms {
        tmp.as_file()
            .set_permissions(p)
            .map_err(|e| FileError::io(tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| FileError::io(tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| FileError::io(dest, e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::io(dir, e))?;
    Ok(value)
}

/// A file encrypted or decrypted into a temporary file beside its
/// destination, neither durable nor in place yet: [`commit_staged`] makes a
/// batch of them durable with one `syncfs` and renames each into place (the
/// group commit of tree encryption and decryption). Dropped uncommitted,
/// the temporary file is removed and the destination never changed.
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    dev: u64,
    /// Plaintext bytes (for batch sizing).
    pub(crate) bytes: u64,
}

impl Staged {
    /// Where the file goes at the commit.
    pub(crate) fn destination(&self) -> &Path {
        &self.dest
    }
}

/// [`encrypt_file`], staged for a group commit.
pub(crate) fn encrypt_staged(
    kms: &dyn Kms,
    opts: &EncryptOptions,
    input: &Path,
    src: File,
    output: Output<'_>,
) -> Result<Staged> {
    stage_file(input, src, output, |src, out| {
        encrypt_stream(kms, opts, src, out)
    })
}

/// [`decrypt_file`], staged for a group commit.
pub(crate) fn decrypt_staged(
    kms: &dyn Kms,
    opts: &DecryptOptions,
    input: &Path,
    src: File,
    output: Output<'_>,
) -> Result<Staged> {
    stage_file(input, src, output, |src, out| {
        decrypt_stream(kms, opts, src, out)
    })
}

/// [`transform_file`] up to the temporary file, from `src` (`input` as
/// [`open_walked`] opened it): written, with the input's permissions, not
/// synced, not renamed.
fn stage_file(
    input: &Path,
    mut src: File,
    output: Output<'_>,
    transform: impl FnOnce(&mut File, &mut dyn Write) -> Result<EnvelopeInfo>,
) -> Result<Staged> {
    use std::os::unix::fs::MetadataExt;
    let dest = match output {
        Output::InPlace => input,
        Output::To(p) => p,
    };
    let perms = src.metadata().map(|m| m.permissions()).ok();
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| FileError::io(dir, e))?;
    let info = transform(&mut src, tmp.as_file_mut())?;
    if let Some(p) = perms {
        tmp.as_file()
            .set_permissions(p)
            .map_err(|e| FileError::io(tmp.path(), e))?;
    }
    let dev = tmp
        .as_file()
        .metadata()
        .map_err(|e| FileError::io(tmp.path(), e))?
        .dev();
    Ok(Staged {
        tmp,
        dest: dest.to_path_buf(),
        dev,
        bytes: info.plaintext_bytes,
    })
}

/// The group commit of staged files: their data made durable (one
/// `syncfs` per file system, else one `fsync` per file), then each renamed
/// over its destination, then the renames made durable (`syncfs` again,
/// else one `fsync` per folder). A crash at any moment leaves each
/// destination as it was or complete. Returns each destination with its
/// outcome.
pub(crate) fn commit_staged(batch: Vec<Staged>) -> Vec<(PathBuf, Result<()>)> {
    if batch.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut durable = Vec::with_capacity(batch.len());
    let synced = sync_file_systems(batch.iter().map(|s| (s.dev, s.tmp.as_file())));
    for s in batch {
        let r = if synced {
            Ok(())
        } else {
            s.tmp.as_file().sync_all()
        };
        match r {
            Ok(()) => durable.push(s),
            Err(e) => out.push((s.dest.clone(), Err(FileError::io(s.tmp.path(), e)))),
        }
    }
    let mut renamed: Vec<(u64, PathBuf, File)> = Vec::with_capacity(durable.len());
    for s in durable {
        let (dev, dest) = (s.dev, s.dest);
        match s.tmp.persist(&dest) {
            Ok(file) => renamed.push((dev, dest, file)),
            Err(e) => out.push((dest.clone(), Err(FileError::io(&dest, e.error)))),
        }
    }
    let names_synced = sync_file_systems(renamed.iter().map(|(d, _, f)| (*d, f)));
    let mut folders: Vec<PathBuf> = Vec::new();
    for (_, dest, _) in renamed {
        let r = if names_synced {
            Ok(())
        } else {
            let dir = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if folders.contains(&dir) {
                Ok(())
            } else {
                let r = File::open(&dir).and_then(|d| d.sync_all());
                folders.push(dir.clone());
                r.map_err(|e| FileError::io(&dir, e))
            }
        };
        out.push((dest, r));
    }
    out
}

/// One `syncfs` per file system of `files`; false if one failed (the
/// caller then syncs file by file).
fn sync_file_systems<'a>(files: impl Iterator<Item = (u64, &'a File)>) -> bool {
    let mut done: Vec<u64> = Vec::new();
    for (dev, f) in files {
        if done.contains(&dev) {
            continue;
        }
        if rustix::fs::syncfs(f).is_err() {
            return false;
        }
        done.push(dev);
    }
    true
}

/// True when the file at `path` starts with the envelope magic.
pub fn is_envelope(path: &Path) -> std::io::Result<bool> {
    is_envelope_file(&mut File::open(path)?)
}

/// Whether the open `file` starts with the envelope magic; reads from and
/// leaves the file at its start.
pub(crate) fn is_envelope_file(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut magic = [0u8; 8];
    let n = crate::envelope::read_full(file, &mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == magic.len() && magic == MAGIC)
}
