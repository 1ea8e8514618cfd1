//! The neighbour tables (`ip neigh`: ARP for IPv4, NDP for IPv6): the RTM_GETNEIGH dump,
//! a checked view of each RTM_NEWNEIGH message (struct ndmsg, then NDA_* attributes), and
//! the state filter `ip neigh show` applies.

pub mod print;

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::netlink::attr::Attrs;
use crate::netlink::{retry_interrupted, NetlinkSocket};
use crate::route::message::to_ip;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
/// sizeof(struct ndmsg): family, two pad fields, ifindex, state, flags, type.
const NDMSG_LEN: usize = 12;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_PROTOCOL: u16 = 12;
const NDA_FLAGS_EXT: u16 = 15;

pub const NTF_PROXY: u8 = 0x08;
pub const NTF_EXT_LEARNED: u8 = 0x10;
pub const NTF_OFFLOADED: u8 = 0x20;
pub const NTF_ROUTER: u8 = 0x80;
/// In NDA_FLAGS_EXT: the kernel keeps the entry resolved by itself (`managed`).
pub const NTF_EXT_MANAGED: u32 = 0x1;

/// NUD_* states with iproute2's words, in the order it prints them.
pub const NUD_STATES: [(u16, &str); 8] = [
    (0x01, "INCOMPLETE"),
    (0x02, "REACHABLE"),
    (0x04, "STALE"),
    (0x08, "DELAY"),
    (0x10, "PROBE"),
    (0x20, "FAILED"),
    (0x40, "NOARP"),
    (0x80, "PERMANENT"),
];
const NUD_NOARP: u32 = 0x40;
/// iproute2's own bit for "state none" in a filter (NUD_NONE is 0, so it needs one).
const NUD_NONE_FILTER: u32 = 0x100;

/// One entry as the kernel sent it.
#[derive(Debug)]
pub struct Neighbour<'a> {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    pub flags: u8,
    pub dst: Option<IpAddr>,
    pub lladdr: Option<&'a [u8]>,
    pub protocol: u8,
    pub ext_flags: u32,
}

impl<'a> Neighbour<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Neighbour<'a>> {
        if payload.len() < NDMSG_LEN {
            return Err(malformed("short ndmsg"));
        }
        let mut n = Neighbour {
            family: payload[0],
            ifindex: u32::from_ne_bytes(payload[4..8].try_into().unwrap()),
            state: u16::from_ne_bytes([payload[8], payload[9]]),
            flags: payload[10],
            dst: None,
            lladdr: None,
            protocol: 0,
            ext_flags: 0,
        };
        for attr in Attrs::new(&payload[NDMSG_LEN..]) {
            let attr = attr.map_err(|e| malformed(e.0))?;
            let bad = |e: crate::netlink::attr::Malformed| malformed(e.0);
            match attr.kind {
                NDA_DST => {
                    let want = match n.family as i32 {
                        libc::AF_INET => 4,
                        libc::AF_INET6 => 16,
                        other => return Err(malformed(format!("family {other}"))),
                    };
                    if attr.payload.len() != want {
                        return Err(malformed("destination of the wrong size"));
                    }
                    n.dst = Some(to_ip(attr.payload));
                }
                NDA_LLADDR => n.lladdr = Some(attr.payload),
                NDA_PROTOCOL => n.protocol = attr.u8().map_err(bad)?,
                NDA_FLAGS_EXT => n.ext_flags = attr.u32().map_err(bad)?,
                _ => {}
            }
        }
        Ok(n)
    }
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::Other(format!(
        "the kernel sent a neighbour message machnet cannot decode ({why})"
    ))
}

/// Which entries to show, as `ip neigh show [proxy] [nud STATE]...` chooses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// AF_INET, AF_INET6, or 0 for both.
    pub family: u8,
    /// Proxy entries instead of the cache (the kernel dumps one or the other).
    pub proxy: bool,
    /// NUD_* bits to show, plus [`NUD_NONE_FILTER`] for entries in no state.
    pub states: u32,
}

impl Filter {
    /// `nud` words as ip reads them; none given means ip's default: every state but
    /// NOARP (and none).
    pub fn new(family: u8, proxy: bool, nud: &[String]) -> Result<Filter> {
        let mut states = 0xff & !NUD_NOARP;
        if !nud.is_empty() {
            states = 0;
            for word in nud {
                states |= nud_state(word).ok_or_else(|| {
                    Error::Usage(format!(
                        "unknown neighbour state {word:?}: use permanent, reachable, stale, \
                         delay, probe, incomplete, failed, noarp, none or all"
                    ))
                })?;
            }
        }
        Ok(Filter {
            family,
            proxy,
            states,
        })
    }

