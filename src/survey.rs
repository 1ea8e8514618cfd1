//! One read of the whole picture: every machine's links, addresses and main-table routes,
//! the host's side of them, and the host settings that decide whether machines reach
//! anything (forwarding, NAT). audit, whois and topology all work on this plain value.
//!
//! D-Bus (machined) is asked one machine at a time on the runtime thread; the namespaces
//! are then read concurrently by a few worker threads, each with its own netlink socket
//! made inside the machine's namespace (netns.rs), so no thread ever changes namespace
//! for longer than it takes to make a socket.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::link::{self, Link};
use crate::machined::Machined;
use crate::netlink::{attr, NetlinkSocket};
use crate::netns::{ExtraNamespaces, Isolation, PinnedNamespace};
use crate::route::message::{
    Route, AF_INET, AF_INET6, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE, RTM_F_CLONED, RT_TABLE_MAIN,
};
use crate::target::pin_machine;

/// Namespaces whose sockets are open at once: bounds open sockets however many machines
/// there are.
const BATCH: usize = 64;
/// Threads reading a batch's namespaces (their sockets are made by one other thread).
const READERS: usize = 4;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTNH_F_DEAD: u32 = 1;
const RTNH_F_ONLINK: u32 = 4;
const RTNH_F_LINKDOWN: u32 = 16;

#[derive(Debug)]
pub struct Survey {
    pub host: Namespace,
    pub forwarding: Forwarding,
    /// The host's nftables ruleset, for the rules that ask what it does to a machine's
    /// packets or which sources it masquerades (crate::why::firewall); None where `nft` is
    /// absent or unreadable (those rules then say nothing).
    pub firewall: Option<crate::why::firewall::Ruleset>,
    pub machines: Vec<MachineView>,
}

/// A machine's resolver, as its programs see it: its resolv.conf's nameservers, and what
/// listens on UDP port 53 in its namespace.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pub path: String,
    pub nameservers: Vec<IpAddr>,
    pub udp53: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Forwarding {
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
}

/// A masquerade rule: the source prefix it matches (None: every source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub source: Option<(IpAddr, u8)>,
}

#[derive(Debug)]
pub struct MachineView {
    pub name: String,
    pub leader: u32,
    pub state: MachineState,
    pub isolation: Option<Isolation>,
    pub netns_inode: Option<u64>,
    pub net: Option<Namespace>,
    /// The id the host gives this machine's namespace: how host-side veth ends point here.
    pub host_nsid: Option<i32>,
    /// Read through the leader's /proc entries; None where they could not be read.
    pub resolver: Option<Resolver>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    Running,
    /// Registered, but its leader is gone.
    Stale(String),
    /// Registered, and its leader's PID is in use again, by another process.
    LeaderReused(String),
    /// Could not be read (the reason).
    Unreadable(String),
}

/// The links (with addresses) and main-table routes of one namespace.
#[derive(Debug, Default)]
pub struct Namespace {
    pub links: Vec<Link>,
    pub routes: Vec<RouteFact>,
}

/// What the audit needs of a route, without the message it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFact {
    pub family: u8,
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub kind: u8,
    pub onlink: bool,
    /// The kernel marks the nexthop dead or its link down.
    pub linkdown: bool,
}

impl RouteFact {
    pub fn is_default(&self) -> bool {
        self.dst_len == 0
    }

    /// `10.0.0.0/8`, `default`.
    pub fn prefix(&self) -> String {
        match self.dst {
            _ if self.dst_len == 0 => "default".into(),
            Some(addr) => format!("{addr}/{}", self.dst_len),
            None => format!("?/{}", self.dst_len),
        }
    }
}

impl Namespace {
    pub fn link(&self, ifindex: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.ifindex == ifindex)
    }

    pub fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.ifname == name)
    }
}

impl MachineView {
    pub fn is_private(&self) -> bool {
        self.isolation == Some(Isolation::Private)
    }
}

impl Survey {
    /// The host end of a machine's veth: a host link that points at `link` in the
    /// machine's namespace, and that `link` points back at (a device merely stacked on
    /// the machine's link points at it too, but is not pointed at).
    /// The machines that could not be read, with the reason: the survey is partial.
    pub fn unreadable(&self) -> impl Iterator<Item = (&str, &str)> {
        self.machines.iter().filter_map(|m| match &m.state {
            MachineState::Unreadable(why) => Some((m.name.as_str(), why.as_str())),
            _ => None,
        })
    }

