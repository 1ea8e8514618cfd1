//! Links and addresses of one namespace, read over its netlink socket.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::netlink::attr::Attrs;
use crate::netlink::{retry_interrupted, NetlinkSocket};
use crate::route::format::ip_string;
use crate::route::message::to_ip;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// The metric of the prefix route the kernel makes for the address (`ip addr add … metric N`).
const IFA_RT_PRIORITY: u16 = 9;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// ifindex → name, as `ip` prints device names.
#[derive(Debug, Clone, Default)]
pub struct LinkNames {
    names: HashMap<u32, String>,
}

impl LinkNames {
    /// iproute2's ll_index_to_name: `*` for 0, `ifN` for an index it cannot name.
    pub fn name(&self, index: u32) -> Cow<'_, str> {
        if index == 0 {
            return Cow::Borrowed("*");
        }
        match self.names.get(&index) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("if{index}")),
        }
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (u32, String)>) -> LinkNames {
        LinkNames {
            names: pairs.into_iter().collect(),
        }
    }

    pub fn from_links(links: &[Link]) -> LinkNames {
        LinkNames {
            names: links
                .iter()
                .map(|l| (l.ifindex, l.ifname.clone()))
                .collect(),
        }
    }

    /// Replaces control characters in every name with \xNN. Used when printing to a
    /// terminal: an interface name may hold escape sequences, which `ip` prints raw.
    pub fn make_printable(&mut self) {
        for name in self.names.values_mut() {
            *name = printable_name(name);
        }
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(i, _)| *i)
    }

    /// Every device name, sorted, for messages that list what exists.
    pub fn names_sorted(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.names.values().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub ifindex: u32,
    pub ifname: String,
    pub operstate: &'static str,
    pub addr_info: Vec<Address>,
    /// What `ip -br link` prints besides the above, and what finds a veth's peer.
    #[serde(skip)]
    pub detail: LinkDetail,
}

