//! The ciphertext blob codec: what Encrypt, GenerateDataKey and ReEncrypt
//! return and what Decrypt takes.
//!
//! A blob names its key and key-material version, so Decrypt needs no key id.
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 0x01
//! 1       1     flags, 0x00 (reserved; any other value is rejected)
//! 2       16    key id (UUID, big-endian bytes)
//! 18      4     key-material version (u32, big-endian, >= 1)
//! 22      12    AES-GCM nonce (random)
//! 34      n     AES-256-GCM ciphertext of the n-byte plaintext
//! 34+n    16    AES-GCM tag
//! ```
//!
//! The additional authenticated data is the 34 header bytes followed by the
//! canonical encoding of the encryption context (see [`canonical_context`]),
//! so the key id, the version and the context cannot be changed without the
//! tag failing. A blob is at most [`MAX_BLOB`] bytes; parsing is strict and
//! every malformed input is `InvalidCiphertextException`.
//!
//! # Keys in a custom key store (HSM)
//! A key whose material a PKCS#11 token holds ([`crate::hsm`]) makes blobs
//! of the same layout, flags `0x00`: the token computes the same
//! AES-256-GCM (`CKM_AES_GCM`, the 12-byte nonce above as its IV, the same
//! additional authenticated data, a 128-bit tag appended to the
//! ciphertext), through [`seal_external`] and [`open_external`]. The blob
//! says which store and object open it through its key id and version: the
//! key's record names its custom key store, and the token object is the
//! one labelled `rewrap/<key id>/v<version>` ([`crate::hsm::key_label`]).
//! So a blob needs no new flag, an HSM blob and a software blob cannot be
//! told apart without the keystore, and moving a key between kinds of
//! store is impossible by construction (its id names one record).
//! `tests/vectors/ciphertext_blob/07-hsm-key.json` is a blob sealed by
//! SoftHSM2 under a known key, opened here in software.

use crate::api::EncryptionContext;
use crate::error::{KmsError, Result};
use crate::secret::Secret;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use uuid::Uuid;

/// Format version byte.
pub const VERSION: u8 = 1;
/// Length of the header (authenticated, not encrypted).
pub const HEADER_LEN: usize = 34;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest blob any operation accepts, as in AWS KMS.
pub const MAX_BLOB: usize = 6144;

/// What the header of a blob says, readable without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// The CMK the blob is under.
    pub key_id: Uuid,
    /// The key-material version (1-based).
    pub key_version: u32,
}

/// Reads the header of a rewrap ciphertext blob. `None` when the bytes are
/// not a well-formed rewrap blob (for example a blob from another KMS).
pub fn peek(blob: &[u8]) -> Option<BlobHeader> {
    if blob.len() < OVERHEAD || blob.len() > MAX_BLOB || blob[0] != VERSION || blob[1] != 0 {
        return None;
    }
    let key_id = Uuid::from_slice(&blob[2..18]).ok()?;
    let key_version = u32::from_be_bytes(blob[18..22].try_into().ok()?);
    (key_version >= 1).then_some(BlobHeader {
        key_id,
        key_version,
    })
}

