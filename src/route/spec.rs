//! A route written in `ip route` syntax, parsed into plain values before anything reaches
//! the kernel: `10.0.0.0/8 via 10.77.1.2 dev host0 metric 100 table 100`.
//!
//! The grammar and defaults follow iproute2 6.1's iproute_modify (ip/iproute.c), so a line
//! that `ip route show` prints can be fed back. Words `ip` prints but does not take as
//! input (`linkdown`, `dead`, `expires 300sec`, …) are accepted too, as the state the kernel
//! reports: they change nothing. A malformed spec is refused with the offending word named.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::{AF_INET, AF_INET6};
use super::names::{parse_c_number, Names};

pub const RTN_UNSPEC: u8 = 0;
pub const RTN_UNICAST: u8 = 1;
pub const RTN_LOCAL: u8 = 2;
pub const RTN_BROADCAST: u8 = 3;
pub const RTN_ANYCAST: u8 = 4;
pub const RTN_MULTICAST: u8 = 5;
pub const RTN_NAT: u8 = 10;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;
pub const RTNH_F_ONLINK: u8 = 4;

// RTAX_* ids of the metrics `ip route` takes.
pub const RTAX_MTU: u16 = 2;
pub const RTAX_WINDOW: u16 = 3;
pub const RTAX_RTT: u16 = 4;
pub const RTAX_RTTVAR: u16 = 5;
pub const RTAX_SSTHRESH: u16 = 6;
pub const RTAX_CWND: u16 = 7;
pub const RTAX_ADVMSS: u16 = 8;
pub const RTAX_REORDERING: u16 = 9;
pub const RTAX_HOPLIMIT: u16 = 10;
pub const RTAX_INITCWND: u16 = 11;
pub const RTAX_FEATURES: u16 = 12;
pub const RTAX_RTO_MIN: u16 = 13;
pub const RTAX_INITRWND: u16 = 14;
pub const RTAX_QUICKACK: u16 = 15;
pub const RTAX_CC_ALGO: u16 = 16;
pub const RTAX_FASTOPEN_NO_COOKIE: u16 = 17;

/// What the route is for: the spec's defaults differ between adding and deleting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Add,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// None for `default` (and for `0/N`-style prefixes with no address).
    pub addr: Option<IpAddr>,
    pub len: u8,
}

/// A gateway: `via ADDR` or, across families, `via inet6 ADDR` (sent as RTA_VIA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub addr: IpAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nexthop {
    pub gateway: Option<Gateway>,
    pub dev: Option<String>,
    /// 1..=256, as written; `None` means the kernel's default (1).
    pub weight: Option<u16>,
    pub onlink: bool,
    pub realms: Option<u32>,
    pub newdst: Option<IpAddr>,
}

/// A metric value for RTA_METRICS: a number, or the congestion-control name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricValue {
    Number(u32),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub family: u8,
    pub kind: u8,
    pub dst: Prefix,
    pub from: Option<Prefix>,
    pub tos: u8,
    pub table: u32,
    /// None: machnet's own protocol number is used (or any, when deleting).
    pub protocol: Option<u8>,
    pub scope: u8,
    pub metric: Option<u32>,
    pub prefsrc: Option<IpAddr>,
    /// The single nexthop (`via`, `dev`, `onlink`, …) when there is no `nexthop` list.
    pub nexthop: Nexthop,
    pub multipath: Vec<Nexthop>,
    pub nhid: Option<u32>,
    /// (RTAX id, value) in the order given, and the lock mask.
    pub metrics: Vec<(u16, MetricValue)>,
    pub locked: u32,
    pub pref: Option<u8>,
    pub expires: Option<u32>,
    pub ttl_propagate: Option<bool>,
    /// Which fields the user gave, so delete matches exactly those.
    pub given: Given,
}

/// Fields given explicitly, which decide how the kernel matches a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    pub kind: bool,
    pub table: bool,
    pub scope: bool,
}

/// A malformed spec: which word, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub word: Option<(usize, String)>,
    pub why: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.word {
            Some((i, w)) => write!(f, "{} (word {} {w:?})", self.why, i + 1),
            None => f.write_str(&self.why),
        }
    }
}

