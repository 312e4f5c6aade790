//! Entry points for coverage-guided fuzzing (feature `fuzzing`): one function per decoder of
//! this crate that reads bytes from storage or the network, each taking the fuzzer's bytes and
//! panicking when a property the decoder promises does not hold.
//!
//! The fuzz targets in `fuzz/` (see `docs/testing.md`, "Fuzzing") call these; the decoders of
//! `weir-actors` have theirs in `weir_actors::fuzz`. The module exists only with the feature,
//! so the crate's normal public surface is unchanged. Decoders guarded by a CRC32C are also
//! fed inputs whose checksum the entry point made right (the first input byte chooses), so the
//! fuzzer reaches the code behind the checksum; where there is an encoder, what decodes must
//! encode back to the bytes that were decoded.

use std::io::{self, BufRead, Cursor, Read};
use std::path::Path;

use crate::sinks::batch_dir::marker::Marker;
use crate::sources::file_stream::{BadUtf8, FileStreamOptions, LineReader};
use crate::sources::partitioned_log::MAX_RECORD_BYTES;
use crate::sources::partitioned_log::frame::{encode_frame, find_valid_frame, read_frame};
use crate::sources::socket::{Framed, LineFramer, LongLines};
use weir_actors::fuzz::{Rng, damage, take};

/// A reader that hands out its bytes in pieces of chosen sizes, now and then failing with
/// `Interrupted` (which a reader must retry), as a file or pipe may.
#[derive(Debug)]
struct Trickle<'a> {
    data: &'a [u8],
    /// What `fill_buf` handed out and was not consumed yet.
    window: usize,
    rng: Rng,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Trickle<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.window == 0 {
            if self.rng.next_u32().is_multiple_of(8) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.window = self.rng.size(9).min(self.data.len());
        }
        Ok(&self.data[..self.window])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.window);
        self.data = &self.data[n..];
        self.window -= n;
    }
}

// ==================================== partitioned log ==================================== //

