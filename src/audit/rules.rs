//! The audit rules: each a plain function from the survey to its findings.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::{Finding, Severity};
use crate::link::Link;
use crate::route::message::AF_INET;
use crate::survey::{MachineState, MachineView, Namespace, RouteFact, Survey};

const IFF_UP: u32 = 0x1;
const RTN_UNICAST: u8 = 1;

fn finding(
    rule: &'static str,
    severity: Severity,
    machine: &str,
    subject: impl Into<String>,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        rule,
        severity,
        machine: machine.to_string(),
        subject: subject.into(),
        message,
        fix,
    }
}

/// Machines whose own namespace was read: the ones most rules look inside.
fn readable(survey: &Survey) -> impl Iterator<Item = (&MachineView, &Namespace)> {
    survey
        .machines
        .iter()
        .filter(|m| m.is_private() && m.state == MachineState::Running)
        .filter_map(|m| m.net.as_ref().map(|n| (m, n)))
}

fn is_up(link: &Link) -> bool {
    link.detail.flags & IFF_UP != 0
}

/// A link's addresses as (address, prefix length).
fn addresses(link: &Link) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
    link.addr_info
        .iter()
        .filter_map(|a| a.local.parse().ok().map(|ip| (ip, a.prefixlen)))
}

/// Addresses that mean something beyond the machine: not loopback, not link-local.
fn is_routable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80 && !a.is_unspecified()
        }
    }
}

