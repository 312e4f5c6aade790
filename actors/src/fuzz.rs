//! Entry points for coverage-guided fuzzing (feature `fuzzing`): one function per decoder of
//! this crate that reads bytes from storage or the network, each taking the fuzzer's bytes and
//! panicking when a property the decoder promises does not hold.
//!
//! The fuzz targets in `fuzz/` (see `docs/testing.md`, "Fuzzing") call these and nothing else;
//! a crash they find is replayed by a plain `#[test]` beside the decoder. The module exists
//! only with the feature, so the crate's normal public surface is unchanged; it is public so
//! that the fuzz crate, a separate package, can reach the `pub(crate)` decoders through it.
//!
//! What every entry point checks, beyond "no panic": where the format has an encoder, what
//! decodes encodes to bytes that decode to the same value (`decode(encode(x)) == x`), and
//! where the format is canonical, to the very bytes that were decoded. Decoders whose input
//! is guarded by a CRC32C are also fed inputs whose checksum the entry point has made right
//! (the first input byte chooses), so the fuzzer reaches the code behind the checksum.
//! Allocation is bounded by the fuzz crate's allocator, which aborts on any single
//! allocation over its limit.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::FutureExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::checkpoint::format::{
    CHECKPOINT_FRAME, CheckpointData, CheckpointId, STATE_FILE_FRAME, StateFileName,
    decode_state_file, encode_state_file, frame, unframe,
};
use crate::ingest::blocks::{decode_records, encode_records};
use crate::ingest::received_block_tracker::{BlockTrackerState, decode_record, encode_record};
use crate::observe::control::protocol::{
    Command, LineError, LineReader, ServerMessage, encode_line,
};
use crate::observe::event_log::read_event_lines;
use crate::wal::format::{
    FRAME_HEADER_LEN, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, decode_frame, decode_header,
    encode_frame, encode_header, frame_len, scan,
};
use crate::wal::inspect::{AfterDamage, search_after_damage};

/// A deterministic xorshift generator: how an entry point turns a few input bytes into many
/// choices (read sizes, when a read is pending) without spending input on each. Shared with
/// the runtime's fuzz module.
#[derive(Debug)]
pub struct Rng(u32);

impl Rng {
    /// A generator seeded from `seed` (any bytes, none included).
    pub fn new(seed: &[u8]) -> Self {
        let mut s = 0x9E37_79B9u32;
        for &b in seed {
            s = s.rotate_left(5) ^ u32::from(b);
        }
        Rng(s | 1)
    }

    /// The next number.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A number in `1..=max`.
    pub fn size(&mut self, max: u32) -> usize {
        (self.next_u32() % max + 1) as usize
    }
}

/// Splits off the first `n` bytes (fewer if the input is shorter). Shared with the runtime's
/// fuzz module.
pub fn take(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at(n.min(data.len()))
}

/// Builds bytes from a list of operations, so that valid frames (right lengths, right
/// checksums) are as easy for the fuzzer to make as damage: each operation is a byte `op`,
/// then its arguments; `frame` appends one valid frame with the given time and payload.
fn build(mut ops: &[u8], mut frame: impl FnMut(&mut Vec<u8>, u64, &[u8])) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        let (len, rest) = take(ops, 1);
        ops = rest;
        let len = usize::from(len.first().copied().unwrap_or(0));
        match op % 4 {
            // A valid frame: `len` payload bytes, a time from the next two.
            0 => {
                let (time, rest) = take(ops, 2);
                let (payload, rest) = take(rest, len);
                ops = rest;
                let time = time.iter().fold(0u64, |t, &b| (t << 8) | u64::from(b));
                frame(&mut out, time, payload);
            }
            // Raw bytes.
            1 => {
                let (raw, rest) = take(ops, len);
                ops = rest;
                out.extend_from_slice(raw);
            }
            // A run of zeros (a preallocated or zero-filled tail).
            2 => out.resize(out.len() + len * 4, 0),
            // Damage what is there: flip a bit, or cut the end.
            _ => damage(&mut out, len),
        }
    }
    out
}

/// Damages `bytes` as storage might, chosen by `choice`: a flipped bit (even `choice`) or a
/// cut (odd), at a position derived from it. Shared with the runtime's fuzz module.
pub fn damage(bytes: &mut Vec<u8>, choice: usize) {
    if bytes.is_empty() {
        return;
    }
    let at = choice * 31 % bytes.len();
    if choice.is_multiple_of(2) {
        bytes[at] ^= 1 << (choice / 2 % 8);
    } else {
        bytes.truncate(at);
    }
}

