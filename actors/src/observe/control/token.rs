//! The control token: the secret that `kill` and `panic` commands must carry.
//!
//! The root creates a new one at every start ([`create_token`]) and writes it to
//! `<storage>/control-token` ([`CONTROL_TOKEN_FILE`]), readable only by the engine's user
//! (mode 0600, from the temp file on); whoever can read that file may change the engine. The
//! file is replaced atomically through the durable-file module
//! ([`durable::write_atomic_private`]: temp file, fsync, rename, fsync of the directory): a
//! crash leaves the old token or the new one, never a torn one, and at worst a
//! `.tmp-control-token-…` file beside it. The temp file is created new (`O_EXCL`) and never
//! through a symbolic link (`O_NOFOLLOW`): a link planted at its name fails the start instead
//! of sending the token elsewhere.
//! Tokens are compared in constant time ([`token_matches`]).

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::config::CONTROL_TOKEN_FILE;
use crate::storage::durable::{self, Failpoints};

/// Where the token of an engine storing in `dir` is written.
pub(crate) fn token_path(dir: &Path) -> PathBuf {
    dir.join(CONTROL_TOKEN_FILE)
}

/// Creates a new random token (32 bytes of OS entropy, as 64 hex digits) and writes it to
/// `<dir>/control-token` atomically, readable by its owner only (see the module docs).
///
/// # Errors
///
/// The OS gave no entropy, or the file could not be written.
pub(crate) fn create_token(dir: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        std::io::Error::other(format!("the OS gave no entropy for the control token: {e}"))
    })?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let line = format!("{token}\n");
    durable::create_dir_all(dir, Failpoints::NONE)
        .and_then(|()| {
            durable::write_atomic_private(&token_path(dir), line.as_bytes(), Failpoints::NONE)
        })
        .map_err(|err| {
            let kind = err
                .io_error()
                .map_or(std::io::ErrorKind::Other, |e| e.kind());
            std::io::Error::new(
                kind,
                format!(
                    "the control token could not be written to `{}`: {err}",
                    token_path(dir).display()
                ),
            )
        })?;
    Ok(token)
}

/// Whether `given` is the token, compared in constant time (for tokens of the same length).
pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    bool::from(expected.trim().as_bytes().ct_eq(given.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_private_and_matches_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = create_token(dir.path()).expect("token");
        assert_eq!(token.len(), 64);
        let read = std::fs::read_to_string(token_path(dir.path())).expect("read");
        assert!(token_matches(&read, &token));
        assert!(!token_matches(&read, &token[..63]));
        assert!(!token_matches(&read, &"0".repeat(64)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = create_token(dir.path()).expect("token");
        assert_ne!(again, token, "every start makes a new token");
    }

    #[test]
    fn a_symlink_planted_at_the_token_temp_name_is_refused_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        for temp in durable::upcoming_temp_paths(&token_path(dir.path()), 1024) {
            std::os::unix::fs::symlink(&victim, temp).expect("symlink");
        }
        let err = create_token(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read"),
            "precious",
            "the token was not written through the link"
        );
        assert!(!token_path(dir.path()).exists());
    }
}
