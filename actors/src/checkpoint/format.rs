//! The bytes of a checkpoint file and of a state file, and the names both are stored under.
//!
//! The layout is documented byte by byte in `docs/architecture.md` ("Checkpoint file" and "State
//! files"); this module derives every offset from chained constants instead of copying the
//! table, and a unit test checks the example in that document against [`CheckpointData::encode`].
//!
//! Everything here is pure: no I/O, no clock. A decoder never panics on any input.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Framing: the 24-byte header shared by checkpoint files and state files.
// ---------------------------------------------------------------------------------------------

/// The first 8 bytes of every checkpoint file (PNG-style: a high-bit byte, then ASCII).
pub const CHECKPOINT_MAGIC: [u8; 8] = [0x89, b'W', b'E', b'I', b'R', b'C', b'K', b'P'];
/// The first 8 bytes of every state file.
pub const STATE_FILE_MAGIC: [u8; 8] = [0x89, b'W', b'E', b'I', b'R', b'S', b'T', b'F'];
/// The checkpoint framing version this build writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u16 = 1;
/// The state-file framing version this build writes and reads.
pub const STATE_FILE_FORMAT_VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + CHECKPOINT_MAGIC.len();
const RESERVED_AT: usize = VERSION_AT + size_of::<u16>();
const PAYLOAD_LEN_AT: usize = RESERVED_AT + size_of::<u16>();
const CRC_AT: usize = PAYLOAD_LEN_AT + size_of::<u64>();
/// The length of the header that precedes the payload (24 bytes).
pub const HEADER_LEN: usize = CRC_AT + size_of::<u32>();

const _: () = assert!(VERSION_AT == 8 && PAYLOAD_LEN_AT == 12 && CRC_AT == 20 && HEADER_LEN == 24);
const _: () = assert!(CHECKPOINT_MAGIC.len() == STATE_FILE_MAGIC.len());

/// Which kind of file a frame belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameKind {
    magic: [u8; 8],
    version: u16,
}

/// The frame of a checkpoint file.
pub(crate) const CHECKPOINT_FRAME: FrameKind = FrameKind {
    magic: CHECKPOINT_MAGIC,
    version: CHECKPOINT_FORMAT_VERSION,
};

/// The frame of a state file.
pub(crate) const STATE_FILE_FRAME: FrameKind = FrameKind {
    magic: STATE_FILE_MAGIC,
    version: STATE_FILE_FORMAT_VERSION,
};

/// Why bytes are not a valid checkpoint (or state file) for this build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a header.
    #[error("the file is {len} bytes long, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// The first 8 bytes are not the expected magic.
    #[error("the file does not start with the expected magic bytes (found {found:02x?})")]
    BadMagic {
        /// The first 8 bytes found.
        found: [u8; 8],
    },
    /// The header names a framing version this build does not read.
    #[error(
        "the file has format version {version}, but this build reads only version {supported}; \
         it was written by a newer weir or is corrupt"
    )]
    UnsupportedVersion {
        /// The version in the header.
        version: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The reserved header field is not zero.
    #[error("the reserved header field is {value}, but it must be 0")]
    ReservedNotZero {
        /// The value found.
        value: u16,
    },
    /// The file holds fewer payload bytes than the header declares.
    #[error(
        "the file is truncated: the header declares {declared} payload bytes but {actual} follow it"
    )]
    Truncated {
        /// The payload length in the header.
        declared: u64,
        /// The payload bytes present.
        actual: u64,
    },
    /// The file holds more bytes than the header declares.
    #[error(
        "the file has trailing bytes: the header declares {declared} payload bytes but {actual} follow it"
    )]
    TrailingBytes {
        /// The payload length in the header.
        declared: u64,
        /// The payload bytes present.
        actual: u64,
    },
    /// The checksum does not match the bytes.
    #[error("the CRC32C checksum does not match: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The payload is not a valid list of sections.
    #[error("the payload is not a valid section list: {detail}")]
    BadSectionList {
        /// What the decoder found.
        detail: String,
    },
    /// A section's bytes do not decode as its field.
    #[error("section {tag} does not decode as its field: {detail}")]
    BadSection {
        /// The section's tag.
        tag: u16,
        /// What the decoder found.
        detail: String,
    },
    /// A tag appears more than once.
    #[error("section {tag} appears more than once")]
    DuplicateSection {
        /// The repeated tag.
        tag: u16,
    },
    /// A required section is absent.
    #[error("required section {tag} ({name}) is missing")]
    MissingSection {
        /// The missing tag.
        tag: u16,
        /// The field it holds.
        name: &'static str,
    },
    /// A section this build does not know has its critical bit set: it must not be ignored.
    #[error(
        "section {tag:#06x} is critical (bit 15 set) but unknown to this build; \
         the checkpoint was written by a newer weir that requires it to be understood"
    )]
    UnknownCriticalSection {
        /// The unknown tag.
        tag: u16,
    },
    /// A field could not be encoded (only a bug could cause this).
    #[error("section {tag} could not be encoded: {detail}")]
    Encode {
        /// The section's tag.
        tag: u16,
        /// The encoder's message.
        detail: String,
    },
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Wraps `payload` in a header of `kind`: `{ magic | version | reserved | len | crc | payload }`.
pub(crate) fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let header = header(kind, payload);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out
}