// =========================================== WAL =========================================== //

/// WAL headers and frames (`wal/format.rs`): `decode_header` and `decode_frame` on the bytes,
/// with a maximum payload and an expected segment id taken from the input. A header or frame
/// that decodes is exactly what the encoder writes for its values.
pub fn wal_frame(data: &[u8]) {
    let (params, bytes) = take(data, 2);
    let max_payload = match params.first() {
        Some(&b) if b < 0x80 => u32::from(b),
        _ => MAX_PAYLOAD_LEN,
    };
    let expected_id = u64::from(params.get(1).copied().unwrap_or(0) % 4);
    if let Ok(header) = decode_header(bytes, expected_id) {
        assert_eq!(header.id, expected_id);
        assert_eq!(
            encode_header(header.id, header.created_ms)[..],
            bytes[..SEGMENT_HEADER_LEN],
            "a decoded header re-encodes to other bytes"
        );
    }
    if let Ok(frame) = decode_frame(bytes, max_payload) {
        assert!(frame.len <= max_payload, "a frame over the maximum decoded");
        let end = frame_len(frame.len as usize);
        let mut again = Vec::new();
        encode_frame(&mut again, frame.time_ms, &bytes[FRAME_HEADER_LEN..end]);
        assert_eq!(
            again,
            bytes[..end],
            "a decoded frame re-encodes to other bytes"
        );
    }
}

/// A whole WAL segment: the scan recovery runs (`format::scan`) and the search inspection
/// runs behind damage (`inspect::search_after_damage`).
///
/// The first byte chooses raw bytes (even) or bytes built from operations behind a valid
/// header (odd), and the segment id the name would give (`byte >> 1`). The scan must account
/// for every byte before its damage with the records it visited (re-encoding the header and
/// each frame gives back `bytes[..valid_len]`), and stop exactly at an undecodable frame; the
/// search must find the same records as trying every offset one by one.
pub fn wal_segment(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let id = u64::from(mode >> 1);
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut bytes = encode_header(id, 1_700_000_000_000).to_vec();
        bytes.extend(build(rest, |out, time, payload| {
            encode_frame(out, time, payload);
        }));
        bytes
    };
    let mut rebuilt = Vec::new();
    let mut visited = 0u64;
    let mut max_time = None;
    let scanned = scan(&bytes, id, MAX_PAYLOAD_LEN, |offset, frame, payload| {
        assert_eq!(
            offset,
            (SEGMENT_HEADER_LEN + rebuilt.len()) as u64,
            "a record visited out of place"
        );
        assert_eq!(payload.len(), frame.len as usize);
        encode_frame(&mut rebuilt, frame.time_ms, payload);
        visited += 1;
        max_time = max_time.max(Some(frame.time_ms));
    });
    assert_eq!(scanned.records, visited);
    assert_eq!(scanned.max_time_ms, max_time);
    let valid_len = usize::try_from(scanned.valid_len).expect("within the input");
    assert!(valid_len <= bytes.len());
    match scanned.header {
        None => {
            assert!(decode_header(&bytes, id).is_err());
            assert_eq!((valid_len, visited), (0, 0));
            assert_eq!(scanned.damage.as_ref().map(|d| d.0), Some(0));
        }
        Some(header) => {
            assert_eq!(
                encode_header(header.id, header.created_ms)[..],
                bytes[..SEGMENT_HEADER_LEN]
            );
            assert_eq!(
                rebuilt[..],
                bytes[SEGMENT_HEADER_LEN..valid_len],
                "the valid records are not the valid bytes"
            );
            match &scanned.damage {
                None => assert_eq!(valid_len, bytes.len(), "bytes left over without damage"),
                Some((offset, _)) => {
                    assert_eq!(*offset, scanned.valid_len, "damage reported elsewhere");
                    assert!(decode_frame(&bytes[valid_len..], MAX_PAYLOAD_LEN).is_err());
                }
            }
        }
    }
    if let Some((offset, _)) = scanned.damage {
        let from = usize::try_from(offset).expect("within the input") + 1;
        assert_eq!(
            search_after_damage(&bytes, from),
            search_every_offset(&bytes, from),
            "the search behind damage disagrees with trying every offset"
        );
    }
}

