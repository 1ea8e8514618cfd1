//! One module per subcommand, each with a `run` that returns the process exit code.

pub mod apply;
pub mod audit;
pub mod exec;
pub mod firewall;
pub mod generate;
pub mod link;
pub mod links;
pub mod list;
pub mod neigh;
pub mod route;
pub mod routes;
pub mod routes_all;
pub mod rules;
pub mod sockets;
pub mod topology;
pub mod watch;
pub mod whois;
pub mod why;

use crate::error::Result;
use crate::machined::Machined;
use crate::netlink::Protocol;
use crate::target::{Resolved, Target};

/// Writes a command's whole output to stdout (a closed pipe is handled by main).
pub fn write_stdout(out: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out)
        .and_then(|_| stdout.flush())
        .map_err(|e| crate::error::Error::io("writing output", e))
}

/// Says on stderr that a machine's reading is the host's own (`what`: "rules", …): a
/// machine sharing the host's network namespace has no table of its own.
pub fn note_if_host(namespace: &crate::netns::PinnedNamespace, target: &Target, what: &str) {
    if namespace.isolation == crate::netns::Isolation::SharesHost && *target != Target::Host {
        eprintln!(
            "machnet: note: {} shares the host's network namespace: these are the host's {what}",
            namespace.label
        );
    }
}

/// The whole JSON array of `objects` (already comma-separated), as `ip -j` ends it.
pub fn json_array(objects: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(objects.len() + 3);
    out.push(b'[');
    out.extend_from_slice(objects);
    out.extend_from_slice(b"]\n");
    out
}

/// Pins a target to read it over rtnetlink.
pub async fn pin(target: &Target) -> Result<crate::netns::PinnedNamespace> {
    pin_for(target, Protocol::Route).await
}

/// Pins a target whose first use is a `protocol` socket (made early where that is free).
pub async fn pin_for(target: &Target, protocol: Protocol) -> Result<crate::netns::PinnedNamespace> {
    let extra = crate::netns::ExtraNamespaces::default();
    let resolved = resolve(target, extra, Some(protocol)).await?;
    Ok(resolved.namespace)
}

/// Checks privileges and pins a target. A machine is first looked up on the direct path
/// (one blocking connection, two round trips, `prepare`'s socket made while the second is
/// answered); when machined's answers there are anything but plain success, it is asked
/// again through zbus, which words the error.
pub async fn resolve(
    target: &Target,
    extra: crate::netns::ExtraNamespaces,
    prepare: Option<Protocol>,
) -> Result<Resolved> {
    if *target != Target::Host {
        crate::netns::require_privileges()?;
    }
    if let Target::Machine(name) = target {
        if let Some(resolved) = crate::target::resolve_machine_directly(name, extra, prepare)? {
            return Ok(resolved);
        }
    }
    let machined = match target.needs_machined() {
        true => Some(Machined::connect().await?),
        false => None,
    };
    target.resolve(machined.as_ref(), extra).await
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