/// The partitioned log's frames (`sources/partitioned_log/frame.rs`): reading a segment frame
/// by frame as opening the log does (through short and interrupted reads), and the search for
/// a valid frame behind damage.
///
/// The first byte chooses raw bytes (even) or bytes built from operations (odd, see
/// [`build`]). Every frame read re-encodes to the bytes it was read from; the reading stops
/// only at the end or at an undecodable frame; the fast search finds the same first frame as
/// reading at every position.
pub fn log_frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (seed, rest) = take(rest, 2);
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        build(rest)
    };
    let mut reader = Trickle {
        data: &bytes,
        window: 0,
        rng: Rng::new(seed),
    };
    let mut rebuilt = Vec::new();
    let damaged = loop {
        let read = loop {
            match read_frame(&mut reader) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match read.expect("a slice cannot fail but by interruption") {
            Ok(Some(payload)) => {
                assert!(payload.len() <= MAX_RECORD_BYTES);
                encode_frame(&mut rebuilt, &payload);
                assert_eq!(
                    bytes[..rebuilt.len()],
                    rebuilt[..],
                    "a frame read from other bytes"
                );
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert_eq!(
        damaged,
        rebuilt.len() < bytes.len(),
        "the reading stopped early or late"
    );
    if damaged {
        assert!(
            read_frame(&mut Cursor::new(&bytes[rebuilt.len()..]))
                .expect("reads")
                .is_err()
        );
    }
    let from = usize::from(seed.first().copied().unwrap_or(0)) % (bytes.len() + 1);
    assert_eq!(
        find_valid_frame(&bytes, from),
        (from..bytes.len())
            .find(|&q| matches!(read_frame(&mut Cursor::new(&bytes[q..])), Ok(Ok(Some(_))))),
        "the fast search disagrees with reading at every position"
    );
}

/// Builds bytes from operations, so that valid frames are as easy to make as damage: each
/// operation is a byte `op` and a length byte, then its bytes.
fn build(mut ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&op, rest)) = ops.split_first() {
        let (len, rest) = take(rest, 1);
        let len = usize::from(len.first().copied().unwrap_or(0));
        let (arg, rest) = take(rest, len);
        ops = rest;
        match op % 4 {
            0 => encode_frame(&mut out, arg),
            1 => out.extend_from_slice(arg),
            2 => out.resize(out.len() + len, 0),
            _ => damage(&mut out, len),
        }
    }
    out
}

// ====================================== commit marker ====================================== //

/// The batch-directory sink's commit marker (`sinks/batch_dir/marker.rs`): a marker that
/// decodes encodes to exactly the bytes decoded (the format has one encoding per marker).
/// The first byte chooses the rest as is (even), or with its last four bytes replaced by the
/// checksum of the others (odd).
pub fn commit_marker(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(marker) = Marker::decode(&bytes) {
        assert_eq!(
            marker.encode(),
            bytes,
            "a decoded marker re-encodes to other bytes"
        );
        assert!(
            marker
                .parts
                .windows(2)
                .all(|w| w[0].partition < w[1].partition),
            "parts out of order"
        );
    }
}

// ======================================= text lines ======================================= //

/// One line as a framer must report it, from the definition both line framers document.
#[derive(Debug, PartialEq)]
enum Expected {
    Line(Vec<u8>),
    BadUtf8 {
        line: u64,
        offset: u64,
        valid_up_to: usize,
    },
    TooLong {
        line: u64,
        offset: u64,
        kept: Option<Vec<u8>>,
    },
}

/// The lines of `stream`, by definition: split at `\n`, the last bytes without one are a line
/// too; a `\r` before the end of a line is not part of it; a line over `max` bytes is too
/// long (with `Truncate`, its first `max` bytes are kept, cut at a character boundary); a line
/// that is not UTF-8 is reported with its number and offset.
fn expected_lines(stream: &[u8], max: usize, policy: LongLines) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut pieces = stream.split(|&b| b == b'\n').peekable();
    let mut number = 0u64;
    while let Some(piece) = pieces.next() {
        number += 1;
        let start = offset;
        offset += piece.len() as u64 + 1;
        if pieces.peek().is_none() && piece.is_empty() {
            break;
        }
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        let bad = |e: std::str::Utf8Error| Expected::BadUtf8 {
            line: number,
            offset: start,
            valid_up_to: e.valid_up_to(),
        };
        if line.len() > max {
            let kept = match policy {
                LongLines::Skip => None,
                _ => {
                    let head = &line[..max];
                    match std::str::from_utf8(head) {
                        Ok(_) => Some(head.to_vec()),
                        Err(e) if e.error_len().is_none() => Some(head[..e.valid_up_to()].to_vec()),
                        Err(e) => {
                            out.push(bad(e));
                            continue;
                        }
                    }
                }
            };
            out.push(Expected::TooLong {
                line: number,
                offset: start,
                kept,
            });
            continue;
        }
        out.push(match std::str::from_utf8(line) {
            Ok(_) => Expected::Line(line.to_vec()),
            Err(e) => bad(e),
        });
    }
    out
}

