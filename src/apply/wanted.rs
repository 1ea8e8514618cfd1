//! The routes a machine should have, as the requests that would create them, back to back
//! in one buffer: about 40 bytes a route where parsed specs and one allocation per request
//! took 500 (a million declared routes: 40 MB, not half a gigabyte).
//!
//! A route set is read before any machine is pinned, when device names cannot be turned
//! into interface indexes yet. So each device a machine's routes name gets a slot (1, 2,
//! …), the requests carry the slot where the index goes, and [`WantedRoutes::resolve`]
//! writes the real indexes once the machine's links are known.

use std::hash::BuildHasher;

use crate::link::LinkNames;
use crate::route::identity::{KeyHasher, RouteKey};
use crate::route::message::{Route, RTA_MULTIPATH, RTA_OIF};
use crate::route::request::{encode, Edit};
use crate::route::spec::RouteSpec;

/// struct rtmsg, before a route message's attributes.
const RTMSG_LEN: usize = 12;
/// struct rtnexthop: length, flags, hops, ifindex.
const RTNEXTHOP_LEN: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct WantedRoutes {
    bytes: Vec<u8>,
    /// Where each request ends in `bytes`.
    ends: Vec<u32>,
    /// The devices the requests name, slot `i + 1` being `devices[i]`.
    devices: Vec<String>,
    /// The same, as `encode` looks devices up.
    slots: LinkNames,
    /// Whether the slots have been replaced by real interface indexes.
    resolved: bool,
}

impl WantedRoutes {
    /// Adds `spec` as the request that creates it (`owner` is the protocol it gets when it
    /// names none). Device names get slots, so only a malformed spec can fail here.
    pub fn push(&mut self, spec: &RouteSpec, owner: u8) -> Result<(), String> {
        assert!(!self.resolved, "routes are added before they are resolved");
        for dev in spec_devices(spec) {
            if !self.devices.iter().any(|d| d == dev) {
                self.devices.push(dev.to_string());
                self.slots = LinkNames::from_pairs(
                    self.devices
                        .iter()
                        .enumerate()
                        .map(|(i, name)| (slot(i), name.clone())),
                );
            }
        }
        let request = encode(spec, Edit::Replace, owner, &self.slots)?;
        self.bytes.extend_from_slice(&request);
        let end = u32::try_from(self.bytes.len())
            .map_err(|_| "a machine's declared routes take more than 4 GiB".to_string())?;
        self.ends.push(end);
        Ok(())
    }

