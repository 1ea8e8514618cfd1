//! `machnet whois ADDR|PREFIX`: which namespace owns an address (or addresses in a
//! prefix), or reaches it directly, and through which interface. Why does 192.168.2.1
//! answer a ping when no host interface has it? Because a machine has it.

use std::net::IpAddr;

use serde::Serialize;

use crate::audit::rules::prefix_contains;
use crate::survey::{MachineState, Namespace, Survey};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// `.host`, a machine name, or `netns:NAME`.
    pub namespace: String,
    /// "owns": an address of the namespace matches; "connected": a subnet it reaches
    /// directly (an address's prefix, or a route without gateway) covers it.
    pub relation: &'static str,
    /// The address (with its prefix length) or the connected subnet.
    pub prefix: String,
    pub interface: String,
}

/// What is asked: one address, or every address in a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Query {
    type Err = String;

    fn from_str(text: &str) -> Result<Query, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Query { addr, len })
    }
}

impl Query {
    /// Whether the namespace-side prefix (net/len) and the query share an address.
    fn overlaps(&self, net: IpAddr, len: u8) -> bool {
        prefix_contains(net, len.min(self.len), self.addr)
    }

    fn contains(&self, addr: IpAddr) -> bool {
        prefix_contains(self.addr, self.len, addr)
    }
}

/// Everyone who owns or directly reaches `query`: owners first, then namespaces with a
/// connected subnet covering it; each list sorted by namespace.
pub fn whois(survey: &Survey, extra: &[(String, Namespace)], query: Query) -> Vec<Answer> {
    let machines = survey
        .machines
        .iter()
        .filter(|m| m.is_private() && m.state == MachineState::Running)
        .filter_map(|m| m.net.as_ref().map(|n| (m.name.clone(), n)));
    let spaces: Vec<(String, &Namespace)> = std::iter::once((".host".to_string(), &survey.host))
        .chain(machines)
        .chain(extra.iter().map(|(n, ns)| (n.clone(), ns)))
        .collect();
    let mut owners = Vec::new();
    let mut connected = Vec::new();
    for (name, ns) in &spaces {
        for link in &ns.links {
            for a in &link.addr_info {
                let Ok(addr) = a.local.parse::<IpAddr>() else {
                    continue;
                };
                if query.contains(addr) {
                    owners.push(Answer {
                        namespace: name.clone(),
                        relation: "owns",
                        prefix: format!("{addr}/{}", a.prefixlen),
                        interface: link.ifname.clone(),
                    });
                }
            }
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for route in &ns.routes {
            let (Some(dst), None, Some(oif)) = (route.dst, route.gateway, route.oif) else {
                continue;
            };
            if route.kind != 1 || route.dst_len == 0 || !query.overlaps(dst, route.dst_len) {
                continue;
            }
            let interface = ns
                .link(oif)
                .map_or_else(|| oif.to_string(), |l| l.ifname.clone());
            let prefix = format!("{dst}/{}", route.dst_len);
            if seen.contains(&(prefix.clone(), interface.clone())) {
                continue;
            }
            seen.push((prefix.clone(), interface.clone()));
            connected.push(Answer {
                namespace: name.clone(),
                relation: "connected",
                prefix,
                interface,
            });
        }
    }
    owners.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    connected.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    owners.extend(connected);
    owners
}

pub fn text(answers: &[Answer]) -> String {
    let width = answers.iter().map(|a| a.namespace.len()).max().unwrap_or(0);
    answers
        .iter()
        .map(|a| {
            format!(
                "{:<width$}  {:<9}  {} dev {}\n",
                a.namespace, a.relation, a.prefix, a.interface
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_overlap() {
        let q: Query = "10.77.1.0/24".parse().unwrap();
        assert!(q.contains("10.77.1.9".parse().unwrap()));
        assert!(!q.contains("10.77.2.9".parse().unwrap()));
        assert!(q.overlaps("10.0.0.0".parse().unwrap(), 8));
        let one: Query = "fd77:1::2".parse().unwrap();
        assert_eq!(one.len, 128);
        assert!("10.0.0.0/33".parse::<Query>().is_err());
        assert!("nonsense".parse::<Query>().is_err());
    }
}
