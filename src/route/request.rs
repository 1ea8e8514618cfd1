//! A parsed route spec turned into the RTM_NEWROUTE / RTM_DELROUTE message the kernel
//! takes, the way iproute2's iproute_modify builds it.

use std::net::IpAddr;

use super::message::{
    RTA_DST, RTA_FLOW, RTA_GATEWAY, RTA_METRICS, RTA_MULTIPATH, RTA_NEWDST, RTA_NH_ID, RTA_OIF,
    RTA_PREF, RTA_PREFSRC, RTA_PRIORITY, RTA_SRC, RTA_TABLE, RTA_TTL_PROPAGATE, RTA_VIA,
};
use super::spec::{MetricValue, Nexthop, Purpose, RouteSpec, RTNH_F_ONLINK};
use crate::link::LinkNames;
use crate::netlink::attr;

pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
const RTA_EXPIRES: u16 = 23;
const RTAX_LOCK: u16 = 1;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

/// The five route edits `ip route` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Fails if a route with the same key exists.
    Add,
    Delete,
    /// Adds, or overwrites the route with the same key.
    Replace,
    /// Overwrites an existing route; fails if there is none.
    Change,
    /// Adds another route with the same key (IPv6 multipath, IPv4 alternatives).
    Append,
}

impl Edit {
    pub fn purpose(self) -> Purpose {
        match self {
            Edit::Delete => Purpose::Delete,
            _ => Purpose::Add,
        }
    }

    pub fn message_type(self) -> u16 {
        match self {
            Edit::Delete => RTM_DELROUTE,
            _ => RTM_NEWROUTE,
        }
    }

    /// The netlink flags that make RTM_NEWROUTE add, replace, change or append.
    pub fn flags(self) -> u16 {
        match self {
            Edit::Add => NLM_F_CREATE | NLM_F_EXCL,
            Edit::Replace => NLM_F_CREATE | NLM_F_REPLACE,
            Edit::Change => NLM_F_REPLACE,
            Edit::Append => NLM_F_CREATE | NLM_F_APPEND,
            Edit::Delete => 0,
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Edit::Add => "adding",
            Edit::Delete => "deleting",
            Edit::Replace => "replacing",
            Edit::Change => "changing",
            Edit::Append => "appending",
        }
    }
}

/// The rtmsg and attributes for `spec`. `protocol` is used when the spec names none and
/// the edit creates something (deletes then match any protocol). Device names are looked
/// up in `links`; an unknown one is an error before anything is sent.
pub fn encode(
    spec: &RouteSpec,
    edit: Edit,
    protocol: u8,
    links: &LinkNames,
) -> Result<Vec<u8>, String> {
    let protocol = match (spec.protocol, edit) {
        (Some(p), _) => p,
        (None, Edit::Delete) => 0,
        (None, _) => protocol,
    };
    let single = &spec.nexthop;
    let rtm_flags = if single.onlink {
        RTNH_F_ONLINK as u32
    } else {
        0
    };
    let mut msg = vec![
        spec.family,
        spec.dst.len,
        spec.from.as_ref().map_or(0, |f| f.len),
        spec.tos,
        u8::try_from(spec.table).unwrap_or(0),
        protocol,
        spec.scope,
        spec.kind,
    ];
    msg.extend_from_slice(&rtm_flags.to_ne_bytes());

    if let Some(addr) = spec.dst.addr {
        attr::push(&mut msg, RTA_DST, &ip_bytes(addr));
    }
    if let Some(addr) = spec.from.as_ref().and_then(|f| f.addr) {
        attr::push(&mut msg, RTA_SRC, &ip_bytes(addr));
    }
    if let Some(addr) = spec.prefsrc {
        attr::push(&mut msg, RTA_PREFSRC, &ip_bytes(addr));
    }
    push_nexthop_attrs(&mut msg, single, spec.family);
    if let Some(dev) = &single.dev {
        attr::push(&mut msg, RTA_OIF, &device_index(links, dev)?.to_ne_bytes());
    }
    if let Some(metric) = spec.metric {
        attr::push(&mut msg, RTA_PRIORITY, &metric.to_ne_bytes());
    }
    attr::push(&mut msg, RTA_TABLE, &spec.table.to_ne_bytes());
    if let Some(id) = spec.nhid {
        attr::push(&mut msg, RTA_NH_ID, &id.to_ne_bytes());
    }
    if !spec.metrics.is_empty() || spec.locked != 0 {
        attr::push(&mut msg, RTA_METRICS, &encode_metrics(spec));
    }
    if !spec.multipath.is_empty() {
        attr::push(&mut msg, RTA_MULTIPATH, &encode_multipath(spec, links)?);
    }
    if let Some(pref) = spec.pref {
        attr::push(&mut msg, RTA_PREF, &[pref]);
    }
    if let Some(expires) = spec.expires {
        attr::push(&mut msg, RTA_EXPIRES, &expires.to_ne_bytes());
    }
    if let Some(on) = spec.ttl_propagate {
        attr::push(&mut msg, RTA_TTL_PROPAGATE, &[u8::from(on)]);
    }
    Ok(msg)
}

