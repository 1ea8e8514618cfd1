//! `machnet rules TARGET`: the policy routing rules inside TARGET, as `ip rule show`
//! prints them.

use crate::cli::RulesArgs;
use crate::error::Result;
use crate::route::emit::{Emitter, Format};
use crate::route::message::{AF_INET, AF_INET6};
use crate::route::names::Names;
use crate::rule::{self, print::RulePrinter};

/// What one dump attempt has written: the rules so far, and how many.
#[derive(Default)]
struct Printed {
    out: Vec<u8>,
    count: usize,
}

pub async fn run(args: RulesArgs) -> Result<i32> {
    let names = Names::load();
    let namespace = super::pin(&args.target).await?;
    super::note_if_host(&namespace, &args.target, "rules");
    let mut sock = namespace.open_netlink()?;
    // `ip rule show` without -4/-6 asks the kernel for IPv4 rules only (iprule.c turns
    // AF_UNSPEC into AF_INET), so IPv6 rules need -6 there and here alike.
    let family = if args.ipv6 { AF_INET6 } else { AF_INET };
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let printer = RulePrinter {
        names: &names,
        printable_names: !args.json && std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let printed = rule::dump(&mut sock, family, |p: &mut Printed, r| {
        let mut e = Emitter::new(format, &mut p.out);
        e.first = p.count == 0;
        p.count += 1;
        printer.print(r, &mut e)
    })?;
    let out = match format {
        Format::Json => super::json_array(&printed.out),
        Format::Text => printed.out,
    };
    super::write_stdout(&out)?;
    Ok(0)
}