/// [`frame`], in `payload`'s own allocation: the payload is moved up in place (growing a large
/// allocation remaps its pages rather than copying them), so a large state file is never in
/// memory twice. `payload_crc` is the payload's CRC32C, which the caller has computed anyway:
/// the frame's checksum is combined from it instead of reading the payload again.
pub(crate) fn frame_owned(kind: FrameKind, mut payload: Vec<u8>, payload_crc: u32) -> Vec<u8> {
    let len = payload.len();
    let header = header_for(kind, len_u64(len), payload_crc);
    payload.reserve_exact(HEADER_LEN);
    payload.resize(len + HEADER_LEN, 0);
    payload.copy_within(..len, HEADER_LEN);
    payload[..HEADER_LEN].copy_from_slice(&header);
    payload
}

/// The header of a frame of `kind` around a payload of `len` bytes whose CRC32C is
/// `payload_crc` (the frame's checksum is combined from it: the payload is not read).
pub(crate) fn header_for(kind: FrameKind, len: u64, payload_crc: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    fill_fields(&mut header, kind, len);
    let crc = crc32c::crc32c_combine(
        crc32c::crc32c(&header[..CRC_AT]),
        payload_crc,
        usize::try_from(len).unwrap_or(usize::MAX),
    );
    header[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The header's fields before the checksum: magic, version, reserved (0), payload length.
fn fill_fields(out: &mut [u8; HEADER_LEN], kind: FrameKind, payload_len: u64) {
    out[MAGIC_AT..VERSION_AT].copy_from_slice(&kind.magic);
    out[VERSION_AT..RESERVED_AT].copy_from_slice(&kind.version.to_le_bytes());
    out[PAYLOAD_LEN_AT..CRC_AT].copy_from_slice(&payload_len.to_le_bytes());
}

/// The header [`frame`] puts before `payload`.
fn header(kind: FrameKind, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    fill_fields(&mut out, kind, len_u64(payload.len()));
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_AT]), payload);
    out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Checks the header of `bytes` against `kind` and returns the payload.
///
/// Checks, in order: length of the header, magic, version, reserved field, payload length,
/// checksum. The version is checked before the checksum so that a file from a newer framing
/// is reported as such rather than as corrupt.
pub(crate) fn unframe(kind: FrameKind, bytes: &[u8]) -> Result<&[u8], FormatError> {
    let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
    let header = FrameHeader::check(kind, bytes, len_u64(payload.len()))?;
    header.check_crc(crc32c::crc32c(payload))?;
    Ok(payload)
}

/// A frame's header, checked but for its checksum: the payload is read in pieces
/// ([`FrameHeader::check`], then [`FrameHeader::check_crc`] with the payload's CRC32C).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHeader {
    /// The payload's length.
    pub(crate) len: u64,
    /// The checksum in the header.
    stored: u32,
    /// The CRC32C of the header's bytes before the checksum.
    fields_crc: u32,
}

