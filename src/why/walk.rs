//! Walking the path: the machine's own route, its link and the host end of it, the host's
//! routing (forwarding and rp_filter applied by the kernel), the host's forward filter
//! and NAT, and the way back. Stops at the first hop that fails.

use std::net::IpAddr;

use super::firewall::{Filter, Nat, Packet, Ruleset, EPHEMERAL_PORT};
use super::{is_private, prefix_contains, Fix, Hop, Question, Verdict};
use crate::error::{Error, Result};
use crate::link::{self, Link, LinkNames};
use crate::link_brief::Peer;
use crate::netlink::NetlinkSocket;
use crate::netns::PinnedNamespace;
use crate::route::get::{self, GetOptions, RTM_GETROUTE};
use crate::route::message::{Route, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC};

const IFF_UP: u32 = 0x1;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;

/// The kernel's answer to one route lookup.
pub(super) struct Decision {
    pub(super) kind: u8,
    pub(super) oif: Option<u32>,
    pub(super) gateway: Option<IpAddr>,
    pub(super) prefsrc: Option<IpAddr>,
}

/// The hops one walk has written.
pub(super) struct Walk {
    pub(super) hops: Vec<Hop>,
}

impl Walk {
    pub(super) fn hop(
        &mut self,
        hop: &'static str,
        namespace: &str,
        verdict: Verdict,
        reason: String,
    ) {
        self.hops.push(Hop {
            hop,
            namespace: namespace.to_string(),
            verdict,
            reason,
            rule: None,
            fix: None,
            trace: Vec::new(),
        });
    }

    /// A failed hop with its fix; the walk ends here.
    pub(super) fn fail(
        &mut self,
        hop: &'static str,
        namespace: &str,
        reason: String,
        fix: Option<Fix>,
    ) {
        self.hop(hop, namespace, Verdict::Fail, reason);
        self.hops.last_mut().unwrap().fix = fix;
    }

    pub(super) fn with_rule(&mut self, rule: String) {
        self.hops.last_mut().unwrap().rule = Some(rule);
    }
}

pub(super) fn fix(command: String, nixos: Option<String>) -> Option<Fix> {
    Some(Fix { command, nixos })
}

/// The host's side of a walk, read once: its namespace, a socket in it, its links.
pub(super) struct HostView {
    pub(super) ns: PinnedNamespace,
    pub(super) sock: NetlinkSocket,
    pub(super) links: Vec<Link>,
    pub(super) names: LinkNames,
}

impl HostView {
    pub(super) fn read() -> Result<HostView> {
        let ns = crate::netns::pin_own()?;
        let mut sock = ns.open_netlink()?;
        let links = link::links_with_addresses(&mut sock)?;
        let names = LinkNames::from_links(&links);
        Ok(HostView {
            ns,
            sock,
            links,
            names,
        })
    }

    /// The host ends of a machine's `links` (crate::peer), from the links read here.
    pub(super) fn peers(
        &mut self,
        namespace: &PinnedNamespace,
        links: &[Link],
    ) -> Result<Vec<Option<Peer>>> {
        crate::peer::host_peers_among(&mut self.sock, &self.links, namespace, links)
    }
}

