//! What the end-to-end tests of the examples share: a child process killed on every path, a
//! free loopback port, and the `weir` binary.

#![allow(dead_code, reason = "each test uses the part it needs")]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};

/// Kills and reaps the child when dropped, so a failed assertion leaves nothing running.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (taken by the OS for a moment, then released).
pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The `weir` binary (package `weir-streaming`), next to `word_count` in the target directory;
/// built with the running cargo if this package's tests run alone.
pub(crate) fn weir_binary() -> PathBuf {
    let word_count = PathBuf::from(env!("CARGO_BIN_EXE_word_count"));
    let dir = word_count.parent().expect("a target directory");
    let weir = dir.join(format!("weir{}", std::env::consts::EXE_SUFFIX));
    if !weir.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "weir-streaming", "--bin", "weir"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the weir binary failed");
    }
    assert!(weir.exists(), "no weir binary at {}", weir.display());
    weir
}
