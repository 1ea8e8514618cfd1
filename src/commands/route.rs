//! `machnet route show|add|del|replace|change|append TARGET SPEC`: `ip route` with machine
//! names, and ownership: routes machnet adds carry its own protocol number (109).

use crate::cli::{EditArgs, RouteAction};
use crate::error::{Error, Result};
use crate::link;
use crate::netns::{ExtraNamespaces, Isolation};
use crate::route::message::{AF_INET, AF_INET6};
use crate::route::names::Names;
use crate::route::request::{encode, Edit};
use crate::route::spec;

pub async fn run(action: RouteAction) -> Result<i32> {
    let (edit, args) = match action {
        RouteAction::Show(args) => return super::routes::run(args).await,
        RouteAction::Add(args) => (Edit::Add, args),
        RouteAction::Del(args) => (Edit::Delete, args),
        RouteAction::Replace(args) => (Edit::Replace, args),
        RouteAction::Change(args) => (Edit::Change, args),
        RouteAction::Append(args) => (Edit::Append, args),
    };
    edit_route(edit, args).await
}

async fn edit_route(edit: Edit, args: EditArgs) -> Result<i32> {
    let names = Names::load();
    let text = args.spec.join(" ");
    // Everything about the spec is checked before machined or the kernel hear of it.
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => AF_INET,
        (_, true) => AF_INET6,
        _ => 0,
    };
    let route = spec::parse(&args.spec, edit.purpose(), family, &names)
        .map_err(|e| Error::Usage(format!("malformed route \"{text}\": {e}")))?;
    let protocol = names.protocol_id(&args.protocol).ok_or_else(|| {
        Error::Usage(format!(
            "unknown routing protocol {:?} for --protocol",
            args.protocol
        ))
    })?;

    let machined = super::machined_for(&args.target).await?;
    let resolved = args
        .target
        .resolve(machined.as_ref(), ExtraNamespaces::default())
        .await?;
    let namespace = resolved.namespace;
    if namespace.isolation == Isolation::SharesHost && !args.allow_host {
        return Err(Error::Usage(format!(
            "refusing to change routes of {}: it shares the host's network namespace, so this \
             would change the host's own routes; pass --allow-host if that is what you mean",
            namespace.label
        )));
    }
    let mut sock = namespace.open_netlink()?;
    let links = link::link_names(&mut sock)?;
    let request = encode(&route, edit, protocol, &links).map_err(|e| {
        Error::NoSuchTarget(format!("route \"{text}\" in {}: {e}", namespace.label))
    })?;
    let context = format!("{} route \"{text}\" in {}", edit.verb(), namespace.label);
    sock.request(edit.message_type(), edit.flags(), &request, &context)
        .map_err(|e| with_hint(e, edit))?;
    Ok(0)
}

/// Adds what to try to the kernel's most common refusals.
fn with_hint(err: Error, edit: Edit) -> Error {
    let Error::Kernel {
        context,
        source,
        says,
    } = err
    else {
        return err;
    };
    let hint = match (source.raw_os_error(), edit) {
        (Some(libc::EEXIST), _) => Some("a route with this key exists; `replace` overwrites it"),
        (Some(libc::ESRCH), Edit::Delete) => {
            Some("no route matches every field given; nothing was deleted")
        }
        (Some(libc::ENOENT), Edit::Change) | (Some(libc::ESRCH), Edit::Change) => {
            Some("there is no such route to change; `replace` adds it")
        }
        (Some(libc::ENETUNREACH), _) => Some(
            "the gateway is on no connected subnet; add `onlink` or a route to the gateway first",
        ),
        (Some(libc::ENODEV), _) => Some("the device is down or gone"),
        _ => None,
    };
    let says = match hint {
        Some(hint) => format!("{says}; {hint}"),
        None => says,
    };
    Error::Kernel {
        context,
        source,
        says,
    }
}