impl FrameHeader {
    /// Checks the header at the start of `bytes` (at least [`HEADER_LEN`] of them, or
    /// [`FormatError::TooShort`]) for `kind`, and that `actual` payload bytes follow it.
    pub(crate) fn check(kind: FrameKind, bytes: &[u8], actual: u64) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::TooShort {
                len: len_u64(bytes.len()),
            });
        }
        let magic: [u8; 8] = array(bytes, MAGIC_AT);
        if magic != kind.magic {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes(array(bytes, VERSION_AT));
        if version != kind.version {
            return Err(FormatError::UnsupportedVersion {
                version,
                supported: kind.version,
            });
        }
        let reserved = u16::from_le_bytes(array(bytes, RESERVED_AT));
        if reserved != 0 {
            return Err(FormatError::ReservedNotZero { value: reserved });
        }
        let declared = u64::from_le_bytes(array(bytes, PAYLOAD_LEN_AT));
        if actual < declared {
            return Err(FormatError::Truncated { declared, actual });
        }
        if actual > declared {
            return Err(FormatError::TrailingBytes { declared, actual });
        }
        Ok(FrameHeader {
            len: declared,
            stored: u32::from_le_bytes(array(bytes, CRC_AT)),
            fields_crc: crc32c::crc32c(&bytes[..CRC_AT]),
        })
    }

    /// Checks the header's checksum against the payload's CRC32C.
    pub(crate) fn check_crc(&self, payload_crc: u32) -> Result<(), FormatError> {
        let len = usize::try_from(self.len).unwrap_or(usize::MAX);
        let computed = crc32c::crc32c_combine(self.fields_crc, payload_crc, len);
        if self.stored != computed {
            return Err(FormatError::CrcMismatch {
                stored: self.stored,
                computed,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The payload: a list of tagged sections, one per field.
// ---------------------------------------------------------------------------------------------

/// A tag with this bit set marks a section a reader must understand ("critical", as in PNG).
pub const CRITICAL_TAG_BIT: u16 = 0x8000;

/// The section tags of [`CheckpointData`]'s fields. A tag is never reused; a field whose type
/// changes gets a new tag. The table in `docs/architecture.md` lists the same numbers.
pub(crate) mod tag {
    /// `checkpoint_time_ms: u64` (required).
    pub(crate) const CHECKPOINT_TIME_MS: u16 = 1;
    /// `pending_batches: Vec<u64>`.
    pub(crate) const PENDING_BATCHES: u16 = 2;
    /// `batch_interval_ms: u64`.
    pub(crate) const BATCH_INTERVAL_MS: u16 = 3;
    /// `zero_time_ms: u64`.
    pub(crate) const ZERO_TIME_MS: u16 = 4;
    /// `settings: BTreeMap<String, String>`.
    pub(crate) const SETTINGS: u16 = 5;
    /// `source_offsets: Vec<SourceOffset>`.
    pub(crate) const SOURCE_OFFSETS: u16 = 6;
    /// `operator_state: Vec<OperatorState>`.
    pub(crate) const OPERATOR_STATE: u16 = 7;
    /// `graph_fingerprint: u64`.
    pub(crate) const GRAPH_FINGERPRINT: u16 = 8;
    /// `operator_state: Vec<OperatorState>` whose [`StateData`](super::StateData) may be a
    /// [`Chain`](super::StateData::Chain): the type of tag 7 with a third variant, so a new,
    /// critical tag (a reader that does not know chains must not restore without the state).
    /// Written instead of tag 7 only when some state is a chain; the two never appear together.
    pub(crate) const OPERATOR_STATE_CHAINED: u16 = 0x8009;
    /// `BTreeMap<String, u32>`: operator id → the schema version of its state
    /// ([`OperatorState::schema_version`]), for the operators whose version is not
    /// [`FIRST_SCHEMA_VERSION`](super::FIRST_SCHEMA_VERSION) (absent: every state is at
    /// version 1, as before versions existed). Critical, and written only when not empty: a
    /// reader that does not know versions would read state of a later version as the first
    /// one's type, so it must refuse the checkpoint; one without versions is unchanged.
    pub(crate) const STATE_SCHEMA_VERSIONS: u16 = 0x800A;
}

/// The schema version of an operator's state when its program does not say
/// ([`OperatorState::schema_version`]), and of all state written before versions existed.
pub const FIRST_SCHEMA_VERSION: u32 = 1;

fn first_schema_version() -> u32 {
    FIRST_SCHEMA_VERSION
}

/// Everything a checkpoint holds: data only, never code.
///
/// On storage every field is its own tagged section (see the module docs of
/// [`crate::checkpoint`] for the versioning rule); a section an older writer did not write
/// decodes as the field's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointData {
    /// The batch time (ms since the Unix epoch) the checkpoint was taken at. Required.
    pub checkpoint_time_ms: u64,
    /// The batch times (ms) that were generated but not yet completed, to be rerun on restore.
    pub pending_batches: Vec<u64>,
    /// The batch interval (ms) in force when the checkpoint was taken.
    pub batch_interval_ms: u64,
    /// The alignment origin of the batch timer (ms): batch times are `zero_time_ms + n * interval`.
    pub zero_time_ms: u64,
    /// The subset of the configuration that must survive a restart.
    pub settings: BTreeMap<String, String>,
    /// How far each source partition has been consumed.
    pub source_offsets: Vec<SourceOffset>,
    /// Operator state, keyed by stable operator ids.
    pub operator_state: Vec<OperatorState>,
    /// A fingerprint of the streaming graph that wrote the checkpoint, to detect an
    /// incompatible code change on restore.
    pub graph_fingerprint: u64,
}

/// The consumed position of one source partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceOffset {
    /// The source's stable name.
    pub source: String,
    /// The partition within the source.
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
}

/// The state of one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The operator's stable id (not derived from code layout).
    pub operator_id: String,
    /// The name of the state's Rust type, to report a mismatch on restore.
    pub type_name: String,
    /// The state's bytes, inline or in a separate state file.
    pub data: StateData,
    /// The schema version of the state's type, as the program that wrote it declared it
    /// ([`FIRST_SCHEMA_VERSION`] if it did not): a restore by a program declaring another
    /// version migrates the state or refuses it. Not part of section 7's (or `0x8009`'s)
    /// type — that encoding is unchanged — but stored in its own section, `0x800A`
    /// (`tag::STATE_SCHEMA_VERSIONS`), for the operators whose version is not the first.
    #[serde(skip, default = "first_schema_version")]
    pub schema_version: u32,
}

/// Where an operator's state bytes live.
///
/// This enum is part of section 7's type. [`StateData::Chain`] was added later, so a
/// checkpoint holding a chain stores its operator state under the critical tag `0x8009`
/// instead (see the versioning rule in [`crate::checkpoint`]); the first two variants keep
/// their encoding, so tag 7 still decodes as this type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateData {
    /// The bytes, inside the checkpoint.
    Inline(Vec<u8>),
    /// A state file next to the checkpoint (for large state).
    File(StateFileRef),
    /// State files to apply in order: a base, then deltas, each holding what changed since
    /// the one before (incremental checkpoints). Files are shared: later checkpoints reference
    /// the same base and deltas and add their own. Only the pipeline knows what a file means;
    /// the store reads, verifies and garbage-collects them.
    Chain(Vec<StateFileRef>),
}

