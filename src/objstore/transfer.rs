//! Encrypting into and decrypting from an object store, in bounded memory.
//!
//! Both directions reuse [`crate::files`]: encryption runs
//! [`crate::files::encrypt_stream`] into a [`SplitUpload`], which sends the
//! header and slots to the key object and everything after them to the body
//! upload; decryption runs [`crate::files::decrypt_stream`] over the key
//! object's bytes chained with a streaming download of the body. Memory is
//! one envelope chunk plus the upload parts in flight
//! ([`super::ObjectStoreOptions::part_size`] times
//! [`super::ObjectStoreOptions::upload_concurrency`]).

use super::key_object::read_key_object;
use super::{ObjectLocation, ObjectStoreError};
use crate::envelope::{EnvelopeError, Header, FIXED_LEN, SLOT_SIZE};
use crate::files::{DecryptOptions, EncryptOptions, EnvelopeInfo};
use crate::kms::Kms;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::buffered::BufWriter as UploadWriter;
use object_store::path::Path as ObjectPath;
use object_store::{PutMode, PutOptions, PutPayload};
use std::io::{Read, Write};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Encrypts all of `src` into the new object `name` of `loc` (fresh data key
/// from the KMS under `opts.key_id`). The key object is created first and
/// only if absent (`AlreadyExists` otherwise, and nothing is written); the
/// body is then streamed, in parts above the part size. If the body upload
/// fails, the key object is removed again.
pub fn encrypt_object(
    kms: &dyn Kms,
    src: &mut dyn Read,
    loc: &ObjectLocation,
    name: &str,
    opts: &EncryptOptions,
) -> Result<EnvelopeInfo, ObjectStoreError> {
    let mut sink = SplitUpload {
        loc,
        key_path: loc.key_path(name)?,
        body_path: loc.body_path(name)?,
        head: Vec::with_capacity(FIXED_LEN + 2 * SLOT_SIZE + 256),
        need: None,
        key_created: false,
        body: None,
        error: None,
    };
    match crate::files::encrypt_stream(kms, opts, src, &mut sink) {
        Ok(info) => match sink.finish() {
            Ok(()) => Ok(info),
            Err(e) => {
                sink.clean_up();
                Err(e)
            }
        },
        Err(e) => {
            let e = sink.error.take().unwrap_or_else(|| e.into());
            sink.clean_up();
            Err(e)
        }
    }
}

/// Decrypts object `name` of `loc` onto `dst`. Only authenticated plaintext
/// is written, but on an error `dst` may have received the chunks before
/// the bad one.
pub fn decrypt_object(
    kms: &dyn Kms,
    loc: &ObjectLocation,
    name: &str,
    dst: &mut dyn Write,
    opts: &DecryptOptions,
) -> Result<EnvelopeInfo, ObjectStoreError> {
    let key_path = loc.key_path(name)?;
    let Some((_, version)) = read_key_object(loc, &key_path)? else {
        return Err(EnvelopeError::NotEnvelope.into());
    };
    let mut body = BodyReader {
        loc,
        path: loc.body_path(name)?,
        stream: None,
        chunk: None,
        pos: 0,
        error: None,
    };
    let key_object = std::io::Cursor::new(version.into_bytes());
    let mut input = key_object.chain(&mut body);
    let r = crate::files::decrypt_stream(kms, opts, &mut input, dst);
    match (r, body.error.take()) {
        (Ok(info), _) => Ok(info),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

/// The output of an envelope encryption, split between the key object (the
/// header and slots, whose length the first [`FIXED_LEN`] bytes tell) and
/// the body upload.
struct SplitUpload<'a> {
    loc: &'a ObjectLocation,
    key_path: ObjectPath,
    body_path: ObjectPath,
    head: Vec<u8>,
    need: Option<usize>,
    key_created: bool,
    body: Option<UploadWriter>,
    /// The typed reason of a failed write (the envelope writer only passes
    /// an `io::Error` on).
    error: Option<ObjectStoreError>,
}

impl SplitUpload<'_> {
    fn fail(&mut self, e: ObjectStoreError) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.error = Some(e);
        io
    }

    fn take_head(&mut self, buf: &[u8]) -> Result<usize, ObjectStoreError> {
        let want = self.need.unwrap_or(FIXED_LEN);
        let take = (want - self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        if self.need.is_none() && self.head.len() == FIXED_LEN {
            self.need = Some(Header::encoded_len_from_prefix(&self.head)? + 2 * SLOT_SIZE);
        }
        if self.need == Some(self.head.len()) {
            self.create_key_object()?;
        }
        Ok(take)
    }

    fn create_key_object(&mut self) -> Result<(), ObjectStoreError> {
        let payload = PutPayload::from(std::mem::take(&mut self.head));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = &self.key_path;
        self.loc
            .block_on(self.loc.store.put_opts(path, payload, opts))
            .map_err(|e| ObjectStoreError::from_store(path.as_ref(), e))?;
        self.key_created = true;
        Ok(())
    }

    fn put_body(&mut self, buf: &[u8]) -> Result<(), ObjectStoreError> {
        let loc = self.loc;
        let body = self.body.get_or_insert_with(|| {
            UploadWriter::with_capacity(
                Arc::clone(&loc.store),
                self.body_path.clone(),
                loc.part_size,
            )
            .with_max_concurrency(loc.upload_concurrency)
        });
        loc.block_on(body.put(buf.to_vec().into()))
            .map_err(|e| ObjectStoreError::from_store(self.body_path.as_ref(), e))
    }

    /// Completes the body upload (one put, or the multipart completion).
    fn finish(&mut self) -> Result<(), ObjectStoreError> {
        let Some(mut body) = self.body.take() else {
            return Err(EnvelopeError::Truncated.into());
        };
        self.loc
            .block_on(body.shutdown())
            .map_err(|e| ObjectStoreError::io(&self.body_path, e))
    }

    /// After a failure: abort the multipart upload and remove the key
    /// object this call created (best effort; the error is what matters).
    fn clean_up(&mut self) {
        if let Some(mut body) = self.body.take() {
            let _ = self.loc.block_on(body.abort());
        }
        if self.key_created {
            let _ = self.loc.block_on(self.loc.store.delete(&self.key_path));
        }
    }
}

impl Write for SplitUpload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("the upload failed earlier"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let r = if self.key_created {
            self.put_body(buf).map(|()| buf.len())
        } else {
            self.take_head(buf)
        };
        r.map_err(|e| self.fail(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Chunk = Box<dyn AsRef<[u8]> + Send>;

/// A streaming download of a body as a sync reader. The request is made at
/// the first read (after the KMS unwrapped the data key).
struct BodyReader<'a> {
    loc: &'a ObjectLocation,
    path: ObjectPath,
    stream: Option<BoxStream<'static, object_store::Result<Chunk>>>,
    chunk: Option<Chunk>,
    pos: usize,
    error: Option<ObjectStoreError>,
}

impl BodyReader<'_> {
    fn fail(&mut self, e: object_store::Error) -> std::io::Error {
        let e = ObjectStoreError::from_store(self.path.as_ref(), e);
        let io = std::io::Error::other(e.to_string());
        self.error = Some(e);
        io
    }

    fn next_chunk(&mut self) -> std::io::Result<bool> {
        if self.stream.is_none() {
            let got = self.loc.block_on(self.loc.store.get(&self.path));
            let got = got.map_err(|e| self.fail(e))?;
            let stream = got
                .into_stream()
                .map(|r| r.map(|b| Box::new(b) as Chunk))
                .boxed();
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        match self.loc.block_on(stream.next()) {
            None => Ok(false),
            Some(Ok(chunk)) => {
                self.chunk = Some(chunk);
                self.pos = 0;
                Ok(true)
            }
            Some(Err(e)) => Err(self.fail(e)),
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = &self.chunk {
                let bytes = (**chunk).as_ref();
                if self.pos < bytes.len() {
                    let n = (bytes.len() - self.pos).min(buf.len());
                    buf[..n].copy_from_slice(&bytes[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
    }
}
