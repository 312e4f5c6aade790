//! `weir kill` and `weir panic`.

use anyhow::bail;
use weir_actors::control::Command;

use super::args::ActorCommandArgs;
use super::client::{Client, read_token};

/// Kills (`kill`) or panics the actor; prints what was done.
///
/// # Errors
///
/// The endpoint is unreachable, the token file unreadable, or the endpoint refused.
pub(super) async fn run(args: ActorCommandArgs, kill: bool) -> anyhow::Result<()> {
    let token = args.token_file.as_deref().map(read_token).transpose()?;
    let mut client = Client::connect(&args.addr, token.as_deref()).await?;
    let actor = args.actor.clone();
    let id = client
        .send(|id| {
            if kill {
                Command::Kill { id, actor, token }
            } else {
                Command::Panic { id, actor, token }
            }
        })
        .await?;
    let reply = client.reply(id).await?;
    if !reply.ok {
        bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(())
}
