//! Fuzz target: `weir_actors::fuzz::checkpoint` (see its documentation for what it checks).
#![no_main]

use weir_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_actors::fuzz::checkpoint(data));