    /// print_neigh's test: an entry in a chosen state, or a proxy or externally learned
    /// one whatever its state (so `nud noarp` shows extern_learn entries in STALE too).
    pub fn shows(&self, n: &Neighbour<'_>) -> bool {
        if self.family != 0 && self.family != n.family {
            return false;
        }
        let state = n.state as u32;
        self.states & state != 0
            || n.flags & (NTF_PROXY | NTF_EXT_LEARNED) != 0
            || (state == 0 && self.states & NUD_NONE_FILTER != 0)
    }
}

/// nud_state_a2n: permanent, reachable and failed may be abbreviated (ip's `matches`),
/// the rest are exact; `all` is every bit; a number must be one state bit below 0x100.
/// A zero state stands for "none".
fn nud_state(word: &str) -> Option<u32> {
    let abbreviates = |full: &str| !word.is_empty() && full.starts_with(word);
    let state = if abbreviates("permanent") {
        0x80
    } else if abbreviates("reachable") {
        0x02
    } else if word == "noarp" {
        0x40
    } else if word == "none" {
        0
    } else if word == "stale" {
        0x04
    } else if word == "incomplete" {
        0x01
    } else if word == "delay" {
        0x08
    } else if word == "probe" {
        0x10
    } else if abbreviates("failed") {
        0x20
    } else if word == "all" {
        return Some(u32::MAX);
    } else {
        let n = crate::route::names::parse_c_number(word)?;
        if n >= 0x100 || n & n.wrapping_sub(1) != 0 {
            return None;
        }
        n
    };
    Some(if state == 0 { NUD_NONE_FILTER } else { state })
}

/// Dumps the neighbour entries `filter` asks the kernel for and hands those it shows to
/// `on_entry`, taking the whole dump again if the kernel flags it interrupted.
pub fn dump<T: Default>(
    sock: &mut NetlinkSocket,
    filter: Filter,
    mut on_entry: impl FnMut(&mut T, &Neighbour<'_>) -> Result<()>,
) -> Result<T> {
    let mut request = [0u8; NDMSG_LEN];
    request[0] = filter.family;
    if filter.proxy {
        request[10] = NTF_PROXY;
    }
    retry_interrupted("listing neighbours", |state: &mut T| {
        sock.dump(RTM_GETNEIGH, &request, "listing neighbours", |msg| {
            if msg.kind == RTM_NEWNEIGH {
                let n = Neighbour::parse(msg.payload)?;
                if filter.shows(&n) {
                    on_entry(state, &n)?;
                }
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: u16, flags: u8) -> Neighbour<'static> {
        Neighbour {
            family: libc::AF_INET as u8,
            ifindex: 2,
            state,
            flags,
            dst: None,
            lladdr: None,
            protocol: 0,
            ext_flags: 0,
        }
    }

    #[test]
    fn default_filter_hides_noarp_and_none() {
        let f = Filter::new(0, false, &[]).unwrap();
        assert!(f.shows(&entry(0x04, 0)));
        assert!(f.shows(&entry(0x80, 0)));
        assert!(!f.shows(&entry(0x40, 0)));
        assert!(!f.shows(&entry(0, 0)));
        assert!(f.shows(&entry(0x40, NTF_EXT_LEARNED)));
        assert!(f.shows(&entry(0, NTF_PROXY)));
    }

    #[test]
    fn nud_words_as_ip_reads_them() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = Filter::new(0, false, &words(&["perm", "none"])).unwrap();
        assert!(f.shows(&entry(0x80, 0)));
        assert!(f.shows(&entry(0, 0)));
        assert!(!f.shows(&entry(0x04, 0)));
        let all = Filter::new(0, false, &words(&["all"])).unwrap();
        assert!(all.shows(&entry(0x40, 0)) && all.shows(&entry(0, 0)));
        assert_eq!(nud_state("0x4"), Some(0x04));
        assert_eq!(nud_state("3"), None);
        assert_eq!(nud_state("sta"), None);
        assert!(Filter::new(0, false, &words(&["bogus"])).is_err());
    }
}