impl Default for StateData {
    fn default() -> Self {
        StateData::Inline(Vec::new())
    }
}

/// A reference from a checkpoint to a state file, as returned by
/// [`CheckpointStore::write_state_file`](crate::checkpoint::CheckpointStore::write_state_file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateFileRef {
    /// The file's name inside the store's `state/` directory.
    pub name: String,
    /// The length of the state bytes (the state file's payload).
    pub len: u64,
    /// The CRC32C of the state bytes.
    pub crc32c: u32,
}

fn section<T: Serialize>(tag: u16, value: &T) -> Result<(u16, Vec<u8>), FormatError> {
    postcard::to_stdvec(value)
        .map(|bytes| (tag, bytes))
        .map_err(|err| FormatError::Encode {
            tag,
            detail: err.to_string(),
        })
}

fn field<T: DeserializeOwned>(tag: u16, bytes: &[u8]) -> Result<T, FormatError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(FormatError::BadSection {
            tag,
            detail: format!("{} bytes follow the value", rest.len()),
        }),
        Err(err) => Err(FormatError::BadSection {
            tag,
            detail: err.to_string(),
        }),
    }
}

/// Encodes a list of sections as a checkpoint payload (postcard `Vec<(u16, Vec<u8>)>`).
pub(crate) fn encode_sections(sections: &[(u16, Vec<u8>)]) -> Result<Vec<u8>, FormatError> {
    postcard::to_stdvec(sections).map_err(|err| FormatError::BadSectionList {
        detail: err.to_string(),
    })
}

