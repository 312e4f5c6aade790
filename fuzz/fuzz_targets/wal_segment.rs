//! Fuzz target: `weir_actors::fuzz::wal_segment` (see its documentation for what it checks).
#![no_main]

use weir_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_actors::fuzz::wal_segment(data));
