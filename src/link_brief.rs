//! `ip -br link` and `ip -br addr` lines (iproute2 6.1, ip/ipaddress.c), text and JSON,
//! plus what `ip` cannot show: a veth's peer across the namespace boundary.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::link::{Link, LinkNames};

const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
// IFF_* flag bits in the order iproute2 prints them (print_link_flags).
const LINK_FLAGS: [(u32, &str); 18] = [
    (0x8, "LOOPBACK"),
    (0x2, "BROADCAST"),
    (0x10, "POINTOPOINT"),
    (0x1000, "MULTICAST"),
    (0x80, "NOARP"),
    (0x200, "ALLMULTI"),
    (0x100, "PROMISC"),
    (0x400, "MASTER"),
    (0x800, "SLAVE"),
    (0x4, "DEBUG"),
    (0x8000, "DYNAMIC"),
    (0x4000, "AUTOMEDIA"),
    (0x2000, "PORTSEL"),
    (0x20, "NOTRAILERS"),
    (0x1, "UP"),
    (0x10000, "LOWER_UP"),
    (0x20000, "DORMANT"),
    (0x40000, "ECHO"),
];

/// A veth's other end, found in another namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ifname: String,
    /// Where it lives, as a target name (".host", a machine, `netns:NAME`).
    pub namespace: String,
    /// The bridge the peer is enslaved to, if any.
    pub master: Option<String>,
}

/// Which lines to print: `ip -br link` (hardware address and flags) or `ip -br addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brief {
    Link,
    Addr,
}

/// One link as `ip -br link|addr` prints it, then ` peer IFNAME@NAMESPACE [master BR]`
/// when the peer is known. Names are printed raw, as ip does, so lines compare equal.
pub fn write_text(out: &mut Vec<u8>, link: &Link, all: &[Link], kind: Brief, peer: Option<&Peer>) {
    let (name, down_parent) = name_and_link(link, all);
    // printf's %-16s pads by bytes, not characters.
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + 16usize.saturating_sub(name.len()), b' ');
    out.push(b' ');
    if link.detail.operstate_raw.is_some() {
        let _ = write!(out, "{:<14} ", link.operstate);
    }
    match kind {
        Brief::Link => {
            if let Some(addr) = &link.detail.address {
                let _ = write!(out, "{} ", hardware_address(addr, link.detail.link_type));
            }
            out.push(b'<');
            out.extend_from_slice(
                flag_words(link.detail.flags, down_parent)
                    .join(",")
                    .as_bytes(),
            );
            out.extend_from_slice(b"> ");
        }
        Brief::Addr => {
            for a in &link.addr_info {
                match &a.peer {
                    Some(p) => {
                        let _ = write!(out, "{} peer {}/{} ", a.local, p, a.prefixlen);
                    }
                    None => {
                        let _ = write!(out, "{}/{} ", a.local, a.prefixlen);
                    }
                }
                if let Some(metric) = a.metric {
                    let _ = write!(out, "metric {metric} ");
                }
            }
        }
    }
    if let Some(peer) = peer {
        let _ = write!(out, "peer {}@{}", peer.ifname, peer.namespace);
        if let Some(master) = &peer.master {
            let _ = write!(out, " master {master}");
        }
    }
    out.push(b'\n');
}

