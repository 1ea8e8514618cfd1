//! Which routes the kernel treats as "the same route", and whether two routes say the same
//! thing: what declarative apply needs to turn a wanted set and a table into a plan.
//!
//! The key is what makes the kernel answer EEXIST to an exclusive add, and what a replace
//! overwrites: for IPv4 the table, prefix, TOS and priority (fib_table_insert looks aliases
//! up by dscp and priority); for IPv6 the table, prefix, source prefix and metric
//! (fib6_add_rt2node compares metrics). Type, gateway and device are *not* part of it: a
//! blackhole and a unicast route to one prefix at one metric collide.

use std::net::IpAddr;

use super::message::{
    Route, AF_INET6, RTA_DST, RTA_ENCAP, RTA_FLOW, RTA_GATEWAY, RTA_MULTIPATH, RTA_NH_ID, RTA_OIF,
    RTA_PREF, RTA_PREFSRC, RTA_PRIORITY, RTA_SRC, RTA_VIA,
};
use super::spec::RTNH_F_ONLINK;
use crate::netlink::attr;

/// A fast hasher for route keys (FxHash's multiply-rotate): keys come from our own
/// requests and the kernel's table, not from an adversary, and SipHash was a tenth of
/// a re-apply's time.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type KeyMap<V> =
    std::collections::HashMap<RouteKey, V, std::hash::BuildHasherDefault<KeyHasher>>;
pub type KeySet = std::collections::HashSet<RouteKey, std::hash::BuildHasherDefault<KeyHasher>>;

/// IP6_RT_PRIO_USER: the metric the kernel gives an IPv6 route added with none (or 0).
const IPV6_DEFAULT_METRIC: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub family: u8,
    pub table: u32,
    pub dst_len: u8,
    pub dst: [u8; 16],
    /// IPv4 only (the kernel keys IPv4 aliases on it).
    pub tos: u8,
    /// IPv6 only: the source prefix of a source-specific route.
    pub src_len: u8,
    pub src: [u8; 16],
    pub metric: u32,
}

impl RouteKey {
    pub fn of(route: &Route<'_>) -> RouteKey {
        let ipv6 = route.family == AF_INET6;
        let metric = match route.u32_attr(RTA_PRIORITY) {
            None | Some(0) if ipv6 => IPV6_DEFAULT_METRIC,
            other => other.unwrap_or(0),
        };
        RouteKey {
            family: route.family,
            table: route.table(),
            dst_len: route.dst_len,
            dst: address_bytes(route.addr_attr(RTA_DST)),
            tos: if ipv6 { 0 } else { route.tos },
            src_len: if ipv6 { route.src_len } else { 0 },
            src: if ipv6 {
                address_bytes(route.addr_attr(RTA_SRC))
            } else {
                [0; 16]
            },
            metric,
        }
    }
}

fn address_bytes(addr: Option<IpAddr>) -> [u8; 16] {
    let mut out = [0; 16];
    match addr {
        Some(IpAddr::V4(a)) => out[..4].copy_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => out.copy_from_slice(&a.octets()),
        None => {}
    }
    out
}

