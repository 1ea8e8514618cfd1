//! One rtnetlink notification as `ip monitor` prints it (routes and addresses line for
//! line; links in the `ip -br link` form, since `ip -br monitor` runs its lines together),
//! or as one JSON object per event.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::link::{self, Link, LinkNames};
use crate::link_brief::{self, Brief};
use crate::netlink::attr::Attrs;
use crate::netlink::Message;
use crate::route::format::ip_string;
use crate::route::message::{to_ip, Route, RTM_F_CLONED};
use crate::route::names::Names;
use crate::route::print::{Format, RoutePrinter, ShowOptions};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETLINK: u16 = 18;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;

/// The rtnetlink groups `watch` joins: links, IPv4/IPv6 addresses, IPv4/IPv6 routes.
pub const GROUPS: [u32; 5] = [1, 5, 7, 9, 11];

/// The dumps that give a namespace's whole state in the order a reader needs it (a link
/// before the addresses and routes that name it): (request, zeroed header, what for
/// errors). Zeroed headers filter nothing: every family, every table.
pub const STATE_DUMPS: &[(u16, &[u8], &str)] = &[
    (RTM_GETLINK, &[0; 16], "listing links"),
    (RTM_GETADDR, &[0; 8], "listing addresses"),
    (RTM_GETROUTE, &[0; 12], "listing routes"),
];

/// One printable change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// "route", "address" or "link".
    pub kind: &'static str,
    pub deleted: bool,
    /// As `ip monitor` prints it (one or more lines, each ending in a newline).
    pub text: String,
    /// The object in `ip -j` shape.
    pub object: Value,
}

/// What one machine's notifications need to be printed: the names of its links, kept
/// up to date from the link notifications themselves.
pub struct Formatter<'n> {
    names: &'n Names,
    links: Vec<Link>,
    link_names: LinkNames,
}

