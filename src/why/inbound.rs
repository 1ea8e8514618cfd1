//! `why --from-host`: the way in, from a process on the host to a port of the machine,
//! directly or through a forwarded port (the DNAT rules nspawn `--port` and NixOS
//! `forwardPorts` make): the host's nat output chain, the host's route to the machine,
//! the machine's input chain, and whether anything in the machine listens there.

use std::net::IpAddr;

use super::firewall::{Dnat, Packet, Ruleset};
use super::walk::{first_address, fix, holds, judge_filter, route_get, FilterAt, HostView, Walk};
use super::{Hop, Question, Verdict};
use crate::error::Result;
use crate::link;
use crate::netns::PinnedNamespace;
use crate::route::get::GetOptions;

/// Walks from the host to `question.dest` (an address of the machine, or a host address
/// whose port is forwarded to it) and `question.dport`.
pub fn walk_from_host(
    machine: &str,
    namespace: &PinnedNamespace,
    question: &Question,
) -> Result<Vec<Hop>> {
    let mut w = Walk { hops: Vec::new() };
    let dest = question.dest;
    let mut machine_sock = namespace.open_netlink()?;
    let machine_links = link::links_with_addresses(&mut machine_sock)?;
    let mut host = HostView::read()?;
    let is_local = host.links.iter().any(|l| holds(l, dest));

    // 1. A forwarded port: the host's nat output chain (a host process's packets).
    let host_rules = match Ruleset::read(None) {
        Ok(r) => Some(r),
        Err(why) => {
            w.hop(
                "port forward",
                ".host",
                Verdict::Unknown,
                format!("the host's {why}"),
            );
            None
        }
    };
    let mut target = (dest, question.dport);
    let mut forward_rule = None;
    if let Some(rules) = &host_rules {
        let mut packet = Packet::new_flow("", "", dest, dest, question.proto, question.dport);
        packet.daddr_is_local = is_local;
        match rules.destination_nat("output", &packet) {
            Dnat::To(rule, addr, _) if addr.is_loopback() => {
                let reason = format!(
                    "{dest} is forwarded to {addr} on the host's loopback (route_localnet and an \
                     SNAT decide whether that works): not followed"
                );
                w.hop("port forward", ".host", Verdict::Unknown, reason);
                w.with_rule(rule.to_string());
                return Ok(w.hops);
            }
            Dnat::To(rule, addr, port) => {
                target = (addr, port.or(question.dport));
                let shown = port_of(target.1);
                let reason = format!(
                    "{dest}{} is forwarded to {addr}{shown}",
                    port_of(question.dport)
                );
                w.hop("port forward", ".host", Verdict::Pass, reason);
                w.with_rule(rule.to_string());
                forward_rule = Some(rule);
            }
            Dnat::Unknown(rule, why) => {
                let reason = format!("cannot tell whether {dest} is forwarded: {why}");
                w.hop("port forward", ".host", Verdict::Unknown, reason);
                w.with_rule(rule.to_string());
            }
            Dnat::NotCovered => {}
        }
    }
    let (addr, port) = target;
    let Some(mlink) = machine_links.iter().find(|l| holds(l, addr)) else {
        let what = if forward_rule.is_some() {
            format!("the forward points at {addr}, which is not an address of {machine}")
        } else if is_local {
            format!(
                "nothing forwards {dest}{} to {machine}: it is the host's own address",
                port_of(question.dport)
            )
        } else {
            format!("{addr} is not an address of {machine}")
        };
        let fix_line = match (forward_rule.is_none() && is_local, question.dport) {
            (true, Some(p)) => machine_links
                .iter()
                .find_map(|l| first_address(l, dest.is_ipv6()).filter(|a| !a.is_loopback()))
                .map(|maddr| {
                    let family = if dest.is_ipv6() { "ip6" } else { "ip" };
                    let proto = proto_name(question.proto);
                    (
                        format!(
                            "nft add table {family} nat && nft 'add chain {family} nat output {{ type nat hook output priority -100; }}' && nft add rule {family} nat output {family} daddr {dest} {proto} dport {p} dnat to '{}'",
                            socket(maddr, p)
                        ),
                        format!(
                            "containers.{machine}.forwardPorts = [ {{ protocol = \"{proto}\"; hostPort = {p}; containerPort = {p}; }} ];"
                        ),
                    )
                }),
            _ => None,
        };
        w.fail(
            "port forward",
            ".host",
            what,
            fix_line.and_then(|(c, n)| fix(c, Some(n))),
        );
        return Ok(w.hops);
    };

    // 2. The host's route to the machine's address.
    let peers = host.peers(namespace, &machine_links)?;
    let peer = machine_links
        .iter()
        .position(|l| l.ifindex == mlink.ifindex)
        .and_then(|i| peers[i].clone());
    let Some(peer) = peer else {
        let reason = format!(
            "{}'s other end is not in the host's namespace: not followed",
            mlink.ifname
        );
        w.hop("host route", ".host", Verdict::Unknown, reason);
        return Ok(w.hops);
    };
    let side = peer.master.clone().unwrap_or_else(|| peer.ifname.clone());
    match route_get(&mut host.sock, &host.names, addr, &GetOptions::default())? {
        Ok(d)
            if d.oif.map(|i| host.names.name(i).into_owned()).as_deref() == Some(side.as_str()) =>
        {
            w.hop(
                "host route",
                ".host",
                Verdict::Pass,
                format!("{addr} dev {side}"),
            );
        }
        Ok(d) => {
            let by = d
                .oif
                .map_or_else(|| "nowhere".into(), |i| host.names.name(i).into_owned());
            let reason = format!("the host's route to {addr} leaves by {by}, not {side}");
            w.fail("host route", ".host", reason, None);
            return Ok(w.hops);
        }
        Err((says, _)) => {
            let reason = format!("the host has no route to {addr}: the kernel says: {says}");
            w.fail("host route", ".host", reason, None);
            return Ok(w.hops);
        }
    }

    // 3. The machine's own input chain.
    let machine_rules = Ruleset::read(Some(namespace));
    // A host process connecting to a host address keeps that address as its source
    // through the DNAT; one connecting to the machine's own address sends from the host
    // end.
    let host_end = host
        .links
        .iter()
        .find(|l| l.ifname == side)
        .unwrap_or(mlink);
    let source = if is_local {
        dest
    } else {
        first_address(host_end, addr.is_ipv6()).unwrap_or(dest)
    };
    let mut packet = Packet::new_flow(&mlink.ifname, "", source, addr, question.proto, port);
    packet.daddr_is_local = true;
    match &machine_rules {
        Ok(rules) => {
            let at = FilterAt {
                hook: "input",
                namespace: machine,
                run_there: format!("machnet exec {machine} -- "),
            };
            let accept = match port {
                Some(p) => format!("{} dport {p} accept", proto_name(question.proto)),
                None => format!("iifname \"{}\" accept", mlink.ifname),
            };
            if !judge_filter(&mut w, rules, &at, &packet, "machine input", &accept) {
                return Ok(w.hops);
            }
        }
        Err(why) => {
            let reason = format!("the machine's {why}");
            w.hop("machine input", machine, Verdict::Unknown, reason);
        }
    }

    // 4. Something listening (TCP only: a UDP socket's readiness cannot be told apart).
    if let (Some(p), 6) = (port, question.proto) {
        let listening = tcp_listeners(namespace)?;
        // A wildcard of the destination's own family; an IPv6 wildcard may take IPv4 too
        // (unless v6only, which is not read): then the hop is unknown, not a pass.
        let exact = |(a, lp): &(IpAddr, u16)| {
            *lp == p && (*a == addr || (a.is_unspecified() && a.is_ipv4() == addr.is_ipv4()))
        };
        let maybe = |(a, lp): &(IpAddr, u16)| {
            *lp == p && addr.is_ipv4() && a.is_unspecified() && a.is_ipv6()
        };
        if !listening.iter().any(exact) && listening.iter().any(maybe) {
            let reason = format!(
                "only an IPv6 wildcard socket listens on port {p} in {machine}; whether it takes \
                 IPv4 (v6only) is not read"
            );
            w.hop("listener", machine, Verdict::Unknown, reason);
            return Ok(w.hops);
        }
        if listening.iter().any(exact) {
            w.hop(
                "listener",
                machine,
                Verdict::Pass,
                format!("something listens on {}", socket(addr, p)),
            );
        } else {
            let mut ports: Vec<u16> = listening
                .iter()
                .filter(|(a, _)| *a == addr || a.is_unspecified())
                .map(|(_, p)| *p)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let others = if ports.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
                format!("; it listens on TCP {}", list.join(", "))
            };
            let reason = format!(
                "nothing in {machine} listens on TCP {}{others}",
                socket(addr, p)
            );
            // A forward to the wrong port, when the machine listens on exactly one.
            let mended = match (&forward_rule, ports.as_slice()) {
                (Some(rule), [only])
                    if rule.handle.is_some() && rule.text.contains(&socket(addr, p)) =>
                {
                    let text = rule.text.replace(&socket(addr, p), &socket(addr, *only));
                    let host_port = question.dport.unwrap_or(p);
                    fix(
                        format!(
                            "nft replace rule {} {} {} handle {} '{text}'",
                            rule.family,
                            rule.table,
                            rule.chain,
                            rule.handle.unwrap()
                        ),
                        Some(format!(
                            "containers.{machine}.forwardPorts = [ {{ protocol = \"tcp\"; hostPort = {host_port}; containerPort = {only}; }} ];"
                        )),
                    )
                }
                _ => None,
            };
            w.fail("listener", machine, reason, mended);
        }
    }
    Ok(w.hops)
}

fn port_of(port: Option<u16>) -> String {
    port.map_or(String::new(), |p| format!(" port {p}"))
}

/// ADDR:PORT as nft and ss write it ([v6]:port).
fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        17 => "udp",
        _ => "tcp",
    }
}

/// TCP sockets in LISTEN in the namespace: (local address, port).
fn tcp_listeners(namespace: &PinnedNamespace) -> Result<Vec<(IpAddr, u16)>> {
    // (A kernel without IPv6 has no tcp6.)
    let text =
        namespace.read_proc_net("tcp")? + &namespace.read_proc_net("tcp6").unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((super::dns::parse_proc_addr(addr)?, port))
        })
        .collect())
}