/// The two line framers — the socket receiver's (`sources/socket.rs`, `LineFramer`) and the
/// file stream's (`sources/file_stream.rs`, `LineReader`) — fed the stream in pieces of chosen
/// sizes, against the definition in [`expected_lines`]: the same lines whatever the pieces, the
/// same reports, the file stream's counters exact. The first byte chooses the maximum line
/// length (1 to 16: both sources raise a smaller one to 1), the second the policies, the next
/// two seed the pieces.
pub fn text_lines(data: &[u8]) {
    let (params, stream) = take(data, 4);
    let max = 1 + usize::from(params.first().copied().unwrap_or(0) % 16);
    let flags = params.get(1).copied().unwrap_or(0);
    let long_lines = if flags & 1 == 0 {
        LongLines::Skip
    } else {
        LongLines::Truncate
    };
    let bad_utf8 = if flags & 2 == 0 {
        BadUtf8::Skip
    } else {
        BadUtf8::Replace
    };
    let seed = params.get(2..).unwrap_or_default();
    let expected = expected_lines(stream, max, long_lines);

    // The socket receiver's framer, fed as reads arrive.
    let mut framer = LineFramer::new(max, long_lines);
    let mut rng = Rng::new(seed);
    let mut framed = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(rng.size(9).min(rest.len()));
        rest = tail;
        framer.buffer_for_read().extend_from_slice(piece);
        while let Some(f) = framer.next_line() {
            framed.push(f);
        }
    }
    framed.extend(framer.finish());
    let framed: Vec<Expected> = framed
        .into_iter()
        .map(|f| match f {
            Framed::Line(bytes) => Expected::Line(bytes.to_vec()),
            Framed::BadUtf8 {
                line,
                offset,
                error,
            } => Expected::BadUtf8 {
                line,
                offset,
                valid_up_to: error.valid_up_to(),
            },
            Framed::TooLong {
                line,
                offset,
                seen,
                kept,
            } => {
                assert!(seen > max, "a line of {seen} bytes reported over {max}");
                Expected::TooLong {
                    line,
                    offset,
                    kept: kept.map(|k| k.to_vec()),
                }
            }
        })
        .collect();
    assert_eq!(framed, expected, "the socket framer");

    // The file stream's reader, through short and interrupted reads.
    let options = FileStreamOptions::new()
        .max_line_len(max)
        .long_lines(long_lines)
        .bad_utf8(bad_utf8);
    let len = stream.len() as u64;
    let out = read_file_range(stream, 0, len, &options, seed);
    let (lines, long, bad) = expected_file_lines(stream, max, long_lines, bad_utf8);
    assert_eq!(out, lines, "the file stream's lines");
    let stats = options.stats().snapshot();
    assert_eq!(stats.bytes, len, "bytes counted");
    assert_eq!(stats.long_lines, long, "long lines counted");
    assert_eq!(stats.bad_utf8_lines, bad, "bad lines counted");
    assert_eq!(stats.lines, out.len() as u64, "lines counted");

    // The same file split into byte ranges at two chosen points (a large file over several
    // batches): each line is read once, in the range where it starts.
    let mut cuts = [
        u64::from(rng.next_u32()) % (len + 1),
        u64::from(rng.next_u32()) % (len + 1),
    ];
    cuts.sort_unstable();
    let mut split = Vec::new();
    for (from, until) in [(0, cuts[0]), (cuts[0], cuts[1]), (cuts[1], len)] {
        split.extend(read_file_range(stream, from, until, &options, seed));
    }
    assert_eq!(
        split, lines,
        "the file stream's lines over ranges split at {cuts:?}"
    );
}

/// The lines the file stream reads from the range `[from, until)` of a file holding `stream`,
/// through short and interrupted reads.
fn read_file_range(
    stream: &[u8],
    from: u64,
    until: u64,
    options: &FileStreamOptions,
    seed: &[u8],
) -> Vec<String> {
    let mut out = Vec::new();
    let start = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
    LineReader {
        path: Path::new("fuzz"),
        options,
        out: &mut out,
    }
    .read_range(
        Trickle {
            data: stream.get(start..).unwrap_or_default(),
            window: 0,
            rng: Rng::new(seed),
        },
        from,
        until,
    )
    .expect("a slice cannot fail");
    out.into_iter().map(String::from).collect()
}

/// What the file stream must produce from `stream`, by its documentation: the lines of
/// [`expected_lines`], a long line skipped or cut to `max` bytes at a character boundary, a line
/// that is not UTF-8 (after the cut) skipped or with its invalid sequences replaced; and how
/// many lines were long and how many not UTF-8.
fn expected_file_lines(
    stream: &[u8],
    max: usize,
    long_lines: LongLines,
    bad_utf8: BadUtf8,
) -> (Vec<String>, u64, u64) {
    let (mut out, mut long, mut bad) = (Vec::new(), 0, 0);
    let mut pieces = stream.split(|&b| b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() && piece.is_empty() {
            break;
        }
        let mut text = piece.strip_suffix(b"\r").unwrap_or(piece);
        if text.len() > max {
            long += 1;
            if long_lines == LongLines::Skip {
                continue;
            }
            text = &text[..max];
            if let Err(e) = std::str::from_utf8(text)
                && e.error_len().is_none()
            {
                text = &text[..e.valid_up_to()];
            }
        }
        match std::str::from_utf8(text) {
            Ok(text) => out.push(text.to_owned()),
            Err(_) => {
                bad += 1;
                if bad_utf8 == BadUtf8::Replace {
                    out.push(String::from_utf8_lossy(text).into_owned());
                }
            }
        }
    }
    (out, long, bad)
}
