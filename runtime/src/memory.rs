//! The process's allocator, on which the memory a weir job takes from the system depends.
//!
//! weir bounds what it holds (received blocks by `block_store_bytes`, each batch's input by
//! `receiver_batch_max_bytes`; docs/operations.md, "Memory"), but what the process takes from
//! the system is also what its allocator keeps. glibc's malloc gives every thread that
//! allocates an arena of its own, up to eight per core, and memory freed into one arena is
//! not reused by another: a job whose batches run on a pool of threads keeps about 1.5 times
//! its live data, and under a sustained overload that grows slowly (docs/benchmarks.md,
//! "Overload"). Two arenas keep it close to the live data at no measured cost in throughput.

/// Limits glibc's malloc to `arenas` arenas, as the `MALLOC_ARENA_MAX` environment variable
/// does, unless that variable is set (the environment wins). Call it first thing in `main`,
/// before other threads start: threads that already have an arena keep it. weir's own
/// binaries (`word_count` and the other examples) call it with 2.
///
/// Returns whether the limit was set: `false` if `arenas` is 0, if `MALLOC_ARENA_MAX` is
/// set, or on a system whose allocator is not glibc's (where this does nothing).
pub fn limit_malloc_arenas(arenas: usize) -> bool {
    if arenas == 0 || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    set_arena_max(arenas)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: usize) -> bool {
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` takes no pointer; it sets one of glibc's malloc parameters under its
    // own lock.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arenas_is_not_a_limit() {
        assert!(!limit_malloc_arenas(0));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_limit_unless_the_environment_sets_one() {
        // The test binary's threads have their arenas already; the setting is what is tested.
        let set = limit_malloc_arenas(2);
        assert_eq!(set, std::env::var_os("MALLOC_ARENA_MAX").is_none());
    }
}
