//! One module per subcommand, each with a `run` that returns the process exit code.

pub mod apply;
pub mod audit;
pub mod exec;
pub mod generate;
pub mod link;
pub mod links;
pub mod list;
pub mod route;
pub mod routes;
pub mod routes_all;
pub mod sockets;
pub mod topology;
pub mod watch;
pub mod whois;

use crate::error::Result;
use crate::machined::Machined;
use crate::target::Target;

/// Writes a command's whole output to stdout (a closed pipe is handled by main).
pub fn write_stdout(out: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out)
        .and_then(|_| stdout.flush())
        .map_err(|e| crate::error::Error::io("writing output", e))
}

/// Pins a target to read it.
pub async fn pin(target: &Target) -> Result<crate::netns::PinnedNamespace> {
    let machined = machined_for(target).await?;
    let resolved = target
        .resolve(machined.as_ref(), crate::netns::ExtraNamespaces::default())
        .await?;
    Ok(resolved.namespace)
}

/// Pins a target that is about to be changed: refuses one that shares the host's network
/// namespace unless the user said `--allow-host`, since the change would hit the host.
pub async fn pin_for_edit(
    target: &Target,
    allow_host: bool,
    what: &str,
) -> Result<crate::netns::PinnedNamespace> {
    let namespace = pin(target).await?;
    if namespace.isolation == crate::netns::Isolation::SharesHost && !allow_host {
        return Err(crate::error::Error::Usage(format!(
            "refusing to change {what} of {}: it shares the host's network namespace, so this \
             would change the host's own {what}; pass --allow-host if that is what you mean",
            namespace.label
        )));
    }
    Ok(namespace)
}

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