/// Walks the path from `machine` (pinned as `namespace`) to the question's destination.
pub fn walk(machine: &str, namespace: &PinnedNamespace, question: &Question) -> Result<Vec<Hop>> {
    let mut w = Walk { hops: Vec::new() };
    let mut host = HostView::read()?;
    let mut sock = namespace.open_netlink()?;
    let links = link::links_with_addresses(&mut sock)?;
    let names = LinkNames::from_links(&links);
    let dest = question.dest;
    let v6 = dest.is_ipv6();
    let family_flag = if v6 { " -6" } else { "" };

    // 1. Inside the machine: its own routing decision.
    let decision = match route_get(&mut sock, &names, dest, &options(question))? {
        Ok(d) => d,
        Err(says) => {
            let gateway = host_side_gateway(&mut host, namespace, &links, v6)?;
            let fix_line = gateway.as_ref().map(|(dev, gw)| {
                format!("machnet route add {machine}{family_flag} default via {gw} dev {dev}")
            });
            let nixos = gateway.as_ref().map(|(_, gw)| {
                let option = if v6 {
                    "defaultGateway6"
                } else {
                    "defaultGateway"
                };
                format!("containers.{machine}.config.networking.{option} = \"{gw}\";")
            });
            w.fail(
                "route",
                machine,
                format!("no route to {dest}: the kernel says: {}", says.0),
                fix_line.and_then(|c| fix(c, nixos)),
            );
            return Ok(w.hops);
        }
    };
    if decision.kind == RTN_LOCAL {
        w.hop(
            "route",
            machine,
            Verdict::Pass,
            format!("{dest} is the machine's own address"),
        );
        return Ok(w.hops);
    }
    if decision.kind != RTN_UNICAST {
        w.fail(
            "route",
            machine,
            format!(
                "{dest} matches a {} route",
                crate::route::names::route_type(decision.kind)
            ),
            None,
        );
        return Ok(w.hops);
    }
    let Some(oif) = decision
        .oif
        .and_then(|i| links.iter().find(|l| l.ifindex == i))
    else {
        w.hop(
            "route",
            machine,
            Verdict::Unknown,
            "the route names no output device".into(),
        );
        return Ok(w.hops);
    };
    let Some(src) = decision.prefsrc.or_else(|| first_address(oif, v6)) else {
        w.fail(
            "route",
            machine,
            format!(
                "{} has no {} address to send from",
                oif.ifname,
                family_name(v6)
            ),
            None,
        );
        return Ok(w.hops);
    };
    let via = decision
        .gateway
        .map_or(String::new(), |g| format!(" via {g}"));
    w.hop(
        "route",
        machine,
        Verdict::Pass,
        format!("{dest}{via} dev {} src {src}", oif.ifname),
    );

    // The machine's own firewall, on the way out.
    let machine_rules = match Ruleset::read(Some(namespace)) {
        Ok(r) => Some(r),
        Err(why) => {
            let reason = format!("the machine's {why}");
            w.hop("machine output", machine, Verdict::Unknown, reason);
            None
        }
    };
    if let Some(rules) = &machine_rules {
        let out = Packet::new_flow("", &oif.ifname, src, dest, question.proto, question.dport);
        let at = FilterAt {
            hook: "output",
            namespace: machine,
            run_there: format!("machnet exec {machine} -- "),
        };
        let accept = format!("oifname \"{}\" accept", oif.ifname);
        if !judge_filter(&mut w, rules, &at, &out, "machine output", &accept) {
            return Ok(w.hops);
        }
    }

    // 2. The machine's link and its other end on the host.
    if oif.detail.flags & IFF_UP == 0 {
        w.fail(
            "link",
            machine,
            format!("{} is down", oif.ifname),
            fix(
                format!("machnet link set {machine} {} up", oif.ifname),
                None,
            ),
        );
        return Ok(w.hops);
    }
    let peers = host.peers(namespace, &links)?;
    let peer_name = links
        .iter()
        .position(|l| l.ifindex == oif.ifindex)
        .and_then(|i| peers[i].clone())
        .map(|p| p.ifname);
    let Some(peer_name) = peer_name else {
        if oif.detail.kind.as_deref() == Some("macvlan") && oif.detail.link_netnsid.is_some() {
            macvlan_parent(&mut w, machine, &mut sock, &host, oif)?;
            return Ok(w.hops);
        }
        let kind = oif.detail.kind.as_deref().unwrap_or("device");
        w.hop(
            "peer",
            machine,
            Verdict::Unknown,
            format!(
                "{} is a {kind} whose other end is not in the host's namespace: not followed",
                oif.ifname
            ),
        );
        return Ok(w.hops);
    };
    let Some(peer) = host.links.iter().find(|l| l.ifname == peer_name) else {
        w.hop(
            "peer",
            ".host",
            Verdict::Unknown,
            format!("{peer_name} vanished"),
        );
        return Ok(w.hops);
    };
    if peer.detail.flags & IFF_UP == 0 {
        w.fail(
            "peer",
            ".host",
            format!("{}'s host end {} is down", oif.ifname, peer.ifname),
            fix(format!("ip link set {} up", peer.ifname), None),
        );
        return Ok(w.hops);
    }
    let (mtu, peer_mtu) = (oif.detail.mtu.unwrap_or(0), peer.detail.mtu.unwrap_or(0));
    if mtu != peer_mtu {
        // The larger end sends what the smaller one drops: bring it down to the other.
        let command = if mtu > peer_mtu {
            format!("machnet link set {machine} {} mtu {peer_mtu}", oif.ifname)
        } else {
            format!("ip link set {} mtu {mtu}", peer.ifname)
        };
        w.fail(
            "peer",
            ".host",
            format!(
                "MTU mismatch: {} has {mtu}, its host end {} has {peer_mtu}; packets larger \
                 than {} are dropped",
                oif.ifname,
                peer.ifname,
                mtu.min(peer_mtu)
            ),
            fix(command, None),
        );
        return Ok(w.hops);
    }
    let master = peer
        .detail
        .master
        .and_then(|m| host.links.iter().find(|l| l.ifindex == m));
    // The host side the machine's packets arrive on: the bridge if the peer is a port.
    let ingress = master.unwrap_or(peer);
    if let Some(gw) = decision.gateway {
        // The machine's own side first: routed setups give every host end the same
        // gateway address (169.254.0.1, fe80::1).
        let holder = if holds(ingress, gw) {
            Some(ingress)
        } else {
            host.links.iter().find(|l| holds(l, gw))
        };
        match holder {
            Some(h) if h.ifindex == ingress.ifindex => {}
            Some(h) if h.detail.kind.as_deref() == Some("bridge") => {
                w.fail(
                    "peer",
                    ".host",
                    format!(
                        "{} is not a port of bridge {}, which holds the gateway {gw}",
                        peer.ifname, h.ifname
                    ),
                    fix(
                        format!("ip link set {} master {}", peer.ifname, h.ifname),
                        Some(format!(
                            "containers.{machine}.hostBridge = \"{}\";",
                            h.ifname
                        )),
                    ),
                );
                return Ok(w.hops);
            }
            Some(h) => {
                w.fail(
                    "peer",
                    ".host",
                    format!(
                        "the gateway {gw} is on the host's {}, not on {}'s side ({})",
                        h.ifname, oif.ifname, ingress.ifname
                    ),
                    None,
                );
                return Ok(w.hops);
            }
            None => {
                let connected = oif.addr_info.iter().any(|a| {
                    a.local
                        .parse()
                        .is_ok_and(|net| prefix_contains(net, a.prefixlen, gw))
                });
                if connected {
                    // Another machine on the same link may be the router: not the host's
                    // business, and not followed.
                    let reason = format!(
                        "the gateway {gw} is on {}'s subnet but not on the host: another \
                         router on that link is not followed",
                        oif.ifname
                    );
                    w.hop("route", machine, Verdict::Unknown, reason);
                    return Ok(w.hops);
                }
                let reason = {
                    format!(
                        "the gateway {gw} is on no connected subnet of {} and no host link \
                         holds it",
                        oif.ifname
                    )
                };
                let replacement = first_address(ingress, v6).map(|g| {
                    format!(
                        "machnet route replace {machine}{family_flag} default via {g} dev {}",
                        oif.ifname
                    )
                });
                w.fail(
                    "route",
                    machine,
                    reason,
                    replacement.and_then(|c| fix(c, None)),
                );
                return Ok(w.hops);
            }
        }
    }
    if let Some(bridge) = master.filter(|b| b.detail.flags & IFF_UP == 0) {
        w.fail(
            "peer",
            ".host",
            format!("bridge {} is down", bridge.ifname),
            fix(format!("ip link set {} up", bridge.ifname), None),
        );
        return Ok(w.hops);
    }
    if let Some(bridge) = master.filter(|b| b.detail.kind.as_deref() == Some("bridge")) {
        // The port's STP state, as the bridge keeps it (the host's own sysfs).
        let state = std::fs::read_to_string(format!("/sys/class/net/{}/brport/state", peer.ifname))
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok());
        if let Some(state) = state.filter(|s| *s != 3) {
            let name = [
                "disabled",
                "listening",
                "learning",
                "forwarding",
                "blocking",
            ]
            .get(usize::from(state))
            .copied()
            .unwrap_or("unknown");
            let stp = std::fs::read_to_string(format!(
                "/sys/class/net/{}/bridge/stp_state",
                bridge.ifname
            ))
            .is_ok_and(|s| s.trim() != "0");
            let (reason, command) = if stp {
                (
                    format!(
                        "{} is in bridge port state {name} on {} (STP holds it; it forwards only \
                         in state forwarding)",
                        peer.ifname, bridge.ifname
                    ),
                    format!("ip link set {} type bridge stp_state 0", bridge.ifname),
                )
            } else {
                (
                    format!(
                        "{} is in bridge port state {name} on {}: it forwards nothing",
                        peer.ifname, bridge.ifname
                    ),
                    format!("ip link set {} type bridge_slave state 3", peer.ifname),
                )
            };
            w.fail("peer", ".host", reason, fix(command, None));
            return Ok(w.hops);
        }
    }
    let bridged = master.map_or(String::new(), |b| format!(", a port of {}", b.ifname));
    w.hop(
        "peer",
        ".host",
        Verdict::Pass,
        format!(
            "{} ↔ {}{bridged}: both up, mtu {mtu}",
            oif.ifname, peer.ifname
        ),
    );
    if decision.gateway.is_none() {
        if host.links.iter().any(|l| holds(l, dest)) {
            w.hop(
                "host route",
                ".host",
                Verdict::Pass,
                format!("{dest} is the host's own address"),
            );
        } else {
            w.hop(
                "host route",
                ".host",
                Verdict::Unknown,
                format!(
                    "{dest} is on {}'s link, beyond the host end: not followed",
                    oif.ifname
                ),
            );
        }
        return Ok(w.hops);
    }

    // 3. On the host: the kernel's decision for a packet arriving from the machine.
    let inif = ingress.ifname.clone();
    let mut from_machine = options(question);
    from_machine.from = Some((src, if v6 { 128 } else { 32 }));
    from_machine.iif = Some(inif.clone());
    let forwarding = forwarding_sysctls(v6, &inif);
    let host_decision = route_get(&mut host.sock, &host.names, dest, &from_machine)?;
    if let Ok(d) = &host_decision {
        if d.kind == RTN_LOCAL {
            w.hop(
                "host route",
                ".host",
                Verdict::Pass,
                format!("{dest} is the host's own address"),
            );
            return Ok(w.hops);
        }
    }
    if let Some((name, _)) = forwarding.iter().find(|(_, v)| v.as_deref() == Some("0")) {
        let all = if v6 {
            "net.ipv6.conf.all.forwarding"
        } else {
            "net.ipv4.ip_forward"
        };
        let command = if name == all {
            format!("sysctl -w {all}=1")
        } else {
            format!("sysctl -w {all}=1 {name}=1")
        };
        w.fail(
            "forwarding",
            ".host",
            format!("forwarding is off: {name} = 0"),
            fix(command, Some(format!("boot.kernel.sysctl.\"{all}\" = 1;"))),
        );
        return Ok(w.hops);
    }
    // Strict rp_filter, checked as the kernel checks it: the host's own route back to the
    // source must leave by the interface the packet came in on. (A route lookup from
    // userspace with `iif` does not always apply it; the packet path does.)
    if !v6 && rp_filter(&inif) == 1 {
        // The kernel's reverse lookup: to the source, from the destination.
        let reverse = GetOptions {
            from: Some((dest, 32)),
            ..GetOptions::default()
        };
        let back = route_get(&mut host.sock, &host.names, src, &reverse)?
            .ok()
            .and_then(|d| d.oif);
        if back != Some(ingress.ifindex) {
            let by = back.map_or_else(|| "nowhere".into(), |i| host.names.name(i).into_owned());
            w.fail(
                "host route",
                ".host",
                format!(
                    "strict rp_filter on {inif} drops it: the host's route back to {src} \
                     leaves by {by}, not {inif}"
                ),
                rp_fix(&inif),
            );
            return Ok(w.hops);
        }
    }
    let host_decision = match host_decision {
        Ok(d) => d,
        Err(says) => {
            let errno = says.1;
            let verdict_reason = format!(
                "the host cannot route {dest} from {src} arriving on {inif}: the kernel says: {}",
                says.0
            );
            if matches!(errno, libc::ENETUNREACH | libc::EHOSTUNREACH) {
                w.fail("host route", ".host", verdict_reason, None);
            } else {
                w.hop("host route", ".host", Verdict::Unknown, verdict_reason);
            }
            return Ok(w.hops);
        }
    };
    if host_decision.kind != RTN_UNICAST {
        w.fail(
            "host route",
            ".host",
            format!(
                "{dest} matches a {} route on the host",
                crate::route::names::route_type(host_decision.kind)
            ),
            None,
        );
        return Ok(w.hops);
    }
    let egress = host_decision
        .oif
        .map(|i| host.names.name(i).into_owned())
        .unwrap_or_default();
    let host_via = host_decision
        .gateway
        .map_or(String::new(), |g| format!(" via {g}"));
    w.hop(
        "host route",
        ".host",
        Verdict::Pass,
        format!("{dest} from {src} iif {inif}{host_via} dev {egress}"),
    );

    // 4. The host's firewall and NAT.
    let ruleset = match Ruleset::read(None) {
        Ok(r) => r,
        Err(why) => {
            let reason = format!("the host's {why}");
            w.hop("forward filter", ".host", Verdict::Unknown, reason);
            return Ok(w.hops);
        }
    };
    let on_host = FilterAt {
        hook: "forward",
        namespace: ".host",
        run_there: String::new(),
    };
    let out = Packet::new_flow(&inif, &egress, src, dest, question.proto, question.dport);
    // Filter chains on prerouting (NixOS's rpfilter table, say) see the packet first.
    let mut arriving = out.clone();
    arriving.oifname = String::new();
    if ruleset.filter("prerouting", &arriving) != Filter::NoChains {
        let at = FilterAt {
            hook: "prerouting",
            namespace: ".host",
            run_there: String::new(),
        };
        let accept = format!("iifname \"{inif}\" accept");
        if !judge_filter(
            &mut w,
            &ruleset,
            &at,
            &arriving,
            "prerouting filter",
            &accept,
        ) {
            return Ok(w.hops);
        }
    }
    let accept_rule = format!("iifname \"{inif}\" oifname \"{egress}\" accept");
    if !judge_filter(
        &mut w,
        &ruleset,
        &on_host,
        &out,
        "forward filter",
        &accept_rule,
    ) {
        return Ok(w.hops);
    }
    if is_private(src) && !is_private(dest) {
        match ruleset.source_nat(&out) {
            Nat::Masqueraded(rule) => {
                w.hop(
                    "nat",
                    ".host",
                    Verdict::Pass,
                    format!("{src} is masqueraded out of {egress}"),
                );
                w.with_rule(rule.to_string());
            }
            Nat::Unknown(rule, why) => {
                w.hop(
                    "nat",
                    ".host",
                    Verdict::Unknown,
                    format!("cannot tell whether {src} is masqueraded: {why}"),
                );
                w.with_rule(rule.to_string());
            }
            Nat::NotCovered => {
                let subnet = subnet_of(oif, src).unwrap_or_else(|| src.to_string());
                let (family, addr) = if v6 { ("ip6", "ip6") } else { ("ip", "ip") };
                let command = format!(
                    "nft add table {family} nat && nft 'add chain {family} nat postrouting {{ type nat hook postrouting priority srcnat; }}' && nft add rule {family} nat postrouting oifname \"{egress}\" {addr} saddr {subnet} masquerade"
                );
                let nixos = if v6 {
                    format!("networking.nat = {{ enable = true; enableIPv6 = true; internalInterfaces = [ \"{inif}\" ]; externalInterface = \"{egress}\"; }};")
                } else {
                    format!("networking.nat = {{ enable = true; internalInterfaces = [ \"{inif}\" ]; externalInterface = \"{egress}\"; }};")
                };
                w.fail(
                    "nat",
                    ".host",
                    format!(
                        "nothing masquerades {src} out of {egress}: {src} is a private address, \
                         and {dest}'s replies cannot find their way back to it"
                    ),
                    fix(command, Some(nixos)),
                );
                return Ok(w.hops);
            }
        }
    }

    // 5. The way back: the host's route to the machine, and the reply through the filter.
    let mut reply = GetOptions {
        from: Some((dest, if v6 { 128 } else { 32 })),
        iif: Some(egress.clone()),
        ..GetOptions::default()
    };
    reply.ipproto = Some(question.proto);
    match route_get(&mut host.sock, &host.names, src, &reply)? {
        Ok(back) if back.oif == Some(ingress.ifindex) => {
            w.hop(
                "return route",
                ".host",
                Verdict::Pass,
                format!("{src} from {dest} iif {egress} dev {inif}"),
            );
        }
        Ok(back) => {
            let by = back
                .oif
                .map(|i| host.names.name(i).into_owned())
                .unwrap_or_else(|| "nowhere".into());
            w.fail(
                "return route",
                ".host",
                format!("the host's route back to {src} leaves by {by}, not {inif}"),
                None,
            );
            return Ok(w.hops);
        }
        Err(says) => {
            w.fail(
                "return route",
                ".host",
                format!(
                    "the host cannot route replies back to {src}: the kernel says: {}",
                    says.0
                ),
                None,
            );
            return Ok(w.hops);
        }
    }
    let back = out.reply();
    let established = "ct state established,related accept";
    if !judge_filter(
        &mut w,
        &ruleset,
        &on_host,
        &back,
        "reply filter",
        established,
    ) {
        return Ok(w.hops);
    }
    // The reply into the machine, through its own input chain.
    if let Some(machine_rules) = &machine_rules {
        let mut into = back.clone();
        into.iifname = oif.ifname.clone();
        into.oifname = String::new();
        into.daddr_is_local = true;
        let at = FilterAt {
            hook: "input",
            namespace: machine,
            run_there: format!("machnet exec {machine} -- "),
        };
        judge_filter(
            &mut w,
            machine_rules,
            &at,
            &into,
            "machine input",
            established,
        );
    }
    Ok(w.hops)
}

