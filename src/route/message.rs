//! A route as the kernel sends it (RTM_NEWROUTE), decoded into a borrowed view.
//!
//! Decoding checks every attribute it will later read (sizes, nested layouts) so the
//! printers never meet a surprise: a message that does not decode is an error naming the
//! attribute, never a route silently dropped or printed half.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::attr::{Attr, Attrs, Malformed};

// Route attribute types (linux/rtnetlink.h).
pub const RTA_DST: u16 = 1;
pub const RTA_SRC: u16 = 2;
pub const RTA_IIF: u16 = 3;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_METRICS: u16 = 8;
pub const RTA_MULTIPATH: u16 = 9;
pub const RTA_FLOW: u16 = 11;
pub const RTA_CACHEINFO: u16 = 12;
pub const RTA_TABLE: u16 = 15;
pub const RTA_MARK: u16 = 16;
pub const RTA_VIA: u16 = 18;
pub const RTA_NEWDST: u16 = 19;
pub const RTA_PREF: u16 = 20;
pub const RTA_ENCAP_TYPE: u16 = 21;
pub const RTA_ENCAP: u16 = 22;
pub const RTA_UID: u16 = 25;
pub const RTA_TTL_PROPAGATE: u16 = 26;
pub const RTA_NH_ID: u16 = 30;
const RTA_SLOTS: usize = 32;

pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
/// Multicast routing tables report their own families with inet addresses.
pub const RTNL_FAMILY_IPMR: u8 = 128;
pub const RTNL_FAMILY_IP6MR: u8 = 129;

pub const RTN_UNICAST: u8 = 1;
pub const RTN_MULTICAST: u8 = 5;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RTM_F_CLONED: u32 = 0x200;

const RTMSG_LEN: usize = 12;
const RTNEXTHOP_LEN: usize = 8;
const RTA_CACHEINFO_LEN: usize = 32;

/// The fixed part of a route message (struct rtmsg) and its attributes, first one wins
/// (as in iproute2's parse_rtattr).
#[derive(Debug, Clone)]
pub struct Route<'a> {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    pub rtm_table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
    attrs: [Option<&'a [u8]>; RTA_SLOTS],
}

/// One nexthop of a multipath route (struct rtnexthop and its attributes).
#[derive(Debug, Clone)]
pub struct Nexthop<'a> {
    pub flags: u8,
    pub hops: u8,
    pub ifindex: u32,
    attrs: [Option<&'a [u8]>; RTA_SLOTS],
}

/// struct rta_cacheinfo.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheInfo {
    pub clntref: u32,
    pub lastuse: u32,
    pub expires: i32,
    pub error: u32,
    pub used: u32,
    pub id: u32,
    pub ts: u32,
    pub tsage: u32,
}

impl<'a> Route<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Route<'a>, Malformed> {
        if payload.len() < RTMSG_LEN {
            return Err(Malformed(format!(
                "route message has {} bytes, shorter than struct rtmsg",
                payload.len()
            )));
        }
        let route = Route {
            family: payload[0],
            dst_len: payload[1],
            src_len: payload[2],
            tos: payload[3],
            rtm_table: payload[4],
            protocol: payload[5],
            scope: payload[6],
            kind: payload[7],
            flags: u32::from_ne_bytes(payload[8..12].try_into().unwrap()),
            attrs: collect_attrs(&payload[RTMSG_LEN..])?,
        };
        route.validate()?;
        Ok(route)
    }

    /// Checks every attribute a printer reads has the size the printer expects.
    fn validate(&self) -> Result<(), Malformed> {
        let addr_len = self.addr_len()?;
        for kind in [RTA_DST, RTA_SRC, RTA_GATEWAY, RTA_PREFSRC, RTA_NEWDST] {
            expect_addr(self.attrs[kind as usize], kind, addr_len)?;
        }
        for kind in [
            RTA_IIF,
            RTA_OIF,
            RTA_PRIORITY,
            RTA_FLOW,
            RTA_TABLE,
            RTA_MARK,
            RTA_UID,
            RTA_NH_ID,
        ] {
            expect_len(self.attrs[kind as usize], kind, 4)?;
        }
        for kind in [RTA_PREF, RTA_TTL_PROPAGATE] {
            expect_len(self.attrs[kind as usize], kind, 1)?;
        }
        if let Some(ci) = self.attr(RTA_CACHEINFO) {
            if ci.len() < RTA_CACHEINFO_LEN {
                return Err(Malformed(format!(
                    "RTA_CACHEINFO has {} bytes, expected {RTA_CACHEINFO_LEN}",
                    ci.len()
                )));
            }
        }
        if let Some(via) = self.attr(RTA_VIA) {
            validate_via(via)?;
        }
        if let Some(metrics) = self.attr(RTA_METRICS) {
            for attr in Attrs::new(metrics) {
                attr?;
            }
        }
        expect_len(self.attrs[RTA_ENCAP_TYPE as usize], RTA_ENCAP_TYPE, 2)?;
        for nexthop in self.nexthops() {
            let nexthop = nexthop?;
            for kind in [RTA_GATEWAY, RTA_NEWDST] {
                expect_addr(nexthop.attrs[kind as usize], kind, addr_len)?;
            }
            expect_len(nexthop.attrs[RTA_FLOW as usize], RTA_FLOW, 4)?;
            if let Some(via) = nexthop.attr(RTA_VIA) {
                validate_via(via)?;
            }
            expect_len(nexthop.attrs[RTA_ENCAP_TYPE as usize], RTA_ENCAP_TYPE, 2)?;
        }
        Ok(())
    }

    fn addr_len(&self) -> Result<usize, Malformed> {
        match self.family {
            AF_INET | RTNL_FAMILY_IPMR => Ok(4),
            AF_INET6 | RTNL_FAMILY_IP6MR => Ok(16),
            other => Err(Malformed(format!("route of address family {other}"))),
        }
    }

    pub fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs.get(kind as usize).copied().flatten()
    }

    pub fn u32_attr(&self, kind: u16) -> Option<u32> {
        self.attr(kind).map(read_u32)
    }

    pub fn addr_attr(&self, kind: u16) -> Option<IpAddr> {
        self.attr(kind).map(to_ip)
    }

    /// The table id: RTA_TABLE when present (tables above 255 only fit there).
    pub fn table(&self) -> u32 {
        self.u32_attr(RTA_TABLE).unwrap_or(self.rtm_table as u32)
    }

    /// The prefix length at which iproute2 drops the "/len". Its af_bit_len() knows only
    /// AF_INET and AF_INET6: multicast-routing families (IPMR, IP6MR) always get a /len.
    pub fn host_len(&self) -> u8 {
        match self.family {
            AF_INET => 32,
            AF_INET6 => 128,
            _ => 0,
        }
    }

    pub fn cache_info(&self) -> Option<CacheInfo> {
        self.attr(RTA_CACHEINFO).map(|b| {
            let w = |i: usize| read_u32(&b[i * 4..]);
            CacheInfo {
                clntref: w(0),
                lastuse: w(1),
                expires: w(2) as i32,
                error: w(3),
                used: w(4),
                id: w(5),
                ts: w(6),
                tsage: w(7),
            }
        })
    }

    /// The RTAX_* metrics, in the order the kernel sent them.
    pub fn metrics(&self) -> impl Iterator<Item = Attr<'a>> {
        Attrs::new(self.attr(RTA_METRICS).unwrap_or(&[])).filter_map(|a| a.ok())
    }

    /// Whether this route or one of its nexthops carries a lightweight-tunnel
    /// encapsulation, whose details machnet does not print (only its type).
    pub fn has_encap(&self) -> bool {
        self.attr(RTA_ENCAP).is_some()
            || self
                .nexthops()
                .filter_map(Result::ok)
                .any(|n| n.attr(RTA_ENCAP).is_some())
    }

    pub fn nexthops(&self) -> Nexthops<'a> {
        Nexthops {
            rest: self.attr(RTA_MULTIPATH).unwrap_or(&[]),
        }
    }
}

