//! `machnet routes TARGET`: the routing table inside TARGET, as `ip route show` prints it.

use crate::cli::RoutesArgs;
use crate::error::{Error, Result};
use crate::link;
use crate::netns::Isolation;
use crate::route::dump::{stream_routes, RouteQuery};
use crate::route::message::{AF_INET, AF_INET6};
use crate::route::names::Names;
use crate::route::print::{Format, RoutePrinter, ShowOptions};
use crate::target::Target;

pub async fn run(args: RoutesArgs) -> Result<i32> {
    let names = Names::load();
    let table = parse_table(&args.table, &names)?;
    let query = RouteQuery {
        family: query_family(args.ipv4, args.ipv6, table),
        table,
    };
    let Some(target) = &args.target else {
        return super::routes_all::run(&args, query).await;
    };
    let namespace = super::pin(target).await?;
    if namespace.isolation == Isolation::SharesHost && *target != Target::Host {
        eprintln!(
            "machnet: note: {} shares the host's network namespace: these are the host's routes",
            namespace.label
        );
    }
    let mut sock = namespace.open_netlink()?;
    let mut stdout = std::io::stdout().lock();
    print_table(&mut sock, query, &names, args.json, &mut stdout)?;
    Ok(0)
}

/// Prints one namespace's routes (on `sock`) as `ip route show` would.
pub fn print_table(
    sock: &mut crate::netlink::NetlinkSocket,
    query: RouteQuery,
    names: &Names,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let links = link::link_names(sock)?;
    print_with_links(sock, query, names, json, links, out)
}

/// As [`print_table`], with the namespace's link names already read.
fn print_with_links(
    sock: &mut crate::netlink::NetlinkSocket,
    query: RouteQuery,
    names: &Names,
    json: bool,
    mut links: link::LinkNames,
    out: &mut impl std::io::Write,
) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        links.make_printable();
    }
    let printer = RoutePrinter {
        names,
        links: &links,
        options: ShowOptions {
            all_tables: query.table.is_none(),
        },
        format: if json { Format::Json } else { Format::Text },
        hz: user_hz(),
    };
    stream_routes(sock, query, &printer, out)
}

/// `ip route show` reads only IPv4 unless asked for a family, or for `table all`.
fn query_family(ipv4: bool, ipv6: bool, table: Option<u32>) -> u8 {
    match (ipv4, ipv6, table) {
        (true, _, _) => AF_INET,
        (_, true, _) => AF_INET6,
        (_, _, Some(_)) => AF_INET,
        (_, _, None) => 0,
    }
}

/// `all` → None; a name from rt_tables or a number → that table. Table 0 (`unspec`)
/// means "all" to the kernel and to ip alike.
pub fn parse_table(text: &str, names: &Names) -> Result<Option<u32>> {
    if text == "all" {
        return Ok(None);
    }
    names
        .table_id(text)
        .map(|id| (id != 0).then_some(id))
        .ok_or_else(|| {
            Error::Usage(format!(
                "unknown table {text:?}: use main, local, all, a number, or a name from rt_tables"
            ))
        })
}

/// USER_HZ, the unit the kernel reports route expiry times in.
pub fn user_hz() -> i32 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as i32
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_follows_ip_defaults() {
        assert_eq!(query_family(false, false, Some(254)), AF_INET);
        assert_eq!(query_family(false, false, None), 0);
        assert_eq!(query_family(false, true, None), AF_INET6);
        assert_eq!(query_family(true, false, None), AF_INET);
    }

    #[test]
    fn tables_by_name_number_or_all() {
        let names = Names::builtin();
        assert_eq!(parse_table("all", &names).unwrap(), None);
        assert_eq!(parse_table("0", &names).unwrap(), None);
        assert_eq!(parse_table("local", &names).unwrap(), Some(255));
        assert_eq!(parse_table("4294967290", &names).unwrap(), Some(4294967290));
        assert!(matches!(parse_table("bogus", &names), Err(Error::Usage(_))));
    }
}
