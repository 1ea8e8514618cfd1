//! One module per subcommand, each with a `run` that returns the process exit code.

pub mod exec;
pub mod generate;
pub mod list;
pub mod route;
pub mod routes;

use crate::error::Result;
use crate::machined::Machined;
use crate::target::Target;

/// Checks privileges, then connects to machined only when the target needs it, so
/// `netns:` and `pid:` targets work on machines without systemd-machined.
pub async fn machined_for(target: &Target) -> Result<Option<Machined>> {
    if *target != Target::Host {
        crate::netns::require_privileges()?;
    }
    if target.needs_machined() {
        Ok(Some(Machined::connect().await?))
    } else {
        Ok(None)
    }
}