struct Words<'a> {
    words: &'a [String],
    at: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let w = self.words.get(self.at)?;
        self.at += 1;
        Some(w)
    }

    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.at).map(String::as_str)
    }

    /// The argument of the keyword just read.
    fn value(&mut self, keyword: &str) -> Result<&'a str, SpecError> {
        self.next().ok_or_else(|| SpecError {
            word: Some((self.at - 1, keyword.to_string())),
            why: format!("\"{keyword}\" needs a value"),
        })
    }

    /// An error about the word just read.
    fn bad(&self, why: impl Into<String>) -> SpecError {
        SpecError {
            word: Some((self.at - 1, self.words[self.at - 1].clone())),
            why: why.into(),
        }
    }

    fn take_lock(&mut self) -> bool {
        if self.peek() == Some("lock") {
            self.at += 1;
            true
        } else {
            false
        }
    }
}

/// Parses `words` (a spec split on whitespace). `family_hint` is -4/-6 (0 for none).
pub fn parse(
    words: &[String],
    purpose: Purpose,
    family_hint: u8,
    names: &Names,
) -> Result<RouteSpec, SpecError> {
    let mut w = Words { words, at: 0 };
    let mut spec = RouteSpec {
        family: family_hint,
        kind: if purpose == Purpose::Add {
            RTN_UNICAST
        } else {
            0
        },
        dst: Prefix { addr: None, len: 0 },
        from: None,
        tos: 0,
        table: RT_TABLE_MAIN,
        protocol: None,
        scope: if purpose == Purpose::Add {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_NOWHERE
        },
        metric: None,
        prefsrc: None,
        nexthop: Nexthop::default(),
        multipath: Vec::new(),
        nhid: None,
        metrics: Vec::new(),
        locked: 0,
        pref: None,
        expires: None,
        ttl_propagate: None,
        given: Given::default(),
    };
    let mut dst_seen = false;
    while let Some(word) = w.next() {
        match word {
            "src" => {
                let a = address(&mut w, "src", &mut spec.family)?;
                spec.prefsrc = Some(a);
            }
            "as" => {
                let mut v = w.value("as")?;
                if v == "to" {
                    v = w.value("to")?;
                }
                spec.nexthop.newdst = Some(parse_addr(v, spec.family).map_err(|e| w.bad(e))?);
            }
            "via" => {
                if spec.nexthop.gateway.is_some() {
                    return Err(w.bad("use the nexthop syntax for more than one \"via\""));
                }
                spec.nexthop.gateway = Some(gateway(&mut w, &mut spec.family)?);
            }
            "from" => {
                let v = w.value("from")?;
                let p = parse_prefix(v, spec.family).map_err(|e| w.bad(e))?;
                set_family(&mut spec.family, p.addr);
                spec.from = Some(p);
            }
            "tos" | "dsfield" => {
                let v = w.value(word)?;
                spec.tos = names
                    .dsfield_id(v)
                    .ok_or_else(|| w.bad("not a TOS value"))?;
            }
            "expires" => {
                let v = w.value(word)?;
                // `ip route show` prints "expires 298sec"; ip takes plain seconds.
                let v = v.strip_suffix("sec").unwrap_or(v);
                spec.expires = Some(number(&w, v)?);
            }
            "metric" | "priority" | "preference" => {
                let v = w.value(word)?;
                spec.metric = Some(number(&w, v)?);
            }
            "scope" => {
                let v = w.value(word)?;
                spec.scope = names.scope_id(v).ok_or_else(|| w.bad("unknown scope"))?;
                spec.given.scope = true;
            }
            "mtu" => plain_metric(&mut w, &mut spec, RTAX_MTU, word)?,
            "advmss" => plain_metric(&mut w, &mut spec, RTAX_ADVMSS, word)?,
            "reordering" => plain_metric(&mut w, &mut spec, RTAX_REORDERING, word)?,
            "window" => plain_metric(&mut w, &mut spec, RTAX_WINDOW, word)?,
            "cwnd" => plain_metric(&mut w, &mut spec, RTAX_CWND, word)?,
            "initcwnd" => plain_metric(&mut w, &mut spec, RTAX_INITCWND, word)?,
            "initrwnd" => plain_metric(&mut w, &mut spec, RTAX_INITRWND, word)?,
            "ssthresh" => plain_metric(&mut w, &mut spec, RTAX_SSTHRESH, word)?,
            "hoplimit" => {
                plain_metric(&mut w, &mut spec, RTAX_HOPLIMIT, word)?;
                if matches!(spec.metrics.last(), Some((_, MetricValue::Number(n))) if *n > 255) {
                    return Err(w.bad("hoplimit is at most 255"));
                }
            }
            "rtt" => time_metric(&mut w, &mut spec, RTAX_RTT, word, 8)?,
            "rttvar" => time_metric(&mut w, &mut spec, RTAX_RTTVAR, word, 4)?,
            "rto_min" => {
                // iproute2 always locks rto_min, and prints it so.
                w.take_lock();
                spec.locked |= 1 << RTAX_RTO_MIN;
                let v = w.value(word)?;
                let (ms, _) = parse_time_ms(v).ok_or_else(|| w.bad("not a time"))?;
                spec.metrics.push((RTAX_RTO_MIN, MetricValue::Number(ms)));
            }
            "features" => {
                let v = w.value(word)?;
                if v != "ecn" {
                    return Err(w.bad("the only feature is \"ecn\""));
                }
                spec.metrics.push((RTAX_FEATURES, MetricValue::Number(1)));
            }
            "quickack" | "fastopen_no_cookie" => {
                let id = if word == "quickack" {
                    RTAX_QUICKACK
                } else {
                    RTAX_FASTOPEN_NO_COOKIE
                };
                let v = w.value(word)?;
                let n = number(&w, v)?;
                if n > 1 {
                    return Err(w.bad(format!("\"{word}\" is 0 or 1")));
                }
                spec.metrics.push((id, MetricValue::Number(n)));
            }
            "congctl" => {
                if w.take_lock() {
                    spec.locked |= 1 << RTAX_CC_ALGO;
                }
                let v = w.value(word)?;
                spec.metrics
                    .push((RTAX_CC_ALGO, MetricValue::Name(v.to_string())));
            }
            "realm" | "realms" => {
                let v = w.value(word)?;
                spec.nexthop.realms =
                    Some(parse_realms(v, names).ok_or_else(|| w.bad("not a realm"))?);
            }
            "onlink" => spec.nexthop.onlink = true,
            // State the kernel reports, printed by `ip route show`: nothing to set.
            "linkdown" | "dead" | "offload" | "trap" | "unresolved" | "rt_offload" | "rt_trap" => {}
            "nexthop" => {
                spec.multipath = nexthops(&mut w, &mut spec.family, names)?;
            }
            "nhid" => {
                let v = w.value(word)?;
                spec.nhid = Some(number(&w, v)?);
            }
            "proto" | "protocol" => {
                let v = w.value(word)?;
                spec.protocol = Some(
                    names
                        .protocol_id(v)
                        .ok_or_else(|| w.bad("unknown protocol"))?,
                );
            }
            "table" => {
                let v = w.value(word)?;
                spec.table = names.table_id(v).ok_or_else(|| w.bad("unknown table"))?;
                spec.given.table = true;
            }
            "dev" | "oif" => {
                let v = w.value(word)?;
                spec.nexthop.dev = Some(v.to_string());
            }
            "pref" => {
                let v = w.value(word)?;
                spec.pref = Some(match v {
                    "low" => 3,
                    "medium" => 0,
                    "high" => 1,
                    other => parse_c_number(other)
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| w.bad("pref is low, medium or high"))?,
                });
            }
            "ttl-propagate" => {
                let v = w.value(word)?;
                spec.ttl_propagate = Some(match v {
                    "enabled" => true,
                    "disabled" => false,
                    _ => return Err(w.bad("ttl-propagate is enabled or disabled")),
                });
            }
            "encap" => return Err(w.bad("lightweight-tunnel encapsulation is not supported")),
            _ => {
                let mut dst = word;
                if dst == "to" {
                    dst = w.value("to")?;
                }
                if let Some(kind) = route_type_id(dst) {
                    if !dst.starts_with(|c: char| c.is_ascii_digit()) {
                        spec.kind = kind;
                        spec.given.kind = true;
                        dst = w.value(dst)?;
                    }
                }
                if dst_seen {
                    return Err(w.bad("a second destination; is a keyword misspelt?"));
                }
                let p = if dst == "default" || dst == "all" || dst == "any" {
                    Prefix { addr: None, len: 0 }
                } else {
                    parse_prefix(dst, spec.family).map_err(|e| w.bad(e))?
                };
                set_family(&mut spec.family, p.addr);
                spec.dst = p;
                dst_seen = true;
            }
        }
    }
    if !dst_seen {
        return Err(SpecError {
            word: None,
            why: "no destination: give a prefix, an address or \"default\"".into(),
        });
    }
    finish_defaults(&mut spec, purpose);
    check_link_local_gateways(&spec)?;
    Ok(spec)
}

