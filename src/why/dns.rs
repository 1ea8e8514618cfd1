//! Resolving a name as the machine would: its own /etc/resolv.conf (in its mount
//! namespace), one query to its nameserver sent from inside its network namespace, with
//! a bounded wait. Only A and AAAA records; at most three nameservers, in order, as glibc
//! asks them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Fix, Hop, Verdict};
use crate::error::{Error, Result};
use crate::netns::PinnedNamespace;

/// How long one nameserver gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The machine's resolv.conf: where it was read, and its nameservers in order.
pub struct ResolvConf {
    pub path: String,
    pub nameservers: Vec<IpAddr>,
}

/// Reads the resolv.conf a program in the target would read: a process's through
/// /proc/PID/root (its mount namespace), a named netns's as `ip netns exec` gives it
/// (/etc/netns/NAME/resolv.conf, else the host's).
pub fn resolv_conf(namespace: &PinnedNamespace, netns_name: Option<&str>) -> Result<ResolvConf> {
    let path = match (namespace.leader(), netns_name) {
        (Some(pid), _) => format!("/proc/{pid}/root/etc/resolv.conf"),
        (None, Some(name))
            if std::path::Path::new(&format!("/etc/netns/{name}/resolv.conf")).exists() =>
        {
            format!("/etc/netns/{name}/resolv.conf")
        }
        _ => "/etc/resolv.conf".to_string(),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    // Read by PID: only the pinned leader's if it is still alive now (a PID reused since
    // pinning would have handed over another process's file).
    if namespace.leader().is_some() && !namespace.leader_alive()? {
        return Err(Error::StaleMachine(format!(
            "{}: its leader exited while machnet read its resolv.conf",
            namespace.label
        )));
    }
    Ok(ResolvConf {
        nameservers: nameservers(&text),
        path,
    })
}

/// The `nameserver` lines of a resolv.conf, as the glibc resolver reads them.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        // A scoped link-local nameserver (fe80::1%eth0) needs its interface, which a plain
        // address cannot carry: left out, as if absent.
        .filter(|addr| !addr.contains('%'))
        .filter_map(|addr| addr.parse().ok())
        .collect()
}

/// UDP addresses something listens on at port 53 in the namespace (`/proc/net/udp*`
/// read from inside it).
pub fn listening_on_53(namespace: &PinnedNamespace) -> Result<Vec<IpAddr>> {
    let mut bound = udp_listeners(&namespace.read_proc_net("udp")?, 53);
    // (A kernel without IPv6 has no udp6.)
    bound.extend(udp_listeners(
        &namespace.read_proc_net("udp6").unwrap_or_default(),
        53,
    ));
    Ok(bound)
}

/// Local addresses of /proc/net/udp{,6} lines bound to `port` (hex, little-endian
/// words, as the kernel prints them).
pub fn udp_listeners(table: &str, port: u16) -> Vec<IpAddr> {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|local| {
            let (addr, p) = local.split_once(':')?;
            (u16::from_str_radix(p, 16).ok()? == port).then_some(addr)?;
            parse_proc_addr(addr)
        })
        .collect()
}

/// An address as /proc/net/{tcp,udp}{,6} print it: hex, in little-endian 32-bit words.
pub(super) fn parse_proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Whether a listener on `bound` takes queries to `server`: the same address, or a
/// wildcard (an IPv6 one takes IPv4 too, unless v6only).
pub fn serves(bound: &[IpAddr], server: IpAddr) -> bool {
    bound
        .iter()
        .any(|b| *b == server || (b.is_unspecified() && (b.is_ipv6() || server.is_ipv4())))
}

/// What one query got: the addresses, or why there are none.
pub enum Answer {
    Addresses(Vec<IpAddr>),
    /// The nameserver answered, with no address (NXDOMAIN, no A/AAAA, a refusal).
    Nothing(String),
    /// No answer within TIMEOUT, or the query could not be sent.
    Silent(String),
}

/// Asks `server` for `name`'s A records (AAAA when there are none), from inside the
/// namespace.
pub fn resolve(namespace: &PinnedNamespace, server: IpAddr, name: &str) -> Result<Answer> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = namespace.udp_socket(bind)?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| Error::io("setting a timeout", e))?;
    let mut nothing = None;
    for (id, qtype) in [(0x6d01u16, 1u16), (0x6d02, 28)] {
        let query = encode_query(id, name, qtype)
            .ok_or_else(|| Error::Usage(format!("why: {name:?} is not a valid DNS name")))?;
        if let Err(e) = socket.send_to(&query, SocketAddr::new(server, 53)) {
            return Ok(Answer::Silent(format!(
                "the query to {server} could not be sent: {e}"
            )));
        }
        let mut buf = [0u8; 1500];
        // One deadline for the query: stray packets do not extend the wait.
        let deadline = std::time::Instant::now() + TIMEOUT;
        let reply = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(Answer::Silent(format!(
                    "no answer from {server} within {} s",
                    TIMEOUT.as_secs()
                )));
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| Error::io("setting a timeout", e))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from.ip() == server => match decode_answer(&buf[..n], id) {
                    Some(reply) => break reply,
                    None => continue, // not the answer to this query
                },
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Answer::Silent(format!(
                        "no answer from {server} within {} s",
                        TIMEOUT.as_secs()
                    )))
                }
                Err(e) => return Ok(Answer::Silent(format!("{server}: {e}"))),
            }
        };
        match reply {
            Ok(addrs) if !addrs.is_empty() => return Ok(Answer::Addresses(addrs)),
            Ok(_) => nothing = Some(format!("{server} has no address for {name}")),
            Err(rcode) if rcode == "NXDOMAIN" => {
                return Ok(Answer::Nothing(format!(
                    "{server} answered NXDOMAIN for {name}"
                )))
            }
            // SERVFAIL, REFUSED, a truncated answer: the resolver asks the next one.
            Err(rcode) => {
                return Ok(Answer::Silent(format!(
                    "{server} answered {rcode} for {name}"
                )))
            }
        }
    }
    Ok(Answer::Nothing(nothing.unwrap_or_default()))
}

