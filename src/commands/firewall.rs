//! `machnet firewall TARGET`: the machine's own nftables ruleset (as `nft list ruleset`
//! prints it inside), and the host's rules that concern the machine: those naming its
//! veth's host end or that end's bridge, covering its addresses, or forwarding to them.

use std::net::IpAddr;

use crate::cli::FirewallArgs;
use crate::error::{Error, Result};
use crate::link;
use crate::why::firewall::{parse_json, run_nft, RuleRef};

pub async fn run(args: FirewallArgs) -> Result<i32> {
    let namespace = super::pin(&args.target).await?;
    let own = |args: &[&str]| {
        run_nft(args, Some(&namespace))
            .map_err(|e| Error::Other(format!("{}: {e}", namespace.label)))
    };
    let mut sock = namespace.open_netlink()?;
    let links = link::links_with_addresses(&mut sock)?;
    let peers = crate::peer::host_peers(&namespace, &links)?;
    let mut names: Vec<String> = Vec::new();
    for peer in peers.iter().flatten() {
        names.push(peer.ifname.clone());
        names.extend(peer.master.clone());
    }
    let addrs: Vec<IpAddr> = links
        .iter()
        .filter(|l| l.ifname != "lo")
        .flat_map(|l| l.addr_info.iter())
        .filter_map(|a| a.local.parse().ok())
        .collect();
    let host = crate::why::host_ruleset().map_err(|e| Error::Other(format!("the host's {e}")))?;
    let concerning = host.rules_concerning(&names, &addrs);

    let out = if args.json {
        let ruleset = parse_json(&own(&["-j", "list", "ruleset"])?).map_err(Error::Other)?;
        let host_rules: Vec<serde_json::Value> = concerning
            .iter()
            .map(|(r, why)| rule_json(r, why))
            .collect();
        let mut text = serde_json::to_string(&serde_json::json!({
            "ruleset": ruleset,
            "host_rules": host_rules,
        }))
        .expect("JSON");
        text.push('\n');
        text.into_bytes()
    } else {
        let mut text = format!("# {}: its own ruleset\n", namespace.label).into_bytes();
        let mine = own(&["list", "ruleset"])?;
        if mine.is_empty() {
            text.extend_from_slice(b"(empty)\n");
        } else {
            text.extend_from_slice(&mine);
        }
        text.extend_from_slice(
            format!(
                "\n# .host: rules that concern it ({})\n",
                describe(&names, &addrs)
            )
            .as_bytes(),
        );
        if concerning.is_empty() {
            text.extend_from_slice(b"(none)\n");
        }
        for (rule, why) in &concerning {
            text.extend_from_slice(format!("{rule}   # {why}\n").as_bytes());
        }
        text
    };
    super::write_stdout(&out)?;
    Ok(0)
}

fn rule_json(rule: &RuleRef, why: &str) -> serde_json::Value {
    serde_json::json!({
        "family": rule.family,
        "table": rule.table,
        "chain": rule.chain,
        "handle": rule.handle,
        "rule": rule.text,
        "why": why,
    })
}

fn describe(names: &[String], addrs: &[IpAddr]) -> String {
    let mut parts = Vec::new();
    if !names.is_empty() {
        parts.push(format!("host links {}", names.join(", ")));
    }
    if !addrs.is_empty() {
        let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        parts.push(format!("addresses {}", a.join(", ")));
    }
    if parts.is_empty() {
        "nothing on the host side".into()
    } else {
        parts.join("; ")
    }
}
