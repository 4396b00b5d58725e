//! The envelope file header and its two key slots: one codec, strict parsing.
//!
//! An envelope is a header followed by a STREAM-encrypted body (see
//! [`crate::stream`]). The header has an immutable part, bound as additional
//! authenticated data into every body chunk, and two fixed-size key slots that
//! are *not* bound, so a slot can be rewritten (re-wrapped under another key)
//! without touching the body. `docs/FORMAT.md` is the prose version of this
//! layout; `tests/vectors/envelope/` holds test vectors.
//!
//! All integers are big-endian.
//!
//! ```text
//! immutable part (H = 80 + C bytes)
//!   0   8  magic            89 52 57 50 0D 0A 1A 0A  ("\x89RWP\r\n\x1a\n")
//!   8   2  format version   1
//!  10   2  algorithm suite  1 = AES-256-GCM STREAM, 32-byte data key
//!  12   4  chunk size       plaintext bytes per body chunk, 64 ..= 16 MiB
//!                           (checked at parse: ChunkSizeOutOfRange; it bounds
//!                           the reader's memory and, with the one-pass
//!                           reader of [`crate::stream`], its work)
//!  16  16  file id          random (UUID v4 bytes)
//!  32   7  nonce prefix     random, first 7 bytes of every chunk nonce
//!  39   1  reserved         0
//!  40   4  slot size        1024
//!  44   4  C                length of the context encoding, <= 8192
//!  48   C  user context     u16 count, then per pair: u16 len, key, u16 len,
//!                           value (UTF-8, keys strictly ascending, non-empty,
//!                           not starting with "rewrap:")
//!  48+C 32 header checksum  SHA-256 of bytes [0, 48+C)
//! key slots
//!   H       1024  slot 0
//!   H+1024  1024  slot 1
//! body
//!   H+2048  ...   STREAM chunks, then an 8-byte end record
//! ```
//!
//! A key slot (1024 bytes; all zero = empty / wiped):
//!
//! ```text
//!   0   4  slot magic       how the data key is wrapped ([`SlotWrapping`]):
//!                           "SLOT" a KMS ciphertext blob (symmetric key,
//!                                  the envelope's context);
//!                           "OAP1" / "OAP2" RSAES_OAEP_SHA_1 / _SHA_256
//!                                  under the public key of the RSA key the
//!                                  ARN names, made offline, no context
//!   4   8  sequence number  >= 1; the valid slot with the highest one is active
//!  12   8  wrap time        seconds since the Unix epoch
//!  20   4  key version      key-material version of the wrapping key, 0 = unknown
//!  24   2  A                length of the key ARN, 1 ..= 512
//!  26   2  W                length of the wrapped data key, 1 ..= 964 - A
//!  28   A  key ARN          as the KMS returned it (KeyId of the response)
//!  28+A W  wrapped data key a KMS ciphertext blob
//!  ...     zero padding up to byte 992
//! 992  32  slot checksum    SHA-256 of bytes [0, 992)
//! ```
//!
//! The data key is wrapped with the encryption context returned by
//! [`Header::kms_context`]: the user pairs plus `rewrap:file-id`, so a slot
//! copied from another envelope is refused by the KMS. An "OAP1"/"OAP2"
//! slot (an application wrapped the data key offline with a downloaded
//! public key, [`crate::files::encrypt_stream_offline`]) carries no context,
//! as RSA-OAEP under KMS takes none; the rotator re-wraps it under a
//! symmetric key, with the context, into an ordinary "SLOT" slot.