/// The canonical encoding of an encryption context, bound as AAD: the pair
/// count as u16, then for each pair in byte order of the key, the key length
/// (u16), key bytes, value length (u16), value bytes. An absent and an empty
/// context encode the same.
pub fn canonical_context(context: Option<&EncryptionContext>) -> Result<Vec<u8>> {
    let empty = EncryptionContext::new();
    let context = context.unwrap_or(&empty);
    let too_long = || KmsError::validation("encryption context is too large");
    let mut out = Vec::with_capacity(2 + context.len() * 16);
    let count = u16::try_from(context.len()).map_err(|_| too_long())?;
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in context {
        for part in [k, v] {
            let len = u16::try_from(part.len()).map_err(|_| too_long())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    Ok(out)
}

/// Seals `plaintext` under `key` (32 bytes of key material).
pub fn seal(
    key: &Secret,
    header: BlobHeader,
    context: Option<&EncryptionContext>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    // A fresh random nonce per blob from the thread-local CSPRNG (ChaCha,
    // seeded and periodically reseeded from the OS): no syscall per call.
    seal_with_nonce(key, header, context, plaintext, rand::random())
}

/// [`seal`] with a given nonce, for test vectors only: a nonce must never be
/// used twice with one key.
pub fn seal_with_nonce(
    key: &Secret,
    header: BlobHeader,
    context: Option<&EncryptionContext>,
    plaintext: &[u8],
    nonce: [u8; 12],
) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key.expose())
        .map_err(|_| KmsError::internal("key material has the wrong length"))?;
    let (mut out, aad) = header_and_aad(header, context, nonce, plaintext.len())?;
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[HEADER_LEN..])
        .map_err(|_| KmsError::internal("encryption failed"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The header of a blob (with room for `len` bytes of plaintext) and its
/// additional authenticated data.
fn header_and_aad(
    header: BlobHeader,
    context: Option<&EncryptionContext>,
    nonce: [u8; 12],
    len: usize,
) -> Result<(Vec<u8>, Vec<u8>)> {
    if len + OVERHEAD > MAX_BLOB {
        return Err(KmsError::validation("plaintext is too large for a blob"));
    }
    let mut out = Vec::with_capacity(len + OVERHEAD);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(header.key_id.as_bytes());
    out.extend_from_slice(&header.key_version.to_be_bytes());
    out.extend_from_slice(&nonce);
    let mut aad = out.clone();
    aad.extend_from_slice(&canonical_context(context)?);
    Ok((out, aad))
}

/// [`seal`] by a cipher outside rewrap's memory (an HSM): `encrypt` gets
/// the nonce, the additional authenticated data and the plaintext and
/// returns AES-256-GCM ciphertext || 16-byte tag.
pub fn seal_external(
    header: BlobHeader,
    context: Option<&EncryptionContext>,
    plaintext: &[u8],
    encrypt: impl FnOnce([u8; 12], &[u8], &[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let nonce: [u8; 12] = rand::random();
    let (mut out, aad) = header_and_aad(header, context, nonce, plaintext.len())?;
    let sealed = encrypt(nonce, &aad, plaintext)?;
    if sealed.len() != plaintext.len() + TAG_LEN {
        return Err(KmsError::internal(
            "the HSM returned a ciphertext of the wrong length",
        ));
    }
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// [`open`] by a cipher outside rewrap's memory: `decrypt` gets the nonce,
/// the additional authenticated data and ciphertext || tag. Every failure
/// is the same `InvalidCiphertextException`.
pub fn open_external(
    blob: &[u8],
    context: Option<&EncryptionContext>,
    decrypt: impl FnOnce([u8; 12], &[u8], &[u8]) -> Result<Secret>,
) -> Result<Secret> {
    if peek(blob).is_none() {
        return Err(KmsError::invalid_ciphertext());
    }
    let mut aad = blob[..HEADER_LEN].to_vec();
    aad.extend_from_slice(&canonical_context(context)?);
    let nonce: [u8; 12] = blob[22..HEADER_LEN].try_into().expect("12 bytes");
    decrypt(nonce, &aad, &blob[HEADER_LEN..])
}

/// Opens a blob whose header was read with [`peek`], under `key`. Every
/// failure is the same `InvalidCiphertextException`.
pub fn open(key: &Secret, blob: &[u8], context: Option<&EncryptionContext>) -> Result<Secret> {
    if peek(blob).is_none() {
        return Err(KmsError::invalid_ciphertext());
    }
    let cipher =
        Aes256Gcm::new_from_slice(key.expose()).map_err(|_| KmsError::invalid_ciphertext())?;
    let mut aad = blob[..HEADER_LEN].to_vec();
    aad.extend_from_slice(&canonical_context(context)?);
    let body = &blob[HEADER_LEN..blob.len() - TAG_LEN];
    let tag = Tag::from_slice(&blob[blob.len() - TAG_LEN..]);
    let mut plain = Secret::from_slice(body);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&blob[22..HEADER_LEN]),
            &aad,
            plain.expose_mut(),
            tag,
        )
        .map_err(|_| KmsError::invalid_ciphertext())?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn key() -> Secret {
        Secret::from_slice(&[7u8; 32])
    }

    fn header() -> BlobHeader {
        BlobHeader {
            key_id: Uuid::from_u128(0x1234),
            key_version: 3,
        }
    }

    #[test]
    fn round_trip_and_peek() {
        let mut ctx = EncryptionContext::new();
        ctx.insert("purpose".into(), "test".into());
        let blob = seal(&key(), header(), Some(&ctx), b"hello").unwrap();
        assert_eq!(blob.len(), 5 + OVERHEAD);
        assert_eq!(peek(&blob), Some(header()));
        assert_eq!(open(&key(), &blob, Some(&ctx)).unwrap().expose(), b"hello");
    }

    #[test]
    fn context_must_match_exactly() {
        let mut ctx = EncryptionContext::new();
        ctx.insert("a".into(), "1".into());
        let blob = seal(&key(), header(), Some(&ctx), b"x").unwrap();
        let err = open(&key(), &blob, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidCiphertext);
        ctx.insert("a".into(), "2".into());
        assert_eq!(
            open(&key(), &blob, Some(&ctx)).unwrap_err().code,
            ErrorCode::InvalidCiphertext
        );
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let mut a = EncryptionContext::new();
        a.insert("ab".into(), "c".into());
        let mut b = EncryptionContext::new();
        b.insert("a".into(), "bc".into());
        assert_ne!(
            canonical_context(Some(&a)).unwrap(),
            canonical_context(Some(&b)).unwrap()
        );
        assert_eq!(canonical_context(None).unwrap(), vec![0, 0]);
    }

    #[test]
    fn every_single_bit_flip_and_truncation_is_invalid_ciphertext() {
        let blob = seal(&key(), header(), None, b"some plaintext").unwrap();
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    open(&key(), &bad, None).unwrap_err().code,
                    ErrorCode::InvalidCiphertext
                );
            }
        }
        for len in 0..blob.len() {
            assert_eq!(
                open(&key(), &blob[..len], None).unwrap_err().code,
                ErrorCode::InvalidCiphertext
            );
        }
    }
}
