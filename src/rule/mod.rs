//! Policy routing rules (`ip rule`): the RTM_GETRULE dump and a checked view of each
//! RTM_NEWRULE message (struct fib_rule_hdr, then FRA_* attributes).

pub mod print;

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::netlink::attr::Attrs;
use crate::netlink::{retry_interrupted, NetlinkSocket};
use crate::route::message::to_ip;

const RTM_NEWRULE: u16 = 32;
const RTM_GETRULE: u16 = 34;
/// sizeof(struct fib_rule_hdr): family, dst_len, src_len, tos, table, res1, res2, action,
/// then a u32 of FIB_RULE_* flags.
const FIB_RULE_HDR_LEN: usize = 12;

pub const FRA_DST: u16 = 1;
pub const FRA_SRC: u16 = 2;
pub const FRA_IIFNAME: u16 = 3;
pub const FRA_GOTO: u16 = 4;
/// RTA_GATEWAY, which only the long-gone NAT rules carried; iproute2 still prints it.
pub const FRA_NAT_GATEWAY: u16 = 5;
pub const FRA_PRIORITY: u16 = 6;
pub const FRA_FWMARK: u16 = 10;
pub const FRA_FLOW: u16 = 11;
pub const FRA_TUN_ID: u16 = 12;
pub const FRA_SUPPRESS_IFGROUP: u16 = 13;
pub const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
pub const FRA_TABLE: u16 = 15;
pub const FRA_FWMASK: u16 = 16;
pub const FRA_OIFNAME: u16 = 17;
pub const FRA_L3MDEV: u16 = 19;
pub const FRA_UID_RANGE: u16 = 20;
pub const FRA_PROTOCOL: u16 = 21;
pub const FRA_IP_PROTO: u16 = 22;
pub const FRA_SPORT_RANGE: u16 = 23;
pub const FRA_DPORT_RANGE: u16 = 24;
const FRA_SLOTS: usize = 32;

pub const FIB_RULE_INVERT: u32 = 0x2;
pub const FIB_RULE_UNRESOLVED: u32 = 0x4;
pub const FIB_RULE_IIF_DETACHED: u32 = 0x8;
pub const FIB_RULE_OIF_DETACHED: u32 = 0x10;

pub const FR_ACT_TO_TBL: u8 = 1;
pub const FR_ACT_GOTO: u8 = 2;
pub const FR_ACT_NOP: u8 = 3;
/// RTN_NAT as an action: a rule type the kernel no longer accepts, printed all the same.
pub const FR_ACT_NAT: u8 = 10;

/// One rule as the kernel sent it: the header's fields and the attributes by type.
#[derive(Debug)]
pub struct Rule<'a> {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    pub table: u8,
    pub action: u8,
    pub flags: u32,
    attrs: [Option<&'a [u8]>; FRA_SLOTS],
}

impl<'a> Rule<'a> {
    /// Reads and checks a message: every attribute printed has the size the kernel gives
    /// it, so printing never has to guess (a message that fails is an error, not a skip).
    pub fn parse(payload: &'a [u8]) -> Result<Rule<'a>> {
        if payload.len() < FIB_RULE_HDR_LEN {
            return Err(malformed("short fib_rule_hdr"));
        }
        let mut attrs = [None; FRA_SLOTS];
        for attr in Attrs::new(&payload[FIB_RULE_HDR_LEN..]) {
            let attr = attr.map_err(|e| malformed(e.0))?;
            if let Some(slot) = attrs.get_mut(attr.kind as usize) {
                *slot = Some(attr.payload);
            }
        }
        let rule = Rule {
            family: payload[0],
            dst_len: payload[1],
            src_len: payload[2],
            tos: payload[3],
            table: payload[4],
            action: payload[7],
            flags: u32::from_ne_bytes(payload[8..12].try_into().unwrap()),
            attrs,
        };
        rule.validate()?;
        Ok(rule)
    }

    fn validate(&self) -> Result<()> {
        let sizes: [(u16, usize); 15] = [
            (FRA_GOTO, 4),
            (FRA_PRIORITY, 4),
            (FRA_FWMARK, 4),
            (FRA_FLOW, 4),
            (FRA_TUN_ID, 8),
            (FRA_SUPPRESS_IFGROUP, 4),
            (FRA_SUPPRESS_PREFIXLEN, 4),
            (FRA_TABLE, 4),
            (FRA_FWMASK, 4),
            (FRA_L3MDEV, 1),
            (FRA_UID_RANGE, 8),
            (FRA_PROTOCOL, 1),
            (FRA_IP_PROTO, 1),
            (FRA_SPORT_RANGE, 4),
            (FRA_DPORT_RANGE, 4),
        ];
        for (kind, size) in sizes {
            if let Some(payload) = self.attr(kind) {
                if payload.len() < size {
                    return Err(malformed(format!(
                        "attribute {kind} has {} bytes, expected {size}",
                        payload.len()
                    )));
                }
            }
        }
        for kind in [FRA_SRC, FRA_DST, FRA_NAT_GATEWAY] {
            if self.attr(kind).is_some() {
                self.addr(kind)?;
            }
        }
        Ok(())
    }

    pub fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs.get(kind as usize).copied().flatten()
    }