use crate::api::EncryptionContext;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The 8 magic bytes every envelope starts with.
pub const MAGIC: [u8; 8] = *b"\x89RWP\r\n\x1a\n";
/// The only format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Algorithm suite 1: AES-256-GCM in the STREAM construction, 32-byte data key.
pub const SUITE_AES256GCM_STREAM: u16 = 1;
/// Size of one key slot in bytes.
pub const SLOT_SIZE: usize = 1024;
/// Default plaintext bytes per body chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 64;
/// Largest chunk size accepted, when writing and when parsing a header
/// ([`EnvelopeError::ChunkSizeOutOfRange`]). With it the reader's memory is
/// bounded (a few batches of at most 4 MiB, or one chunk) and its work is
/// linear in the body's size plus a constant number of chunks (see
/// [`crate::stream`]).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Largest encoding of the user context.
pub const MAX_CONTEXT_LEN: usize = 8192;
/// Length of the fixed part of the header, before the user context.
pub const FIXED_LEN: usize = 48;
/// Length of the nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// The encryption-context key that carries the file id.
pub const FILE_ID_CONTEXT_KEY: &str = "rewrap:file-id";
/// Byte length of the largest possible header (immutable part and slots).
pub const MAX_HEADER_LEN: usize = FIXED_LEN + MAX_CONTEXT_LEN + 32 + 2 * SLOT_SIZE;

const SLOT_MAGIC: [u8; 4] = *b"SLOT";
const SLOT_MAGIC_OAEP_SHA_1: [u8; 4] = *b"OAP1";
const SLOT_MAGIC_OAEP_SHA_256: [u8; 4] = *b"OAP2";

/// How a slot's data key is wrapped; the slot magic says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotWrapping {
    /// A KMS ciphertext blob under a symmetric key, with the envelope's
    /// encryption context (magic "SLOT").
    #[default]
    Kms,
    /// `RSAES_OAEP_SHA_1` under the public key of the RSA key the slot
    /// names, made offline (magic "OAP1").
    RsaOaepSha1,
    /// `RSAES_OAEP_SHA_256`, likewise (magic "OAP2").
    RsaOaepSha256,
}

impl SlotWrapping {
    fn magic(self) -> [u8; 4] {
        match self {
            SlotWrapping::Kms => SLOT_MAGIC,
            SlotWrapping::RsaOaepSha1 => SLOT_MAGIC_OAEP_SHA_1,
            SlotWrapping::RsaOaepSha256 => SLOT_MAGIC_OAEP_SHA_256,
        }
    }

    fn from_magic(magic: &[u8]) -> Option<SlotWrapping> {
        [
            SlotWrapping::Kms,
            SlotWrapping::RsaOaepSha1,
            SlotWrapping::RsaOaepSha256,
        ]
        .into_iter()
        .find(|w| w.magic() == magic)
    }

    /// The KMS `EncryptionAlgorithm` of an offline RSA wrap; `None` for a
    /// KMS ciphertext blob.
    pub fn rsa_algorithm(self) -> Option<&'static str> {
        match self {
            SlotWrapping::Kms => None,
            SlotWrapping::RsaOaepSha1 => Some("RSAES_OAEP_SHA_1"),
            SlotWrapping::RsaOaepSha256 => Some("RSAES_OAEP_SHA_256"),
        }
    }

    /// The offline RSA wrap an `EncryptionAlgorithm` names.
    pub fn from_rsa_algorithm(name: &str) -> Option<SlotWrapping> {
        [SlotWrapping::RsaOaepSha1, SlotWrapping::RsaOaepSha256]
            .into_iter()
            .find(|w| w.rsa_algorithm() == Some(name))
    }
}
const SLOT_FIXED: usize = 28;
const SLOT_BODY: usize = SLOT_SIZE - 32;
const MAX_ARN_LEN: usize = 512;