/// The DNS hop(s) for DEST given as a name, and the address to walk to (None: the walk
/// ends at DNS).
pub fn dns_hops(
    namespace: &PinnedNamespace,
    machine: &str,
    netns_name: Option<&str>,
    name: &str,
) -> Result<(Vec<Hop>, Option<IpAddr>)> {
    let hop = |verdict, reason: String, fix: Option<Fix>| Hop {
        hop: "dns",
        namespace: machine.to_string(),
        verdict,
        reason,
        rule: None,
        fix,
        trace: Vec::new(),
    };
    let conf = resolv_conf(namespace, netns_name)?;
    if conf.nameservers.is_empty() {
        let reason = format!("{} names no nameserver", conf.path);
        let fix = host_nameserver_fix(machine);
        return Ok((vec![hop(Verdict::Fail, reason, fix)], None));
    }
    // As glibc: the nameservers in order, at most three, the next one tried after a
    // silence or a refusal; NXDOMAIN or "no address" is an answer.
    let mut failures = Vec::new();
    let mut loopback_only = true;
    let private = namespace.isolation == crate::netns::Isolation::Private;
    // What listens on 53 inside, read once, when a loopback nameserver asks for it.
    let mut bound: Option<Vec<IpAddr>> = None;
    for &server in conf.nameservers.iter().take(3) {
        if server.is_loopback() && private && bound.is_none() {
            bound = Some(listening_on_53(namespace)?);
        }
        let unserved = bound.as_ref().is_some_and(|b| !serves(b, server));
        if server.is_loopback() && private && unserved {
            failures.push(format!(
                "nameserver {server} ({}) is on the machine's own loopback, and nothing \
                 listens on port 53 there",
                conf.path
            ));
            continue;
        }
        loopback_only = false;
        match resolve(namespace, server, name)? {
            Answer::Addresses(addrs) => {
                // An IPv4 address first, as a dual-stack client tries in practice here.
                let chosen = addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]);
                let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let reason = format!("{name} is {} (nameserver {server})", all.join(", "));
                return Ok((vec![hop(Verdict::Pass, reason, None)], Some(*chosen)));
            }
            Answer::Nothing(why) => return Ok((vec![hop(Verdict::Fail, why, None)], None)),
            Answer::Silent(why) => failures.push(format!(
                "{why}; `machnet why {machine} {server} 53 --proto udp` walks the path to it"
            )),
        }
    }
    let fix = if loopback_only {
        host_nameserver_fix(machine)
    } else {
        None
    };
    Ok((vec![hop(Verdict::Fail, failures.join("; "), fix)], None))
}

/// Point the machine at the host's own (non-loopback) nameserver, when it has one.
fn host_nameserver_fix(machine: &str) -> Option<Fix> {
    let host = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    let server = nameservers(&host).into_iter().find(|a| !a.is_loopback())?;
    Some(Fix {
        command: format!(
            "machnet exec -m {machine} -- sh -c 'echo nameserver {server} > /etc/resolv.conf'"
        ),
        nixos: Some(format!(
            "containers.{machine}.config.networking.nameservers = [ \"{server}\" ];"
        )),
    })
}

/// A standard query with recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Some(q)
}

/// The A/AAAA addresses of a reply to query `id`; Err(rcode name) for an error reply;
/// None when it is not a reply to that query or cannot be read.
pub fn decode_answer(msg: &[u8], id: u16) -> Option<Result<Vec<IpAddr>, String>> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return None;
    }
    // Truncated (TC): the whole answer needs TCP, which is not sent here.
    if msg[2] & 0x02 != 0 {
        return Some(Err("a truncated answer".to_string()));
    }
    let rcode = msg[3] & 0x0f;
    if rcode != 0 {
        let name = match rcode {
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "an error",
        };
        return Some(Err(name.to_string()));
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]) as usize;
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let header = msg.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[8], header[9]]) as usize;
        let data = msg.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (1, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (28, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        at += 10 + len;
    }
    Some(Ok(out))
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_as_the_resolver_reads_them() {
        let conf = "# comment\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions edns0\nnameserver bogus\n";
        // The scoped link-local one is left out (it needs its interface).
        assert_eq!(
            nameservers(conf),
            vec!["127.0.0.53".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn proc_net_udp_lines_give_their_port_53_listeners() {
        let table = "  sl  local_address rem_address   st\n   0: 3500007F:0035 00000000:0000 07\n   1: 00000000:14E9 00000000:0000 07\n   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07\n";
        assert_eq!(
            udp_listeners(table, 53),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_query_and_its_answer_round_trip() {
        let q = encode_query(7, "web.test", 1).unwrap();
        assert_eq!(&q[12..22], b"\x03web\x04test\x00");
        // The answer: the question echoed, one A record with a compressed name.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 5]);
        assert_eq!(
            decode_answer(&a, 7).unwrap().unwrap(),
            vec!["203.0.113.5".parse::<IpAddr>().unwrap()]
        );
        assert!(decode_answer(&a, 8).is_none());
        a[3] = 0x83;
        assert_eq!(decode_answer(&a, 7).unwrap().unwrap_err(), "NXDOMAIN");
        assert!(encode_query(1, "bad..name", 1).is_none());
    }
}