/// A macvlan's parent on the host: up or not. Its packets leave by the parent directly,
/// past the host's routing and firewall, so the walk ends there.
fn macvlan_parent(
    w: &mut Walk,
    machine: &str,
    sock: &mut NetlinkSocket,
    host: &HostView,
    oif: &Link,
) -> Result<()> {
    // The machine's own id for the host's namespace: the parent is the host's only if the
    // macvlan's link id is that one.
    let host_id = crate::peer::nsid_of(sock, &host.ns)?;
    let parent = oif
        .detail
        .link
        .filter(|_| host_id.is_some() && host_id == oif.detail.link_netnsid)
        .and_then(|i| host.links.iter().find(|l| l.ifindex == i));
    let Some(parent) = parent else {
        let reason = format!(
            "{} is a macvlan whose parent is not in the host's namespace: not followed",
            oif.ifname
        );
        w.hop("peer", machine, Verdict::Unknown, reason);
        return Ok(());
    };
    if parent.detail.flags & IFF_UP == 0 {
        w.fail(
            "peer",
            ".host",
            format!(
                "{}'s macvlan parent {} on the host is down",
                oif.ifname, parent.ifname
            ),
            fix(format!("ip link set {} up", parent.ifname), None),
        );
        return Ok(());
    }
    let reason = format!(
        "{} is a macvlan of the host's {} (up): its packets leave by {} directly, past the \
         host's routing and firewall",
        oif.ifname, parent.ifname, parent.ifname
    );
    w.hop("peer", ".host", Verdict::Pass, reason);
    let reason = format!("beyond the host's {}: not followed", parent.ifname);
    w.hop("host route", ".host", Verdict::Unknown, reason);
    Ok(())
}