/// The search behind damage without its shortcuts: every offset tried, a valid frame followed
/// to the next.
fn search_every_offset(bytes: &[u8], from: usize) -> AfterDamage {
    let mut found = AfterDamage::default();
    let mut at = from;
    while bytes.len().saturating_sub(at) >= FRAME_HEADER_LEN {
        match decode_frame(&bytes[at..], MAX_PAYLOAD_LEN) {
            Ok(frame) => {
                found.records += 1;
                found.first_offset.get_or_insert(at as u64);
                at += frame_len(frame.len as usize);
            }
            Err(_) => at += 1,
        }
    }
    found
}

// ======================================= checkpoints ======================================= //

/// Checkpoint files, state files and their names (`checkpoint/format.rs`).
///
/// The first byte chooses: the rest of the input as a whole file (even), or as a payload
/// framed with a valid header and checksum (odd). A checkpoint that decodes encodes to bytes
/// that decode to it; a state file's payload is the framed bytes; a checkpoint or state-file
/// name that parses is the name its parts build.
pub fn checkpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (checkpoint_bytes, state_bytes) = if mode & 1 == 0 {
        (rest.to_vec(), rest.to_vec())
    } else {
        (frame(CHECKPOINT_FRAME, rest), frame(STATE_FILE_FRAME, rest))
    };
    if let Ok(decoded) = CheckpointData::decode(&checkpoint_bytes) {
        assert!(unframe(CHECKPOINT_FRAME, &checkpoint_bytes).is_ok());
        let encoded = decoded.encode().expect("a decoded checkpoint encodes");
        let again = CheckpointData::decode(&encoded).expect("an encoded checkpoint decodes");
        assert_eq!(again, decoded, "decode(encode(x)) != x");
        assert_eq!(
            again.encode().expect("encodes"),
            encoded,
            "encoding is not deterministic"
        );
    }
    match decode_state_file(&state_bytes) {
        Ok(payload) => assert_eq!(encode_state_file(payload), state_bytes),
        Err(_) => assert!(mode & 1 == 0, "a framed state file did not decode"),
    }
    if let Ok(name) = std::str::from_utf8(rest) {
        if let Some(id) = CheckpointId::from_file_name(name) {
            assert_eq!(id.file_name(), name);
        }
        if let Some(parsed) = StateFileName::parse(name) {
            assert_eq!(parsed.build(), name);
        }
    }
}

// ==================================== blocks and tracker ==================================== //

/// A receiver-WAL payload of records (`ingest/blocks.rs`, `decode_records`): the records lie
/// inside the payload (they share its memory), and encoding them gives a payload that decodes
/// to the same records.
pub fn block_records(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let Ok(records) = decode_records(&payload) else {
        return;
    };
    let range = payload.as_ptr_range();
    let mut total = 0usize;
    for record in records.iter().filter(|r| !r.is_empty()) {
        assert!(
            range.contains(&record.as_ptr()),
            "a record outside the payload"
        );
        total += record.len();
    }
    assert!(total <= data.len());
    let encoded = Bytes::from(encode_records(&records).expect("decoded records encode"));
    let again = decode_records(&encoded).expect("encoded records decode");
    assert_eq!(again, records, "decode(encode(x)) != x");
}

/// A block-tracker WAL record (`ingest/received_block_tracker.rs`, `decode_record`): its events
/// encode to a record that decodes to them; applying them to a tracker state never panics (the
/// state machine is total, so any log replays); and a snapshot of the state, applied, gives a
/// state whose own snapshot applies to exactly itself.
pub fn tracker_record(data: &[u8]) {
    let Ok(events) = decode_record(data) else {
        return;
    };
    let encoded = encode_record(&events).expect("decoded events encode");
    assert_eq!(
        decode_record(&encoded).expect("encoded events decode"),
        events,
        "decode(encode(x)) != x"
    );
    let mut state = BlockTrackerState::new();
    for event in &events {
        state.apply(event);
    }
    let mut normal = BlockTrackerState::new();
    normal.apply(&state.snapshot());
    let mut again = state.clone();
    again.apply(&normal.snapshot());
    assert_eq!(
        again, normal,
        "a snapshot does not rebuild the state it was taken of"
    );
}