    /// Says on stderr which machines could not be read; the exit code a command over the
    /// survey ends with when any could not (exit::PARTIAL), else `code`.
    pub fn report_unreadable(&self, code: i32) -> i32 {
        let mut partial = false;
        for (_, why) in self.unreadable() {
            // The reason names the machine already ("machine NAME: opening …").
            eprintln!("machnet: note: not read: {why}");
            partial = true;
        }
        if partial {
            crate::error::exit::PARTIAL
        } else {
            code
        }
    }

    pub fn host_peer(&self, machine: &MachineView, link: &Link) -> Option<&Link> {
        let nsid = machine.host_nsid?;
        link.detail.link_netnsid?;
        self.host.links.iter().find(|h| {
            h.detail.link_netnsid == Some(nsid)
                && h.detail.link == Some(link.ifindex)
                && link.detail.link == Some(h.ifindex)
        })
    }
}

/// Reads every machine (or those in `only`) and the host.
pub async fn survey(machined: &Machined, only: &[String]) -> Result<Survey> {
    crate::netns::raise_open_file_limit();
    crate::netns::require_privileges()?;
    let mut pinned: Vec<(MachineView, Option<PinnedNamespace>)> = Vec::new();
    for (name, path) in machined.list().await? {
        if name == ".host" || (!only.is_empty() && !only.contains(&name)) {
            continue;
        }
        let machine = match machined.machine_at(path).await {
            Ok(m) => m,
            // Gone between ListMachines and now: no longer a machine.
            Err(Error::NoSuchTarget(_)) => continue,
            Err(e) => return Err(e),
        };
        let mut view = MachineView {
            name: machine.name.clone(),
            leader: machine.leader,
            state: MachineState::Running,
            isolation: None,
            netns_inode: None,
            net: None,
            host_nsid: None,
            resolver: None,
        };
        let namespace = match pin_machine(machined, &machine, ExtraNamespaces::default()).await {
            Ok(ns) => {
                view.isolation = Some(ns.isolation);
                view.netns_inode = Some(ns.inode);
                Some(ns)
            }
            // A refused leader whose PID is alive: the number was handed to another
            // process, which is worth saying in those words.
            Err(Error::StaleMachine(why))
                if std::path::Path::new(&format!("/proc/{}", machine.leader)).exists() =>
            {
                view.state = MachineState::LeaderReused(why);
                None
            }
            Err(Error::StaleMachine(why)) => {
                view.state = MachineState::Stale(why);
                None
            }
            Err(e) => {
                view.state = MachineState::Unreadable(e.to_string());
                None
            }
        };
        pinned.push((view, namespace));
    }
    for name in only {
        if !pinned.iter().any(|(v, _)| &v.name == name) {
            let known: Vec<String> = machined
                .list()
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n != ".host")
                .collect();
            return Err(Error::NoSuchTarget(format!(
                "no machine named {name:?} is registered with systemd-machined; known machines: {}",
                known.join(", ")
            )));
        }
    }
    pinned.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    read_namespaces(&mut pinned);

    let host_ns = crate::netns::pin_own()?;
    let mut host_sock = host_ns.open_netlink()?;
    let host = read_namespace(&mut host_sock)?;
    let mut machines = Vec::with_capacity(pinned.len());
    for (mut view, namespace) in pinned {
        if let Some(ns) = &namespace {
            if view.is_private() {
                view.host_nsid = crate::peer::nsid_of(&mut host_sock, ns)?;
                view.resolver = read_resolver(view.leader, ns);
            }
        }
        machines.push(view);
    }
    let firewall = crate::why::host_ruleset().ok();
    Ok(Survey {
        host,
        forwarding: read_forwarding(),
        firewall,
        machines,
    })
}

/// Reads the pinned namespaces BATCH at a time: each batch's sockets made on one thread
/// that enters each namespace in turn, then read by up to READERS threads. A namespace
/// that cannot be read marks its machine unreadable.
fn read_namespaces(pinned: &mut [(MachineView, Option<PinnedNamespace>)]) {
    for batch in pinned.chunks_mut(BATCH) {
        let namespaces: Vec<&PinnedNamespace> =
            batch.iter().filter_map(|(_, ns)| ns.as_ref()).collect();
        let mut sockets = PinnedNamespace::open_netlink_each(&namespaces).into_iter();
        let jobs: Vec<ReadJob<'_>> = batch
            .iter_mut()
            .filter(|(_, ns)| ns.is_some())
            .map(|(view, _)| (view, sockets.next().expect("a socket for each namespace")))
            .collect();
        crate::workers::run_on_threads(jobs, READERS, |(view, socket): ReadJob<'_>| {
            match socket.and_then(|mut sock| read_namespace(&mut sock)) {
                Ok(net) => view.net = Some(net),
                Err(e) => view.state = MachineState::Unreadable(e.to_string()),
            }
        });
    }
}