/// Where a filter is judged: which hook, in which namespace, and the prefix that runs a
/// fix there (`""` on the host, `machnet exec M -- ` in a machine).
pub(super) struct FilterAt<'a> {
    pub(super) hook: &'a str,
    pub(super) namespace: &'a str,
    pub(super) run_there: String,
}

/// Writes the filter hop; false when the packet does not pass (the walk ends).
pub(super) fn judge_filter(
    w: &mut Walk,
    ruleset: &Ruleset,
    at: &FilterAt<'_>,
    packet: &Packet,
    hop: &'static str,
    accept: &str,
) -> bool {
    let side = |name: &str| {
        if name.is_empty() {
            "local".to_string()
        } else {
            name.to_string()
        }
    };
    let what = format!(
        "{} → {} ({} → {})",
        packet.saddr,
        packet.daddr,
        side(&packet.iifname),
        side(&packet.oifname)
    );
    let namespace = at.namespace;
    match ruleset.filter(at.hook, packet) {
        Filter::NoChains => {
            let reason = format!("{what}: no {} chain filters it", at.hook);
            w.hop(hop, namespace, Verdict::Pass, reason);
            true
        }
        Filter::Accepted(rule) => {
            w.hop(hop, namespace, Verdict::Pass, format!("{what}: accepted"));
            w.with_rule(rule.to_string());
            true
        }
        Filter::Unknown(rule, why) => {
            let reason = format!("{what}: cannot be judged: {why}");
            w.hop(hop, namespace, Verdict::Unknown, reason);
            w.with_rule(rule.to_string());
            true
        }
        Filter::Dropped(rule) => {
            // iptables-nft's own tables are better mended with iptables.
            let iptables_chain = matches!(rule.chain.as_str(), "FORWARD" | "OUTPUT" | "INPUT");
            let command = if rule.table == "filter" && iptables_chain {
                let tool = if packet.saddr.is_ipv6() {
                    "ip6tables"
                } else {
                    "iptables"
                };
                let chain = &rule.chain;
                let matches = if accept.starts_with("ct ") {
                    "-m conntrack --ctstate ESTABLISHED,RELATED".to_string()
                } else {
                    let mut m = Vec::new();
                    if !packet.iifname.is_empty() {
                        m.push(format!("-i {}", packet.iifname));
                    }
                    if !packet.oifname.is_empty() {
                        m.push(format!("-o {}", packet.oifname));
                    }
                    m.join(" ")
                };
                format!("{}{tool} -I {chain} {matches} -j ACCEPT", at.run_there)
            } else {
                format!(
                    "{}nft insert rule {} {} {} {accept}",
                    at.run_there, rule.family, rule.table, rule.chain
                )
            };
            let nixos = (at.hook == "forward")
                .then(|| format!("networking.firewall.extraForwardRules = ''{accept}'';"));
            w.fail(
                hop,
                namespace,
                format!("{what}: dropped"),
                fix(command, nixos),
            );
            w.with_rule(rule.to_string());
            false
        }
    }
}

