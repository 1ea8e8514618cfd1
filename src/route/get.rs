//! `route get`: the kernel's own routing decision for a destination (RTM_GETROUTE), asked
//! the way iproute2 6.1's iproute_get asks it.

use std::net::IpAddr;

use super::message::{AF_INET, AF_INET6, RTA_DST, RTA_IIF, RTA_MARK, RTA_OIF, RTA_SRC, RTA_UID};
use super::names::{parse_c_number, Names};
use super::spec::{parse_addr, parse_addr_and_len, SpecError};
use crate::link::LinkNames;
use crate::netlink::attr;

pub const RTM_GETROUTE: u16 = 26;
const RTM_F_LOOKUP_TABLE: u32 = 0x1000;
const RTA_IP_PROTO: u16 = 27;
const RTA_SPORT: u16 = 28;
const RTA_DPORT: u16 = 29;
const RTM_F_FIB_MATCH: u32 = 0x2000;

/// What every destination of one `route get` shares: `from`, `iif`, `oif`, `mark`, …
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub from: Option<(IpAddr, u8)>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub mark: Option<u32>,
    pub tos: u8,
    pub uid: Option<u32>,
    pub fibmatch: bool,
    /// What a packet would carry, for policy rules that match on it (`ip rule ... ipproto
    /// tcp dport 443`); iproute2 6.1 prints none of them back.
    pub ipproto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// Splits `words` into destinations and the options that go with them.
pub fn parse(
    words: &[String],
    names: &Names,
    options: &mut GetOptions,
) -> Result<Vec<IpAddr>, SpecError> {
    let bad = |i: usize, why: &str| SpecError {
        word: Some((i, words[i].clone())),
        why: why.to_string(),
    };
    let mut dests = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        let takes_value = matches!(
            word,
            "from"
                | "iif"
                | "oif"
                | "dev"
                | "mark"
                | "tos"
                | "dsfield"
                | "uid"
                | "to"
                | "ipproto"
                | "sport"
                | "dport"
        );
        let value = if takes_value {
            i += 1;
            match words.get(i) {
                Some(v) => v.as_str(),
                None => return Err(bad(i - 1, "needs a value")),
            }
        } else {
            ""
        };
        match word {
            // The address as given, never masked, as iproute2 sends it: the kernel takes
            // it as the packet's source and ignores the length.
            "from" => options.from = Some(parse_addr_and_len(value, 0).map_err(|e| bad(i, &e))?),
            "iif" => options.iif = Some(value.to_string()),
            "oif" | "dev" => options.oif = Some(value.to_string()),
            "mark" => {
                options.mark = Some(parse_c_number(value).ok_or_else(|| bad(i, "not a number"))?)
            }
            "uid" => {
                options.uid = Some(parse_c_number(value).ok_or_else(|| bad(i, "not a number"))?)
            }
            "tos" | "dsfield" => {
                options.tos = names
                    .dsfield_id(value)
                    .ok_or_else(|| bad(i, "not a TOS value"))?;
            }
            "fibmatch" => options.fibmatch = true,
            "ipproto" => {
                options.ipproto = Some(
                    super::protocols::number(value).ok_or_else(|| bad(i, "not an IP protocol"))?,
                )
            }
            "sport" | "dport" => {
                let port = parse_c_number(value)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| bad(i, "not a port number"))?;
                match word {
                    "sport" => options.sport = Some(port),
                    _ => options.dport = Some(port),
                }
            }
            "to" => dests.push(parse_addr(value, 0).map_err(|e| bad(i, &e))?),
            _ => {
                let addr = word.split_once('/').map_or(word, |(a, _)| a);
                dests.push(parse_addr(addr, 0).map_err(|e| {
                    bad(
                        i,
                        &format!("{e}; expected a destination or a route get option"),
                    )
                })?);
            }
        }
        i += 1;
    }
    Ok(dests)
}

