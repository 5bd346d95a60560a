//! Spooling of request bodies whose length is not known in advance (chunked), so that a
//! backend can state `CONTENT_LENGTH` as RFC 3875 requires (CGI-4.1.2-3, CGI-4.2-8,
//! CGI-RW-7): the body is held in memory up to a limit, then in an anonymous temporary
//! file (unlinked at creation, so nothing is left behind).
//!
//! Owns only the buffering; it does not decide limits or statuses. Must not import listen
//! or dispatch.

use std::fs;
use std::io::{self, Seek, SeekFrom};

use bytes::Bytes;

use crate::model::Body;
use crate::rt::{self, AsyncWriteExt};

/// A request body read to its end: its exact length is known.
#[derive(Debug)]
pub enum Spooled {
    /// The whole body in memory, as the chunks it arrived in.
    Memory {
        /// The chunks, in order.
        chunks: Vec<Bytes>,
        /// Their total length in bytes.
        len: u64,
    },
    /// The body in an unlinked temporary file, positioned at its start.
    File {
        /// The file; reading it from the current position yields the body.
        file: fs::File,
        /// Its length in bytes.
        len: u64,
    },
}

impl Spooled {
    /// The body's exact length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Memory { len, .. } | Spooled::File { len, .. } => *len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The body is longer than the limit (the client's fault: 413).
    #[error("request body over {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// Reading the body from the client failed.
    #[error("reading the request body: {0}")]
    Read(io::Error),
    /// The temporary file could not be created or written (portico's fault: 500).
    #[error("spooling the request body: {0}")]
    Write(io::Error),
}

/// Reads `body` to its end: in memory while it stays within `memory` bytes, then into an
/// anonymous temporary file. More than `limit` bytes in all gives
/// [`SpoolError::TooLarge`]; so does a body stream that fails with
/// [`io::ErrorKind::FileTooLarge`] (how a listener reports its own size limit).
pub async fn spool(body: &mut Body, memory: usize, limit: u64) -> Result<Spooled, SpoolError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len: u64 = 0;
    let mut file: Option<(fs::File, rt::fs::File)> = None;
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk.map_err(|e| match e.kind() {
            io::ErrorKind::FileTooLarge => SpoolError::TooLarge { limit },
            _ => SpoolError::Read(e),
        })?;
        len = len.saturating_add(chunk.len() as u64);
        if len > limit {
            return Err(SpoolError::TooLarge { limit });
        }
        match &mut file {
            Some((_, writer)) => writer.write_all(&chunk).await.map_err(SpoolError::Write)?,
            None if len <= memory as u64 => chunks.push(chunk),
            None => {
                // Past the memory limit: move what we have into a file and go on there.
                let std_file = tempfile::tempfile().map_err(SpoolError::Write)?;
                let mut writer = rt::fs::file(std_file.try_clone().map_err(SpoolError::Write)?);
                for c in chunks.drain(..).chain(std::iter::once(chunk)) {
                    writer.write_all(&c).await.map_err(SpoolError::Write)?;
                }
                file = Some((std_file, writer));
            }
        }
    }
    match file {
        None => Ok(Spooled::Memory { chunks, len }),
        Some((mut std_file, mut writer)) => {
            writer.flush().await.map_err(SpoolError::Write)?;
            drop(writer);
            // Both handles share one file offset: rewind it for the reader.
            std_file
                .seek(SeekFrom::Start(0))
                .map_err(SpoolError::Write)?;
            Ok(Spooled::File {
                file: std_file,
                len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chunked(parts: Vec<&'static [u8]>) -> Body {
        let items: Vec<io::Result<Bytes>> = parts
            .into_iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect();
        Body::from_stream(None, futures_lite::stream::iter(items))
    }

    #[test]
    fn small_body_stays_in_memory() {
        let mut body = chunked(vec![b"abc", b"def"]);
        let s = rt::block_on(spool(&mut body, 16, 100)).unwrap();
        match s {
            Spooled::Memory { chunks, len } => {
                assert_eq!(len, 6);
                assert_eq!(chunks.concat(), b"abcdef");
            }
            other => panic!("expected memory, got {other:?}"),
        }
    }

    #[test]
    fn large_body_goes_to_a_file_from_its_start() {
        let mut body = chunked(vec![b"0123456789", b"abcdefghij", b"KLMNO"]);
        let s = rt::block_on(spool(&mut body, 12, 100)).unwrap();
        assert_eq!(s.len(), 25);
        match s {
            Spooled::File { mut file, len } => {
                assert_eq!(len, 25);
                let mut all = Vec::new();
                file.read_to_end(&mut all).unwrap();
                assert_eq!(all, b"0123456789abcdefghijKLMNO");
            }
            other => panic!("expected a file, got {other:?}"),
        }
    }

    #[test]
    fn over_the_limit_is_too_large() {
        let mut body = chunked(vec![b"0123456789", b"abcdefghij"]);
        let e = rt::block_on(spool(&mut body, 4, 15)).unwrap_err();
        assert!(matches!(e, SpoolError::TooLarge { limit: 15 }), "{e}");
    }

    #[test]
    fn listener_limit_error_is_too_large() {
        let items: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(io::Error::new(io::ErrorKind::FileTooLarge, "over")),
        ];
        let mut body = Body::from_stream(None, futures_lite::stream::iter(items));
        let e = rt::block_on(spool(&mut body, 4, 1000)).unwrap_err();
        assert!(matches!(e, SpoolError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn empty_body_is_empty() {
        let mut body = chunked(vec![]);
        let s = rt::block_on(spool(&mut body, 4, 1000)).unwrap();
        assert!(s.is_empty());
    }
}