fn options(question: &Question) -> GetOptions {
    GetOptions {
        ipproto: Some(question.proto),
        dport: question.dport,
        sport: question.dport.map(|_| EPHEMERAL_PORT),
        ..GetOptions::default()
    }
}

/// One route lookup; a refusal comes back as (the kernel's words, errno).
pub(super) fn route_get(
    sock: &mut NetlinkSocket,
    names: &LinkNames,
    dest: IpAddr,
    options: &GetOptions,
) -> Result<std::result::Result<Decision, (String, i32)>> {
    let request = get::encode(dest, options, names).map_err(Error::Other)?;
    let mut answer = None;
    sock.query_many(RTM_GETROUTE, &[request], "route get", |_, reply| {
        answer = Some(match reply {
            Ok(msg) => {
                let route = Route::parse(msg.payload).map_err(|e| {
                    Error::Other(format!(
                        "the kernel sent a route machnet cannot decode ({})",
                        e.0
                    ))
                })?;
                Ok(Decision {
                    kind: route.kind,
                    oif: route.u32_attr(RTA_OIF),
                    gateway: route.addr_attr(RTA_GATEWAY),
                    prefsrc: route.addr_attr(RTA_PREFSRC),
                })
            }
            Err(Error::Kernel { source, says, .. }) => {
                Err((says, source.raw_os_error().unwrap_or(0)))
            }
            Err(e) => return Err(e),
        });
        Ok(())
    })?;
    answer.ok_or_else(|| Error::Other("the kernel did not answer a route lookup".into()))
}

