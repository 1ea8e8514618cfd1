//! `machnet links|addrs TARGET`: `ip -br link` / `ip -br addr` inside a machine, plus the
//! host end of each veth.

use crate::cli::BriefArgs;
use crate::error::{Error, Result};
use crate::link;
use crate::link_brief::{self, Brief};
use crate::peer;

pub async fn run(args: BriefArgs, kind: Brief) -> Result<i32> {
    let namespace = super::pin(&args.target).await?;
    let mut sock = namespace.open_netlink()?;
    let mut links = link::links_with_addresses(&mut sock)?;
    let peers = peer::host_peers(&namespace, &links)?;
    // On a terminal, a name's escape sequences are shown, not obeyed (ip prints them raw;
    // pipes get ip's exact bytes).
    if !args.json && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        for l in &mut links {
            l.ifname = link::printable_name(&l.ifname);
        }
    }
    let mut out = Vec::new();
    if args.json {
        let objects: Vec<_> = links
            .iter()
            .zip(&peers)
            .map(|(l, p)| link_brief::to_json(l, &links, kind, p.as_ref()))
            .collect();
        serde_json::to_writer(&mut out, &objects).map_err(|e| Error::Other(e.to_string()))?;
        out.push(b'\n');
    } else {
        for (l, p) in links.iter().zip(&peers) {
            link_brief::write_text(&mut out, l, &links, kind, p.as_ref());
        }
    }
    super::write_stdout(&out)?;
    Ok(0)
}