#[derive(Debug, Clone, Default)]
pub struct LinkDetail {
    /// IFF_* flags (ifi_flags).
    pub flags: u32,
    /// ARPHRD_* (ifi_type), which decides how the hardware address prints.
    pub link_type: u16,
    /// IFLA_OPERSTATE as sent, when sent.
    pub operstate_raw: Option<u8>,
    pub address: Option<Vec<u8>>,
    /// IFLA_LINK: the other end (veth peer, parent), by ifindex…
    pub link: Option<u32>,
    /// …in the namespace with this id, as seen from here (IFLA_LINK_NETNSID).
    pub link_netnsid: Option<i32>,
    /// IFLA_MASTER: the bridge (or bond) this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_INFO_KIND: "veth", "bridge", "dummy", … (None for physical devices and lo).
    pub kind: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub family: &'static str,
    pub local: String,
    /// The far end of a point-to-point address (IFA_ADDRESS when it differs from ours).
    #[serde(rename = "address", skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub prefixlen: u8,
    /// IFA_RT_PRIORITY: `metric N` in `ip -br addr`. A DHCP or IPv4LL client sets it
    /// (systemd-networkd gives its link-local address 2048).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// Every link of the namespace with its addresses, in ifindex order.
pub fn links_with_addresses(sock: &mut NetlinkSocket) -> Result<Vec<Link>> {
    let mut links = dump_links(sock)?;
    let addresses = dump_addresses(sock)?;
    for (index, address) in addresses {
        if let Some(link) = links.iter_mut().find(|l| l.ifindex == index) {
            link.addr_info.push(address);
        }
    }
    Ok(links)
}

pub fn link_names(sock: &mut NetlinkSocket) -> Result<LinkNames> {
    Ok(LinkNames::from_links(&dump_links(sock)?))
}

pub fn dump_links(sock: &mut NetlinkSocket) -> Result<Vec<Link>> {
    let mut request = vec![0u8; IFINFOMSG_LEN];
    crate::netlink::attr::push(
        &mut request,
        IFLA_EXT_MASK,
        &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
    );
    retry_interrupted("listing links", |links: &mut Vec<Link>| {
        sock.dump(RTM_GETLINK, &request, "listing links", |msg| {
            if msg.kind == RTM_NEWLINK {
                links.push(parse_link(msg.payload)?);
            }
            Ok(())
        })
    })
}

fn dump_addresses(sock: &mut NetlinkSocket) -> Result<Vec<(u32, Address)>> {
    let request = [0u8; IFADDRMSG_LEN];
    retry_interrupted("listing addresses", |addrs: &mut Vec<(u32, Address)>| {
        sock.dump(RTM_GETADDR, &request, "listing addresses", |msg| {
            if msg.kind == RTM_NEWADDR {
                addrs.push(parse_address(msg.payload)?);
            }
            Ok(())
        })
    })
}

fn malformed(what: &str, why: impl std::fmt::Display) -> Error {
    Error::Other(format!(
        "the kernel sent a {what} message machnet cannot decode ({why})"
    ))
}

pub(crate) fn parse_link(payload: &[u8]) -> Result<Link> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(malformed("link", "short ifinfomsg"));
    }
    let ifindex = u32::from_ne_bytes(payload[4..8].try_into().unwrap());
    let mut detail = LinkDetail {
        link_type: u16::from_ne_bytes([payload[2], payload[3]]),
        flags: u32::from_ne_bytes(payload[8..12].try_into().unwrap()),
        ..LinkDetail::default()
    };
    let mut ifname = None;
    let mut operstate = "UNKNOWN";
    for attr in Attrs::new(&payload[IFINFOMSG_LEN..]) {
        let attr = attr.map_err(|e| malformed("link", e.0))?;
        let bad = |e: crate::netlink::attr::Malformed| malformed("link", e.0);
        match attr.kind {
            // Names are bytes to the kernel; one that is not UTF-8 is shown lossily rather
            // than failing the whole namespace.
            IFLA_IFNAME => {
                let raw = attr.payload.split(|b| *b == 0).next().unwrap_or(&[]);
                ifname = Some(String::from_utf8_lossy(raw).into_owned());
            }
            IFLA_OPERSTATE => {
                let state = attr.u8().map_err(bad)?;
                detail.operstate_raw = Some(state);
                operstate = operstate_name(state);
            }
            IFLA_ADDRESS => detail.address = Some(attr.payload.to_vec()),
            IFLA_LINK => detail.link = Some(attr.u32().map_err(bad)?),
            IFLA_MTU => detail.mtu = Some(attr.u32().map_err(bad)?),
            IFLA_LINK_NETNSID => detail.link_netnsid = Some(attr.u32().map_err(bad)? as i32),
            IFLA_MASTER => detail.master = Some(attr.u32().map_err(bad)?),
            IFLA_LINKINFO => {
                for info in Attrs::new(attr.payload) {
                    let info = info.map_err(|e| malformed("link", e.0))?;
                    if info.kind == IFLA_INFO_KIND {
                        detail.kind = Some(info.str().map_err(bad)?.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let ifname = ifname.ok_or_else(|| malformed("link", format!("link {ifindex} has no name")))?;
    Ok(Link {
        ifindex,
        ifname,
        operstate,
        addr_info: Vec::new(),
        detail,
    })
}

/// RFC 2863 operational states as `ip` names them.
fn operstate_name(state: u8) -> &'static str {
    match state {
        1 => "NOTPRESENT",
        2 => "DOWN",
        3 => "LOWERLAYERDOWN",
        4 => "TESTING",
        5 => "DORMANT",
        6 => "UP",
        _ => "UNKNOWN",
    }
}

fn parse_address(payload: &[u8]) -> Result<(u32, Address)> {
    if payload.len() < IFADDRMSG_LEN {
        return Err(malformed("address", "short ifaddrmsg"));
    }
    let family = payload[0];
    let prefixlen = payload[1];
    let index = u32::from_ne_bytes(payload[4..8].try_into().unwrap());
    let want = match family as i32 {
        libc::AF_INET => 4,
        libc::AF_INET6 => 16,
        other => return Err(malformed("address", format!("family {other}"))),
    };
    let (mut local, mut address, mut metric) = (None, None, None);
    for attr in Attrs::new(&payload[IFADDRMSG_LEN..]) {
        let attr = attr.map_err(|e| malformed("address", e.0))?;
        if attr.kind == IFA_RT_PRIORITY {
            let bytes: [u8; 4] = attr
                .payload
                .try_into()
                .map_err(|_| malformed("address", "metric of the wrong size"))?;
            metric = Some(u32::from_ne_bytes(bytes));
            continue;
        }
        let slot = match attr.kind {
            IFA_LOCAL => &mut local,
            IFA_ADDRESS => &mut address,
            _ => continue,
        };
        if attr.payload.len() != want {
            return Err(malformed("address", "address of the wrong size"));
        }
        *slot = Some(to_ip(attr.payload));
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours when present.
    let addr: IpAddr = local
        .or(address)
        .ok_or_else(|| malformed("address", "no address attribute"))?;
    let peer = address.filter(|a| *a != addr).map(ip_string);
    Ok((
        index,
        Address {
            family: if want == 4 { "inet" } else { "inet6" },
            local: ip_string(addr),
            peer,
            prefixlen,
            metric,
        },
    ))
}

/// An interface name with control characters shown as \xNN, for tables meant for people
/// (a name can hold terminal escape sequences).
pub fn printable_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}