// ================================== control and event log ================================== //

/// A reader that hands out `data` in pieces of chosen sizes and sometimes is not ready, so a
/// line reader is cut between reads and cancelled mid-line.
#[derive(Debug)]
struct Trickle<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rng.next_u32().is_multiple_of(4) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = self.rng.size(9).min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// The control protocol's line reader (`observe/control/protocol.rs`, `LineReader`), reading
/// the input in pieces and cancelled whenever a read is not ready, against the definition in
/// its documentation: lines end at `\n` (and a `\r` before it is dropped), the bound counts the
/// bytes before the `\n`, a longer line is `TooLong` (and stays so), the last bytes without a
/// `\n` are a line. The first byte is the bound, the next two seed the pieces.
pub fn control_lines(data: &[u8]) {
    let (params, stream) = take(data, 3);
    let max = usize::from(params.first().copied().unwrap_or(0) % 64);
    let mut reader = LineReader::new(
        Trickle {
            data: stream,
            rng: Rng::new(params.get(1..).unwrap_or_default()),
        },
        max,
    );
    let mut got: Vec<Result<Vec<u8>, ()>> = Vec::new();
    loop {
        // Not ready: the future is dropped, which is a cancellation, and asked again.
        let Some(next) = reader.next_line().now_or_never() else {
            continue;
        };
        match next {
            Ok(Some(line)) => got.push(Ok(line.to_vec())),
            Ok(None) => break,
            Err(LineError::TooLong { max: said }) => {
                assert_eq!(said, max);
                got.push(Err(()));
                let again = loop {
                    if let Some(again) = reader.next_line().now_or_never() {
                        break again;
                    }
                };
                assert!(
                    matches!(again, Err(LineError::TooLong { .. })),
                    "a reader past an overlong line read on"
                );
                break;
            }
            Err(LineError::Io(err)) => panic!("the reader cannot fail: {err}"),
        }
    }
    assert_eq!(got, expected_lines(stream, max));
}

/// What [`LineReader`] must return for `stream`, by its documentation.
fn expected_lines(stream: &[u8], max: usize) -> Vec<Result<Vec<u8>, ()>> {
    let mut out = Vec::new();
    let mut pieces = stream.split(|&b| b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        if last && piece.is_empty() {
            break;
        }
        if piece.len() > max {
            out.push(Err(()));
            break;
        }
        let line = match piece.strip_suffix(b"\r") {
            Some(stripped) if !last => stripped,
            _ => piece,
        };
        out.push(Ok(line.to_vec()));
    }
    out
}

/// The control protocol's messages (`Command` from a client, `ServerMessage` from the
/// server), decoded from one line of JSON as the endpoint and the `weir` tool do: what decodes
/// encodes to one line that decodes to the same message.
pub fn control_messages(data: &[u8]) {
    if let Ok(command) = serde_json::from_slice::<Command>(data) {
        let line = encode_line(&command).expect("a command encodes");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let again: Command = serde_json::from_slice(&line).expect("an encoded command decodes");
        assert_eq!(again, command, "decode(encode(x)) != x");
    }
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        let line = encode_line(&message).expect("a server message encodes");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let again: ServerMessage =
            serde_json::from_slice(&line).expect("an encoded server message decodes");
        assert_eq!(again, message, "decode(encode(x)) != x");
    }
}

/// The persisted event log's reader (`observe/event_log.rs`): every line is either an event or
/// one skipped line, none is lost or counted twice, and an event read encodes (as the writer
/// writes it) to one line that reads back as the same event.
pub fn event_log(data: &[u8]) {
    let mut records = Vec::new();
    let mut skipped = 0;
    read_event_lines(data, &mut records, &mut skipped).expect("reading a slice cannot fail");
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let lines = newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'));
    assert_eq!(
        records.len() + skipped,
        lines,
        "a line lost or counted twice"
    );
    for record in &records {
        let line = serde_json::to_string(record).expect("an event encodes");
        assert!(
            !line.contains('\n'),
            "an event written as more than one line"
        );
        let mut again = Vec::new();
        let mut skipped = 0;
        read_event_lines(line.as_bytes(), &mut again, &mut skipped).expect("reads");
        assert_eq!(
            (again.as_slice(), skipped),
            (std::slice::from_ref(record), 0)
        );
    }
}