/// Whether `existing` (from a dump) already is the route `wanted` (a request machnet
/// built) asks for, so applying it would change nothing. Both must have the same key.
///
/// What the kernel fills in by itself does not count as a difference: the device of a
/// route given only a gateway, an IPv6 route's preference when none was asked for.
/// Anything the request cannot express (several nexthops, an encapsulation, a nexthop
/// object, realms, an expiry) does: replacing the route is the only way to get the
/// declared one.
pub fn is_same_route(wanted: &Route<'_>, existing: &Route<'_>) -> bool {
    let onlink = |r: &Route<'_>| r.flags & RTNH_F_ONLINK as u32;
    let expires = existing.cache_info().is_some_and(|c| c.expires != 0);
    let extras = [RTA_MULTIPATH, RTA_ENCAP, RTA_NH_ID, RTA_FLOW]
        .iter()
        .any(|kind| existing.attr(*kind).is_some());
    wanted.kind == existing.kind
        && wanted.protocol == existing.protocol
        && (wanted.family == AF_INET6 || wanted.scope == existing.scope)
        && onlink(wanted) == onlink(existing)
        && wanted.attr(RTA_GATEWAY) == existing.attr(RTA_GATEWAY)
        && wanted.attr(RTA_VIA) == existing.attr(RTA_VIA)
        && wanted
            .attr(RTA_OIF)
            .is_none_or(|oif| existing.attr(RTA_OIF) == Some(oif))
        && wanted.attr(RTA_PREFSRC) == existing.attr(RTA_PREFSRC)
        && wanted
            .attr(RTA_PREF)
            .is_none_or(|pref| existing.attr(RTA_PREF) == Some(pref))
        && sorted_metrics(wanted) == sorted_metrics(existing)
        && !expires
        && !extras
}

fn sorted_metrics<'a>(route: &Route<'a>) -> Vec<(u16, &'a [u8])> {
    let mut metrics: Vec<(u16, &[u8])> = route.metrics().map(|a| (a.kind, a.payload)).collect();
    metrics.sort_unstable();
    metrics
}

/// Flags the kernel sets on its own and refuses in a request (RTNH_F_DEAD, LINKDOWN,
/// OFFLOAD, TRAP, …): of rtm_flags / rtnh_flags only `onlink` is something one asks for.
const REQUESTABLE_FLAGS: u32 = RTNH_F_ONLINK as u32;

/// The attributes of a dumped route that a request may carry back. The rest are the
/// kernel's reports (cache info, the uid a lookup ran as, …).
const RESENDABLE: &[u16] = &[
    RTA_DST,
    RTA_SRC,
    RTA_OIF,
    RTA_GATEWAY,
    RTA_PRIORITY,
    RTA_PREFSRC,
    super::message::RTA_METRICS,
    RTA_MULTIPATH,
    RTA_FLOW,
    super::message::RTA_TABLE,
    RTA_VIA,
    super::message::RTA_NEWDST,
    RTA_PREF,
    super::message::RTA_ENCAP_TYPE,
    RTA_ENCAP,
    RTA_NH_ID,
];

/// A dumped route turned back into a request that recreates it: how a failed apply puts
/// back a route it replaced or deleted. Kernel-set flags are cleared (the kernel refuses
/// `linkdown` in a request) in the rtmsg and in every nexthop; report-only attributes are
/// dropped. An IPv6 route's remaining lifetime is lost (the dump reports it only as cache
/// info): machnet deletes or replaces only its own routes, which never expire.
pub fn resendable(dumped: &[u8]) -> Vec<u8> {
    const RTMSG_LEN: usize = 12;
    let mut out = dumped[..RTMSG_LEN].to_vec();
    let flags = u32::from_ne_bytes(out[8..12].try_into().unwrap()) & REQUESTABLE_FLAGS;
    out[8..12].copy_from_slice(&flags.to_ne_bytes());
    for a in attr::Attrs::new(&dumped[RTMSG_LEN..]).filter_map(|a| a.ok()) {
        if !RESENDABLE.contains(&a.kind) {
            continue;
        }
        if a.kind == RTA_MULTIPATH {
            attr::push(&mut out, a.kind, &requestable_nexthops(a.payload));
        } else {
            attr::push(&mut out, a.kind, a.payload);
        }
    }
    out
}

