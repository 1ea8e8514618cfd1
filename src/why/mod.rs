//! `machnet why`: the path a packet takes from a machine to a destination, hop by hop,
//! and the first hop where it dies, with the fix.
//!
//! Every routing decision is the kernel's own (RTM_GETROUTE, in the machine's namespace
//! and then on the host with `iif` set to the machine's side, so that the kernel applies
//! forwarding and rp_filter itself); links and addresses come from rtnetlink; the firewall
//! and NAT from the host's real nftables ruleset (firewall.rs). What cannot be judged is
//! "unknown", never guessed.

pub mod dns;
pub mod firewall;
mod inbound;
pub mod output;
pub mod probe;
mod walk;

use std::net::IpAddr;

use serde::Serialize;

pub use crate::audit::rules::prefix_contains;

pub use inbound::walk_from_host;
pub use walk::walk;

/// The host's nftables ruleset (machnet's own namespace).
pub fn host_ruleset() -> std::result::Result<firewall::Ruleset, String> {
    firewall::Ruleset::read(None)
}

/// A hop's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Unknown,
}

/// A command that mends a failed hop, and the NixOS option that does it declaratively
/// where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nixos: Option<String>,
}

/// One hop of the path.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// What is decided here: "route", "link", "peer", "forwarding", "host route",
    /// "forward filter", "nat", "return route", "reply filter".
    pub hop: &'static str,
    /// Where: the machine's name or ".host".
    pub namespace: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The firewall rule (or chain policy) that decides, quoted with table, chain, handle.
    pub rule: Option<String>,
    pub fix: Option<Fix>,
    /// `--probe`: what `nft monitor trace` saw of the real packet, chain by chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
}

/// The packet asked about.
#[derive(Debug, Clone)]
pub struct Question {
    pub dest: IpAddr,
    /// IPPROTO_*: 6 tcp, 17 udp, 1 icmp (58 for IPv6).
    pub proto: u8,
    pub dport: Option<u16>,
}

/// The exit code for a walked path: 0 open, 13 a hop fails, 14 a hop cannot be judged.
pub fn exit_code(hops: &[Hop]) -> i32 {
    if hops.iter().any(|h| h.verdict == Verdict::Fail) {
        crate::error::exit::WHY_BLOCKED
    } else if hops.iter().any(|h| h.verdict == Verdict::Unknown) {
        crate::error::exit::WHY_UNKNOWN
    } else {
        0
    }
}

/// Addresses that the wider internet does not route back: RFC 1918, shared address space
/// (RFC 6598), link-local, and IPv6 unique-local. A packet from one of them to anything
/// else needs source NAT on the way out.
pub fn is_private(addr: IpAddr) -> bool {
    let link_local: IpAddr = if addr.is_ipv4() {
        "169.254.0.0"
    } else {
        "fe80::"
    }
    .parse()
    .unwrap();
    let len = if addr.is_ipv4() { 16 } else { 10 };
    crate::audit::rules::is_private(addr) || prefix_contains(link_local, len, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_private_ranges() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(prefix_contains(a("10.77.1.0"), 24, a("10.77.1.2")));
        assert!(!prefix_contains(a("10.77.1.0"), 24, a("10.77.2.2")));
        assert!(prefix_contains(a("fd77:1::"), 64, a("fd77:1::2")));
        assert!(prefix_contains(a("0.0.0.0"), 0, a("1.2.3.4")));
        assert!(!prefix_contains(a("::"), 0, a("1.2.3.4")));
        assert!(is_private(a("169.254.1.1")) && is_private(a("fe80::1")));
        assert!(
            is_private(a("10.0.0.1")) && is_private(a("fd00::1")) && is_private(a("100.64.0.1"))
        );
        assert!(!is_private(a("203.0.113.5")) && !is_private(a("2001:db8::5")));
    }

    #[test]
    fn the_exit_code_says_blocked_before_unknown() {
        let hop = |verdict| Hop {
            hop: "route",
            namespace: "m".into(),
            verdict,
            reason: String::new(),
            rule: None,
            fix: None,
            trace: Vec::new(),
        };
        assert_eq!(exit_code(&[hop(Verdict::Pass)]), 0);
        assert_eq!(exit_code(&[hop(Verdict::Unknown), hop(Verdict::Pass)]), 14);
        assert_eq!(exit_code(&[hop(Verdict::Unknown), hop(Verdict::Fail)]), 13);
    }
}