/// RFC 1918 and ULA: addresses that need NAT to reach beyond the host.
pub fn is_private(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_private() || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Whether `addr` lies in `net`/`len` (of the same family).
pub fn prefix_contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The subnets a namespace reaches directly: prefixes of addresses on links that are up,
/// and routes with no gateway out of a device.
fn connected(ns: &Namespace) -> Vec<(IpAddr, u8)> {
    let mut nets: Vec<(IpAddr, u8)> = ns
        .links
        .iter()
        .filter(|l| is_up(l))
        .flat_map(addresses)
        .collect();
    nets.extend(
        ns.routes
            .iter()
            .filter(|r| r.kind == RTN_UNICAST && r.gateway.is_none() && r.oif.is_some())
            .filter_map(|r| r.dst.map(|d| (d, r.dst_len))),
    );
    nets
}

fn describe(route: &RouteFact, ns: &Namespace) -> String {
    let mut text = route.prefix();
    if let Some(gw) = route.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = route.oif.and_then(|i| ns.link(i)) {
        text.push_str(&format!(" dev {}", dev.ifname));
    }
    text
}

pub fn lo_down(survey: &Survey) -> Vec<Finding> {
    readable(survey)
        .filter_map(|(m, ns)| {
            let lo = ns.link_named("lo")?;
            (!is_up(lo)).then(|| {
                finding(
                    "lo-down",
                    Severity::Error,
                    &m.name,
                    "lo",
                    "loopback is down: services inside cannot reach each other on 127.0.0.1".into(),
                    format!("machnet link set {} lo up", m.name),
                )
            })
        })
        .collect()
}

pub fn no_default_route(survey: &Survey) -> Vec<Finding> {
    readable(survey)
        .filter(|(_, ns)| {
            // A machine with no routable address is cut off by design, not by mistake.
            ns.links
                .iter()
                .filter(|l| l.ifname != "lo")
                .flat_map(addresses)
                .any(|(a, _)| is_routable(a))
        })
        .filter(|(_, ns)| !ns.routes.iter().any(RouteFact::is_default))
        .map(|(m, ns)| {
            let gateway = host_side_gateway(survey, m, ns);
            finding(
                "no-default-route",
                Severity::Warning,
                &m.name,
                "default",
                "no default route: only directly connected subnets are reachable".into(),
                match gateway {
                    Some((gw, dev)) => {
                        format!("machnet route add {} default via {gw} dev {dev}", m.name)
                    }
                    None => format!("machnet route add {} default via GATEWAY", m.name),
                },
            )
        })
        .collect()
}

/// A machine whose addresses beyond loopback are all link-local, with no default route:
/// what a container looks like when its DHCP client got no answer (IPv4LL gave it
/// 169.254.x.y, the kernel its fe80:: addresses). It reaches nothing past its own link,
/// and no-default-route stays quiet about it: it has no routable address to route from.
pub fn link_local_only(survey: &Survey) -> Vec<Finding> {
    readable(survey)
        .filter(|(_, ns)| !ns.routes.iter().any(RouteFact::is_default))
        .filter_map(|(m, ns)| {
            let links: Vec<&Link> = ns.links.iter().filter(|l| l.ifname != "lo").collect();
            if links
                .iter()
                .flat_map(|l| addresses(l))
                .any(|(a, _)| is_routable(a))
            {
                return None;
            }
            let stuck: Vec<&Link> = links
                .into_iter()
                .filter(|l| addresses(l).next().is_some())
                .collect();
            let first = stuck.first()?;
            let held: Vec<String> = stuck
                .iter()
                .map(|l| {
                    let addrs: Vec<String> =
                        addresses(l).map(|(a, len)| format!("{a}/{len}")).collect();
                    format!("{} on {}", addrs.join(" "), l.ifname)
                })
                .collect();
            let host_end = survey
                .host_peer(m, first)
                .map(|p| format!(" ({})", p.ifname))
                .unwrap_or_default();
            Some(finding(
                "link-local-only",
                Severity::Error,
                &m.name,
                stuck
                    .iter()
                    .map(|l| l.ifname.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                format!(
                    "only link-local addresses ({}) and no default route: its DHCP client got \
                     no answer, or no address was ever set",
                    held.join("; ")
                ),
                format!(
                    "check the DHCP server on the host end{host_end}, or set an address: \
                     machnet addr add {} ADDR/LEN dev {}",
                    m.name, first.ifname
                ),
            ))
        })
        .collect()
}

/// A gateway to suggest: the host end of the machine's veth, when it has an IPv4 address
/// on the machine's subnet.
fn host_side_gateway(survey: &Survey, m: &MachineView, ns: &Namespace) -> Option<(IpAddr, String)> {
    ns.links.iter().find_map(|link| {
        let peer = survey.host_peer(m, link)?;
        let ours: Vec<(IpAddr, u8)> = addresses(link).filter(|(a, _)| a.is_ipv4()).collect();
        addresses(peer)
            .find(|(p, _)| ours.iter().any(|(a, len)| prefix_contains(*a, *len, *p)))
            .map(|(p, _)| (p, link.ifname.clone()))
    })
}

pub fn gateway_unreachable(survey: &Survey) -> Vec<Finding> {
    let mut out = Vec::new();
    for (m, ns) in readable(survey) {
        let nets = connected(ns);
        for route in &ns.routes {
            let Some(gw) = route.gateway else { continue };
            let link_local = matches!(gw, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
            if route.onlink || link_local || nets.iter().any(|(n, l)| prefix_contains(*n, *l, gw)) {
                continue;
            }
            out.push(finding(
                "gateway-unreachable",
                Severity::Error,
                &m.name,
                route.prefix(),
                format!(
                    "route {} has gateway {gw}, which is on no connected subnet (and the route \
                     is not onlink): traffic for it goes nowhere",
                    describe(route, ns)
                ),
                format!(
                    "add an address on {gw}'s subnet, or replace the route: machnet route replace {} {} onlink",
                    m.name,
                    describe(route, ns)
                ),
            ));
        }
    }
    out
}

pub fn route_via_down_link(survey: &Survey) -> Vec<Finding> {
    let mut out = Vec::new();
    for (m, ns) in readable(survey) {
        for route in &ns.routes {
            let Some(link) = route.oif.and_then(|i| ns.link(i)) else {
                continue;
            };
            if is_up(link) && !route.linkdown {
                continue;
            }
            let why = if is_up(link) {
                "has no carrier"
            } else {
                "is down"
            };
            out.push(finding(
                "route-via-down-link",
                Severity::Warning,
                &m.name,
                route.prefix(),
                format!(
                    "route {} leaves through {}, which {why}",
                    describe(route, ns),
                    link.ifname
                ),
                if is_up(link) {
                    format!(
                        "check what {} is connected to (its other end is down or gone)",
                        link.ifname
                    )
                } else {
                    format!("machnet link set {} {} up", m.name, link.ifname)
                },
            ));
        }
    }
    out
}

pub fn shares_host_netns(survey: &Survey) -> Vec<Finding> {
    survey
        .machines
        .iter()
        .filter(|m| m.isolation == Some(crate::netns::Isolation::SharesHost))
        .map(|m| {
            finding(
                "shares-host-netns",
                Severity::Warning,
                &m.name,
                "netns",
                "the machine uses the host's network namespace: it has no network isolation \
                 and sees (and can change) the host's interfaces and routes"
                    .into(),
                "give it a namespace of its own (systemd-nspawn --network-veth; NixOS: \
                 containers.<name>.privateNetwork = true)"
                    .into(),
            )
        })
        .collect()
}

pub fn stale_machine(survey: &Survey) -> Vec<Finding> {
    survey
        .machines
        .iter()
        .filter_map(|m| match &m.state {
            MachineState::Stale(_) => Some(finding(
                "stale-machine",
                Severity::Error,
                &m.name,
                "leader",
                format!(
                    "machined lists the machine, but its leader (PID {}) is gone",
                    m.leader
                ),
                format!("machinectl terminate {}", m.name),
            )),
            MachineState::LeaderReused(_) => Some(finding(
                "stale-machine",
                Severity::Error,
                &m.name,
                "leader",
                format!(
                    "machined lists the machine, but its leader died and PID {} now belongs \
                     to another process",
                    m.leader
                ),
                format!("machinectl terminate {}", m.name),
            )),
            _ => None,
        })
        .collect()
}

pub fn unreadable_machine(survey: &Survey) -> Vec<Finding> {
    survey
        .unreadable()
        .map(|(name, why)| {
            finding(
                "unreadable-machine",
                Severity::Error,
                name,
                "namespace",
                format!("machnet could not read the machine, so no other rule checked it: {why}"),
                "run machnet as root in the host's user namespace, with CAP_SYS_ADMIN and \
                 CAP_SYS_PTRACE"
                    .to_string(),
            )
        })
        .collect()
}

/// Veths of readable machines whose other end lives in another namespace.
fn veths(survey: &Survey) -> impl Iterator<Item = (&MachineView, &Link)> {
    readable(survey).flat_map(|(m, ns)| {
        ns.links
            .iter()
            .filter(|l| l.detail.link_netnsid.is_some() && l.detail.kind.as_deref() == Some("veth"))
            .map(move |l| (m, l))
    })
}

pub fn veth_peer_down(survey: &Survey) -> Vec<Finding> {
    veths(survey)
        .filter_map(|(m, link)| {
            let peer = survey.host_peer(m, link)?;
            (!is_up(peer)).then(|| {
                finding(
                    "veth-peer-down",
                    Severity::Error,
                    &m.name,
                    link.ifname.clone(),
                    format!(
                        "the host end of {} ({} on the host) is down: the machine is cut off",
                        link.ifname, peer.ifname
                    ),
                    format!("ip link set {} up", peer.ifname),
                )
            })
        })
        .collect()
}

pub fn veth_peer_missing(survey: &Survey) -> Vec<Finding> {
    let bridge_name = |index: u32| {
        survey
            .host
            .link(index)
            .map_or_else(|| format!("ifindex {index}"), |b| b.ifname.clone())
    };
    // Which bridge each machine's host ends sit on.
    let placed: Vec<(&MachineView, &Link, Option<&Link>)> = veths(survey)
        .map(|(m, link)| (m, link, survey.host_peer(m, link)))
        .collect();
    let mut out = Vec::new();
    for (m, link, peer) in &placed {
        let Some(peer) = peer else {
            out.push(finding(
                "veth-peer-missing",
                Severity::Error,
                &m.name,
                link.ifname.clone(),
                format!(
                    "{}'s other end is not in the host namespace (gone, or moved elsewhere)",
                    link.ifname
                ),
                format!(
                    "restart the machine to recreate its link (machinectl reboot {})",
                    m.name
                ),
            ));
            continue;
        };
        // The bridge most other machines' host ends use.
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for (other, _, other_peer) in &placed {
            if other.name != m.name {
                if let Some(master) = other_peer.and_then(|p| p.detail.master) {
                    *counts.entry(master).or_default() += 1;
                }
            }
        }
        let Some((&usual, &users)) = counts.iter().max_by_key(|(_, n)| **n) else {
            continue;
        };
        if peer.detail.master != Some(usual) {
            out.push(finding(
                "veth-peer-missing",
                Severity::Warning,
                &m.name,
                link.ifname.clone(),
                format!(
                    "the host end of {} ({}) is not on bridge {}, which {users} other machine{} use",
                    link.ifname,
                    peer.ifname,
                    bridge_name(usual),
                    if users == 1 { "" } else { "s" }
                ),
                format!("ip link set {} master {}", peer.ifname, bridge_name(usual)),
            ));
        }
    }
    out
}

/// Machines whose default route's gateway is an address of the host, by family.
fn routing_through_host(survey: &Survey, ipv4: bool) -> Vec<&MachineView> {
    let host_addrs: Vec<IpAddr> = survey
        .host
        .links
        .iter()
        .flat_map(addresses)
        .map(|(a, _)| a)
        .collect();
    readable(survey)
        .filter(|(_, ns)| {
            ns.routes.iter().any(|r| {
                r.is_default()
                    && (r.family == AF_INET) == ipv4
                    && r.gateway.is_some_and(|g| host_addrs.contains(&g))
            })
        })
        .map(|(m, _)| m)
        .collect()
}

pub fn host_forwarding_off(survey: &Survey) -> Vec<Finding> {
    let mut out = Vec::new();
    for (ipv4, enabled, sysctl) in [
        (true, survey.forwarding.ipv4, "net.ipv4.ip_forward"),
        (
            false,
            survey.forwarding.ipv6,
            "net.ipv6.conf.all.forwarding",
        ),
    ] {
        if enabled != Some(false) {
            continue;
        }
        let machines: Vec<&str> = routing_through_host(survey, ipv4)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        if machines.is_empty() {
            continue;
        }
        out.push(finding(
            "host-forwarding-off",
            Severity::Error,
            ".host",
            sysctl,
            format!(
                "{} route{} through the host, but {sysctl} is 0: their traffic stops at the host",
                machines.join(", "),
                if machines.len() == 1 { "s" } else { "" }
            ),
            format!("sysctl -w {sysctl}=1 (NixOS: boot.kernel.sysctl.\"{sysctl}\" = 1)"),
        ));
    }
    out
}

pub fn nat_missing(survey: &Survey) -> Vec<Finding> {
    let Some(rules) = survey.firewall.as_ref().map(|f| f.masquerades()) else {
        return Vec::new();
    };
    // Beyond the host: only if the host itself has somewhere to send traffic.
    let host_reaches_out = survey
        .host
        .routes
        .iter()
        .any(|r| r.is_default() && r.family == AF_INET);
    if !host_reaches_out {
        return Vec::new();
    }
    let mut out = Vec::new();
    for m in routing_through_host(survey, true) {
        let Some(ns) = &m.net else { continue };
        for (addr, _) in ns.links.iter().flat_map(addresses) {
            if !addr.is_ipv4() || !is_private(addr) {
                continue;
            }
            let covered = rules.iter().any(|r| match r.source {
                None => true,
                Some((net, len)) => prefix_contains(net, len, addr),
            });
            if !covered {
                out.push(finding(
                    "nat-missing",
                    Severity::Warning,
                    &m.name,
                    addr.to_string(),
                    format!(
                        "{addr} is a private address routed out through the host, and no \
                         masquerade rule on the host covers it: replies cannot come back"
                    ),
                    format!(
                        "nft add rule ip nat postrouting ip saddr {addr} masquerade (NixOS: \
                         networking.nat.internalInterfaces)"
                    ),
                ));
            }
        }
    }
    out
}

pub fn mtu_mismatch(survey: &Survey) -> Vec<Finding> {
    veths(survey)
        .filter_map(|(m, link)| {
            let peer = survey.host_peer(m, link)?;
            let (mine, theirs) = (link.detail.mtu?, peer.detail.mtu?);
            (mine != theirs).then(|| {
                let fix = if mine > theirs {
                    format!("machnet link set {} {} mtu {theirs}", m.name, link.ifname)
                } else {
                    format!("ip link set {} mtu {mine}", peer.ifname)
                };
                finding(
                    "mtu-mismatch",
                    Severity::Warning,
                    &m.name,
                    link.ifname.clone(),
                    format!(
                        "{} has MTU {mine} and its host end {} has {theirs}: packets larger \
                         than {} are dropped on the way",
                        link.ifname,
                        peer.ifname,
                        mine.min(theirs)
                    ),
                    fix,
                )
            })
        })
        .collect()
}

pub fn wildcard_matches_nothing(survey: &Survey) -> Vec<Finding> {
    let Some(firewall) = &survey.firewall else {
        return Vec::new();
    };
    firewall
        .plus_wildcards()
        .into_iter()
        // A link really named that way is matched, and is not this fault.
        .filter(|(_, name)| !survey.host.links.iter().any(|l| &l.ifname == name))
        .map(|(rule, name)| {
            let star = format!("{}*", name.trim_end_matches('+'));
            finding(
                "wildcard-matches-nothing",
                Severity::Warning,
                ".host",
                format!("{} {} {}", rule.family, rule.table, rule.chain),
                format!(
                    "{rule} matches the interface name \"{name}\" literally: `+` is iptables' \
                     wildcard, nft's is `*`, and no link is named {name}"
                ),
                format!("write \"{star}\" in that rule (an nftables ruleset or NixOS option with \"{name}\")"),
            )
        })
        .collect()
}

/// The host's default route of a family: its egress device's name.
fn host_egress(survey: &Survey, ipv4: bool) -> Option<&str> {
    let route = survey
        .host
        .routes
        .iter()
        .find(|r| r.is_default() && (r.family == AF_INET) == ipv4)?;
    survey.host.link(route.oif?).map(|l| l.ifname.as_str())
}

/// For each machine routing through the host in a family: the packet it would send to
/// the outside world, as the host's forward and postrouting hooks see it, with the
/// machine's link it leaves by.
fn outbound_packets(
    survey: &Survey,
    ipv4: bool,
) -> Vec<(&MachineView, crate::why::firewall::Packet)> {
    let Some(egress) = host_egress(survey, ipv4) else {
        return Vec::new();
    };
    // A public address that no test or host owns (TEST-NET-3 / the IPv6 documentation
    // prefix): "the internet" as the filter sees it.
    let outside: IpAddr = if ipv4 {
        "203.0.113.200"
    } else {
        "2001:db8:ffff::200"
    }
    .parse()
    .unwrap();
    let mut out = Vec::new();
    for m in routing_through_host(survey, ipv4) {
        let Some(ns) = &m.net else { continue };
        let Some(route) = ns
            .routes
            .iter()
            .find(|r| r.is_default() && (r.family == AF_INET) == ipv4)
        else {
            continue;
        };
        let Some(link) = route.oif.and_then(|i| ns.link(i)) else {
            continue;
        };
        let Some(peer) = survey.host_peer(m, link) else {
            continue;
        };
        let ingress = peer
            .detail
            .master
            .and_then(|i| survey.host.link(i))
            .unwrap_or(peer);
        let Some((src, _)) = addresses(link).find(|(a, _)| a.is_ipv4() == ipv4 && is_routable(*a))
        else {
            continue;
        };
        out.push((
            m,
            crate::why::firewall::Packet::new_flow(
                &ingress.ifname,
                egress,
                src,
                outside,
                6,
                Some(443),
            ),
        ));
    }
    out
}

pub fn forward_dropped(survey: &Survey) -> Vec<Finding> {
    let Some(firewall) = &survey.firewall else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ipv4 in [true, false] {
        for (m, packet) in outbound_packets(survey, ipv4) {
            // Only a verdict the evaluator is sure of; "unknown" is no finding.
            if let crate::why::firewall::Filter::Dropped(rule) = firewall.filter("forward", &packet)
            {
                out.push(finding(
                    "forward-dropped",
                    Severity::Error,
                    &m.name,
                    packet.saddr.to_string(),
                    format!(
                        "the host's forward chain drops {}'s traffic from {} out of {} ({rule})",
                        m.name, packet.iifname, packet.oifname
                    ),
                    format!(
                        "nft insert rule {} {} {} iifname \"{}\" oifname \"{}\" accept (see machnet why {} ADDRESS)",
                        rule.family, rule.table, rule.chain, packet.iifname, packet.oifname, m.name
                    ),
                ));
            }
        }
    }
    out
}

pub fn nat66_missing(survey: &Survey) -> Vec<Finding> {
    let Some(firewall) = &survey.firewall else {
        return Vec::new();
    };
    outbound_packets(survey, false)
        .into_iter()
        .filter(|(_, p)| is_private(p.saddr))
        .filter(|(_, p)| firewall.source_nat(p) == crate::why::firewall::Nat::NotCovered)
        .map(|(m, p)| {
            finding(
                "nat66-missing",
                Severity::Warning,
                &m.name,
                p.saddr.to_string(),
                format!(
                    "{} is a unique-local IPv6 address routed out of {} through the host, and \
                     nothing masquerades it: replies cannot come back",
                    p.saddr, p.oifname
                ),
                format!(
                    "nft add rule ip6 nat postrouting oifname \"{}\" ip6 saddr {} masquerade \
                     (NixOS: networking.nat.enableIPv6 = true)",
                    p.oifname, p.saddr
                ),
            )
        })
        .collect()
}

pub fn loopback_nameserver(survey: &Survey) -> Vec<Finding> {
    readable(survey)
        .filter_map(|(m, _)| {
            let resolver = m.resolver.as_ref()?;
            let server = *resolver.nameservers.first()?;
            // As the resolver asks them: only when none of the first three can answer.
            let dead =
                |s: &&IpAddr| s.is_loopback() && !crate::why::dns::serves(&resolver.udp53, **s);
            resolver
                .nameservers
                .iter()
                .take(3)
                .all(|s| dead(&s))
                .then(|| {
                    finding(
                        "loopback-nameserver",
                        Severity::Error,
                        &m.name,
                        server.to_string(),
                        format!(
                            "{} names nameserver {server}, on the machine's own loopback, and \
                         nothing listens on port 53 there: names do not resolve",
                            resolver.path
                        ),
                        format!(
                        "start the resolver in {}, or point /etc/resolv.conf at one it can reach",
                        m.name
                    ),
                    )
                })
        })
        .collect()
}

pub fn duplicate_address(survey: &Survey) -> Vec<Finding> {
    // address → [(namespace, interface)]
    let mut seen: HashMap<IpAddr, Vec<(&str, &str)>> = HashMap::new();
    let namespaces = std::iter::once((".host", &survey.host))
        .chain(readable(survey).map(|(m, ns)| (m.name.as_str(), ns)));
    for (name, ns) in namespaces {
        for link in &ns.links {
            for (addr, _) in addresses(link) {
                if is_routable(addr) {
                    seen.entry(addr).or_default().push((name, &link.ifname));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (addr, owners) in seen {
        let mut spaces: Vec<&str> = owners.iter().map(|(n, _)| *n).collect();
        spaces.sort_unstable();
        spaces.dedup();
        if spaces.len() < 2 {
            continue;
        }
        for (name, dev) in &owners {
            let others: Vec<String> = owners
                .iter()
                .filter(|(n, _)| n != name)
                .map(|(n, d)| format!("{n} ({d})"))
                .collect();
            out.push(finding(
                "duplicate-address",
                Severity::Error,
                name,
                addr.to_string(),
                format!(
                    "{addr} on {dev} is also on {}: replies go to whichever answers first",
                    others.join(", ")
                ),
                format!(
                    "give one of them another address: machnet addr del {name} {addr} dev {dev}"
                ),
            ));
        }
    }
    out
}

/// The L2 segment a machine's link is on, as seen from the host: the bridge its host end
/// is enslaved to, or the host end itself for a plain veth pair, or the link itself.
fn segment(survey: &Survey, m: &MachineView, link: &Link) -> String {
    match survey.host_peer(m, link) {
        Some(peer) => match peer.detail.master {
            Some(bridge) => format!(
                "bridge {}",
                survey.host.link(bridge).map_or("?", |b| &b.ifname)
            ),
            None => format!("veth {}", peer.ifname),
        },
        None => format!("{} in {}", link.ifname, m.name),
    }
}

pub fn overlapping_subnet(survey: &Survey) -> Vec<Finding> {
    struct Net<'a> {
        machine: &'a str,
        dev: &'a str,
        net: IpAddr,
        len: u8,
        segment: String,
    }
    let nets: Vec<Net> = readable(survey)
        .flat_map(|(m, ns)| {
            ns.links.iter().flat_map(move |link| {
                addresses(link)
                    .filter(|(a, _)| is_routable(*a))
                    .map(move |(net, len)| Net {
                        machine: &m.name,
                        dev: &link.ifname,
                        net,
                        len,
                        segment: segment(survey, m, link),
                    })
            })
        })
        .collect();
    let mut out = Vec::new();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            let overlap = prefix_contains(a.net, a.len.min(b.len), b.net);
            if a.machine == b.machine || !overlap || a.segment == b.segment {
                continue;
            }
            out.push(finding(
                "overlapping-subnet",
                Severity::Warning,
                a.machine,
                format!("{}/{}", a.net, a.len),
                format!(
                    "{}/{} on {} ({}) overlaps {}/{} of {} on {} ({}): the host cannot route both",
                    a.net, a.len, a.dev, a.segment, b.net, b.len, b.machine, b.dev, b.segment
                ),
                "renumber one of them, or put both on one bridge".to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Address, LinkDetail};
    use crate::netns::Isolation;
    use crate::survey::Forwarding;

    fn link(ifindex: u32, name: &str, up: bool, addrs: &[&str]) -> Link {
        Link {
            ifindex,
            ifname: name.into(),
            operstate: if up { "UP" } else { "DOWN" },
            addr_info: addrs
                .iter()
                .map(|a| {
                    let (local, len) = a.split_once('/').unwrap();
                    Address {
                        family: if local.contains(':') { "inet6" } else { "inet" },
                        local: local.into(),
                        peer: None,
                        prefixlen: len.parse().unwrap(),
                        metric: None,
                    }
                })
                .collect(),
            detail: LinkDetail {
                flags: if up { IFF_UP } else { 0 },
                ..LinkDetail::default()
            },
        }
    }

    fn route(dst: &str, gateway: Option<&str>, oif: u32, onlink: bool) -> RouteFact {
        let (addr, len) = dst.split_once('/').unwrap();
        RouteFact {
            family: AF_INET,
            dst: Some(addr.parse().unwrap()),
            dst_len: len.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif: Some(oif),
            kind: RTN_UNICAST,
            onlink,
            linkdown: false,
        }
    }

    fn machine(name: &str, links: Vec<Link>, routes: Vec<RouteFact>) -> MachineView {
        MachineView {
            name: name.into(),
            leader: 1,
            state: MachineState::Running,
            isolation: Some(Isolation::Private),
            netns_inode: Some(1),
            net: Some(Namespace { links, routes }),
            host_nsid: None,
            resolver: None,
        }
    }

    fn survey(machines: Vec<MachineView>) -> Survey {
        Survey {
            firewall: None,
            host: Namespace::default(),
            forwarding: Forwarding::default(),
            machines,
        }
    }

    #[test]
    fn a_machine_left_with_link_local_addresses_only_is_an_error() {
        let lo = || link(1, "lo", true, &["127.0.0.1/8"]);
        let s = survey(vec![
            // DHCP failed: IPv4LL and the kernel's fe80::, nothing else.
            machine(
                "dhcp-failed",
                vec![
                    lo(),
                    link(2, "host0", true, &["169.254.121.54/16", "fe80::1/64"]),
                ],
                vec![route("169.254.0.0/16", None, 2, false)],
            ),
            // Only loopback: isolated by design.
            machine("isolated", vec![lo()], vec![]),
            // A routable address: no-default-route's business, not this rule's.
            machine(
                "static",
                vec![lo(), link(2, "host0", true, &["10.0.0.2/24", "fe80::1/64"])],
                vec![],
            ),
            // Link-local only, but a default route out (onlink to a router): it works.
            machine(
                "routed",
                vec![lo(), link(2, "host0", true, &["fe80::2/64"])],
                vec![route("0.0.0.0/0", Some("192.0.2.1"), 2, true)],
            ),
        ]);
        let found = link_local_only(&s);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].machine.as_str(), found[0].subject.as_str()),
            ("dhcp-failed", "host0")
        );
        assert!(found[0]
            .message
            .contains("169.254.121.54/16 fe80::1/64 on host0"));
    }

    #[test]
    fn loopback_down_is_an_error_and_up_is_fine() {
        let s = survey(vec![
            machine("a", vec![link(1, "lo", false, &[])], vec![]),
            machine("b", vec![link(1, "lo", true, &[])], vec![]),
        ]);
        let found = lo_down(&s);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].machine.as_str(), found[0].severity),
            ("a", Severity::Error)
        );
    }

    #[test]
    fn a_gateway_is_reachable_through_an_address_a_link_route_or_onlink() {
        let eth = link(2, "eth0", true, &["10.0.0.2/24"]);
        let s = survey(vec![machine(
            "m",
            vec![eth],
            vec![
                route("10.1.0.0/16", Some("10.0.0.1"), 2, false), // on eth0's subnet
                route("10.9.9.0/24", None, 2, false),             // a link route
                route("10.2.0.0/16", Some("10.9.9.1"), 2, false), // through it
                route("10.3.0.0/16", Some("192.0.2.1"), 2, true), // onlink
                route("10.4.0.0/16", Some("192.0.2.1"), 2, false), // nowhere
            ],
        )]);
        let found = gateway_unreachable(&s);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].subject, "10.4.0.0/16");
    }

    #[test]
    fn one_address_in_two_namespaces_is_reported_on_each() {
        let s = survey(vec![
            machine("a", vec![link(2, "eth0", true, &["10.0.0.2/24"])], vec![]),
            machine(
                "b",
                vec![link(2, "eth0", true, &["10.0.0.2/24", "fe80::1/64"])],
                vec![],
            ),
            machine("c", vec![link(2, "eth0", true, &["fe80::1/64"])], vec![]),
        ]);
        let found = duplicate_address(&s);
        let mut who: Vec<&str> = found.iter().map(|f| f.machine.as_str()).collect();
        who.sort_unstable();
        assert_eq!(who, ["a", "b"], "link-local addresses repeat by design");
    }

    #[test]
    fn overlapping_subnets_on_separate_links_are_a_warning() {
        let s = survey(vec![
            machine("a", vec![link(2, "eth0", true, &["10.0.0.2/24"])], vec![]),
            machine("b", vec![link(2, "eth0", true, &["10.0.0.3/16"])], vec![]),
            machine("c", vec![link(2, "eth0", true, &["10.0.200.3/24"])], vec![]),
        ]);
        let found = overlapping_subnet(&s);
        assert_eq!(found.len(), 2, "{found:?}"); // a~b and b~c; a and c are apart
        assert!(found.iter().all(|f| f.severity == Severity::Warning));
    }

    #[test]
    fn prefixes_contain_what_they_should() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(prefix_contains(ip("10.0.0.0"), 8, ip("10.255.1.1")));
        assert!(!prefix_contains(ip("10.0.0.0"), 8, ip("11.0.0.1")));
        assert!(prefix_contains(ip("0.0.0.0"), 0, ip("1.2.3.4")));
        assert!(prefix_contains(ip("fd00::"), 8, ip("fdff::1")));
        assert!(!prefix_contains(ip("10.0.0.0"), 8, ip("fd00::1")));
    }
}