/// The address (of the family) a machine link's host end, or its bridge, has: the
/// gateway a missing default route should point at. (device in the machine, gateway)
fn host_side_gateway(
    host: &mut HostView,
    namespace: &PinnedNamespace,
    links: &[Link],
    v6: bool,
) -> Result<Option<(String, String)>> {
    let peers = host.peers(namespace, links)?;
    for (link, peer) in links.iter().zip(&peers) {
        let Some(peer) = peer else { continue };
        let side = peer.master.as_ref().unwrap_or(&peer.ifname);
        if let Some(host_link) = host.links.iter().find(|l| &l.ifname == side) {
            if let Some(addr) = first_address(host_link, v6) {
                return Ok(Some((link.ifname.clone(), addr.to_string())));
            }
        }
    }
    Ok(None)
}

/// A link's first address of the family that is not link-local.
pub(super) fn first_address(link: &Link, v6: bool) -> Option<IpAddr> {
    link.addr_info
        .iter()
        .filter_map(|a| a.local.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv6() == v6 && !prefix_contains("fe80::".parse().unwrap(), 10, *a))
}

pub(super) fn holds(link: &Link, addr: IpAddr) -> bool {
    link.addr_info
        .iter()
        .any(|a| a.local.parse::<IpAddr>().ok() == Some(addr))
}

