//! Fuzz target: `weir::fuzz::log_frame` (see its documentation for what it checks).
#![no_main]

use weir_fuzz as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::log_frame(data));