/// The `ip -j -br link|addr` object, plus `"peer"` when known.
pub fn to_json(link: &Link, all: &[Link], kind: Brief, peer: Option<&Peer>) -> Value {
    let mut obj = Map::new();
    match (link.detail.link, link.detail.link_netnsid) {
        (Some(0), _) => {
            obj.insert("link".into(), Value::Null);
        }
        (Some(index), Some(_)) => {
            obj.insert("link_index".into(), json!(index));
        }
        (Some(index), None) => {
            let names = names_of(all);
            obj.insert("link".into(), json!(names.name(index)));
        }
        (None, _) => {}
    }
    obj.insert("ifname".into(), json!(link.ifname));
    if link.detail.operstate_raw.is_some() {
        obj.insert("operstate".into(), json!(link.operstate));
    }
    match kind {
        Brief::Link => {
            if let Some(addr) = &link.detail.address {
                obj.insert(
                    "address".into(),
                    json!(hardware_address(addr, link.detail.link_type)),
                );
            }
            let (_, down_parent) = name_and_link(link, all);
            obj.insert(
                "flags".into(),
                json!(flag_words(link.detail.flags, down_parent)),
            );
        }
        Brief::Addr => {
            let addrs: Vec<Value> = link
                .addr_info
                .iter()
                .map(|a| {
                    let mut o = Map::new();
                    o.insert("local".into(), json!(a.local));
                    if let Some(p) = &a.peer {
                        o.insert("address".into(), json!(p));
                    }
                    o.insert("prefixlen".into(), json!(a.prefixlen));
                    if let Some(metric) = a.metric {
                        o.insert("metric".into(), json!(metric));
                    }
                    Value::Object(o)
                })
                .collect();
            obj.insert("addr_info".into(), Value::Array(addrs));
        }
    }
    if let Some(peer) = peer {
        obj.insert(
            "peer".into(),
            json!({"ifname": peer.ifname, "namespace": peer.namespace, "master": peer.master}),
        );
    }
    Value::Object(obj)
}

/// "name", "name@parent", "name@ifN" (parent in another namespace) or "name@NONE", and
/// whether a same-namespace parent is down (iproute2's M-DOWN).
fn name_and_link(link: &Link, all: &[Link]) -> (String, bool) {
    match (link.detail.link, link.detail.link_netnsid) {
        (Some(0), _) => (format!("{}@NONE", link.ifname), false),
        (Some(index), Some(_)) => (format!("{}@if{index}", link.ifname), false),
        (Some(index), None) => {
            let parent = all.iter().find(|l| l.ifindex == index);
            let name = parent.map_or(format!("if{index}"), |p| p.ifname.clone());
            let down = parent.is_some_and(|p| p.detail.flags & IFF_UP == 0);
            (format!("{}@{name}", link.ifname), down)
        }
        (None, _) => (link.ifname.clone(), false),
    }
}

fn names_of(all: &[Link]) -> LinkNames {
    LinkNames::from_links(all)
}

/// print_link_flags: NO-CARRIER first when up without carrier, then the flag words.
fn flag_words(flags: u32, parent_down: bool) -> Vec<String> {
    let mut words = Vec::new();
    if flags & IFF_UP != 0 && flags & IFF_RUNNING == 0 {
        words.push("NO-CARRIER".to_string());
    }
    let mut rest = flags & !IFF_RUNNING;
    for (bit, word) in LINK_FLAGS {
        if rest & bit != 0 {
            rest &= !bit;
            words.push(word.to_string());
        }
    }
    if rest != 0 {
        words.push(format!("{rest:x}"));
    }
    if parent_down {
        words.push("M-DOWN".to_string());
    }
    words
}

/// ll_addr_n2a: colon-separated hex, except tunnel endpoints, which are IP addresses.
pub(crate) fn hardware_address(addr: &[u8], link_type: u16) -> String {
    const ARPHRD_TUNNEL: u16 = 768;
    const ARPHRD_TUNNEL6: u16 = 769;
    const ARPHRD_SIT: u16 = 776;
    const ARPHRD_IPGRE: u16 = 778;
    const ARPHRD_IP6GRE: u16 = 823;
    match (addr.len(), link_type) {
        (4, ARPHRD_TUNNEL | ARPHRD_SIT | ARPHRD_IPGRE) => {
            crate::route::format::ip_string(crate::route::message::to_ip(addr))
        }
        (16, ARPHRD_TUNNEL6 | ARPHRD_IP6GRE) => {
            crate::route::format::ip_string(crate::route::message::to_ip(addr))
        }
        _ => addr
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_iproute2() {
        assert_eq!(
            flag_words(0x1 | 0x8 | 0x40 | 0x10000, false),
            ["LOOPBACK", "UP", "LOWER_UP"]
        );
        assert_eq!(
            flag_words(0x1 | 0x2 | 0x1000, true),
            ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP", "M-DOWN"]
        );
    }

    #[test]
    fn hardware_addresses() {
        assert_eq!(
            hardware_address(&[0, 0x1a, 0xff, 0, 0, 1], 1),
            "00:1a:ff:00:00:01"
        );
        assert_eq!(hardware_address(&[10, 0, 0, 1], 768), "10.0.0.1");
    }
}