/// struct rtnexthop entries with their kernel-set flags cleared.
fn requestable_nexthops(multipath: &[u8]) -> Vec<u8> {
    let mut out = multipath.to_vec();
    let mut at = 0;
    while at + 8 <= out.len() {
        let len = u16::from_ne_bytes([out[at], out[at + 1]]) as usize;
        out[at + 2] &= REQUESTABLE_FLAGS as u8;
        if len < 8 {
            break;
        }
        at += crate::netlink::align(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::message::{RTA_METRICS, RTA_TABLE};

    /// A route message: rtmsg fields, then attributes.
    fn route(family: u8, dst: &[u8], dst_len: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut msg = vec![family, dst_len, 0, 0, 254, 109, 0, 1, 0, 0, 0, 0];
        attr::push(&mut msg, RTA_DST, dst);
        for (kind, payload) in attrs {
            attr::push(&mut msg, *kind, payload);
        }
        msg
    }

    #[test]
    fn an_ipv6_route_without_a_metric_has_the_kernels_default() {
        let v6 = route(AF_INET6, &[0xfd; 16], 64, &[]);
        let explicit = route(
            AF_INET6,
            &[0xfd; 16],
            64,
            &[(RTA_PRIORITY, 1024u32.to_ne_bytes().to_vec())],
        );
        assert_eq!(
            RouteKey::of(&Route::parse(&v6).unwrap()),
            RouteKey::of(&Route::parse(&explicit).unwrap())
        );
        let v4 = route(2, &[10, 0, 0, 0], 8, &[]);
        assert_eq!(RouteKey::of(&Route::parse(&v4).unwrap()).metric, 0);
    }

    #[test]
    fn the_table_attribute_decides_the_key() {
        let a = route(
            2,
            &[10, 0, 0, 0],
            8,
            &[(RTA_TABLE, 1000u32.to_ne_bytes().to_vec())],
        );
        assert_eq!(RouteKey::of(&Route::parse(&a).unwrap()).table, 1000);
    }

    #[test]
    fn a_kernel_filled_device_is_not_a_difference_but_a_gateway_is() {
        let gw = |g: [u8; 4]| (RTA_GATEWAY, g.to_vec());
        let oif = (RTA_OIF, 3u32.to_ne_bytes().to_vec());
        let wanted = route(2, &[10, 0, 0, 0], 8, &[gw([10, 1, 1, 1])]);
        let same = route(2, &[10, 0, 0, 0], 8, &[gw([10, 1, 1, 1]), oif.clone()]);
        let other = route(2, &[10, 0, 0, 0], 8, &[gw([10, 1, 1, 2]), oif]);
        let wanted = Route::parse(&wanted).unwrap();
        assert!(is_same_route(&wanted, &Route::parse(&same).unwrap()));
        assert!(!is_same_route(&wanted, &Route::parse(&other).unwrap()));
    }

    #[test]
    fn a_metric_the_declaration_lacks_is_a_difference() {
        let mut mtu = Vec::new();
        attr::push(&mut mtu, 2, &1400u32.to_ne_bytes());
        let wanted = route(2, &[10, 0, 0, 0], 8, &[]);
        let existing = route(2, &[10, 0, 0, 0], 8, &[(RTA_METRICS, mtu)]);
        assert!(!is_same_route(
            &Route::parse(&wanted).unwrap(),
            &Route::parse(&existing).unwrap()
        ));
    }

    #[test]
    fn resending_drops_kernel_flags_and_reports() {
        let mut dumped = route(2, &[10, 0, 0, 0], 8, &[(12, vec![0; 32])]);
        // onlink | linkdown | dead
        dumped[8..12].copy_from_slice(&(4u32 | 16 | 1).to_ne_bytes());
        let mut hops = vec![16, 0, 4 | 16, 0, 3, 0, 0, 0];
        attr::push(&mut hops, RTA_GATEWAY, &[10, 1, 1, 1]);
        attr::push(&mut dumped, RTA_MULTIPATH, &hops);
        let resent = resendable(&dumped);
        let r = Route::parse(&resent).unwrap();
        assert_eq!(r.flags, 4);
        assert!(r.cache_info().is_none());
        let hop = r.nexthops().next().unwrap().unwrap();
        assert_eq!(hop.flags, 4);
    }
}