/// iproute2's defaults once everything is read: family, table and scope by route type.
fn finish_defaults(spec: &mut RouteSpec, purpose: Purpose) {
    if spec.family == 0 {
        spec.family = AF_INET;
    }
    if !spec.given.table && matches!(spec.kind, RTN_LOCAL | RTN_BROADCAST | RTN_NAT | RTN_ANYCAST) {
        spec.table = RT_TABLE_LOCAL;
    }
    if !spec.given.scope {
        let has_gateway =
            spec.nexthop.gateway.is_some() || !spec.multipath.is_empty() || spec.nhid.is_some();
        spec.scope = if spec.family == AF_INET6 {
            RT_SCOPE_UNIVERSE
        } else {
            match (spec.kind, purpose) {
                (RTN_LOCAL | RTN_NAT, _) => RT_SCOPE_HOST,
                (RTN_BROADCAST | RTN_MULTICAST | RTN_ANYCAST, _) => RT_SCOPE_LINK,
                (RTN_UNSPEC | RTN_UNICAST, Purpose::Add) if !has_gateway => RT_SCOPE_LINK,
                // Everything else keeps the starting scope: universe to add, "any" to delete.
                _ => spec.scope,
            }
        };
    }
}

/// An IPv6 link-local gateway names an address on *some* link: without a device the
/// kernel cannot know which, so refuse it here rather than let the kernel guess or fail.
fn check_link_local_gateways(spec: &RouteSpec) -> Result<(), SpecError> {
    let hops = std::iter::once(&spec.nexthop).chain(&spec.multipath);
    for hop in hops {
        if let Some(Gateway {
            addr: IpAddr::V6(v6),
        }) = &hop.gateway
        {
            if is_link_local(v6) && hop.dev.is_none() {
                return Err(SpecError {
                    word: None,
                    why: format!(
                        "gateway {v6} is link-local: say which device it is on (\"dev IFNAME\")"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn is_link_local(v6: &Ipv6Addr) -> bool {
    (v6.segments()[0] & 0xffc0) == 0xfe80
}

fn nexthops(w: &mut Words<'_>, family: &mut u8, names: &Names) -> Result<Vec<Nexthop>, SpecError> {
    let mut hops = vec![Nexthop::default()];
    while let Some(word) = w.next() {
        let hop = hops.last_mut().expect("one nexthop at least");
        match word {
            "nexthop" => hops.push(Nexthop::default()),
            "via" => hop.gateway = Some(gateway(w, family)?),
            "dev" => hop.dev = Some(w.value(word)?.to_string()),
            "weight" => {
                let v = w.value(word)?;
                let n = number(w, v)?;
                if n == 0 || n > 256 {
                    return Err(w.bad("weight is 1 to 256"));
                }
                hop.weight = Some(n as u16);
            }
            "onlink" => hop.onlink = true,
            "linkdown" | "dead" => {}
            "realm" | "realms" => {
                let v = w.value(word)?;
                hop.realms = Some(parse_realms(v, names).ok_or_else(|| w.bad("not a realm"))?);
            }
            "as" => {
                let mut v = w.value(word)?;
                if v == "to" {
                    v = w.value("to")?;
                }
                hop.newdst = Some(parse_addr(v, *family).map_err(|e| w.bad(e))?);
            }
            _ => return Err(w.bad("expected \"nexthop\", a nexthop option, or the end")),
        }
    }
    Ok(hops)
}

fn gateway(w: &mut Words<'_>, family: &mut u8) -> Result<Gateway, SpecError> {
    let mut v = w.value("via")?;
    let mut gw_family = *family;
    if let Some(f) = match v {
        "inet" => Some(AF_INET),
        "inet6" => Some(AF_INET6),
        _ => None,
    } {
        gw_family = f;
        v = w.value(v)?;
    }
    let addr = parse_addr(v, gw_family).map_err(|e| w.bad(e))?;
    set_family(family, Some(addr));
    Ok(Gateway { addr })
}

fn address(w: &mut Words<'_>, keyword: &str, family: &mut u8) -> Result<IpAddr, SpecError> {
    let v = w.value(keyword)?;
    let a = parse_addr(v, *family).map_err(|e| w.bad(e))?;
    set_family(family, Some(a));
    Ok(a)
}

fn set_family(family: &mut u8, addr: Option<IpAddr>) {
    if *family == 0 {
        if let Some(a) = addr {
            *family = if a.is_ipv4() { AF_INET } else { AF_INET6 };
        }
    }
}

fn plain_metric(
    w: &mut Words<'_>,
    spec: &mut RouteSpec,
    id: u16,
    keyword: &str,
) -> Result<(), SpecError> {
    if w.take_lock() {
        spec.locked |= 1 << id;
    }
    let v = w.value(keyword)?;
    let n = number(w, v)?;
    spec.metrics.push((id, MetricValue::Number(n)));
    Ok(())
}

/// rtt and rttvar: a time with a unit is scaled into the kernel's units (1/8 and 1/4 ms);
/// a bare number goes to the kernel raw, as in iproute2.
fn time_metric(
    w: &mut Words<'_>,
    spec: &mut RouteSpec,
    id: u16,
    keyword: &str,
    scale: u32,
) -> Result<(), SpecError> {
    if w.take_lock() {
        spec.locked |= 1 << id;
    }
    let v = w.value(keyword)?;
    let (ms, raw) = parse_time_ms(v).ok_or_else(|| w.bad("not a time (say 100ms or 2s)"))?;
    let value = if raw { ms } else { ms.saturating_mul(scale) };
    spec.metrics.push((id, MetricValue::Number(value)));
    Ok(())
}

/// iproute2's get_time_rtt: milliseconds (rounded up, as ip does), and whether the number
/// had no unit. Units are s/sec/secs and ms/msec/msecs; a number without a dot may be hex.
fn parse_time_ms(text: &str) -> Option<(u32, bool)> {
    let digits_end = if text.starts_with("0x") || text.starts_with("0X") {
        2 + text[2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(text.len() - 2)
    } else {
        text.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len())
    };
    let (num, unit) = text.split_at(digits_end);
    let value: f64 = if num.contains('.') {
        num.parse().ok()?
    } else {
        f64::from(parse_c_number(num)?)
    };
    let ms = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" | "msec" | "msecs" => value,
        "s" | "sec" | "secs" => value * 1000.0,
        _ => return None,
    };
    if !(0.0..u32::MAX as f64).contains(&ms) {
        return None;
    }
    Some((ms.ceil() as u32, unit.is_empty()))
}

/// `realms FROM/TO` or `TO`, names from rt_realms or numbers.
fn parse_realms(text: &str, names: &Names) -> Option<u32> {
    // As iproute2's get_rt_realms_or_raw: FROM/TO (names from rt_realms, or numbers up to
    // 0xffff each), or one realm, or a raw 32-bit value.
    let one = |t: &str| {
        names
            .realm_id(t)
            .or_else(|| parse_c_number(t))
            .filter(|id| *id <= 0xffff)
    };
    match text.split_once('/') {
        Some((from, to)) => Some((one(from)? << 16) | one(to)?),
        None => one(text).or_else(|| parse_c_number(text)),
    }
}

fn number(w: &Words<'_>, text: &str) -> Result<u32, SpecError> {
    parse_c_number(text).ok_or_else(|| w.bad("not a number"))
}

fn route_type_id(word: &str) -> Option<u8> {
    Some(match word {
        "unicast" => 1,
        "local" => 2,
        "broadcast" => 3,
        "anycast" => 4,
        "multicast" => 5,
        "blackhole" => 6,
        "unreachable" => 7,
        "prohibit" => 8,
        "throw" => 9,
        "nat" => 10,
        "xresolve" => 11,
        _ => return None,
    })
}

/// An address of `family` (0: either), read as `ip` reads one: with a colon it is IPv6;
/// without, IPv4 in iproute2's own form, which also takes `10` for 10.0.0.0, `10.1` for
/// 10.1.0.0, and each part in C's notation (`0x0a` hex, `012` octal).
pub fn parse_addr(text: &str, family: u8) -> Result<IpAddr, String> {
    let addr = if text.contains(':') {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        ipv4_as_ip_reads_it(text).map(IpAddr::V4)
    };
    let addr = addr.ok_or_else(|| format!("{text:?} is not an IP address"))?;
    match (family, addr) {
        (AF_INET, IpAddr::V6(_)) => Err(format!("{text:?} is IPv6 in an IPv4 route")),
        (AF_INET6, IpAddr::V4(_)) => Err(format!("{text:?} is IPv4 in an IPv6 route")),
        _ => Ok(addr),
    }
}

/// iproute2's get_addr_ipv4: one to four dot-separated parts, each a C unsigned number
/// (strtoul, base 0: `0x` hex, `0` octal) of at most 255; parts left out are zero.
fn ipv4_as_ip_reads_it(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in octets.iter_mut() {
        let Some(part) = parts.next() else { break };
        *octet = u8::try_from(parse_c_number(part)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// `ADDR[/LEN]` as written: the address as [`parse_addr`] reads it, never masked, and the
/// length (the address's full length when none is given). `route get from` sends exactly
/// this; [`parse_prefix`] masks it.
pub fn parse_addr_and_len(text: &str, family: u8) -> Result<(IpAddr, u8), String> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = parse_addr(addr_text, family)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
        None => max,
    };
    Ok((addr, len))
}

/// `ADDR[/LEN]`; an address without a length is a host route. An IPv4 prefix with host
/// bits set is refused, as the kernel refuses it; an IPv6 one is masked, as the kernel
/// masks it for `ip -6 route`.
pub fn parse_prefix(text: &str, family: u8) -> Result<Prefix, String> {
    let (addr, len) = parse_addr_and_len(text, family)?;
    let masked = mask(addr, len);
    if masked != addr && addr.is_ipv4() {
        return Err(format!(
            "{text:?} has host bits set (the prefix is {masked}/{len})"
        ));
    }
    Ok(Prefix {
        addr: Some(masked),
        len,
    })
}

/// `addr` with its host bits cleared for a prefix of `len` (at most the family's width).
pub fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn add(s: &str) -> Result<RouteSpec, SpecError> {
        parse(&words(s), Purpose::Add, 0, &Names::builtin())
    }

    #[test]
    fn parses_a_gateway_route_with_options() {
        let spec =
            add("10.0.0.0/8 via 10.77.1.2 dev host0 metric 100 table 100 src 10.77.1.1").unwrap();
        assert_eq!(spec.family, AF_INET);
        assert_eq!(
            spec.dst,
            Prefix {
                addr: Some("10.0.0.0".parse().unwrap()),
                len: 8
            }
        );
        assert_eq!(
            spec.nexthop.gateway,
            Some(Gateway {
                addr: "10.77.1.2".parse().unwrap()
            })
        );
        assert_eq!(spec.nexthop.dev.as_deref(), Some("host0"));
        assert_eq!((spec.metric, spec.table), (Some(100), 100));
        assert_eq!(spec.scope, RT_SCOPE_UNIVERSE);
    }

    #[test]
    fn defaults_follow_iproute2() {
        assert_eq!(add("10.1.0.0/16 dev eth0").unwrap().scope, RT_SCOPE_LINK);
        let local = add("local 10.0.0.1 dev eth0").unwrap();
        assert_eq!(
            (local.kind, local.table, local.scope),
            (RTN_LOCAL, RT_TABLE_LOCAL, RT_SCOPE_HOST)
        );
        let v6 = add("default via fd00::1").unwrap();
        assert_eq!((v6.family, v6.scope), (AF_INET6, RT_SCOPE_UNIVERSE));
        let del = parse(&words("10.1.0.0/16"), Purpose::Delete, 0, &Names::builtin()).unwrap();
        assert_eq!((del.kind, del.scope), (0, RT_SCOPE_NOWHERE));
        assert_eq!(
            add("blackhole 10.2.0.0/16").unwrap().scope,
            RT_SCOPE_UNIVERSE
        );
    }

    #[test]
    fn reads_what_ip_route_show_prints() {
        let spec = add("10.5.0.0/16 via 10.88.0.1 dev eth0 mtu lock 1400 rtt 100ms rttvar 50ms features ecn congctl lock reno rto_min lock 50ms linkdown").unwrap();
        assert_eq!(
            spec.locked,
            (1 << RTAX_MTU) | (1 << RTAX_CC_ALGO) | (1 << RTAX_RTO_MIN)
        );
        assert!(spec.metrics.contains(&(RTAX_RTT, MetricValue::Number(800))));
        let frac = add("10.5.0.0/16 dev eth0 rtt 1.5ms rttvar 1.001s tos 20").unwrap();
        assert!(
            frac.metrics.contains(&(RTAX_RTT, MetricValue::Number(16))),
            "1.5ms rounds up to 2ms"
        );
        assert!(
            frac.metrics
                .contains(&(RTAX_RTTVAR, MetricValue::Number(4004))),
            "1.001s is 1001ms"
        );
        assert_eq!(frac.tos, 0x20, "tos is hex, as in ip");
        let realms = add("10.5.0.0/16 dev eth0 realms 300").unwrap();
        assert_eq!(realms.nexthop.realms, Some(300));
        assert_eq!(
            add("10.5.0.0/16 dev eth0 realms 0x10002")
                .unwrap()
                .nexthop
                .realms,
            Some(0x10002)
        );
        assert!(
            add("10.5.0.0/16 dev eth0 rtt 200us").is_err(),
            "ip takes no us"
        );
        assert!(spec
            .metrics
            .contains(&(RTAX_RTTVAR, MetricValue::Number(200))));
        let v6 =
            add("2001:db8::/32 via fd88::1 dev eth0 metric 1024 expires 298sec pref high").unwrap();
        assert_eq!((v6.expires, v6.pref), (Some(298), Some(1)));
        let mp = add("10.7.0.0/16 nexthop via 10.88.0.1 dev eth0 weight 1 nexthop via 10.66.0.254 dev stub0 weight 3").unwrap();
        assert_eq!(mp.multipath.len(), 2);
        assert_eq!(mp.multipath[1].weight, Some(3));
        let cross = add("10.16.0.0/16 via inet6 fd88::1 dev eth0").unwrap();
        assert_eq!(cross.family, AF_INET);
        assert!(cross.nexthop.gateway.unwrap().addr.is_ipv6());
    }

    /// What iproute2's get_addr_ipv4 and the kernel make of these, worked out from their
    /// sources; tests/route_edits.rs checks the prefixes against `ip` itself.
    #[test]
    fn addresses_and_prefixes_read_as_ip_reads_them() {
        let addr = |t: &str| parse_addr(t, 0).map(|a| a.to_string());
        for (text, read) in [
            ("10", "10.0.0.0"),
            ("10.1", "10.1.0.0"),
            ("10.1.2", "10.1.2.0"),
            ("10.1.2.3", "10.1.2.3"),
            ("012.1", "10.1.0.0"),
            ("0x0a.0XFF.0.1", "10.255.0.1"),
            ("+10.0.0.1", "10.0.0.1"),
            ("fd88::1", "fd88::1"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ] {
            assert_eq!(addr(text).as_deref(), Ok(read), "{text}");
        }
        for bad in [
            "",
            "10.",
            ".10",
            "256",
            "10.1.2.3.4",
            "08",
            "0x",
            "-1",
            "10..1",
            "1 0",
            "fd88:::1",
        ] {
            assert!(addr(bad).is_err(), "{bad:?}");
        }
        let prefix = |t: &str| parse_prefix(t, 0).map(|p| format!("{}/{}", p.addr.unwrap(), p.len));
        assert_eq!(prefix("10/8").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(prefix("172.16/12").as_deref(), Ok("172.16.0.0/12"));
        assert_eq!(prefix("fd00:9:9::1/64").as_deref(), Ok("fd00:9:9::/64"));
        assert!(prefix("10.1/8").unwrap_err().contains("host bits"));
    }

    #[test]
    fn malformed_specs_name_the_offending_word() {
        let err = add("10.0.0.0/8 via nope").unwrap_err();
        assert_eq!(err.word, Some((2, "nope".into())), "{err}");
        let err = add("10.0.0.0/8 metric x").unwrap_err();
        assert_eq!(err.word, Some((2, "x".into())), "{err}");
        let err = add("10.0.0.1/8").unwrap_err();
        assert!(err.why.contains("host bits"), "{err}");
        let err = add("10.0.0.0/8 bogus").unwrap_err();
        assert_eq!(err.word, Some((1, "bogus".into())), "{err}");
        assert!(add("via 10.0.0.1").is_err());
        assert!(add("10.0.0.0/8 via fd00::1 metric").is_err());
    }

    #[test]
    fn link_local_gateway_needs_a_device() {
        let err = add("2001:db8::/32 via fe80::1").unwrap_err();
        assert!(err.why.contains("link-local"), "{err}");
        assert!(add("2001:db8::/32 via fe80::1 dev eth0").is_ok());
        assert!(add("2001:db8::/32 nexthop via fe80::1 nexthop via fe80::2 dev eth0").is_err());
    }
}