/// Decodes a checkpoint payload into its sections, keyed by tag.
pub(crate) fn decode_sections(payload: &[u8]) -> Result<BTreeMap<u16, Vec<u8>>, FormatError> {
    let sections = match postcard::take_from_bytes::<Vec<(u16, Vec<u8>)>>(payload) {
        Ok((sections, [])) => sections,
        Ok((_, rest)) => {
            return Err(FormatError::BadSectionList {
                detail: format!("{} bytes follow the list", rest.len()),
            });
        }
        Err(err) => {
            return Err(FormatError::BadSectionList {
                detail: err.to_string(),
            });
        }
    };
    let mut by_tag = BTreeMap::new();
    for (tag, bytes) in sections {
        if by_tag.insert(tag, bytes).is_some() {
            return Err(FormatError::DuplicateSection { tag });
        }
    }
    Ok(by_tag)
}

impl CheckpointData {
    /// Encodes the checkpoint as a complete file: header, then the section list.
    ///
    /// The encoding is deterministic: equal values give equal bytes.
    ///
    /// # Errors
    ///
    /// [`FormatError::Encode`] if a field cannot be encoded, which no value of these types
    /// causes today.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut sections = vec![
            section(tag::CHECKPOINT_TIME_MS, &self.checkpoint_time_ms)?,
            section(tag::PENDING_BATCHES, &self.pending_batches)?,
            section(tag::BATCH_INTERVAL_MS, &self.batch_interval_ms)?,
            section(tag::ZERO_TIME_MS, &self.zero_time_ms)?,
            section(tag::SETTINGS, &self.settings)?,
            section(tag::SOURCE_OFFSETS, &self.source_offsets)?,
            if self.has_chain() {
                section(tag::OPERATOR_STATE_CHAINED, &self.operator_state)?
            } else {
                section(tag::OPERATOR_STATE, &self.operator_state)?
            },
            section(tag::GRAPH_FINGERPRINT, &self.graph_fingerprint)?,
        ];
        let versions = self.schema_versions();
        if !versions.is_empty() {
            sections.push(section(tag::STATE_SCHEMA_VERSIONS, &versions)?);
        }
        Ok(frame(CHECKPOINT_FRAME, &encode_sections(&sections)?))
    }

    /// Decodes a complete checkpoint file, checking header and checksum first.
    ///
    /// Unknown sections are ignored unless their tag has [`CRITICAL_TAG_BIT`] set; absent
    /// optional sections take their default.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] saying what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut sections = decode_sections(unframe(CHECKPOINT_FRAME, bytes)?)?;
        let mut take = |tag: u16| sections.remove(&tag);
        fn opt<T: DeserializeOwned + Default>(
            tag: u16,
            bytes: Option<Vec<u8>>,
        ) -> Result<T, FormatError> {
            bytes.map_or_else(|| Ok(T::default()), |b| field(tag, &b))
        }
        let checkpoint_time_ms = match take(tag::CHECKPOINT_TIME_MS) {
            Some(bytes) => field(tag::CHECKPOINT_TIME_MS, &bytes)?,
            None => {
                return Err(FormatError::MissingSection {
                    tag: tag::CHECKPOINT_TIME_MS,
                    name: "checkpoint_time_ms",
                });
            }
        };
        let operator_state = match (take(tag::OPERATOR_STATE), take(tag::OPERATOR_STATE_CHAINED)) {
            (Some(_), Some(_)) => {
                return Err(FormatError::BadSection {
                    tag: tag::OPERATOR_STATE_CHAINED,
                    detail: "operator state appears under both tag 7 and tag 0x8009".to_owned(),
                });
            }
            (None, Some(bytes)) => field(tag::OPERATOR_STATE_CHAINED, &bytes)?,
            (plain, None) => opt(tag::OPERATOR_STATE, plain)?,
        };
        let mut operator_state: Vec<OperatorState> = operator_state;
        if let Some(bytes) = take(tag::STATE_SCHEMA_VERSIONS) {
            let versions: BTreeMap<String, u32> = field(tag::STATE_SCHEMA_VERSIONS, &bytes)?;
            for (id, version) in versions {
                let Some(op) = operator_state.iter_mut().find(|op| op.operator_id == id) else {
                    return Err(FormatError::BadSection {
                        tag: tag::STATE_SCHEMA_VERSIONS,
                        detail: format!("a schema version for operator {id:?}, which has no state"),
                    });
                };
                op.schema_version = version;
            }
        }
        let data = CheckpointData {
            checkpoint_time_ms,
            pending_batches: opt(tag::PENDING_BATCHES, take(tag::PENDING_BATCHES))?,
            batch_interval_ms: opt(tag::BATCH_INTERVAL_MS, take(tag::BATCH_INTERVAL_MS))?,
            zero_time_ms: opt(tag::ZERO_TIME_MS, take(tag::ZERO_TIME_MS))?,
            settings: opt(tag::SETTINGS, take(tag::SETTINGS))?,
            source_offsets: opt(tag::SOURCE_OFFSETS, take(tag::SOURCE_OFFSETS))?,
            operator_state,
            graph_fingerprint: opt(tag::GRAPH_FINGERPRINT, take(tag::GRAPH_FINGERPRINT))?,
        };
        // What is left is unknown to this build.
        if let Some(&tag) = sections.keys().find(|&&tag| tag & CRITICAL_TAG_BIT != 0) {
            return Err(FormatError::UnknownCriticalSection { tag });
        }
        Ok(data)
    }

    /// The state files this checkpoint references (a chain's in order).
    pub fn state_files(&self) -> impl Iterator<Item = &StateFileRef> {
        self.operator_state.iter().flat_map(|op| match &op.data {
            StateData::File(file) => std::slice::from_ref(file),
            StateData::Chain(files) => files.as_slice(),
            StateData::Inline(_) => &[],
        })
    }

    /// The schema versions that are not [`FIRST_SCHEMA_VERSION`], by operator id (section
    /// `0x800A`).
    fn schema_versions(&self) -> BTreeMap<&str, u32> {
        self.operator_state
            .iter()
            .filter(|op| op.schema_version != FIRST_SCHEMA_VERSION)
            .map(|op| (op.operator_id.as_str(), op.schema_version))
            .collect()
    }

    /// Whether some operator's state is a [`StateData::Chain`] (stored under tag `0x8009`).
    pub fn has_chain(&self) -> bool {
        self.operator_state
            .iter()
            .any(|op| matches!(op.data, StateData::Chain(_)))
    }
}

