//! `weir kill` and `weir panic`.

use weir_actors::control::Command;

use super::args::ActorCommandArgs;
use super::client::command;

/// Kills (`kill`) or panics the actor; prints what was done.
///
/// # Errors
///
/// The endpoint is unreachable, the token file unreadable, or the endpoint refused.
pub(super) async fn run(args: ActorCommandArgs, kill: bool) -> anyhow::Result<()> {
    let actor = args.actor;
    command(&args.addr, args.token_file.as_deref(), |id, token| {
        if kill {
            Command::Kill { id, actor, token }
        } else {
            Command::Panic { id, actor, token }
        }
    })
    .await
}
