//! `machnet route show|add|del|replace|change|append TARGET SPEC`: `ip route` with machine
//! names, and ownership: routes machnet adds carry its own protocol number (109).

use std::io::{BufRead, Write};

use crate::cli::{EditArgs, GetArgs, RouteAction};
use crate::error::{Error, Result};
use crate::link;
use crate::route::get::{self, GetOptions, RTM_GETROUTE};
use crate::route::message::Route;
use crate::route::message::{AF_INET, AF_INET6};
use crate::route::names::Names;
use crate::route::print::{Format, RoutePrinter, ShowOptions};
use crate::route::request::{encode, Edit};
use crate::route::spec;

/// The routing protocol machnet's routes carry unless told otherwise (`proto machnet`).
pub use crate::route::names::MACHNET_PROTOCOL;

pub async fn run(action: RouteAction) -> Result<i32> {
    let (edit, args) = match action {
        RouteAction::Show(args) => return super::routes::run(args).await,
        RouteAction::Get(args) => return get_routes(args).await,
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
    // --protocol: the protocol an added route gets, and the one a delete must match.
    let mut route = route;
    let protocol = match &args.protocol {
        Some(p) => {
            let id = names.protocol_id(p).ok_or_else(|| {
                Error::Usage(format!("unknown routing protocol {p:?} for --protocol"))
            })?;
            if edit == Edit::Delete && route.protocol.is_none() {
                route.protocol = Some(id);
            }
            id
        }
        None => MACHNET_PROTOCOL,
    };

    let namespace = super::pin_for_edit(&args.target, args.allow_host, "routes").await?;
    let mut sock = namespace.open_netlink()?;
    let links = link::link_names(&mut sock)?;
    let context = format!("{} route \"{text}\" in {}", edit.verb(), namespace.label);
    // An IPv6 delete is first narrowed to the one route that matches every field given.
    let route = if edit == Edit::Delete && route.family == AF_INET6 {
        pin_ipv6_delete(&mut sock, &route, &links, &context)?
    } else {
        route
    };
    let request = encode(&route, edit, protocol, &links).map_err(|e| {
        Error::NoSuchTarget(format!("route \"{text}\" in {}: {e}", namespace.label))
    })?;
    sock.request(edit.message_type(), edit.flags(), &request, &context)
        .map_err(|e| with_hint(e, edit))?;
    Ok(0)
}

/// The kernel matches an IPv6 delete only on prefix, source prefix, device, gateway,
/// metric and protocol: not on the type, preferred source, preference or metrics. So
/// `del unreachable fd00::/64` could remove a unicast fd00::/64. Find the route that matches
/// every field given, then name it to the kernel by all that the kernel does match.
fn pin_ipv6_delete(
    sock: &mut crate::netlink::NetlinkSocket,
    route: &spec::RouteSpec,
    links: &link::LinkNames,
    context: &str,
) -> Result<spec::RouteSpec> {
    use crate::route::message::{
        RTA_GATEWAY, RTA_OIF, RTA_PREF, RTA_PREFSRC, RTA_PRIORITY, RTA_SRC, RTA_TABLE,
    };
    const RTM_NEWROUTE: u16 = 24;
    let mut request = vec![0u8; 12];
    request[0] = AF_INET6;
    crate::netlink::attr::push(&mut request, RTA_TABLE, &route.table.to_ne_bytes());
    let oif = route.nexthop.dev.as_deref().and_then(|d| links.index_of(d));
    let gateway = route.nexthop.gateway.as_ref().map(|g| g.addr);
    let from = route.from.as_ref();
    let mut found: Option<spec::RouteSpec> = None;
    let dumped = sock.dump(26, &request, context, |msg| {
        if msg.kind != RTM_NEWROUTE || found.is_some() {
            return Ok(());
        }
        let r = Route::parse(msg.payload).map_err(|e| {
            Error::Other(format!(
                "the kernel sent a route machnet cannot decode ({})",
                e.0
            ))
        })?;
        let matches = r.dst_len == route.dst.len
            && r.addr_attr(crate::route::message::RTA_DST) == route.dst.addr
            && r.src_len == from.map_or(0, |f| f.len)
            && r.addr_attr(RTA_SRC) == from.and_then(|f| f.addr)
            && (!route.given.kind || r.kind == route.kind)
            && route
                .metric
                .is_none_or(|m| r.u32_attr(RTA_PRIORITY) == Some(m))
            && route.protocol.is_none_or(|p| r.protocol == p)
            && route
                .prefsrc
                .is_none_or(|a| r.addr_attr(RTA_PREFSRC) == Some(a))
            && route
                .pref
                .is_none_or(|p| r.attr(RTA_PREF) == Some(&[p][..]))
            && oif.is_none_or(|i| r.u32_attr(RTA_OIF) == Some(i))
            && gateway.is_none_or(|g| r.addr_attr(RTA_GATEWAY) == Some(g));
        if matches {
            let mut exact = route.clone();
            exact.metric = r.u32_attr(RTA_PRIORITY);
            exact.protocol = Some(r.protocol);
            // Name the device too, unless the route uses a nexthop object or several
            // nexthops (the kernel refuses a device beside `nhid`).
            if exact.nexthop.dev.is_none()
                && r.attr(crate::route::message::RTA_MULTIPATH).is_none()
                && r.attr(crate::route::message::RTA_NH_ID).is_none()
            {
                exact.nexthop.dev = r.u32_attr(RTA_OIF).map(|i| links.name(i).into_owned());
            }
            found = Some(exact);
        }
        Ok(())
    });
    let missing = || Error::Kernel {
        context: context.to_string(),
        source: std::io::Error::from_raw_os_error(libc::ESRCH),
        says: "no route matches every field given; nothing was deleted".into(),
    };
    match dumped {
        Ok(_) => found.ok_or_else(missing),
        // A table that does not exist holds no such route either.
        Err(Error::Kernel { .. }) => Err(missing()),
        Err(e) => Err(e),
    }
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

/// `route get`: every destination on one netlink socket, many questions per system call.
/// A destination the kernel cannot route is reported on stderr and the others still
/// print; the exit code then says that one failed.
async fn get_routes(args: GetArgs) -> Result<i32> {
    let names = Names::load();
    let mut options = GetOptions::default();
    let mut dests = parse_get(&args.words, &names, &mut options)?;
    let from_stdin = dests.is_empty();
    let mut per_dest_options = Vec::new();
    if from_stdin {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| Error::io("reading destinations from stdin", e))?;
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                continue;
            }
            let mut line_options = options.clone();
            for dest in parse_get(&words, &names, &mut line_options)? {
                dests.push(dest);
                per_dest_options.push(line_options.clone());
            }
        }
        if dests.is_empty() {
            return Err(Error::Usage(
                "route get needs a destination: as arguments, or one a line on stdin".into(),
            ));
        }
    }

    let namespace = super::pin(&args.target).await?;
    let mut sock = namespace.open_netlink()?;
    let links = link::link_names(&mut sock)?;
    let requests = dests
        .iter()
        .enumerate()
        .map(|(i, dest)| {
            let opts = per_dest_options.get(i).unwrap_or(&options);
            get::encode(*dest, opts, &links).map_err(|e| {
                Error::NoSuchTarget(format!("route get {dest} in {}: {e}", namespace.label))
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let mut shown = links.clone();
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        shown.make_printable();
    }
    let printer = RoutePrinter {
        names: &names,
        links: &shown,
        // As `ip route get`: no table filter, so a table other than main is named.
        options: ShowOptions { all_tables: true },
        format: if args.json {
            Format::Json
        } else {
            Format::Text
        },
        hz: super::routes::user_hz(),
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    let mut printed = 0usize;
    if args.json {
        out.push(b'[');
    }
    let context = format!("route get in {}", namespace.label);
    sock.query_many(RTM_GETROUTE, &requests, &context, |i, answer| {
        match answer {
            Ok(msg) => {
                let route = Route::parse(msg.payload).map_err(|e| {
                    Error::Other(format!(
                        "the kernel sent a route machnet cannot decode ({})",
                        e.0
                    ))
                })?;
                if args.json && printed > 0 {
                    out.push(b',');
                }
                printer.print(&route, &mut out);
                printed += 1;
            }
            Err(e) => {
                eprintln!("machnet: {}: {e}", dests[i]);
                failed.get_or_insert(e);
            }
        }
        if out.len() >= 64 * 1024 {
            stdout
                .write_all(&out)
                .map_err(|e| Error::io("writing output", e))?;
            out.clear();
        }
        Ok(())
    })?;
    if args.json {
        out.extend_from_slice(b"]\n");
    }
    stdout
        .write_all(&out)
        .map_err(|e| Error::io("writing output", e))?;
    stdout.flush().map_err(|e| Error::io("writing output", e))?;
    Ok(failed.map_or(0, |e| e.exit_code()))
}

fn parse_get(
    words: &[String],
    names: &Names,
    options: &mut GetOptions,
) -> Result<Vec<std::net::IpAddr>> {
    get::parse(words, names, options)
        .map_err(|e| Error::Usage(format!("malformed route get \"{}\": {e}", words.join(" "))))
}