/// Gateway (RTA_GATEWAY, or RTA_VIA across families), realms and `as to` of one nexthop.
fn push_nexthop_attrs(buf: &mut Vec<u8>, hop: &Nexthop, family: u8) {
    if let Some(newdst) = hop.newdst {
        attr::push(buf, RTA_NEWDST, &ip_bytes(newdst));
    }
    if let Some(gw) = &hop.gateway {
        let same_family = gw.addr.is_ipv4() == (family == super::message::AF_INET);
        if same_family {
            attr::push(buf, RTA_GATEWAY, &ip_bytes(gw.addr));
        } else {
            let via_family: u16 = if gw.addr.is_ipv4() {
                libc::AF_INET as u16
            } else {
                libc::AF_INET6 as u16
            };
            let mut via = via_family.to_ne_bytes().to_vec();
            via.extend_from_slice(&ip_bytes(gw.addr));
            attr::push(buf, RTA_VIA, &via);
        }
    }
    if let Some(realms) = hop.realms {
        attr::push(buf, RTA_FLOW, &realms.to_ne_bytes());
    }
}

fn encode_metrics(spec: &RouteSpec) -> Vec<u8> {
    let mut buf = Vec::new();
    for (id, value) in &spec.metrics {
        match value {
            MetricValue::Number(n) => attr::push(&mut buf, *id, &n.to_ne_bytes()),
            MetricValue::Name(name) => attr::push(&mut buf, *id, name.as_bytes()),
        }
    }
    if spec.locked != 0 {
        attr::push(&mut buf, RTAX_LOCK, &spec.locked.to_ne_bytes());
    }
    buf
}

/// struct rtnexthop entries, each followed by its own attributes.
fn encode_multipath(spec: &RouteSpec, links: &LinkNames) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    for hop in &spec.multipath {
        let mut attrs = Vec::new();
        push_nexthop_attrs(&mut attrs, hop, spec.family);
        let ifindex = match &hop.dev {
            Some(dev) => device_index(links, dev)?,
            None => 0,
        };
        let len = 8 + attrs.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.push(if hop.onlink { RTNH_F_ONLINK } else { 0 });
        buf.push(hop.weight.map_or(0, |w| (w - 1) as u8));
        buf.extend_from_slice(&ifindex.to_ne_bytes());
        buf.extend_from_slice(&attrs);
    }
    Ok(buf)
}

fn device_index(links: &LinkNames, dev: &str) -> Result<u32, String> {
    links.index_of(dev).ok_or_else(|| {
        format!(
            "there is no device {dev:?} here (devices: {})",
            links.names_sorted().join(", ")
        )
    })
}

fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
