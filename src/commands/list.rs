//! `machnet list`: every machine machined knows, its namespace, interfaces and addresses.

use std::io::Write;

use serde::Serialize;

use crate::cli::ListArgs;
use crate::error::{Error, Result};
use crate::link::{self, Link};
use crate::machined::{Machine, Machined};
use crate::netns::{ExtraNamespaces, Isolation};
use crate::target::pin_machine;

#[derive(Debug, Serialize)]
pub struct MachineNetwork {
    pub machine: String,
    pub class: String,
    pub service: String,
    pub leader: u32,
    pub unit: String,
    /// "running", "stale" (leader gone, or its PID reused) or "error" (could not be read;
    /// `error` says why).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub netns_inode: Option<u64>,
    /// "private", "host" (shares the host's namespace) or null when unknown.
    pub netns: Option<&'static str>,
    pub interfaces: Vec<Link>,
}

pub async fn run(args: ListArgs) -> Result<i32> {
    crate::netns::require_privileges()?;
    let machined = Machined::connect().await?;
    let mut rows = Vec::new();
    for (_, path) in machined.list().await? {
        let machine = match machined.machine_at(path).await {
            Ok(m) => m,
            // Unregistered between ListMachines and now: no longer a machine.
            Err(Error::NoSuchTarget(_)) => continue,
            Err(e) => return Err(e),
        };
        rows.push(inspect(&machined, machine).await?);
    }
    // machined answers in hash order; people and diffs want a stable one.
    rows.sort_by(|a, b| a.machine.cmp(&b.machine));
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer(&mut out, &rows)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        out.write_all(render_table(&rows).as_bytes())
    };
    written.map_err(|e| Error::io("writing output", e))?;
    // Every row is printed; one that says "error" means the listing is partial.
    if rows.iter().any(|r| r.state == "error") {
        return Ok(crate::error::exit::PARTIAL);
    }
    Ok(0)
}

/// Reads one machine's network. A stale or unreadable machine is a row that says so, not
/// a failure of the whole listing: not even a permission error, which may hold for one
/// machine only (its leader's namespace denied to us) while the others read fine. Not
/// being root at all is refused up front (require_privileges).
async fn inspect(machined: &Machined, machine: Machine) -> Result<MachineNetwork> {
    let mut row = MachineNetwork {
        machine: machine.name.clone(),
        class: machine.class.clone(),
        service: machine.service.clone(),
        leader: machine.leader,
        unit: machine.unit.clone(),
        state: "running",
        error: None,
        netns_inode: None,
        netns: None,
        interfaces: Vec::new(),
    };
    let read = async {
        let ns = pin_machine(machined, &machine, ExtraNamespaces::default()).await?;
        let mut sock = ns.open_netlink()?;
        Ok::<_, Error>((
            ns.inode,
            ns.isolation,
            link::links_with_addresses(&mut sock)?,
        ))
    };
    match read.await {
        Ok((inode, isolation, links)) => {
            row.netns_inode = Some(inode);
            row.netns = Some(match isolation {
                Isolation::Private => "private",
                Isolation::SharesHost => "host",
            });
            row.interfaces = links;
        }
        Err(e @ Error::StaleMachine(_)) => {
            row.state = "stale";
            row.error = Some(e.to_string());
        }
        Err(e) => {
            row.state = "error";
            row.error = Some(e.to_string());
        }
    }
    Ok(row)
}

/// A machine a line, then one indented line per interface with its addresses.
pub fn render_table(rows: &[MachineNetwork]) -> String {
    let header = ["MACHINE", "CLASS", "SERVICE", "LEADER", "NETNS", "NETWORK"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let network = match (r.state, r.netns) {
                (_, Some("host")) => "shares host netns".to_string(),
                ("running", _) => "private".to_string(),
                (state, _) => state.to_string(),
            };
            [
                r.machine.clone(),
                r.class.clone(),
                r.service.clone(),
                r.leader.to_string(),
                r.netns_inode.map_or("-".to_string(), |i| i.to_string()),
                network,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[&str]| {
        let mut s = String::new();
        for (i, (col, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(col);
            } else {
                s.push_str(&format!("{col:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for (row, cell) in rows.iter().zip(&cells) {
        out.push_str(&line(&cell.each_ref().map(String::as_str)));
        if let Some(err) = &row.error {
            out.push_str(&format!("  ! {err}\n"));
        }
        for link in &row.interfaces {
            let addrs: Vec<String> = link
                .addr_info
                .iter()
                .map(|a| format!("{}/{}", a.local, a.prefixlen))
                .collect();
            out.push_str(&format!(
                "  {:<16} {:<8} {}\n",
                crate::link::printable_name(&link.ifname),
                link.operstate,
                addrs.join(" ")
            ));
        }
    }
    out
}