/// The RTM_GETROUTE request for one destination.
pub fn encode(dst: IpAddr, options: &GetOptions, links: &LinkNames) -> Result<Vec<u8>, String> {
    let (family, host_len) = if dst.is_ipv4() {
        (AF_INET, 32)
    } else {
        (AF_INET6, 128)
    };
    let mut flags = 0;
    // As in iproute2: only IPv4 knows RTM_F_LOOKUP_TABLE (answer with the table used).
    if family == AF_INET {
        flags |= RTM_F_LOOKUP_TABLE;
    }
    if options.fibmatch {
        flags |= RTM_F_FIB_MATCH;
    }
    let src_len = options.from.map_or(0, |(_, len)| len);
    let mut msg = vec![family, host_len, src_len, options.tos, 0, 0, 0, 0];
    msg.extend_from_slice(&flags.to_ne_bytes());
    attr::push(&mut msg, RTA_DST, &bytes(dst));
    if let Some((from, _)) = options.from {
        if from.is_ipv4() != dst.is_ipv4() {
            return Err(format!(
                "from {from} and destination {dst} are of different families"
            ));
        }
        attr::push(&mut msg, RTA_SRC, &bytes(from));
    }
    for (kind, dev) in [(RTA_IIF, &options.iif), (RTA_OIF, &options.oif)] {
        if let Some(dev) = dev {
            let index = links.index_of(dev).ok_or_else(|| {
                format!(
                    "there is no device {dev:?} here (devices: {})",
                    links.names_sorted().join(", ")
                )
            })?;
            attr::push(&mut msg, kind, &index.to_ne_bytes());
        }
    }
    if let Some(mark) = options.mark.filter(|m| *m != 0) {
        attr::push(&mut msg, RTA_MARK, &mark.to_ne_bytes());
    }
    if let Some(uid) = options.uid {
        attr::push(&mut msg, RTA_UID, &uid.to_ne_bytes());
    }
    if let Some(ipproto) = options.ipproto {
        attr::push(&mut msg, RTA_IP_PROTO, &[ipproto]);
    }
    for (kind, port) in [(RTA_SPORT, options.sport), (RTA_DPORT, options.dport)] {
        if let Some(port) = port {
            attr::push(&mut msg, kind, &port.to_be_bytes());
        }
    }
    Ok(msg)
}

fn bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn destinations_and_options() {
        let mut opts = GetOptions::default();
        let dests = parse(
            &words("10.1.2.3 from 10.88.0.2 mark 7 fd01::1 oif eth0"),
            &Names::builtin(),
            &mut opts,
        )
        .unwrap();
        assert_eq!(
            dests,
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd01::1".parse().unwrap()
            ]
        );
        assert_eq!(opts.mark, Some(7));
        assert_eq!(opts.oif.as_deref(), Some("eth0"));
        assert_eq!(opts.from, Some(("10.88.0.2".parse().unwrap(), 32)));
    }

    #[test]
    fn packet_fields_for_policy_rules() {
        let mut opts = GetOptions::default();
        parse(
            &words("10.1.2.3 ipproto 6 sport 0x10 dport 443"),
            &Names::builtin(),
            &mut opts,
        )
        .unwrap();
        assert_eq!(
            (opts.ipproto, opts.sport, opts.dport),
            (Some(6), Some(16), Some(443))
        );
        let mut opts = GetOptions::default();
        assert!(parse(&words("10.1.2.3 dport 65536"), &Names::builtin(), &mut opts).is_err());
    }

    #[test]
    fn a_bad_word_is_named() {
        let mut opts = GetOptions::default();
        let err = parse(&words("10.1.2.3 mark"), &Names::builtin(), &mut opts).unwrap_err();
        assert_eq!(err.word, Some((1, "mark".into())));
        let err = parse(&words("nonsense"), &Names::builtin(), &mut opts).unwrap_err();
        assert_eq!(err.word, Some((0, "nonsense".into())));
    }
}
