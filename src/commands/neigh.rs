//! `machnet neigh TARGET`: the neighbour entries inside TARGET, as `ip neigh show`
//! prints them.

use crate::cli::NeighArgs;
use crate::error::Result;
use crate::link;
use crate::neigh::print::{Devices, NeighPrinter};
use crate::neigh::{self, Filter};
use crate::route::emit::{Emitter, Format};
use crate::route::message::{AF_INET, AF_INET6};
use crate::route::names::Names;

/// What one dump attempt has written: the entries so far, and how many.
#[derive(Default)]
struct Printed {
    out: Vec<u8>,
    count: usize,
}

pub async fn run(args: NeighArgs) -> Result<i32> {
    let names = Names::load();
    // Unlike `ip rule`, `ip neigh` shows both families unless asked for one.
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => AF_INET,
        (_, true) => AF_INET6,
        _ => 0,
    };
    let filter = Filter::new(family, args.proxy, &args.nud)?;
    let namespace = super::pin(&args.target).await?;
    super::note_if_host(&namespace, &args.target, "neighbours");
    let mut sock = namespace.open_netlink()?;
    let mut devices = Devices::from_links(&link::dump_links(&mut sock)?);
    if !args.json && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        devices.names.make_printable();
    }
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let printer = NeighPrinter {
        names: &names,
        devices: &devices,
    };
    let printed = neigh::dump(&mut sock, filter, |p: &mut Printed, n| {
        let mut e = Emitter::new(format, &mut p.out);
        e.first = p.count == 0;
        p.count += 1;
        printer.print(n, &mut e);
        Ok(())
    })?;
    let out = match format {
        Format::Json => super::json_array(&printed.out),
        Format::Text => printed.out,
    };
    super::write_stdout(&out)?;
    Ok(0)
}
