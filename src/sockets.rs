//! Listening sockets of a namespace over sock_diag (what `ss -tuln` asks the kernel), and
//! the processes that hold them, found by socket inode under /proc.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::link::LinkNames;
use crate::netlink::NetlinkSocket;
use crate::pid_view::PidView;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_LISTEN: u32 = 10;
/// An unconnected UDP socket reports TCP_CLOSE; that is what `ss -ul` lists.
const TCP_CLOSE: u32 = 7;
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_SKV6ONLY: u16 = 11;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    /// An IPv6 socket that takes IPv6 only (INET_DIAG_SKV6ONLY); a wildcard one that does
    /// not also takes IPv4, which ss shows as `*`.
    #[serde(skip)]
    pub v6only: bool,
    /// The device the socket is bound to (SO_BINDTODEVICE), which ss shows as `addr%dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    /// The PID as the machine sees it, which is what `ss -p` run inside it prints.
    pub pid: u32,
    /// The same process's PID on the host (`kill`, `nsenter -t` from the host take this).
    pub host_pid: u32,
    pub fd: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Socket {
    pub netid: &'static str,
    pub state: &'static str,
    pub recv_q: u32,
    pub send_q: u32,
    pub local: Endpoint,
    pub peer: Endpoint,
    #[serde(skip)]
    pub inode: u32,
    /// The bound device's index (the socket id's `idiag_if`), named by [`name_devices`].
    #[serde(skip)]
    pub bound_to: u32,
    /// Processes holding the socket, where /proc shows them.
    pub process: Vec<Owner>,
}

/// Unconnected UDP and listening TCP sockets, IPv4 then IPv6, in the kernel's order.
pub fn listening(sock: &mut NetlinkSocket) -> Result<Vec<Socket>> {
    let mut all = Vec::new();
    // ss -tulpn's order: UDP, then TCP; each as the kernel lists them.
    for (protocol, netid, state, state_name) in [
        (IPPROTO_UDP, "udp", TCP_CLOSE, "UNCONN"),
        (IPPROTO_TCP, "tcp", TCP_LISTEN, "LISTEN"),
    ] {
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let request = diag_request(family, protocol, 1 << state);
            let mut found = Vec::new();
            sock.dump(SOCK_DIAG_BY_FAMILY, &request, "listing sockets", |msg| {
                found.push(parse_diag(msg.payload, netid, state_name)?);
                Ok(())
            })?;
            all.extend(found);
        }
    }
    Ok(all)
}

/// struct inet_diag_req_v2 with a zero socket id: every socket of that family, protocol
/// and state set.
fn diag_request(family: u8, protocol: u8, states: u32) -> Vec<u8> {
    let mut req = vec![family, protocol, 0, 0];
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(56, 0);
    req
}

/// struct inet_diag_msg: family, state, timer, retrans, the socket id, then expires,
/// rqueue, wqueue, uid, inode.
fn parse_diag(payload: &[u8], netid: &'static str, state: &'static str) -> Result<Socket> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(Error::Other(format!(
            "the kernel sent a {}-byte socket record, shorter than struct inet_diag_msg",
            payload.len()
        )));
    }
    let family = payload[0];
    let word = |at: usize| u32::from_ne_bytes(payload[at..at + 4].try_into().unwrap());
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    let addr = |at: usize| -> String {
        let ip = if family as i32 == libc::AF_INET {
            IpAddr::V4(Ipv4Addr::new(
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&payload[at..at + 16]).unwrap(),
            ))
        };
        crate::route::format::ip_string(ip)
    };
    // After the fixed part, attributes; the kernel always adds INET_DIAG_SKV6ONLY to IPv6.
    let mut v6only = false;
    for a in crate::netlink::attr::Attrs::new(&payload[INET_DIAG_MSG_LEN..]) {
        let a = a.map_err(|e| Error::Other(format!("undecodable socket record ({})", e.0)))?;
        if a.kind == INET_DIAG_SKV6ONLY {
            v6only = a.u8().map_err(|e| Error::Other(e.0))? != 0;
        }
    }
    Ok(Socket {
        netid,
        state,
        recv_q: word(56),
        send_q: word(60),
        local: Endpoint {
            address: addr(8),
            port: port(4),
            v6only,
            device: None,
        },
        peer: Endpoint {
            address: addr(24),
            port: port(6),
            v6only,
            device: None,
        },
        inode: word(68),
        bound_to: word(40),
        process: Vec::new(),
    })
}

/// Names the devices sockets are bound to, as ss does (`ifN` for an index it cannot name,
/// which is also what every bound socket shows if the link names cannot be read). Only a
/// listing with a bound socket needs the namespace's link names.
pub fn name_devices(sockets: &mut [Socket], links: impl FnOnce() -> Result<LinkNames>) {
    if sockets.iter().all(|s| s.bound_to == 0) {
        return;
    }
    let links = links().unwrap_or_default();
    for s in sockets.iter_mut().filter(|s| s.bound_to != 0) {
        s.local.device = Some(links.name(s.bound_to).into_owned());
    }
}

/// Fills in the owning processes: every process whose fds include one of the sockets, as
/// `ss -p` run inside the machine finds them. Not only processes in the network namespace:
/// a socket keeps the namespace it was made in, and the process holding it may have moved
/// on (or been handed it). Socket inodes are unique across the system, so matching them
/// needs no namespace. But `ss` inside reads the machine's own /proc: it names owners by
/// their PIDs in the machine's PID namespace, and does not see owners outside it, so
/// neither does this (`view`). Processes that vanish meanwhile, or whose fds we may not
/// read, are skipped: "where visible".
pub fn attach_owners(sockets: &mut [Socket], view: &PidView) {
    if sockets.is_empty() {
        return;
    }
    let wanted: HashMap<u32, usize> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.inode, i))
        .collect();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(host_pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        // Read only for a process that holds one of the sockets.
        let mut name: Option<String> = None;
        let mut pid: Option<Option<u32>> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok());
            let (Some(inode), Some(fd_num)) =
                (inode, fd.file_name().to_str().and_then(|f| f.parse().ok()))
            else {
                continue;
            };
            if let Some(&i) = wanted.get(&inode) {
                let Some(pid) = *pid.get_or_insert_with(|| view.pid_of(host_pid)) else {
                    continue;
                };
                let name = name.get_or_insert_with(|| {
                    std::fs::read_to_string(dir.join("comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_default()
                });
                sockets[i].process.push(Owner {
                    name: name.clone(),
                    pid,
                    host_pid,
                    fd: fd_num,
                });
            }
        }
    }
    for s in sockets.iter_mut() {
        s.process.sort_by_key(|o| (o.pid, o.fd));
    }
}

/// `address:port` as ss prints it: IPv6 in brackets, `*` for an IPv6 wildcard that also
/// takes IPv4, and `%dev` after the address of a socket bound to a device.
pub fn endpoint_text(e: &Endpoint, wildcard_port: bool) -> String {
    let port = if wildcard_port && e.port == 0 {
        "*".to_string()
    } else {
        e.port.to_string()
    };
    let address = if e.address == "::" && !e.v6only {
        "*".to_string()
    } else if e.address.contains(':') {
        format!("[{}]", e.address)
    } else {
        e.address.clone()
    };
    match &e.device {
        Some(device) => format!("{address}%{device}:{port}"),
        None => format!("{address}:{port}"),
    }
}