/// A machine to fill in, and the socket to read its namespace with.
type ReadJob<'a> = (&'a mut MachineView, Result<NetlinkSocket>);

fn read_namespace(sock: &mut NetlinkSocket) -> Result<Namespace> {
    Ok(Namespace {
        links: link::links_with_addresses(sock)?,
        routes: main_routes(sock)?,
    })
}

/// The main table of both families (the table a machine's traffic leaves by, short of
/// policy rules), as facts.
fn main_routes(sock: &mut NetlinkSocket) -> Result<Vec<RouteFact>> {
    let mut facts = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let mut request = vec![0u8; 12];
        request[0] = family;
        attr::push(&mut request, RTA_TABLE, &RT_TABLE_MAIN.to_ne_bytes());
        let dumped = sock.dump(RTM_GETROUTE, &request, "reading routes", |msg| {
            if msg.kind != RTM_NEWROUTE {
                return Ok(());
            }
            let r = Route::parse(msg.payload).map_err(|e| {
                Error::Other(format!(
                    "the kernel sent a route machnet cannot decode ({})",
                    e.0
                ))
            })?;
            if r.flags & RTM_F_CLONED != 0 || r.table() != RT_TABLE_MAIN {
                return Ok(());
            }
            let first_hop = r.nexthops().next().and_then(|h| h.ok());
            let gateway = r.addr_attr(RTA_GATEWAY).or_else(|| {
                first_hop
                    .as_ref()
                    .and_then(|h| h.attr(RTA_GATEWAY))
                    .map(crate::route::message::to_ip)
            });
            let oif = r
                .u32_attr(RTA_OIF)
                .or_else(|| first_hop.as_ref().map(|h| h.ifindex).filter(|i| *i != 0));
            let hop_flags = first_hop.as_ref().map_or(0, |h| h.flags as u32);
            facts.push(RouteFact {
                family: r.family,
                dst: r.addr_attr(RTA_DST),
                dst_len: r.dst_len,
                gateway,
                oif,
                kind: r.kind,
                onlink: (r.flags | hop_flags) & RTNH_F_ONLINK != 0,
                linkdown: (r.flags | hop_flags) & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0,
            });
            Ok(())
        });
        match dumped {
            Ok(_) => {}
            // A namespace whose main table was never created has no routes.
            Err(Error::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(facts)
}

/// A machine's resolver through its leader's /proc entries: /proc/PID/root is its mount
/// namespace, /proc/PID/net its network namespace.
fn read_resolver(leader: u32, pinned: &PinnedNamespace) -> Option<Resolver> {
    let path = format!("/proc/{leader}/root/etc/resolv.conf");
    let conf = std::fs::read_to_string(&path).ok()?;
    let mut udp53 = Vec::new();
    for table in ["udp", "udp6"] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{leader}/net/{table}")) {
            udp53.extend(crate::why::dns::udp_listeners(&t, 53));
        }
    }
    // Read by PID: kept only if the pinned leader is still that PID's process.
    if !pinned.leader_alive().ok()? {
        return None;
    }
    Some(Resolver {
        path,
        nameservers: crate::why::dns::nameservers(&conf),
        udp53,
    })
}

/// The host's forwarding switches, read in machnet's own network namespace (the host's:
/// /proc/sys/net shows the namespace of the reader).
fn read_forwarding() -> Forwarding {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|v| v.trim() != "0");
    Forwarding {
        ipv4: read("/proc/sys/net/ipv4/ip_forward"),
        ipv6: read("/proc/sys/net/ipv6/conf/all/forwarding"),
    }
}

/// Namespaces named under /run/netns (`ip netns add`) that are neither the host's nor a
/// machine's, read as `netns:NAME`. Unreadable ones are skipped: they are extras.
pub fn named_namespaces(survey: &Survey) -> Vec<(String, Namespace)> {
    let mut known: Vec<u64> = survey
        .machines
        .iter()
        .filter_map(|m| m.netns_inode)
        .collect();
    known.extend(crate::netns::host_netns_inodes());
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let ns = crate::netns::pin_named(&name).ok()?;
            if known.contains(&ns.inode) {
                return None;
            }
            known.push(ns.inode);
            let mut sock = ns.open_netlink().ok()?;
            Some((format!("netns:{name}"), read_namespace(&mut sock).ok()?))
        })
        .collect()
}