    /// Adds a request as it is (plan.rs tests, which build route messages by hand).
    #[cfg(test)]
    pub fn push_request(&mut self, request: &[u8]) {
        self.bytes.extend_from_slice(request);
        self.ends.push(self.bytes.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The RTM_NEWROUTE body of route `i` (in declared order).
    pub fn request(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// Route `i` decoded (requests are built by machnet, so they always decode).
    pub fn route(&self, i: usize) -> Route<'_> {
        Route::parse(self.request(i)).expect("machnet's own requests decode")
    }

    pub fn key(&self, i: usize) -> RouteKey {
        RouteKey::of(&self.route(i))
    }

    /// The device names the routes use, in the order first used.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    /// Every route's key, hashed and sorted: 8 bytes a route to ask "is this key
    /// declared?" (a false yes is possible, one in 2^64, and every use tolerates it).
    pub fn key_hashes(&self) -> Vec<u64> {
        let mut hashes: Vec<u64> = (0..self.len()).map(|i| hash_key(&self.key(i))).collect();
        hashes.sort_unstable();
        hashes
    }

    /// Writes each device's interface index in `links` where its slot was. Fails, changing
    /// nothing the caller keeps, when a device is not there.
    pub fn resolve(mut self, links: &LinkNames) -> Result<WantedRoutes, String> {
        assert!(!self.resolved, "routes are resolved once");
        let mut indexes = Vec::with_capacity(self.devices.len());
        for dev in &self.devices {
            let index = links.index_of(dev).ok_or_else(|| {
                format!(
                    "there is no device {dev:?} here (devices: {})",
                    links.names_sorted().join(", ")
                )
            })?;
            indexes.push(index);
        }
        let mut start = 0;
        for end in &self.ends {
            let end = *end as usize;
            rewrite_devices(&mut self.bytes[start..end], &indexes);
            start = end;
        }
        self.resolved = true;
        Ok(self)
    }
}

pub fn hash_key(key: &RouteKey) -> u64 {
    std::hash::BuildHasherDefault::<KeyHasher>::default().hash_one(key)
}

fn slot(i: usize) -> u32 {
    u32::try_from(i + 1).expect("fewer than 4 billion devices")
}

fn spec_devices(spec: &RouteSpec) -> impl Iterator<Item = &str> {
    std::iter::once(&spec.nexthop)
        .chain(&spec.multipath)
        .filter_map(|hop| hop.dev.as_deref())
}

/// Replaces slot numbers with `indexes[slot - 1]` in RTA_OIF and in each nexthop of
/// RTA_MULTIPATH: the only places `encode` writes a device. 0 (no device) stays 0.
fn rewrite_devices(request: &mut [u8], indexes: &[u32]) {
    let map = |value: &mut [u8]| {
        let slot = u32::from_ne_bytes(value[..4].try_into().expect("4 bytes"));
        if slot != 0 {
            value[..4].copy_from_slice(&indexes[slot as usize - 1].to_ne_bytes());
        }
    };
    let mut at = RTMSG_LEN;
    while at + 4 <= request.len() {
        let len = usize::from(u16::from_ne_bytes([request[at], request[at + 1]]));
        let kind = u16::from_ne_bytes([request[at + 2], request[at + 3]]) & 0x3fff;
        if len < 4 || at + len > request.len() {
            break;
        }
        let payload = at + 4..at + len;
        match kind {
            RTA_OIF => map(&mut request[payload]),
            RTA_MULTIPATH => {
                let hops = &mut request[payload];
                let mut hop = 0;
                while hop + RTNEXTHOP_LEN <= hops.len() {
                    let hop_len = usize::from(u16::from_ne_bytes([hops[hop], hops[hop + 1]]));
                    map(&mut hops[hop + 4..hop + 8]);
                    if hop_len < RTNEXTHOP_LEN {
                        break;
                    }
                    hop += align(hop_len);
                }
            }
            _ => {}
        }
        at += align(len);
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::names::Names;
    use crate::route::spec::{parse, Purpose};

    fn spec(text: &str) -> RouteSpec {
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        parse(&words, Purpose::Add, 0, &Names::builtin()).unwrap()
    }

    fn links() -> LinkNames {
        LinkNames::from_pairs([(7, "eth0".to_string()), (3, "wg0".to_string())])
    }

    #[test]
    fn resolved_requests_are_what_encode_makes_with_the_real_links() {
        let routes = [
            "10.1.0.0/16 via 10.0.0.1",
            "10.2.0.0/16 dev wg0 metric 5",
            "10.3.0.0/16 nexthop via 10.0.0.1 dev eth0 nexthop via 10.0.0.2 dev wg0 weight 3",
            "fd00::/64 dev eth0",
            "blackhole 10.4.0.0/16",
        ];
        let mut wanted = WantedRoutes::default();
        for r in routes {
            wanted.push(&spec(r), 109).unwrap();
        }
        assert_eq!(wanted.devices(), ["wg0", "eth0"]);
        let wanted = wanted.resolve(&links()).unwrap();
        assert_eq!(wanted.len(), routes.len());
        for (i, r) in routes.iter().enumerate() {
            let direct = encode(&spec(r), Edit::Replace, 109, &links()).unwrap();
            assert_eq!(wanted.request(i), direct, "{r}");
        }
    }

    #[test]
    fn a_missing_device_is_named() {
        let mut wanted = WantedRoutes::default();
        wanted.push(&spec("10.2.0.0/16 dev eth9"), 109).unwrap();
        let e = wanted.resolve(&links()).unwrap_err();
        assert!(e.contains("\"eth9\"") && e.contains("eth0, wg0"), "{e}");
    }

    #[test]
    fn key_hashes_are_sorted_and_match_the_keys() {
        let mut wanted = WantedRoutes::default();
        for r in ["10.9.0.0/16 via 10.0.0.1", "10.1.0.0/16 via 10.0.0.1"] {
            wanted.push(&spec(r), 109).unwrap();
        }
        let hashes = wanted.key_hashes();
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
        for i in 0..wanted.len() {
            assert!(hashes.binary_search(&hash_key(&wanted.key(i))).is_ok());
        }
    }
}