/// Frames `bytes` as a state file (the store frames in place or in pieces: for tests and the
/// fuzz targets' round trips).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode_state_file(bytes: &[u8]) -> Vec<u8> {
    frame(STATE_FILE_FRAME, bytes)
}

/// [`encode_state_file`], in `bytes`' own allocation ([`frame_owned`]; `crc` is theirs).
pub(crate) fn encode_state_file_owned(bytes: Vec<u8>, crc: u32) -> Vec<u8> {
    frame_owned(STATE_FILE_FRAME, bytes, crc)
}

/// Checks a state file's frame and returns its payload (the state bytes).
pub(crate) fn decode_state_file(bytes: &[u8]) -> Result<&[u8], FormatError> {
    unframe(STATE_FILE_FRAME, bytes)
}

// ---------------------------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------------------------

/// The id of a checkpoint. Ids increase with every write and are never reused in a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

const CHECKPOINT_PREFIX: &str = "checkpoint-";
/// Digits in a zero-padded id: `u64::MAX` has 20, so lexical order is numeric order.
const ID_DIGITS: usize = 20;
/// The longest operator-id slug kept in a state file's name.
const SLUG_MAX: usize = 64;

fn parse_digits(s: &str) -> Option<u64> {
    if s.len() == ID_DIGITS && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

impl CheckpointId {
    /// The checkpoint's file (or object) name, e.g. `checkpoint-00000000000000000042`.
    pub fn file_name(self) -> String {
        format!("{CHECKPOINT_PREFIX}{:0width$}", self.0, width = ID_DIGITS)
    }

    /// Parses a name built by [`CheckpointId::file_name`]; any other name gives `None`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        name.strip_prefix(CHECKPOINT_PREFIX)
            .and_then(parse_digits)
            .map(CheckpointId)
    }
}

/// The parts of a state file's name: `{next:020}-{seq:020}-{slug}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateFileName {
    /// The id the next checkpoint would get when the file was written.
    pub(crate) next_checkpoint: CheckpointId,
    /// A per-store sequence number that makes the name unique.
    pub(crate) seq: u64,
    /// The operator id, reduced to `[A-Za-z0-9_.]` and at most 64 bytes (for people only).
    pub(crate) slug: String,
}

impl StateFileName {
    pub(crate) fn new(next_checkpoint: CheckpointId, seq: u64, operator_id: &str) -> Self {
        let slug = operator_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(SLUG_MAX)
            .collect();
        StateFileName {
            next_checkpoint,
            seq,
            slug,
        }
    }

    pub(crate) fn build(&self) -> String {
        format!(
            "{:0w$}-{:0w$}-{}",
            self.next_checkpoint.0,
            self.seq,
            self.slug,
            w = ID_DIGITS
        )
    }

