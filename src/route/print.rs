//! Prints a route exactly as iproute2 6.1's `ip route show` does (ip/iproute.c,
//! print_route), in text or in `ip -j` JSON.
//!
//! Like iproute2, one walk over the route serves both formats: each field is written
//! through [`Emitter`], which knows how that field looks in text ("via 10.0.0.1 ") and in
//! JSON ("gateway":"10.0.0.1"). Keeping one walk keeps field order and conditions in step
//! between the formats, which is what scripts comparing the two rely on.

use std::io::Write;

use super::emit::Emitter;
pub use super::emit::Format;
use super::format::{printf_g, write_ip, write_json_str};
use super::message::*;
use super::names::{route_type, Names};
use crate::link::LinkNames;

/// What `ip route show` was asked for that changes how a route prints.
#[derive(Debug, Clone, Copy)]
pub struct ShowOptions {
    /// `table all`: routes outside main then say which table they are in.
    pub all_tables: bool,
}

pub struct RoutePrinter<'n> {
    pub names: &'n Names,
    pub links: &'n LinkNames,
    pub options: ShowOptions,
    pub format: Format,
    /// USER_HZ, the unit of rta_cacheinfo times.
    pub hz: i32,
}

// RTNH_F_* and RTM_F_* flag bits with iproute2's words, in the order it prints them.
const ROUTE_FLAGS: [(u32, &str); 11] = [
    (0x1, "dead"),
    (0x4, "onlink"),
    (0x2, "pervasive"),
    (0x8, "offload"),
    (0x40, "trap"),
    (0x100, "notify"),
    (0x10, "linkdown"),
    (0x20, "unresolved"),
    (0x4000, "rt_offload"),
    (0x8000, "rt_trap"),
    (0x2000_0000, "rt_offload_failed"),
];

// RTCF_* flags of a cached route, in the order and words iproute2 prints them.
const CACHE_FLAGS: [(u32, &str); 14] = [
    (0x8000_0000, "local"),
    (0x4000_0000, "reject"),
    (0x2000_0000, "mc"),
    (0x1000_0000, "brd"),
    (0x0800_0000, "dst-nat"),
    (0x0080_0000, "src-nat"),
    (0x0040_0000, "masq"),
    (0x0002_0000, "dst-direct"),
    (0x0400_0000, "src-direct"),
    (0x0004_0000, "redirected"),
    (0x0100_0000, "redirect"),
    (0x0020_0000, "fastroute"),
    (0x0001_0000, "notify"),
    (0x0008_0000, "proxy"),
];

// RTAX_* metric ids and iproute2's names for them (RTAX_MTU = 2 … RTAX_FASTOPEN_NO_COOKIE).
const METRIC_NAMES: [&str; 18] = [
    "",
    "lock",
    "mtu",
    "window",
    "rtt",
    "rttvar",
    "ssthresh",
    "cwnd",
    "advmss",
    "reordering",
    "hoplimit",
    "initcwnd",
    "features",
    "rto_min",
    "initrwnd",
    "quickack",
    "congctl",
    "fastopen_no_cookie",
];
const RTAX_LOCK: u16 = 1;
const RTAX_RTT: usize = 4;
const RTAX_RTTVAR: usize = 5;
const RTAX_HOPLIMIT: usize = 10;
const RTAX_FEATURES: usize = 12;
const RTAX_RTO_MIN: usize = 13;
const RTAX_CC_ALGO: usize = 16;
const RTAX_FEATURE_ECN: u32 = 1;

/// True when `ip route show` would print this route at all: it skips cloned (cache)
/// entries unless asked for the cache, which machnet does not offer.
pub fn is_shown(route: &Route<'_>) -> bool {
    route.flags & RTM_F_CLONED == 0
}

