//! `link set` and `addr add|del`: the two edits that fix the classic namespace faults (a
//! loopback left down, an address missing), as RTM_NEWLINK / RTM_NEWADDR requests.

use std::net::IpAddr;

use crate::netlink::attr;
use crate::route::spec::SpecError;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
const IFF_UP: u32 = 0x1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
pub const NLM_F_CREATE_EXCL: u16 = 0x400 | 0x200;

/// What `link set IF ...` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
}

/// `up`, `down`, `mtu N`, in any order.
pub fn parse_link_change(words: &[String]) -> Result<LinkChange, SpecError> {
    let mut change = LinkChange::default();
    let mut i = 0;
    let bad = |i: usize, why: &str| SpecError {
        word: Some((i, words.get(i).cloned().unwrap_or_default())),
        why: why.into(),
    };
    while i < words.len() {
        match words[i].as_str() {
            "up" => change.up = Some(true),
            "down" => change.up = Some(false),
            "mtu" => {
                i += 1;
                let n = words
                    .get(i)
                    .and_then(|w| w.parse::<u32>().ok())
                    .ok_or_else(|| bad(i.min(words.len() - 1), "mtu needs a number"))?;
                change.mtu = Some(n);
            }
            _ => return Err(bad(i, "expected up, down or mtu N")),
        }
        i += 1;
    }
    if change == LinkChange::default() {
        return Err(SpecError {
            word: None,
            why: "nothing to change: say up, down or mtu N".into(),
        });
    }
    Ok(change)
}

/// The RTM_NEWLINK payload: an ifinfomsg that changes only the bits asked for.
pub fn encode_link_change(index: u32, change: LinkChange) -> Vec<u8> {
    let (flags, mask) = match change.up {
        Some(true) => (IFF_UP, IFF_UP),
        Some(false) => (0, IFF_UP),
        None => (0, 0),
    };
    let mut msg = vec![0u8, 0, 0, 0];
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&mask.to_ne_bytes());
    if let Some(mtu) = change.mtu {
        attr::push(&mut msg, IFLA_MTU, &mtu.to_ne_bytes());
    }
    msg
}

/// `ADDR/LEN dev IF [brd +|ADDR]` (the device may also come first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSpec {
    pub addr: IpAddr,
    pub len: u8,
    pub dev: String,
    pub broadcast: Option<Broadcast>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// `brd +`: the prefix's last address.
    Derived,
    Address(IpAddr),
}

pub fn parse_addr_spec(words: &[String]) -> Result<AddrSpec, SpecError> {
    let bad = |i: usize, why: &str| SpecError {
        word: Some((i, words[i].clone())),
        why: why.into(),
    };
    let (mut local, mut dev, mut broadcast) = (None, None, None);
    let mut i = 0;
    while i < words.len() {
        match words[i].as_str() {
            "dev" => {
                i += 1;
                dev = Some(
                    words
                        .get(i)
                        .ok_or_else(|| bad(i - 1, "needs a device"))?
                        .clone(),
                );
            }
            "brd" | "broadcast" => {
                i += 1;
                let v = words
                    .get(i)
                    .ok_or_else(|| bad(i - 1, "needs an address or +"))?;
                broadcast = Some(if v == "+" {
                    Broadcast::Derived
                } else {
                    Broadcast::Address(v.parse().map_err(|_| bad(i, "not an address"))?)
                });
            }
            "local" => {
                i += 1;
                let v = words.get(i).ok_or_else(|| bad(i - 1, "needs an address"))?;
                local = Some(address_with_len(v).map_err(|e| bad(i, &e))?);
            }
            word if local.is_none() => {
                local = Some(address_with_len(word).map_err(|e| bad(i, &e))?)
            }
            _ => return Err(bad(i, "expected dev, brd or the end")),
        }
        i += 1;
    }
    let (addr, len) = local.ok_or_else(|| SpecError {
        word: None,
        why: "no address given (ADDR/LEN dev IFNAME)".into(),
    })?;
    let dev = dev.ok_or_else(|| SpecError {
        word: None,
        why: "no device given (dev IFNAME)".into(),
    })?;
    Ok(AddrSpec {
        addr,
        len,
        dev,
        broadcast,
    })
}

/// An interface address keeps its host bits (10.0.0.2/24), unlike a route prefix.
fn address_with_len(text: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() {
        max
    } else {
        l.parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?
    };
    Ok((addr, len))
}

/// The RTM_NEWADDR / RTM_DELADDR payload, with iproute2's default scope (host for
/// loopback addresses, link for IPv6 link-local, else global).
pub fn encode_addr(spec: &AddrSpec, index: u32) -> Vec<u8> {
    let (family, bytes) = match spec.addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let scope = match spec.addr {
        IpAddr::V4(a) if a.is_loopback() => 254,
        IpAddr::V6(a) if a.is_loopback() => 254,
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => 253,
        _ => 0,
    };
    let mut msg = vec![family, spec.len, 0, scope];
    msg.extend_from_slice(&index.to_ne_bytes());
    attr::push(&mut msg, IFA_LOCAL, &bytes);
    attr::push(&mut msg, IFA_ADDRESS, &bytes);
    if let IpAddr::V4(a) = spec.addr {
        let brd = match spec.broadcast {
            // As ip: a /31 or /32 has no broadcast address (on a /31 the other address is
            // the peer, not a broadcast).
            Some(Broadcast::Derived) if spec.len <= 30 => {
                let host_mask = u32::MAX >> spec.len;
                Some((u32::from(a) | host_mask).to_be_bytes().to_vec())
            }
            Some(Broadcast::Address(IpAddr::V4(b))) => Some(b.octets().to_vec()),
            _ => None,
        };
        if let Some(brd) = brd {
            attr::push(&mut msg, IFA_BROADCAST, &brd);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn link_changes() {
        assert_eq!(parse_link_change(&words("up")).unwrap().up, Some(true));
        let c = parse_link_change(&words("down mtu 1400")).unwrap();
        assert_eq!((c.up, c.mtu), (Some(false), Some(1400)));
        assert!(parse_link_change(&words("sideways")).is_err());
        assert!(parse_link_change(&words("mtu x")).is_err());
        assert!(parse_link_change(&[]).is_err());
    }

    #[test]
    fn address_specs() {
        let s = parse_addr_spec(&words("10.0.0.2/24 dev eth0 brd +")).unwrap();
        assert_eq!((s.len, s.dev.as_str()), (24, "eth0"));
        assert_eq!(s.broadcast, Some(Broadcast::Derived));
        let s = parse_addr_spec(&words("dev eth0 fd00::2/64")).unwrap();
        assert_eq!(s.addr, "fd00::2".parse::<IpAddr>().unwrap());
        assert!(parse_addr_spec(&words("10.0.0.2/24")).is_err());
        assert!(parse_addr_spec(&words("10.0.0.2/33 dev eth0")).is_err());
        assert!(parse_addr_spec(&words("nope dev eth0")).is_err());
    }
}