    /// Parses a name built by [`StateFileName::build`]; any other name (including anything
    /// with a `/`, `..` or a leading `.`) gives `None`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let (next, rest) = name.split_at_checked(ID_DIGITS)?;
        let rest = rest.strip_prefix('-')?;
        let (seq, rest) = rest.split_at_checked(ID_DIGITS)?;
        let slug = rest.strip_prefix('-')?;
        let slug_ok = slug.len() <= SLUG_MAX
            && slug
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !slug_ok {
            return None;
        }
        Some(StateFileName {
            next_checkpoint: CheckpointId(parse_digits(next)?),
            seq: parse_digits(seq)?,
            slug: slug.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Framing in place gives the bytes [`frame`] gives, whatever the payload's size and spare
    /// capacity.
    #[test]
    fn framing_in_place_equals_framing_a_copy() {
        for len in [0usize, 1, 23, 24, 25, 1_000, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut spare = Vec::with_capacity(len + 100);
            spare.extend_from_slice(&payload);
            let framed = frame(STATE_FILE_FRAME, &payload);
            let crc = crc32c::crc32c(&payload);
            assert_eq!(
                frame_owned(STATE_FILE_FRAME, payload.clone(), crc),
                framed,
                "{len}"
            );
            assert_eq!(frame_owned(STATE_FILE_FRAME, spare, crc), framed, "{len}");
            assert_eq!(decode_state_file(&framed).ok(), Some(payload.as_slice()));
        }
    }
    use proptest::prelude::*;

    fn example() -> CheckpointData {
        CheckpointData {
            checkpoint_time_ms: 1_700_000_000_000,
            batch_interval_ms: 1_000,
            ..CheckpointData::default()
        }
    }

    /// The hex bytes of the block after `marker` in `docs/architecture.md`.
    fn doc_bytes(marker: &str) -> Vec<u8> {
        crate::testing::golden_bytes(include_str!("../../../docs/architecture.md"), marker)
    }

    #[test]
    fn golden_bytes_match_the_example_in_format_md() {
        let bytes = example().encode().unwrap();
        assert_eq!(bytes, doc_bytes("<!-- golden: checkpoint-example -->"));
        assert_eq!(CheckpointData::decode(&bytes).unwrap(), example());
    }

    #[test]
    fn golden_state_file_matches_the_example_in_format_md() {
        let bytes = encode_state_file(b"hello");
        assert_eq!(bytes, doc_bytes("<!-- golden: state-file-example -->"));
        assert_eq!(decode_state_file(&bytes).unwrap(), b"hello");
    }

    #[test]
    fn header_rejections_name_the_problem() {
        let good = example().encode().unwrap();

        let err = CheckpointData::decode(&good[..10]).unwrap_err();
        assert_eq!(err, FormatError::TooShort { len: 10 });

        let mut bad = good.clone();
        bad[1] = b'X';
        assert!(matches!(
            CheckpointData::decode(&bad),
            Err(FormatError::BadMagic { .. })
        ));

        let mut bad = good.clone();
        bad[VERSION_AT..VERSION_AT + 2].copy_from_slice(&7u16.to_le_bytes());
        let err = CheckpointData::decode(&bad).unwrap_err();
        assert_eq!(
            err,
            FormatError::UnsupportedVersion {
                version: 7,
                supported: 1
            }
        );
        assert!(err.to_string().contains("format version 7"), "{err}");

        let mut bad = good.clone();
        bad[RESERVED_AT] = 1;
        assert_eq!(
            CheckpointData::decode(&bad),
            Err(FormatError::ReservedNotZero { value: 1 })
        );

        let err = CheckpointData::decode(&good[..good.len() - 1]).unwrap_err();
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");

        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            CheckpointData::decode(&bad),
            Err(FormatError::TrailingBytes { .. })
        ));

        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            CheckpointData::decode(&bad),
            Err(FormatError::CrcMismatch { .. })
        ));

        // A state file is not a checkpoint, and the other way round.
        assert!(matches!(
            CheckpointData::decode(&encode_state_file(b"x")),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            decode_state_file(&good),
            Err(FormatError::BadMagic { .. })
        ));
    }

    #[test]
    fn missing_required_and_duplicate_sections_are_rejected() {
        let only_interval = encode_sections(&[section(tag::BATCH_INTERVAL_MS, &5u64).unwrap()]);
        let err = CheckpointData::decode(&frame(CHECKPOINT_FRAME, &only_interval.unwrap()));
        assert!(matches!(
            err,
            Err(FormatError::MissingSection { tag: 1, .. })
        ));

        let twice = encode_sections(&[
            section(tag::CHECKPOINT_TIME_MS, &5u64).unwrap(),
            section(tag::CHECKPOINT_TIME_MS, &6u64).unwrap(),
        ]);
        let err = CheckpointData::decode(&frame(CHECKPOINT_FRAME, &twice.unwrap()));
        assert_eq!(err, Err(FormatError::DuplicateSection { tag: 1 }));

        // A known section whose bytes are not its type (a u64 section holding a string).
        let wrong = encode_sections(&[
            section(tag::CHECKPOINT_TIME_MS, &5u64).unwrap(),
            section(tag::PENDING_BATCHES, &String::from("\u{80}")).unwrap(),
        ]);
        let err = CheckpointData::decode(&frame(CHECKPOINT_FRAME, &wrong.unwrap()));
        assert!(
            matches!(err, Err(FormatError::BadSection { tag: 2, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_schema_version_for_an_operator_without_state_is_rejected() {
        let versions = BTreeMap::from([("gone".to_owned(), 2u32)]);
        let bytes = encode_sections(&[
            section(tag::CHECKPOINT_TIME_MS, &5u64).unwrap(),
            section(tag::STATE_SCHEMA_VERSIONS, &versions).unwrap(),
        ]);
        let err = CheckpointData::decode(&frame(CHECKPOINT_FRAME, &bytes.unwrap())).unwrap_err();
        assert!(
            matches!(&err, FormatError::BadSection { tag: 0x800A, detail } if detail.contains("\"gone\"")),
            "{err:?}"
        );
    }

    #[test]
    fn checkpoint_names_sort_like_ids() {
        assert_eq!(
            CheckpointId(42).file_name(),
            "checkpoint-00000000000000000042"
        );
        assert_eq!(
            CheckpointId(u64::MAX).file_name(),
            "checkpoint-18446744073709551615"
        );
        for bad in [
            "checkpoint-42",
            "checkpoint-+0000000000000000042",
            "checkpoint-99999999999999999999",
            ".tmp-checkpoint-00000000000000000042-1-0",
            "checkpoint-00000000000000000042.bak",
            "00000000000000000042",
        ] {
            assert_eq!(CheckpointId::from_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn state_file_names_are_safe() {
        let name = StateFileName::new(CheckpointId(7), 3, "../win dow/€");
        assert_eq!(
            name.build(),
            "00000000000000000007-00000000000000000003-.._win_dow__"
        );
        assert_eq!(StateFileName::parse(&name.build()), Some(name));
        for bad in [
            "../00000000000000000007-00000000000000000003-x",
            "00000000000000000007-00000000000000000003-a/b",
            "00000000000000000007-00000000000000000003",
            "0000000000000000007-00000000000000000003-x",
        ] {
            assert_eq!(StateFileName::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn checkpoint_name_round_trips(id in any::<u64>()) {
            let name = CheckpointId(id).file_name();
            prop_assert_eq!(CheckpointId::from_file_name(&name), Some(CheckpointId(id)));
        }

        #[test]
        fn checkpoint_names_order_like_ids(a in any::<u64>(), b in any::<u64>()) {
            let (na, nb) = (CheckpointId(a).file_name(), CheckpointId(b).file_name());
            prop_assert_eq!(na.cmp(&nb), a.cmp(&b));
        }

        #[test]
        fn state_file_name_round_trips(next in any::<u64>(), seq in any::<u64>(), op in ".{0,80}") {
            let name = StateFileName::new(CheckpointId(next), seq, &op);
            prop_assert_eq!(StateFileName::parse(&name.build()), Some(name));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CheckpointData::decode(&bytes);
            let _ = decode_state_file(&bytes);
        }

        #[test]
        fn decode_of_any_framed_payload_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = CheckpointData::decode(&frame(CHECKPOINT_FRAME, &payload));
        }

        #[test]
        fn any_single_bit_flip_is_detected(byte in 0usize..1000, bit in 0u8..8) {
            let good = example().encode().unwrap();
            let mut bad = good.clone();
            let at = byte % bad.len();
            bad[at] ^= 1 << bit;
            prop_assert!(CheckpointData::decode(&bad).is_err());
        }
    }
}
