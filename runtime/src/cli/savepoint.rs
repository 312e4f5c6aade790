//! `weir savepoint`: has a running engine take a savepoint (and, with `--stop`, then stop
//! gracefully), through the control endpoint's `savepoint` command; prints where the
//! savepoint is and its batch time. A relative local path is made absolute here, since the
//! engine runs in another directory.

use anyhow::Context;
use weir_actors::control::Command;

use super::args::SavepointArgs;
use super::client::command;

/// The location as the engine must get it: an `s3://` URL as given, a local path absolute.
fn location(path: &str) -> anyhow::Result<String> {
    if path.starts_with("s3://") {
        return Ok(path.to_owned());
    }
    let absolute = std::path::absolute(path)
        .with_context(|| format!("could not make the savepoint path `{path}` absolute"))?;
    Ok(absolute.display().to_string())
}

/// Takes the savepoint; prints the engine's answer.
///
/// # Errors
///
/// The endpoint is unreachable, the token file unreadable, or the engine refused or failed.
pub(super) async fn run(args: SavepointArgs) -> anyhow::Result<()> {
    let (path, stop) = (location(&args.path)?, args.stop);
    command(&args.addr, args.token_file.as_deref(), |id, token| {
        Command::Savepoint {
            id,
            path,
            stop,
            token,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_is_made_absolute_and_a_url_is_kept() {
        let made = location("sp/one").unwrap_or_default();
        assert!(std::path::Path::new(&made).is_absolute(), "{made}");
        assert!(made.ends_with("sp/one"), "{made}");
        assert_eq!(location("s3://b/p").unwrap_or_default(), "s3://b/p");
    }
}