    pub fn u32(&self, kind: u16) -> Option<u32> {
        self.attr(kind)
            .map(|b| u32::from_ne_bytes(b[..4].try_into().unwrap()))
    }

    pub fn u8(&self, kind: u16) -> Option<u8> {
        self.attr(kind).map(|b| b[0])
    }

    /// Two native-endian numbers back to back: fib_rule_uid_range (u32s) or
    /// fib_rule_port_range (u16s).
    pub fn range(&self, kind: u16) -> Option<(u32, u32)> {
        let b = self.attr(kind)?;
        Some(match kind {
            FRA_UID_RANGE => (
                u32::from_ne_bytes(b[0..4].try_into().unwrap()),
                u32::from_ne_bytes(b[4..8].try_into().unwrap()),
            ),
            _ => (
                u16::from_ne_bytes([b[0], b[1]]) as u32,
                u16::from_ne_bytes([b[2], b[3]]) as u32,
            ),
        })
    }

    /// An address attribute, which must be as long as the family's addresses.
    pub fn addr(&self, kind: u16) -> Result<IpAddr> {
        let payload = self.attr(kind).unwrap_or(&[]);
        let want = match self.family as i32 {
            libc::AF_INET => 4,
            libc::AF_INET6 => 16,
            other => return Err(malformed(format!("family {other}"))),
        };
        if payload.len() != want {
            return Err(malformed(format!(
                "attribute {kind}: {} address bytes for family {}",
                payload.len(),
                self.family
            )));
        }
        Ok(to_ip(payload))
    }

    /// af_bit_len: the prefix length that means one host (then no `/len` is printed).
    pub fn host_len(&self) -> u8 {
        match self.family as i32 {
            libc::AF_INET6 => 128,
            libc::AF_INET => 32,
            _ => 0,
        }
    }

    /// FRA_TABLE when sent (tables above 255), else the header's byte.
    pub fn table(&self) -> u32 {
        self.u32(FRA_TABLE).unwrap_or(self.table as u32)
    }
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::Other(format!(
        "the kernel sent a rule message machnet cannot decode ({why})"
    ))
}

/// Dumps the rules of one family (AF_INET or AF_INET6; `ip rule` asks for one only) and
/// hands each to `on_rule`, taking the whole dump again if the kernel flags it
/// interrupted; `on_rule` writes into the fresh `T` of each attempt.
pub fn dump<T: Default>(
    sock: &mut NetlinkSocket,
    family: u8,
    mut on_rule: impl FnMut(&mut T, &Rule<'_>) -> Result<()>,
) -> Result<T> {
    let mut request = [0u8; FIB_RULE_HDR_LEN];
    request[0] = family;
    retry_interrupted("listing rules", |state: &mut T| {
        sock.dump(RTM_GETRULE, &request, "listing rules", |msg| {
            if msg.kind == RTM_NEWRULE {
                on_rule(state, &Rule::parse(msg.payload)?)?;
            }
            Ok(())
        })
    })
}
