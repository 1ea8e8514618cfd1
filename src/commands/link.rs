//! `machnet link set` and `machnet addr add|del`: small edits inside a machine.

use crate::cli::{AddrAction, AddrArgs, LinkAction};
use crate::error::{Error, Result};
use crate::link;
use crate::link_edit::{
    encode_addr, encode_link_change, parse_addr_spec, parse_link_change, NLM_F_CREATE_EXCL,
    RTM_DELADDR, RTM_NEWADDR, RTM_NEWLINK,
};

pub async fn run_link(action: LinkAction) -> Result<i32> {
    let LinkAction::Set(args) = action;
    let change = parse_link_change(&args.change).map_err(|e| {
        Error::Usage(format!(
            "malformed link change \"{}\": {e}",
            args.change.join(" ")
        ))
    })?;
    let namespace = super::pin_for_edit(&args.target, args.allow_host, "links").await?;
    let mut sock = namespace.open_netlink()?;
    let links = link::link_names(&mut sock)?;
    let index = device_index(&links, &args.ifname, &namespace.label)?;
    let context = format!(
        "setting {} {} in {}",
        args.ifname,
        args.change.join(" "),
        namespace.label
    );
    sock.request(RTM_NEWLINK, 0, &encode_link_change(index, change), &context)?;
    Ok(0)
}

pub async fn run_addr(action: AddrAction) -> Result<i32> {
    let (kind, flags, verb, args): (u16, u16, &str, AddrArgs) = match action {
        AddrAction::Add(args) => (RTM_NEWADDR, NLM_F_CREATE_EXCL, "adding", args),
        AddrAction::Del(args) => (RTM_DELADDR, 0, "deleting", args),
    };
    let text = args.spec.join(" ");
    let spec = parse_addr_spec(&args.spec)
        .map_err(|e| Error::Usage(format!("malformed address \"{text}\": {e}")))?;
    let namespace = super::pin_for_edit(&args.target, args.allow_host, "addresses").await?;
    let mut sock = namespace.open_netlink()?;
    let links = link::link_names(&mut sock)?;
    let index = device_index(&links, &spec.dev, &namespace.label)?;
    let context = format!("{verb} address \"{text}\" in {}", namespace.label);
    sock.request(kind, flags, &encode_addr(&spec, index), &context)?;
    Ok(0)
}

fn device_index(links: &link::LinkNames, name: &str, label: &str) -> Result<u32> {
    links.index_of(name).ok_or_else(|| {
        Error::NoSuchTarget(format!(
            "there is no device {name:?} in {label} (devices: {})",
            links.names_sorted().join(", ")
        ))
    })
}