impl RoutePrinter<'_> {
    /// Appends one route (a text line, or one JSON object without separators).
    pub fn print(&self, route: &Route<'_>, out: &mut Vec<u8>) {
        let mut e = Emitter::new(self.format, out);
        e.open_object(None);
        self.print_fields(route, &mut e);
        e.close_object();
        if self.format == Format::Text {
            e.out.push(b'\n');
        }
    }

    fn print_fields(&self, r: &Route<'_>, e: &mut Emitter<'_>) {
        let host_len = r.host_len();
        if r.kind != RTN_UNICAST {
            e.string("type", "", &route_type(r.kind).to_string());
        }
        e.string(
            "dst",
            "",
            &prefix_text(r, RTA_DST, r.dst_len, host_len, "default"),
        );
        if r.attr(RTA_SRC).is_some() {
            e.string(
                "from",
                "from ",
                &prefix_text(r, RTA_SRC, r.src_len, host_len, ""),
            );
        } else if r.src_len != 0 {
            e.string("src", "from ", &format!("0/{}", r.src_len));
        }
        if let Some(id) = r.u32_attr(RTA_NH_ID) {
            e.uint("nhid", "nhid ", id as u64);
        }
        if let Some(newdst) = r.addr_attr(RTA_NEWDST) {
            e.addr("to", "as to ", newdst);
        }
        if let Some(kind) = r.attr(RTA_ENCAP_TYPE) {
            e.encap(kind);
        }
        if r.tos != 0 {
            e.string("tos", "tos ", &self.names.dsfield(r.tos));
        }
        if let Some(gw) = r.addr_attr(RTA_GATEWAY) {
            e.addr("gateway", "via ", gw);
        }
        if let Some(via) = r.attr(RTA_VIA) {
            e.via(via);
        }
        if let Some(oif) = r.u32_attr(RTA_OIF) {
            e.string("dev", "dev ", &self.links.name(oif));
        }
        let table = r.table();
        if self.options.all_tables && table != 0 && table != RT_TABLE_MAIN {
            e.string("table", "table ", &self.names.table(table).to_string());
        }
        if r.flags & RTM_F_CLONED == 0 {
            if r.protocol != RTPROT_BOOT {
                e.string(
                    "protocol",
                    "proto ",
                    &self.names.protocol(r.protocol).to_string(),
                );
            }
            if r.scope != RT_SCOPE_UNIVERSE {
                e.string("scope", "scope ", &self.names.scope(r.scope).to_string());
            }
        }
        if let Some(prefsrc) = r.addr_attr(RTA_PREFSRC) {
            e.addr("prefsrc", "src ", prefsrc);
        }
        if let Some(metric) = r.u32_attr(RTA_PRIORITY) {
            e.uint("metric", "metric ", metric as u64);
        }
        e.flags(r.flags);
        if let Some(mark) = r.u32_attr(RTA_MARK).filter(|m| *m != 0) {
            if e.json() {
                e.uint("mark", "", mark as u64);
            } else if mark >= 16 {
                e.text(&format!("mark 0x{mark:x} "));
            } else {
                e.text(&format!("mark {mark} "));
            }
        }
        if let Some(flow) = r.u32_attr(RTA_FLOW) {
            self.print_flow(flow, e);
        }
        if let Some(uid) = r.u32_attr(RTA_UID) {
            e.uint("uid", "uid ", uid as u64);
        }
        // iproute2 prints cache details for IPv4 and IPv6 only.
        if r.family == AF_INET && r.flags & RTM_F_CLONED != 0 {
            e.cache_flags(r.flags);
        }
        if matches!(r.family, AF_INET | AF_INET6) {
            if let Some(ci) = r.cache_info() {
                self.print_cache_info(&ci, e);
            }
        }
        if r.attr(RTA_METRICS).is_some() {
            self.print_metrics(r, e);
        }
        if let Some(iif) = r.u32_attr(RTA_IIF) {
            e.string("iif", "iif ", &self.links.name(iif));
        }
        if let Some(pref) = r.attr(RTA_PREF) {
            match pref[0] {
                // ICMPV6_ROUTER_PREF_*; iproute2 adds no trailing space here.
                0 => e.string_bare("pref", "pref ", "medium"),
                1 => e.string_bare("pref", "pref ", "high"),
                3 => e.string_bare("pref", "pref ", "low"),
                other => e.uint_bare("pref", "", other as u64),
            }
        }
        if let Some(ttl) = r.attr(RTA_TTL_PROPAGATE) {
            let on = ttl[0] != 0;
            if e.json() {
                e.key("ttl-propogate");
                e.raw(if on { "true" } else { "false" });
            } else {
                e.text(if on {
                    "ttl-propogate enabled"
                } else {
                    "ttl-propogate disabled"
                });
            }
        }
        if r.attr(RTA_MULTIPATH).is_some() {
            self.print_nexthops(r, e);
        }
    }

    fn print_flow(&self, flow: u32, e: &mut Emitter<'_>) {
        let (from, to) = (flow >> 16, flow & 0xffff);
        if e.json() {
            e.open_object(Some("flow"));
            if from != 0 {
                e.string("from", "", &self.names.realm(from).to_string());
            }
            e.string("to", "", &self.names.realm(to).to_string());
            e.close_object();
        } else if from != 0 {
            e.text(&format!(
                "realms {}/{} ",
                self.names.realm(from),
                self.names.realm(to)
            ));
        } else {
            e.text(&format!("realm {} ", self.names.realm(to)));
        }
    }

    fn print_cache_info(&self, ci: &CacheInfo, e: &mut Emitter<'_>) {
        if ci.expires != 0 {
            e.int(
                "expires",
                &format!("expires {}sec ", ci.expires / self.hz),
                (ci.expires / self.hz) as i64,
            );
        }
        if ci.error != 0 {
            e.uint("error", "error ", ci.error as u64);
        }
        if ci.id != 0 {
            if e.json() {
                e.string("ipid", "", &format!("{:#x}", ci.id));
            } else {
                e.text(&format!("ipid 0x{:04x} ", ci.id));
            }
        }
        if ci.ts != 0 || ci.tsage != 0 {
            if e.json() {
                e.string("ts", "", &format!("{:#x}", ci.ts));
            } else {
                // iproute2 prints no space between these two.
                e.text(&format!("ts 0x{:x}", ci.ts));
            }
            e.uint_suffix("tsage", "tsage ", ci.tsage as u64, "sec ");
        }
    }

    fn print_metrics(&self, r: &Route<'_>, e: &mut Emitter<'_>) {
        let mut values: [Option<&[u8]>; METRIC_NAMES.len()] = [None; METRIC_NAMES.len()];
        for attr in r.metrics() {
            if let Some(slot) = values.get_mut(attr.kind as usize) {
                slot.get_or_insert(attr.payload);
            }
        }
        let lock = values[RTAX_LOCK as usize]
            .map(read_u32_lenient)
            .unwrap_or(0);
        e.open_array("metrics");
        e.open_object(None);
        for (i, name) in METRIC_NAMES.iter().enumerate().skip(2) {
            let locked = i < 32 && lock & (1 << i) != 0;
            if values[i].is_none() && !locked {
                continue;
            }
            let val = match values[i] {
                Some(v) if i != RTAX_CC_ALGO => read_u32_lenient(v),
                _ => 0,
            };
            if i == RTAX_HOPLIMIT && val as i32 == -1 {
                continue;
            }
            if !e.json() {
                e.text(name);
                e.text(" ");
                if locked {
                    e.text("lock ");
                }
            }
            match i {
                RTAX_FEATURES => {
                    if val & RTAX_FEATURE_ECN != 0 {
                        e.null("ecn", "ecn ");
                    }
                    if val & !RTAX_FEATURE_ECN != 0 {
                        // iproute2 prints the original value, ECN bit included.
                        e.string("features", "", &format!("{val:#x}"));
                    }
                }
                RTAX_RTT | RTAX_RTTVAR | RTAX_RTO_MIN => {
                    let ms = match i {
                        RTAX_RTT => val / 8,
                        RTAX_RTTVAR => val / 4,
                        _ => val,
                    };
                    if e.json() {
                        e.uint(name, "", ms as u64);
                    } else if ms >= 1000 {
                        e.text(&format!("{}s ", printf_g(ms as f64 / 1e3)));
                    } else {
                        e.text(&format!("{ms}ms "));
                    }
                }
                RTAX_CC_ALGO => {
                    let algo = values[i].unwrap_or(&[]);
                    let algo = algo.split(|b| *b == 0).next().unwrap_or(&[]);
                    e.string("congestion", "", &String::from_utf8_lossy(algo));
                }
                _ => e.uint(name, "", val as u64),
            }
        }
        e.close_object();
        e.close_array();
    }

    fn print_nexthops(&self, r: &Route<'_>, e: &mut Emitter<'_>) {
        e.open_array("nexthops");
        // Decoding errors were reported when the route was parsed.
        for nh in r.nexthops().filter_map(Result::ok) {
            e.open_object(None);
            e.text("\n\tnexthop ");
            if let Some(kind) = nh.attr(RTA_ENCAP_TYPE) {
                e.encap(kind);
            }
            if let Some(newdst) = nh.attr(RTA_NEWDST) {
                e.addr("to", "as to ", to_ip(newdst));
            }
            if let Some(gw) = nh.attr(RTA_GATEWAY) {
                e.addr("gateway", "via ", to_ip(gw));
            }
            if let Some(via) = nh.attr(RTA_VIA) {
                e.via(via);
            }
            if let Some(flow) = nh.attr(RTA_FLOW) {
                self.print_flow(read_u32(flow), e);
            }
            e.string("dev", "dev ", &self.links.name(nh.ifindex));
            e.int(
                "weight",
                &format!("weight {} ", nh.hops as u32 + 1),
                nh.hops as i64 + 1,
            );
            e.flags(nh.flags as u32);
            e.close_object();
        }
        e.close_array();
    }
}