/// Everything that can be wrong with an envelope or its body. Messages never
/// contain key or plaintext bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input does not start with the envelope magic.
    #[error("not a rewrap envelope (bad magic)")]
    NotEnvelope,
    /// The format version is not one this code reads.
    #[error("unsupported envelope format version {0}")]
    UnsupportedVersion(u16),
    /// The algorithm suite is not one this code knows.
    #[error("unsupported algorithm suite {0}")]
    UnsupportedSuite(u16),
    /// The header ends before its declared length.
    #[error("truncated: header incomplete")]
    TruncatedHeader,
    /// A header field is malformed; the text says which.
    #[error("corrupt header: {0}")]
    CorruptHeader(&'static str),
    /// The header declares a chunk size outside
    /// [`MIN_CHUNK_SIZE`] ..= [`MAX_CHUNK_SIZE`]; refused before any body
    /// byte is read, since the chunk size sets the reader's memory and work.
    #[error("chunk size {0} out of range ({MIN_CHUNK_SIZE} ..= {MAX_CHUNK_SIZE})")]
    ChunkSizeOutOfRange(u32),
    /// A body chunk did not authenticate (tampered, reordered, swapped, or
    /// decrypted with the wrong data key).
    #[error("chunk {0} failed authentication")]
    ChunkAuth(u64),
    /// The body ends before its final chunk.
    #[error("truncated: final chunk missing")]
    Truncated,
    /// Bytes follow the final chunk.
    #[error("trailing data after final chunk")]
    TrailingData,
    /// The body has more chunks than the nonce counter can number.
    #[error("too many chunks for one envelope")]
    TooManyChunks,
    /// A user-supplied encryption context is not acceptable.
    #[error("invalid encryption context: {0}")]
    InvalidContext(String),
    /// A parameter (chunk size, ...) is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The active key slot names one key, but its wrapped data key (a rewrap
    /// ciphertext blob, which names the key that made it) is under another
    /// key or version: the slot's unauthenticated label was changed.
    #[error("key slot {0}: the slot's key label was changed")]
    SlotKeyMismatch(Box<str>),
    /// The wrapped key and key ARN do not fit in a slot.
    #[error("wrapped key too large for a key slot ({0} bytes of ARN and blob)")]
    SlotOverflow(usize),
    /// Reading or writing the underlying stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl EnvelopeError {
    /// The variant's name, stable for reports and tests (e.g. `ChunkAuth`).
    pub fn kind(&self) -> &'static str {
        match self {
            EnvelopeError::NotEnvelope => "NotEnvelope",
            EnvelopeError::UnsupportedVersion(_) => "UnsupportedVersion",
            EnvelopeError::UnsupportedSuite(_) => "UnsupportedSuite",
            EnvelopeError::TruncatedHeader => "TruncatedHeader",
            EnvelopeError::CorruptHeader(_) => "CorruptHeader",
            EnvelopeError::ChunkSizeOutOfRange(_) => "ChunkSizeOutOfRange",
            EnvelopeError::ChunkAuth(_) => "ChunkAuth",
            EnvelopeError::Truncated => "Truncated",
            EnvelopeError::TrailingData => "TrailingData",
            EnvelopeError::TooManyChunks => "TooManyChunks",
            EnvelopeError::InvalidContext(_) => "InvalidContext",
            EnvelopeError::InvalidParameter(_) => "InvalidParameter",
            EnvelopeError::SlotOverflow(_) => "SlotOverflow",
            EnvelopeError::SlotKeyMismatch(_) => "SlotKeyMismatch",
            EnvelopeError::Io(_) => "Io",
        }
    }
}

/// The immutable part of an envelope header.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    chunk_size: u32,
    file_id: Uuid,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    context: EncryptionContext,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("chunk_size", &self.chunk_size)
            .field("file_id", &self.file_id)
            .field("context", &self.context)
            .finish()
    }
}

impl Header {
    /// A fresh header with a random file id and nonce prefix.
    pub fn new(chunk_size: u32, context: EncryptionContext) -> Result<Header, EnvelopeError> {
        use rand::RngCore;
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        Header::with_ids(chunk_size, Uuid::new_v4(), prefix, context)
    }