impl<'n> Formatter<'n> {
    pub fn new(names: &'n Names, links: Vec<Link>) -> Formatter<'n> {
        let link_names = LinkNames::from_links(&links);
        Formatter {
            names,
            links,
            link_names,
        }
    }

    /// The change a notification describes; None for messages `ip monitor` would not
    /// print either (cache entries) or that cannot be decoded.
    pub fn format(&mut self, msg: Message<'_>) -> Option<Change> {
        match msg.kind {
            RTM_NEWROUTE | RTM_DELROUTE => self.route(msg),
            RTM_NEWADDR | RTM_DELADDR => self.address(msg),
            RTM_NEWLINK | RTM_DELLINK => self.link(msg),
            _ => None,
        }
    }

    fn route(&self, msg: Message<'_>) -> Option<Change> {
        let route = Route::parse(msg.payload).ok()?;
        if route.flags & RTM_F_CLONED != 0 {
            return None;
        }
        let printer = |format| RoutePrinter {
            names: self.names,
            links: &self.link_names,
            options: ShowOptions { all_tables: true },
            format,
            hz: crate::commands::routes::user_hz(),
        };
        let deleted = msg.kind == RTM_DELROUTE;
        let mut text = Vec::new();
        if deleted {
            text.extend_from_slice(b"Deleted ");
        }
        printer(Format::Text).print(&route, &mut text);
        let mut object = Vec::new();
        printer(Format::Json).print(&route, &mut object);
        Some(Change {
            kind: "route",
            deleted,
            text: String::from_utf8_lossy(&text).into_owned(),
            object: serde_json::from_slice(&object).unwrap_or(Value::Null),
        })
    }

    fn link(&mut self, msg: Message<'_>) -> Option<Change> {
        let link = link::parse_link(msg.payload).ok()?;
        let deleted = msg.kind == RTM_DELLINK;
        // Printed against the links as they are after the change (a new link's parent is
        // known), except that a deleted link is still there to name itself.
        self.links.retain(|l| l.ifindex != link.ifindex);
        self.links.push(link.clone());
        let mut text = Vec::new();
        if deleted {
            text.extend_from_slice(b"Deleted ");
        }
        link_brief::write_text(&mut text, &link, &self.links, Brief::Link, None);
        let mut object = link_brief::to_json(&link, &self.links, Brief::Link, None);
        // The brief form has no MTU, which is often what changed.
        if let Some(mtu) = link.detail.mtu {
            if text.last() == Some(&b'\n') {
                text.pop();
            }
            text.extend_from_slice(format!("mtu {mtu}\n").as_bytes());
            object["mtu"] = json!(mtu);
        }
        if deleted {
            self.links.retain(|l| l.ifindex != link.ifindex);
        }
        self.link_names = LinkNames::from_links(&self.links);
        Some(Change {
            kind: "link",
            deleted,
            text: String::from_utf8_lossy(&text).into_owned(),
            object,
        })
    }

    fn address(&self, msg: Message<'_>) -> Option<Change> {
        let a = AddressMessage::parse(msg.payload)?;
        let deleted = msg.kind == RTM_DELADDR;
        let dev = self.link_names.name(a.index).into_owned();
        Some(Change {
            kind: "address",
            deleted,
            text: a.text(deleted, &dev, self.names),
            object: a.json(&dev, self.names),
        })
    }
}

/// An RTM_NEWADDR / RTM_DELADDR, decoded for printing.
struct AddressMessage {
    family: u8,
    prefixlen: u8,
    flags: u32,
    scope: u8,
    index: u32,
    local: Option<IpAddr>,
    address: Option<IpAddr>,
    broadcast: Option<IpAddr>,
    anycast: Option<IpAddr>,
    label: Option<String>,
    metric: Option<u32>,
    /// (preferred, valid) lifetimes in seconds; u32::MAX is forever.
    lifetimes: Option<(u32, u32)>,
}

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_ANYCAST: u16 = 5;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
const IFA_RT_PRIORITY: u16 = 9;
const IFA_F_SECONDARY: u32 = 0x01;
const IFA_F_PERMANENT: u32 = 0x80;
const FOREVER: u32 = u32::MAX;

/// iproute2's ifa_flag_data order; `permanent` prints as `dynamic` when absent.
const ADDRESS_FLAGS: [(u32, &str); 12] = [
    (0x01, "secondary"),
    (0x02, "nodad"),
    (0x04, "optimistic"),
    (0x08, "dadfailed"),
    (0x10, "home"),
    (0x20, "deprecated"),
    (0x40, "tentative"),
    (0x80, "permanent"),
    (0x100, "mngtmpaddr"),
    (0x200, "noprefixroute"),
    (0x400, "autojoin"),
    (0x800, "stable-privacy"),
];

impl AddressMessage {
    fn parse(payload: &[u8]) -> Option<AddressMessage> {
        if payload.len() < 8 {
            return None;
        }
        let mut a = AddressMessage {
            family: payload[0],
            prefixlen: payload[1],
            flags: u32::from(payload[2]),
            scope: payload[3],
            index: u32::from_ne_bytes(payload[4..8].try_into().ok()?),
            local: None,
            address: None,
            broadcast: None,
            anycast: None,
            label: None,
            metric: None,
            lifetimes: None,
        };
        let want = if a.family == libc::AF_INET as u8 {
            4
        } else {
            16
        };
        for attr in Attrs::new(&payload[8..]) {
            let attr = attr.ok()?;
            let ip = || (attr.payload.len() == want).then(|| to_ip(attr.payload));
            match attr.kind {
                IFA_ADDRESS => a.address = ip(),
                IFA_LOCAL => a.local = ip(),
                IFA_BROADCAST => a.broadcast = ip(),
                IFA_ANYCAST => a.anycast = ip(),
                IFA_LABEL => a.label = attr.str().ok().map(str::to_string),
                IFA_FLAGS => a.flags = attr.u32().ok()?,
                IFA_RT_PRIORITY => a.metric = attr.u32().ok(),
                IFA_CACHEINFO if attr.payload.len() >= 8 => {
                    let w =
                        |i: usize| u32::from_ne_bytes(attr.payload[i..i + 4].try_into().unwrap());
                    a.lifetimes = Some((w(0), w(4)));
                }
                _ => {}
            }
        }
        // As iproute2: each of IFA_LOCAL and IFA_ADDRESS stands in for the other.
        a.local = a.local.or(a.address);
        a.address = a.address.or(a.local);
        Some(a)
    }