fn read_u32_lenient(b: &[u8]) -> u32 {
    if b.len() >= 4 {
        read_u32(b)
    } else {
        0
    }
}

/// "10.0.0.0/8", a host address without its /32, or `none` when there is no address
/// attribute ("default" for dst).
fn prefix_text(r: &Route<'_>, kind: u16, len: u8, host_len: u8, none: &str) -> String {
    match r.attr(kind) {
        Some(addr) => {
            let mut out = Vec::with_capacity(48);
            write_ip(&mut out, to_ip(addr));
            if len != host_len {
                let _ = write!(out, "/{len}");
            }
            String::from_utf8(out).expect("ASCII")
        }
        // iproute2 puts a stray space inside this one ("0/8 " then "%s ").
        None if len != 0 => format!("0/{len} "),
        None => none.to_string(),
    }
}

/// What only routes print: the rest of the [`Emitter`] is shared (route/emit.rs).
impl Emitter<'_> {
    fn via(&mut self, via: &[u8]) {
        let family = u16::from_ne_bytes([via[0], via[1]]);
        let family = if family as i32 == libc::AF_INET6 {
            "inet6"
        } else {
            "inet"
        };
        let addr = via_addr(via);
        if self.json() {
            self.open_object(Some("via"));
            self.string("family", "", family);
            self.addr("host", "", addr);
            self.close_object();
        } else {
            self.raw("via ");
            self.raw(family);
            self.raw(" ");
            self.addr("", "", addr);
        }
    }

    /// print_cache_flags, for routes from the cache (`route get`): "\n    cache <local,…> ".
    fn cache_flags(&mut self, flags: u32) {
        let set: Vec<&str> = CACHE_FLAGS
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, word)| *word)
            .collect();
        if self.json() {
            self.open_array("cache");
            for word in set {
                self.separator();
                write_json_str(self.out, word);
            }
            self.close_array();
        } else {
            self.raw("\n    cache ");
            if !set.is_empty() {
                self.raw("<");
                self.raw(&set.join(","));
                self.raw("> ");
            }
        }
    }

    /// The encapsulation's type only: iproute2 goes on with type-specific details (MPLS
    /// labels, SRv6 segments, …) that machnet does not decode yet; the caller says so.
    fn encap(&mut self, kind: &[u8]) {
        let id = u16::from_ne_bytes([kind[0], kind[1]]);
        let name = match id {
            1 => "mpls",
            2 => "ip",
            3 => "ila",
            4 => "ip6",
            5 => "seg6",
            6 => "bpf",
            7 => "seg6local",
            8 => "rpl",
            9 => "ioam6",
            10 => "xfrm",
            _ => "",
        };
        if self.json() {
            self.open_object(Some("encap"));
            self.string("type", "", if name.is_empty() { "unknown" } else { name });
            self.close_object();
        } else if name.is_empty() {
            let _ = write!(self.out, "encap {id} ");
        } else {
            let _ = write!(self.out, "encap {name} ");
        }
    }

    /// print_rt_flags: always an array in JSON, words in text.
    fn flags(&mut self, flags: u32) {
        self.open_array("flags");
        for (bit, word) in ROUTE_FLAGS {
            if flags & bit != 0 {
                self.array_string(word);
            }
        }
        self.close_array();
    }
}