/// The subnet (NET/LEN) of the link's address `addr`.
fn subnet_of(link: &Link, addr: IpAddr) -> Option<String> {
    let a = link
        .addr_info
        .iter()
        .find(|a| a.local.parse::<IpAddr>().ok() == Some(addr))?;
    let net = crate::route::spec::mask(addr, a.prefixlen);
    Some(format!("{net}/{}", a.prefixlen))
}

/// The forwarding switches that must be on for a packet arriving on `inif`, with their
/// values (None: unreadable), read in machnet's own (the host's) namespace.
fn forwarding_sysctls(v6: bool, inif: &str) -> Vec<(String, Option<String>)> {
    // IPv6 forwards by conf.all alone (ip6_forward reads nothing per device).
    let keys = if v6 {
        vec!["net.ipv6.conf.all.forwarding".to_string()]
    } else {
        vec![
            "net.ipv4.ip_forward".to_string(),
            format!("net.ipv4.conf.{}.forwarding", sysctl_dev(inif)),
        ]
    };
    keys.into_iter()
        .map(|k| {
            let v = sysctl(&k);
            (k, v)
        })
        .collect()
}

fn rp_fix(inif: &str) -> Option<Fix> {
    fix(
        format!(
            "sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{}.rp_filter=2",
            sysctl_dev(inif)
        ),
        Some("networking.firewall.checkReversePath = \"loose\";".into()),
    )
}

/// The rp_filter mode in force on `inif`: the larger of `all` and the device's own.
fn rp_filter(inif: &str) -> u8 {
    ["all", inif]
        .iter()
        .filter_map(|d| {
            sysctl(&format!("net.ipv4.conf.{d}.rp_filter"))?
                .parse::<u8>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// A device's name as sysctl keys write it: its dots as '/' (`net.ipv4.conf.eth0/5.rp_filter`).
fn sysctl_dev(dev: &str) -> String {
    dev.replace('.', "/")
}

/// A sysctl read from /proc/sys; a device's part of the key written as sysctl_dev makes it.
fn sysctl(key: &str) -> Option<String> {
    let path = match key.split_once(".conf.") {
        Some((head, rest)) => {
            let (dev, leaf) = rest.rsplit_once('.')?;
            let dev = dev.replace('/', ".");
            format!("/proc/sys/{}/conf/{dev}/{leaf}", head.replace('.', "/"))
        }
        None => format!("/proc/sys/{}", key.replace('.', "/")),
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}