    /// A header with the given file id and nonce prefix (for test vectors).
    pub fn with_ids(
        chunk_size: u32,
        file_id: Uuid,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        context: EncryptionContext,
    ) -> Result<Header, EnvelopeError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(EnvelopeError::InvalidParameter(format!(
                "chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
            )));
        }
        validate_context(&context)?;
        let ctx = encode_context(&context)?;
        let mut out = Vec::with_capacity(FIXED_LEN + ctx.len() + 32);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&SUITE_AES256GCM_STREAM.to_be_bytes());
        out.extend_from_slice(&chunk_size.to_be_bytes());
        out.extend_from_slice(file_id.as_bytes());
        out.extend_from_slice(&nonce_prefix);
        out.push(0);
        out.extend_from_slice(&(SLOT_SIZE as u32).to_be_bytes());
        out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
        out.extend_from_slice(&ctx);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(Header {
            chunk_size,
            file_id,
            nonce_prefix,
            context,
            encoded: out,
        })
    }

    /// Parses the immutable part from the start of `bytes`. Trailing bytes
    /// (slots, body) are left alone; [`Header::len`] says where they start.
    pub fn parse(bytes: &[u8]) -> Result<Header, EnvelopeError> {
        let need = Header::encoded_len_from_prefix(bytes)?;
        if bytes.len() < need {
            return Err(EnvelopeError::TruncatedHeader);
        }
        let bytes = &bytes[..need];
        let ctx_end = need - 32;
        if Sha256::digest(&bytes[..ctx_end]).as_slice() != &bytes[ctx_end..] {
            return Err(EnvelopeError::CorruptHeader("header checksum mismatch"));
        }
        let chunk_size = be_u32(&bytes[12..16]);
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(EnvelopeError::ChunkSizeOutOfRange(chunk_size));
        }
        if bytes[39] != 0 {
            return Err(EnvelopeError::CorruptHeader("reserved byte is not zero"));
        }
        if be_u32(&bytes[40..44]) as usize != SLOT_SIZE {
            return Err(EnvelopeError::CorruptHeader("unsupported slot size"));
        }
        let file_id = Uuid::from_slice(&bytes[16..32])
            .map_err(|_| EnvelopeError::CorruptHeader("file id"))?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&bytes[32..39]);
        let context = decode_context(&bytes[FIXED_LEN..ctx_end])?;
        Ok(Header {
            chunk_size,
            file_id,
            nonce_prefix,
            context,
            encoded: bytes.to_vec(),
        })
    }

    /// From the first [`FIXED_LEN`] bytes, the length of the immutable part.
    /// Checks magic, version and suite; says `TruncatedHeader` if too short.
    pub fn encoded_len_from_prefix(bytes: &[u8]) -> Result<usize, EnvelopeError> {
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] || bytes.is_empty() {
            return Err(EnvelopeError::NotEnvelope);
        }
        if bytes.len() < FIXED_LEN {
            return Err(EnvelopeError::TruncatedHeader);
        }
        let version = be_u16(&bytes[8..10]);
        if version != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let suite = be_u16(&bytes[10..12]);
        if suite != SUITE_AES256GCM_STREAM {
            return Err(EnvelopeError::UnsupportedSuite(suite));
        }
        let ctx_len = be_u32(&bytes[44..48]) as usize;
        if !(2..=MAX_CONTEXT_LEN).contains(&ctx_len) {
            return Err(EnvelopeError::CorruptHeader("context length out of range"));
        }
        Ok(FIXED_LEN + ctx_len + 32)
    }

    /// The encoded immutable part: the body's additional authenticated data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Length of the immutable part; slot 0 starts here.
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    /// Always false: a header is never empty. (Clippy wants it next to `len`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Byte offset of slot `index` (0 or 1) in the file.
    pub fn slot_offset(&self, index: usize) -> u64 {
        (self.len() + index * SLOT_SIZE) as u64
    }

    /// Byte offset of the body in the file.
    pub fn body_offset(&self) -> u64 {
        (self.len() + 2 * SLOT_SIZE) as u64
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The random id of this file.
    pub fn file_id(&self) -> Uuid {
        self.file_id
    }

    /// The per-file nonce prefix.
    pub fn nonce_prefix(&self) -> [u8; NONCE_PREFIX_LEN] {
        self.nonce_prefix
    }

    /// The user's encryption-context pairs.
    pub fn user_context(&self) -> &EncryptionContext {
        &self.context
    }

    /// The encryption context the data key is wrapped with: the user pairs
    /// plus `rewrap:file-id`.
    pub fn kms_context(&self) -> EncryptionContext {
        let mut ctx = self.context.clone();
        ctx.insert(
            FILE_ID_CONTEXT_KEY.to_string(),
            self.file_id.hyphenated().to_string(),
        );
        ctx
    }
}

