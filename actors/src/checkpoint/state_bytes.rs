//! A state file's payload as an upload or a restore handles it: in memory, or a range of a
//! local file when it is large, so that a state larger than memory is never in memory whole.
//!
//! Invariant: the bytes a [`StateBytes`] stands for never change while it lives. A file range
//! is either a state file of a local checkpoint store (written once, never changed; kept
//! readable through the open descriptor even if retention deletes its name meanwhile) or an
//! anonymous temporary file that only this value refers to (deleted by the system when the
//! last clone is dropped, crash or not).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The size of the pieces a file-backed payload is read and written in.
pub(crate) const PIECE: usize = 1 << 20;

/// Bytes of state: in memory, or `len` bytes of a local file from `offset` on. Cloning is
/// cheap (shared).
#[derive(Clone)]
pub struct StateBytes(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[start..]`.
    Memory { bytes: Arc<Vec<u8>>, start: usize },
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
        /// The range's CRC32C, if whoever wrote or read it computed it on the way.
        crc: Option<u32>,
    },
}

impl std::fmt::Debug for StateBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Memory { .. } => f.debug_tuple("Memory").field(&self.len()).finish(),
            Repr::File { offset, len, .. } => f
                .debug_struct("File")
                .field("offset", offset)
                .field("len", len)
                .finish(),
        }
    }
}

impl From<Vec<u8>> for StateBytes {
    fn from(bytes: Vec<u8>) -> Self {
        StateBytes(Repr::Memory {
            bytes: Arc::new(bytes),
            start: 0,
        })
    }
}

impl StateBytes {
    /// The `len` bytes of `file` from `offset` on. Nothing may change them while the value
    /// (or a clone) lives.
    pub fn from_file(file: File, offset: u64, len: u64) -> Self {
        Self::from_shared_file(Arc::new(file), offset, len, None)
    }

    /// [`from_file`](Self::from_file) of a shared file whose range's CRC32C may be known.
    pub(crate) fn from_shared_file(
        file: Arc<File>,
        offset: u64,
        len: u64,
        crc: Option<u32>,
    ) -> Self {
        StateBytes(Repr::File {
            file,
            offset,
            len,
            crc,
        })
    }

    /// A new anonymous temporary file in `dir` (deleted by the system once closed, whatever
    /// happens to the process), for [`StateWriter`].
    ///
    /// # Errors
    ///
    /// The file could not be created.
    pub fn temp_file_in(dir: &Path) -> io::Result<File> {
        tempfile::tempfile_in(dir)
    }

    /// How many bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Repr::Memory { bytes, start } => {
                u64::try_from(bytes.len().saturating_sub(*start)).unwrap_or(u64::MAX)
            }
            Repr::File { len, .. } => *len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match &self.0 {
            Repr::Memory { bytes, start } => Some(bytes.get(*start..).unwrap_or_default()),
            Repr::File { .. } => None,
        }
    }

    /// The bytes as a `Vec` without copying if they are in memory and not shared; `Err(self)`
    /// if they are in a file.
    pub fn into_vec(self) -> Result<Vec<u8>, StateBytes> {
        match self.0 {
            Repr::Memory { bytes, start: 0 } => {
                Ok(Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.to_vec()))
            }
            Repr::Memory { bytes, start } => Ok(bytes.get(start..).unwrap_or_default().to_vec()),
            file @ Repr::File { .. } => Err(StateBytes(file)),
        }
    }

    /// The bytes after the first `n` (all of them dropped if fewer): the same memory or file,
    /// not a copy.
    pub fn skip(&self, n: u64) -> StateBytes {
        if n == 0 {
            return self.clone();
        }
        match &self.0 {
            Repr::Memory { bytes, start } => StateBytes(Repr::Memory {
                bytes: Arc::clone(bytes),
                start: start
                    .saturating_add(usize::try_from(n).unwrap_or(usize::MAX))
                    .min(bytes.len()),
            }),
            Repr::File {
                file, offset, len, ..
            } => StateBytes(Repr::File {
                file: Arc::clone(file),
                offset: offset.saturating_add(n.min(*len)),
                len: len.saturating_sub(n),
                crc: None,
            }),
        }
    }

    /// Reads the bytes from the start, in order.
    pub fn reader(&self) -> StateReader<'_> {
        StateReader { bytes: self, at: 0 }
    }

    /// Up to `buf.len()` bytes at `at` (fewer only at the end).
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.len().saturating_sub(at)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        match &self.0 {
            Repr::Memory { .. } => {
                let bytes = self.in_memory().unwrap_or_default();
                let start = usize::try_from(at).unwrap_or(usize::MAX);
                let from = bytes.get(start..start + want).unwrap_or_default();
                buf[..from.len()].copy_from_slice(from);
                Ok(from.len())
            }
            Repr::File { file, offset, .. } => {
                file.read_exact_at(buf, offset.saturating_add(at))?;
                Ok(want)
            }
        }
    }

    /// All the bytes: borrowed if they are in memory, else read from the file.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn bytes(&self) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        match self.in_memory() {
            Some(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
            None => self.to_vec().map(std::borrow::Cow::Owned),
        }
    }

    /// All the bytes in one `Vec` (a copy).
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.0 {
            Repr::Memory { .. } => Ok(self.in_memory().unwrap_or_default().to_vec()),
            Repr::File { .. } => {
                let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
                self.reader().read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }

    /// The bytes' CRC32C: the one computed as the file was written or downloaded
    /// ([`StateWriter`]), else read in pieces.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn crc32c(&self) -> io::Result<u32> {
        match &self.0 {
            Repr::Memory { .. } => Ok(crc32c::crc32c(self.in_memory().unwrap_or_default())),
            Repr::File { crc: Some(crc), .. } => Ok(*crc),
            Repr::File { .. } => {
                let mut crc = 0;
                self.for_each_piece(|piece| {
                    crc = crc32c::crc32c_append(crc, piece);
                    Ok(())
                })?;
                Ok(crc)
            }
        }
    }

    /// Calls `f` with the bytes in order, in pieces of at most 1 MiB (one piece if
    /// they are in memory).
    ///
    /// # Errors
    ///
    /// Reading the file failed, or `f` did.
    pub fn for_each_piece(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if let Some(bytes) = self.in_memory() {
            return f(bytes);
        }
        let mut buf = vec![0; PIECE.min(usize::try_from(self.len()).unwrap_or(PIECE))];
        let mut at = 0;
        while at < self.len() {
            let n = self.read_at(at, &mut buf)?;
            if n == 0 {
                break;
            }
            f(&buf[..n])?;
            at += u64::try_from(n).unwrap_or(u64::MAX);
        }
        Ok(())
    }
}

/// Reads a [`StateBytes`] in order ([`StateBytes::reader`]).
#[derive(Debug)]
pub struct StateReader<'a> {
    bytes: &'a StateBytes,
    at: u64,
}

impl Read for StateReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bytes.read_at(self.at, buf)?;
        self.at += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }
}

/// Writes state into a file as it is encoded, keeping its length and CRC32C, so that a large
/// state is handed on as a [`StateBytes`] without being in memory whole.
#[derive(Debug)]
pub struct StateWriter {
    file: io::BufWriter<File>,
    len: u64,
    crc: u32,
}

impl StateWriter {
    /// Writes into `file` (empty, e.g. [`StateBytes::temp_file_in`]) from its start.
    pub fn new(file: File) -> Self {
        StateWriter {
            file: io::BufWriter::with_capacity(PIECE, file),
            len: 0,
            crc: 0,
        }
    }

    /// How many bytes were written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written, with their CRC32C.
    ///
    /// # Errors
    ///
    /// Flushing the file failed.
    pub fn finish(self) -> io::Result<(StateBytes, u32)> {
        let (len, crc) = (self.len, self.crc);
        let file = self
            .file
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        Ok((
            StateBytes::from_shared_file(Arc::new(file), 0, len, Some(crc)),
            crc,
        ))
    }
}

impl io::Write for StateWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.crc = crc32c::crc32c_append(self.crc, written);
        self.len += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_file_range_reads_as_its_bytes_in_memory_do() {
        let bytes = sample(3 * PIECE + 17);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = StateWriter::new(StateBytes::temp_file_in(dir.path()).expect("temp file"));
        writer.write_all(b"head").expect("write");
        for piece in bytes.chunks(1000) {
            writer.write_all(piece).expect("write");
        }
        let (file, crc) = writer.finish().expect("finish");
        let mut whole = b"head".to_vec();
        whole.extend_from_slice(&bytes);
        assert_eq!(crc, crc32c::crc32c(&whole));
        assert_eq!(file.len(), whole.len() as u64);
        assert!(file.in_memory().is_none());

        let body = file.skip(4);
        let memory = StateBytes::from(bytes.clone());
        for b in [&body, &memory] {
            assert_eq!(b.len(), bytes.len() as u64);
            assert_eq!(b.to_vec().expect("read"), bytes);
            assert_eq!(b.crc32c().expect("crc"), crc32c::crc32c(&bytes));
            let mut read = Vec::new();
            let mut reader = b.reader();
            let mut buf = [0u8; 4093];
            loop {
                let n = reader.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&buf[..n]);
            }
            assert_eq!(read, bytes);
            let mut tail = [0u8; 10];
            assert_eq!(b.read_at(b.len() - 3, &mut tail).expect("read"), 3);
            assert_eq!(&tail[..3], &bytes[bytes.len() - 3..]);
        }
        assert_eq!(body.skip(body.len() + 5).len(), 0);

        // In memory, skipping shares the bytes; twice is the sum; the CRC is the tail's.
        let mut framed = b"head".to_vec();
        framed.extend_from_slice(&bytes);
        let framed = StateBytes::from(framed);
        let tail = framed.skip(2).skip(2);
        assert_eq!(tail.in_memory(), Some(bytes.as_slice()));
        assert_eq!(tail.crc32c().expect("crc"), crc32c::crc32c(&bytes));
        assert_eq!(tail.clone().into_vec().expect("in memory"), bytes);
        // A file's CRC computed on the way is the one of its bytes; a part of it reads anew.
        assert_eq!(file.crc32c().expect("crc"), crc);
        assert_eq!(body.crc32c().expect("crc"), crc32c::crc32c(&bytes));
    }
}