impl<'a> Nexthop<'a> {
    pub fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs.get(kind as usize).copied().flatten()
    }
}

pub struct Nexthops<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Nexthops<'a> {
    type Item = Result<Nexthop<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < RTNEXTHOP_LEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        if len < RTNEXTHOP_LEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Malformed(format!(
                "RTA_MULTIPATH nexthop claims {len} bytes"
            ))));
        }
        let body = &self.rest[..len];
        self.rest = &self.rest[crate::netlink::align(len).min(self.rest.len())..];
        let attrs = match collect_attrs(&body[RTNEXTHOP_LEN..]) {
            Ok(attrs) => attrs,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Nexthop {
            flags: body[2],
            hops: body[3],
            ifindex: read_u32(&body[4..]),
            attrs,
        }))
    }
}

fn collect_attrs(data: &[u8]) -> Result<[Option<&[u8]>; RTA_SLOTS], Malformed> {
    let mut attrs = [None; RTA_SLOTS];
    for attr in Attrs::new(data) {
        let attr = attr?;
        if let Some(slot) = attrs.get_mut(attr.kind as usize) {
            if slot.is_none() {
                *slot = Some(attr.payload);
            }
        }
    }
    Ok(attrs)
}

fn expect_len(payload: Option<&[u8]>, kind: u16, want: usize) -> Result<(), Malformed> {
    match payload {
        Some(p) if p.len() < want => Err(Malformed(format!(
            "route attribute {kind} has {} bytes, expected {want}",
            p.len()
        ))),
        _ => Ok(()),
    }
}

/// Address attributes must be exactly one address of the route's family long.
fn expect_addr(payload: Option<&[u8]>, kind: u16, want: usize) -> Result<(), Malformed> {
    match payload {
        Some(p) if p.len() != want => Err(Malformed(format!(
            "route address attribute {kind} has {} bytes, expected {want}",
            p.len()
        ))),
        _ => Ok(()),
    }
}

/// struct rtvia: a family (u16) then an address of that family.
fn validate_via(via: &[u8]) -> Result<(), Malformed> {
    let family = via.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let want = match family.map(|f| f as i32) {
        Some(libc::AF_INET) => 4,
        Some(libc::AF_INET6) => 16,
        _ => {
            return Err(Malformed(format!(
                "RTA_VIA of unsupported family {family:?}"
            )))
        }
    };
    if via.len() != 2 + want {
        return Err(Malformed(format!("RTA_VIA has {} bytes", via.len())));
    }
    Ok(())
}

/// Decodes an RTA_VIA payload (already validated).
pub fn via_addr(via: &[u8]) -> IpAddr {
    to_ip(&via[2..])
}

pub fn read_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes(b[..4].try_into().unwrap())
}

/// An address attribute: 4 bytes are IPv4, 16 IPv6 (sizes were validated on parse to be
/// exactly one address of the route's family).
pub fn to_ip(b: &[u8]) -> IpAddr {
    if b.len() == 16 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap()))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&b[..4]).unwrap()))
    }
}