/// One key slot's content: a wrapped data key and what wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    /// Sequence number, at least 1; the valid slot with the highest wins.
    pub sequence: u64,
    /// When the data key was wrapped, seconds since the Unix epoch.
    pub wrapped_at: i64,
    /// Key-material version of the wrapping key, 0 when unknown.
    pub key_version: u32,
    /// ARN of the wrapping key, as the KMS returned it.
    pub key_arn: String,
    /// The KMS ciphertext blob of the data key (an RSA-OAEP ciphertext
    /// when `wrapping` says so).
    pub wrapped_key: Vec<u8>,
    /// How `wrapped_key` was made.
    pub wrapping: SlotWrapping,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("sequence", &self.sequence)
            .field("wrapped_at", &self.wrapped_at)
            .field("key_version", &self.key_version)
            .field("key_arn", &self.key_arn)
            .field(
                "wrapped_key",
                &format_args!("{} bytes", self.wrapped_key.len()),
            )
            .field("wrapping", &self.wrapping)
            .finish()
    }
}

/// What one slot's bytes turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// All zero: never written, or wiped after a rotation.
    Empty,
    /// Checksum and fields are valid.
    Valid(Slot),
    /// Torn or corrupt; ignored when the other slot is valid.
    Corrupt,
}

/// The bytes of a wiped slot.
pub const EMPTY_SLOT: [u8; SLOT_SIZE] = [0u8; SLOT_SIZE];

impl Slot {
    /// Encodes the slot into its fixed-size form.
    pub fn encode(&self) -> Result<[u8; SLOT_SIZE], EnvelopeError> {
        let (a, w) = (self.key_arn.len(), self.wrapped_key.len());
        if a == 0 || a > MAX_ARN_LEN || w == 0 || SLOT_FIXED + a + w > SLOT_BODY {
            return Err(EnvelopeError::SlotOverflow(a + w));
        }
        if self.sequence == 0 {
            return Err(EnvelopeError::InvalidParameter(
                "slot sequence must be at least 1".into(),
            ));
        }
        let mut out = [0u8; SLOT_SIZE];
        out[0..4].copy_from_slice(&self.wrapping.magic());
        out[4..12].copy_from_slice(&self.sequence.to_be_bytes());
        out[12..20].copy_from_slice(&self.wrapped_at.to_be_bytes());
        out[20..24].copy_from_slice(&self.key_version.to_be_bytes());
        out[24..26].copy_from_slice(&(a as u16).to_be_bytes());
        out[26..28].copy_from_slice(&(w as u16).to_be_bytes());
        out[SLOT_FIXED..SLOT_FIXED + a].copy_from_slice(self.key_arn.as_bytes());
        out[SLOT_FIXED + a..SLOT_FIXED + a + w].copy_from_slice(&self.wrapped_key);
        let sum = Sha256::digest(&out[..SLOT_BODY]);
        out[SLOT_BODY..].copy_from_slice(&sum);
        Ok(out)
    }

    /// Decodes one slot. Never fails: a bad slot is [`SlotState::Corrupt`].
    pub fn decode(bytes: &[u8]) -> SlotState {
        if bytes.len() != SLOT_SIZE {
            return SlotState::Corrupt;
        }
        if bytes.iter().all(|&b| b == 0) {
            return SlotState::Empty;
        }
        match Slot::decode_strict(bytes) {
            Some(slot) => SlotState::Valid(slot),
            None => SlotState::Corrupt,
        }
    }

