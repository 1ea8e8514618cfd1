//! Naming a veth's other end across the namespace boundary: the container's `host0` is the
//! host's `ve-qbittorrent`, enslaved to bridge `br0`. `ip` shows only `host0@if7`.
//!
//! The container's link says "my peer is ifindex N in the namespace with id K" — but K is
//! the container's own name for the host namespace. So we ask the host which id *it* gives
//! the container's namespace (RTM_GETNSID by fd) and look for a host link pointing back:
//! same id, and an ifindex equal to the container link's.

use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::link::{self, Link};
use crate::link_brief::Peer;
use crate::netlink::attr::{self, Attrs};
use crate::netlink::NetlinkSocket;
use crate::netns::PinnedNamespace;

const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// For each link of `links` (in `namespace`) whose peer sits in the host namespace, that
/// peer; `None` where there is none or it lives elsewhere.
pub fn host_peers(namespace: &PinnedNamespace, links: &[Link]) -> Result<Vec<Option<Peer>>> {
    if !links.iter().any(|l| l.detail.link_netnsid.is_some()) {
        return Ok(vec![None; links.len()]);
    }
    let host = crate::netns::pin_own()?;
    let mut sock = host.open_netlink()?;
    let host_links = link::dump_links(&mut sock)?;
    host_peers_among(&mut sock, &host_links, namespace, links)
}

/// As [`host_peers`], for a caller that has read the host's links already: `sock` is a
/// socket in the host's namespace, `host_links` its links.
pub fn host_peers_among(
    sock: &mut NetlinkSocket,
    host_links: &[Link],
    namespace: &PinnedNamespace,
    links: &[Link],
) -> Result<Vec<Option<Peer>>> {
    if !links.iter().any(|l| l.detail.link_netnsid.is_some()) {
        return Ok(vec![None; links.len()]);
    }
    let Some(nsid) = nsid_of(sock, namespace)? else {
        return Ok(vec![None; links.len()]);
    };
    Ok(links
        .iter()
        .map(|l| {
            l.detail.link_netnsid?;
            // Both ends must point at each other: a device merely stacked on ours (a
            // macvlan moved to the host) points at us too, but we do not point at it.
            let peer = host_links.iter().find(|h| {
                h.detail.link_netnsid == Some(nsid)
                    && h.detail.link == Some(l.ifindex)
                    && l.detail.link == Some(h.ifindex)
            })?;
            let master = peer
                .detail
                .master
                .and_then(|m| host_links.iter().find(|h| h.ifindex == m))
                .map(|m| m.ifname.clone());
            Some(Peer {
                ifname: peer.ifname.clone(),
                namespace: ".host".into(),
                master,
            })
        })
        .collect())
}

/// The id the socket's namespace gives `other` (None: it has given it none).
pub(crate) fn nsid_of(sock: &mut NetlinkSocket, other: &PinnedNamespace) -> Result<Option<i32>> {
    let mut request = vec![0u8; 4]; // struct rtgenmsg, padded
    attr::push(
        &mut request,
        NETNSA_FD,
        &(other.netns_fd().as_raw_fd() as u32).to_ne_bytes(),
    );
    let mut nsid = None;
    sock.query_many(
        RTM_GETNSID,
        &[request],
        "asking the host for a namespace id",
        |_, answer| {
            let msg = answer?;
            if msg.kind == RTM_NEWNSID {
                for a in Attrs::new(msg.payload.get(4..).unwrap_or(&[])) {
                    let a = a.map_err(|e| {
                        Error::Other(format!("undecodable namespace id answer ({})", e.0))
                    })?;
                    if a.kind == NETNSA_NSID {
                        let id = a.u32().map_err(|e| Error::Other(e.0))? as i32;
                        nsid = (id >= 0).then_some(id);
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(nsid)
}
