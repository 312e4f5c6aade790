//! What every fuzz target shares: an allocator that bounds each allocation.
//!
//! The targets run without a sanitizer (`cargo fuzz … -s none`: the code under test is safe
//! Rust, and a sanitizer would halve the executions per second), so libFuzzer's own
//! `-malloc_limit_mb`, which needs a sanitizer's malloc hooks, cannot see allocations. This
//! allocator can: a single allocation over [`LIMIT`] — for inputs of at most a few KB, a
//! decoder trusting a length field it read — aborts the process, which libFuzzer reports as a
//! crash and saves the input. libFuzzer's `-rss_limit_mb` still bounds the total.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation a decoder may make on a fuzz input: 16 MiB.
pub const LIMIT: usize = 16 << 20;

/// [`System`], aborting on an allocation over [`LIMIT`].
#[derive(Debug)]
pub struct Bounded;

impl Bounded {
    fn check(size: usize) {
        if size > LIMIT {
            // Unbuffered, and writing a static string allocates nothing.
            let _ = std::io::stderr().write_all(b"weir-fuzz: an allocation over 16 MiB\n");
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged, after a check that only reads `size`.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