    fn decode_strict(bytes: &[u8]) -> Option<Slot> {
        let wrapping = SlotWrapping::from_magic(&bytes[0..4])?;
        if Sha256::digest(&bytes[..SLOT_BODY]).as_slice() != &bytes[SLOT_BODY..] {
            return None;
        }
        let sequence = u64::from_be_bytes(bytes[4..12].try_into().ok()?);
        let wrapped_at = i64::from_be_bytes(bytes[12..20].try_into().ok()?);
        let key_version = be_u32(&bytes[20..24]);
        let a = be_u16(&bytes[24..26]) as usize;
        let w = be_u16(&bytes[26..28]) as usize;
        if sequence == 0 || a == 0 || a > MAX_ARN_LEN || w == 0 || SLOT_FIXED + a + w > SLOT_BODY {
            return None;
        }
        if bytes[SLOT_FIXED + a + w..SLOT_BODY].iter().any(|&b| b != 0) {
            return None;
        }
        let key_arn = std::str::from_utf8(&bytes[SLOT_FIXED..SLOT_FIXED + a])
            .ok()?
            .to_string();
        let wrapped_key = bytes[SLOT_FIXED + a..SLOT_FIXED + a + w].to_vec();
        Some(Slot {
            sequence,
            wrapped_at,
            key_version,
            key_arn,
            wrapped_key,
            wrapping,
        })
    }
}

impl Slot {
    /// Checks the slot's key ARN and version against the key id and version
    /// its wrapped key names, when the wrapped key is a rewrap ciphertext
    /// blob (another KMS's blob names its key in a form rewrap cannot read,
    /// and is not checked). On a mismatch, returns what the blob names.
    pub fn check_label(&self) -> Result<(), (Uuid, u32)> {
        if self.wrapping != SlotWrapping::Kms {
            return Ok(());
        }
        let Some(blob) = crate::ciphertext_blob::peek(&self.wrapped_key) else {
            return Ok(());
        };
        let labelled_id = self
            .key_arn
            .rsplit_once(":key/")
            .and_then(|(_, id)| Uuid::parse_str(id).ok());
        let version_ok = self.key_version == 0 || self.key_version == blob.key_version;
        if labelled_id == Some(blob.key_id) && version_ok {
            Ok(())
        } else {
            Err((blob.key_id, blob.key_version))
        }
    }
}

/// The two slots of an envelope, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots(pub [SlotState; 2]);

impl Slots {
    /// Decodes both slots from `2 * SLOT_SIZE` bytes.
    pub fn decode(bytes: &[u8]) -> Result<Slots, EnvelopeError> {
        if bytes.len() < 2 * SLOT_SIZE {
            return Err(EnvelopeError::TruncatedHeader);
        }
        Ok(Slots([
            Slot::decode(&bytes[..SLOT_SIZE]),
            Slot::decode(&bytes[SLOT_SIZE..2 * SLOT_SIZE]),
        ]))
    }

    /// The active slot: the valid one with the highest sequence number.
    ///
    /// The slot's key ARN and version are not authenticated, but a rewrap
    /// ciphertext blob names its key: an active slot whose label disagrees
    /// with its wrapped key is [`EnvelopeError::SlotKeyMismatch`], so
    /// rotation, inventory and decryption all treat it as corrupt rather
    /// than trust the label.
    pub fn active(&self) -> Result<(usize, &Slot), EnvelopeError> {
        let (index, slot) = self.highest()?;
        slot.check_label().map_err(|(actual, version)| {
            EnvelopeError::SlotKeyMismatch(
                format!(
                    "{index} says {} version {} but its wrapped key is under key {actual} version {version}",
                    slot.key_arn, slot.key_version
                )
                .into(),
            )
        })?;
        Ok((index, slot))
    }

    fn highest(&self) -> Result<(usize, &Slot), EnvelopeError> {
        match (&self.0[0], &self.0[1]) {
            (SlotState::Valid(a), SlotState::Valid(b)) => match a.sequence.cmp(&b.sequence) {
                std::cmp::Ordering::Equal => Err(EnvelopeError::CorruptHeader(
                    "both key slots have the same sequence number",
                )),
                std::cmp::Ordering::Greater => Ok((0, a)),
                std::cmp::Ordering::Less => Ok((1, b)),
            },
            (SlotState::Valid(a), _) => Ok((0, a)),
            (_, SlotState::Valid(b)) => Ok((1, b)),
            (SlotState::Empty, SlotState::Empty) => {
                Err(EnvelopeError::CorruptHeader("no key slot is in use"))
            }
            _ => Err(EnvelopeError::CorruptHeader("both key slots invalid")),
        }
    }
}

