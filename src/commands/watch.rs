//! `machnet watch [NAME...]`: live route, address and link changes across machines.

use crate::cli::WatchArgs;
use crate::error::Result;
use crate::machined::Machined;
use crate::watch::{self, Options};

pub async fn run(args: WatchArgs) -> Result<i32> {
    crate::netns::require_privileges()?;
    // The route set is read (and every route in it checked) before anything is watched.
    let reapply = match &args.reapply {
        Some(file) => Some(super::apply::Declared::load(file)?),
        None => None,
    };
    let machined = Machined::connect().await?;
    watch::run(
        machined,
        Options {
            only: args.names,
            json: args.json,
            reapply,
            rcvbuf: args.rcvbuf,
        },
    )
    .await
}