    fn is_ipv6(&self) -> bool {
        self.family == libc::AF_INET6 as u8
    }

    fn flag_words(&self) -> Vec<&'static str> {
        let mut words = Vec::new();
        let mut flags = self.flags;
        for (mask, name) in ADDRESS_FLAGS {
            if mask == IFA_F_PERMANENT {
                if flags & mask == 0 {
                    words.push("dynamic");
                }
            } else if flags & mask != 0 {
                words.push(if mask == IFA_F_SECONDARY && self.is_ipv6() {
                    "temporary"
                } else {
                    name
                });
            }
            flags &= !mask;
        }
        words
    }

    /// `ip monitor address`: `3: d0    inet 10.5.0.1/24 scope global d0` and the
    /// lifetimes on a second line.
    fn text(&self, deleted: bool, dev: &str, names: &Names) -> String {
        let mut s = String::new();
        if deleted {
            s.push_str("Deleted ");
        }
        let family = if self.is_ipv6() { "inet6" } else { "inet" };
        let _ = write!(s, "{}: {dev}    {family} ", self.index);
        if let Some(local) = self.local {
            s.push_str(&ip_string(local));
            if let Some(peer) = self.address.filter(|p| *p != local) {
                let _ = write!(s, " peer {}", ip_string(peer));
            }
            let _ = write!(s, "/{} ", self.prefixlen);
            if let Some(metric) = self.metric {
                let _ = write!(s, "metric {metric} ");
            }
        }
        if let Some(brd) = self.broadcast {
            let _ = write!(s, "brd {} ", ip_string(brd));
        }
        if let Some(any) = self.anycast {
            let _ = write!(s, "any {} ", ip_string(any));
        }
        let _ = write!(s, "scope {} ", names.scope(self.scope));
        for word in self.flag_words() {
            let _ = write!(s, "{word} ");
        }
        if let Some(label) = &self.label {
            s.push_str(label);
        }
        if let Some((preferred, valid)) = self.lifetimes {
            let life = |v: u32| {
                if v == FOREVER {
                    "forever".to_string()
                } else {
                    format!("{v}sec")
                }
            };
            let _ = write!(
                s,
                "\n       valid_lft {} preferred_lft {}",
                life(valid),
                life(preferred)
            );
        }
        s.push('\n');
        s
    }

    /// Close to `ip -j monitor address`: the keys of `ip -j addr` for one address.
    fn json(&self, dev: &str, names: &Names) -> Value {
        let mut obj = json!({
            "index": self.index,
            "dev": dev,
            "family": if self.is_ipv6() { "inet6" } else { "inet" },
            "prefixlen": self.prefixlen,
            "scope": names.scope(self.scope).to_string(),
        });
        let map = obj.as_object_mut().expect("an object");
        if let Some(local) = self.local {
            map.insert("local".into(), json!(ip_string(local)));
        }
        if let Some(peer) = self.address.filter(|p| Some(*p) != self.local) {
            map.insert("address".into(), json!(ip_string(peer)));
        }
        if let Some(brd) = self.broadcast {
            map.insert("broadcast".into(), json!(ip_string(brd)));
        }
        if let Some(label) = &self.label {
            map.insert("label".into(), json!(label));
        }
        for word in self.flag_words() {
            map.insert(word.into(), json!(true));
        }
        if let Some((preferred, valid)) = self.lifetimes {
            map.insert("valid_life_time".into(), json!(valid));
            map.insert("preferred_life_time".into(), json!(preferred));
        }
        obj
    }
}