/// A parsed header and its slots.
#[derive(Debug, Clone)]
pub struct ParsedHeader {
    /// The immutable part.
    pub header: Header,
    /// Both key slots.
    pub slots: Slots,
}

impl ParsedHeader {
    /// Parses header and slots from a prefix of an envelope.
    pub fn parse(bytes: &[u8]) -> Result<ParsedHeader, EnvelopeError> {
        let header = Header::parse(bytes)?;
        let slots = Slots::decode(&bytes[header.len()..])?;
        Ok(ParsedHeader { header, slots })
    }

    /// Reads header and slots from a stream, leaving it at the body.
    pub fn read_from<R: std::io::Read + ?Sized>(r: &mut R) -> Result<ParsedHeader, EnvelopeError> {
        let mut buf = vec![0u8; FIXED_LEN];
        let n = read_full(r, &mut buf)?;
        let need = Header::encoded_len_from_prefix(&buf[..n])?;
        buf.resize(need + 2 * SLOT_SIZE, 0);
        let got = read_full(r, &mut buf[FIXED_LEN..])?;
        if FIXED_LEN + got < buf.len() {
            // Check what we have first: a bad checksum is a better message.
            if FIXED_LEN + got >= need {
                Header::parse(&buf[..need])?;
            }
            return Err(EnvelopeError::TruncatedHeader);
        }
        ParsedHeader::parse(&buf)
    }

    /// Byte length of the immutable part and both slots.
    pub fn total_len(&self) -> usize {
        self.header.len() + 2 * SLOT_SIZE
    }
}

/// Fills `buf` from `r` until it is full or the stream ends; returns the count.
pub fn read_full<R: std::io::Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks a user context: non-empty keys, no reserved `rewrap:` prefix.
pub fn validate_context(ctx: &EncryptionContext) -> Result<(), EnvelopeError> {
    for k in ctx.keys() {
        if k.is_empty() {
            return Err(EnvelopeError::InvalidContext("empty key".into()));
        }
        if k.starts_with("rewrap:") {
            return Err(EnvelopeError::InvalidContext(format!(
                "key {k:?} uses the reserved prefix \"rewrap:\""
            )));
        }
    }
    Ok(())
}

fn encode_context(ctx: &EncryptionContext) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
    for (k, v) in ctx {
        for s in [k, v] {
            let len = u16::try_from(s.len())
                .map_err(|_| EnvelopeError::InvalidContext("a key or value is too long".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    if out.len() > MAX_CONTEXT_LEN || ctx.len() > u16::MAX as usize {
        return Err(EnvelopeError::InvalidContext(format!(
            "encoded context is larger than {MAX_CONTEXT_LEN} bytes"
        )));
    }
    Ok(out)
}

fn decode_context(bytes: &[u8]) -> Result<EncryptionContext, EnvelopeError> {
    const BAD: EnvelopeError = EnvelopeError::CorruptHeader("malformed encryption context");
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], EnvelopeError> {
        let s = bytes.get(pos..pos + n).ok_or(BAD)?;
        pos += n;
        Ok(s)
    };
    let count = be_u16(take(2)?);
    let mut ctx = EncryptionContext::new();
    let mut last: Option<String> = None;
    for _ in 0..count {
        let klen = be_u16(take(2)?) as usize;
        let k = std::str::from_utf8(take(klen)?)
            .map_err(|_| BAD)?
            .to_string();
        let vlen = be_u16(take(2)?) as usize;
        let v = std::str::from_utf8(take(vlen)?)
            .map_err(|_| BAD)?
            .to_string();
        if k.is_empty() || k.starts_with("rewrap:") || last.as_ref().is_some_and(|l| *l >= k) {
            return Err(BAD);
        }
        last = Some(k.clone());
        ctx.insert(k, v);
    }
    if pos != bytes.len() {
        return Err(BAD);
    }
    Ok(ctx)
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests;
