//! A rule as iproute2 6.1's `ip rule show` prints it (ip/iprule.c, print_rule), in text
//! or `ip -j` JSON, through the shared [`Emitter`]. Without `-d`, as plain `ip rule`,
//! so `proto` shows only for protocols other than unspec and kernel.

use super::*;
use crate::route::emit::Emitter;
use crate::route::format::ip_string;
use crate::route::names::{route_type, Names};
use crate::route::protocols;

const RTPROT_KERNEL: u8 = 2;

pub struct RulePrinter<'n> {
    pub names: &'n Names,
    /// Show interface names with control characters as \xNN (on a terminal).
    pub printable_names: bool,
}

impl RulePrinter<'_> {
    /// Writes one rule: a text line, or one JSON object (comma first when not the first
    /// in `e`'s array).
    pub(crate) fn print(&self, r: &Rule<'_>, e: &mut Emitter<'_>) -> Result<()> {
        e.open_object(None);
        self.print_fields(r, e)?;
        e.close_object();
        e.text("\n");
        Ok(())
    }

    fn print_fields(&self, r: &Rule<'_>, e: &mut Emitter<'_>) -> Result<()> {
        let host_len = r.host_len();
        let prio = r.u32(FRA_PRIORITY).unwrap_or(0);
        e.uint_suffix("priority", "", prio as u64, ":\t");
        if r.flags & FIB_RULE_INVERT != 0 {
            e.null("not", "not ");
        }
        // from / to: a prefix, `0/len` for a length without an address, else `all`
        // (for `to`, nothing).
        if r.attr(FRA_SRC).is_some() {
            e.text("from ");
            e.string_bare("src", "", &ip_string(r.addr(FRA_SRC)?));
            if r.src_len != host_len {
                e.uint_bare("srclen", "/", r.src_len as u64);
            }
        } else if r.src_len != 0 {
            e.string_bare("src", "from ", "0");
            e.uint_bare("srclen", "/", r.src_len as u64);
        } else {
            e.string_bare("src", "from ", "all");
        }
        if r.attr(FRA_DST).is_some() {
            e.text(" to ");
            e.string_bare("dst", "", &ip_string(r.addr(FRA_DST)?));
            if r.dst_len != host_len {
                e.uint_bare("dstlen", "/", r.dst_len as u64);
            }
        } else if r.dst_len != 0 {
            e.string_bare("dst", " to ", "0");
            e.uint_bare("dstlen", "/", r.dst_len as u64);
        }
        if r.tos != 0 {
            e.string_bare("tos", " tos ", &self.names.dsfield(r.tos));
        }
        let (mark, mask) = (r.u32(FRA_FWMARK), r.u32(FRA_FWMASK));
        if mark.is_some() || mask.is_some() {
            e.string_bare("fwmark", " fwmark ", &c_hex(mark.unwrap_or(0)));
            // A full mask is what a bare `fwmark N` sets; ip leaves it out.
            if let Some(mask) = mask.filter(|m| *m != u32::MAX) {
                e.string_bare("fwmask", "/", &c_hex(mask));
            }
        }
        for (kind, key, word, detached, detached_key) in [
            (
                FRA_IIFNAME,
                "iif",
                " iif ",
                FIB_RULE_IIF_DETACHED,
                "iif_detached",
            ),
            (
                FRA_OIFNAME,
                "oif",
                " oif ",
                FIB_RULE_OIF_DETACHED,
                "oif_detached",
            ),
        ] {
            if let Some(name) = r.attr(kind) {
                let name = c_string(name);
                let name = match self.printable_names {
                    true => crate::link::printable_name(&name),
                    false => name,
                };
                e.text(word);
                e.string_bare(key, "", &name);
                // The kernel keeps a rule whose device is gone (or not there yet).
                if r.flags & detached != 0 {
                    e.null(detached_key, " [detached]");
                }
            }
        }
        if r.u8(FRA_L3MDEV).is_some_and(|m| m != 0) {
            e.null("l3mdev", " lookup [l3mdev-table]");
        }
        if let Some((start, end)) = r.range(FRA_UID_RANGE) {
            e.uint_bare("uid_start", " uidrange ", start as u64);
            e.uint_bare("uid_end", "-", end as u64);
        }
        if let Some(proto) = r.u8(FRA_IP_PROTO) {
            e.string_bare("ipproto", " ipproto ", &protocols::name(proto));
        }
        for (kind, key, word) in [
            (FRA_SPORT_RANGE, "sport", " sport "),
            (FRA_DPORT_RANGE, "dport", " dport "),
        ] {
            if let Some((start, end)) = r.range(kind) {
                if start == end {
                    e.uint_bare(key, word, start as u64);
                } else {
                    e.uint_bare(&format!("{key}_start"), word, start as u64);
                    e.uint_bare(&format!("{key}_end"), "-", end as u64);
                }
            }
        }
        if let Some(b) = r.attr(FRA_TUN_ID) {
            let id = u64::from_be_bytes(b[..8].try_into().unwrap());
            e.uint_bare("tun_id", " tun_id ", id);
        }
        let table = r.table();
        if table != 0 {
            e.string_bare("table", " lookup ", &self.names.table(table).to_string());
            // -1 is the kernel's "not set" for both.
            if let Some(pl) = r.u32(FRA_SUPPRESS_PREFIXLEN).map(|v| v as i32) {
                if pl != -1 {
                    let text = format!(" suppress_prefixlength {pl}");
                    e.int("suppress_prefixlen", &text, pl as i64);
                }
            }
            if let Some(group) = r.u32(FRA_SUPPRESS_IFGROUP) {
                if group as i32 != -1 {
                    let name = self.names.group(group);
                    e.string_bare("suppress_ifgroup", " suppress_ifgroup ", &name);
                }
            }
        }
        if let Some(flow) = r.u32(FRA_FLOW) {
            let (from, to) = (flow >> 16, flow & 0xffff);
            if from != 0 {
                e.string_bare("flow_from", " realms ", &self.names.realm(from).to_string());
                e.text("/");
            } else {
                e.text(" realms ");
            }
            e.string_bare("flow_to", "", &self.names.realm(to).to_string());
        }
        match r.action {
            FR_ACT_NAT => match r.attr(FRA_NAT_GATEWAY) {
                Some(_) => {
                    let gw = ip_string(r.addr(FRA_NAT_GATEWAY)?);
                    e.string_bare("nat_gateway", " map-to ", &gw);
                }
                None => e.null("masquerade", " masquerade"),
            },
            FR_ACT_GOTO => {
                match r.u32(FRA_GOTO) {
                    Some(target) => e.uint_bare("goto", " goto ", target as u64),
                    None => e.string_bare("goto", " goto ", "none"),
                }
                // The rule it jumps to does not exist (yet).
                if r.flags & FIB_RULE_UNRESOLVED != 0 {
                    e.null("unresolved", " [unresolved]");
                }
            }
            FR_ACT_NOP => e.null("nop", " nop"),
            FR_ACT_TO_TBL => {}
            // blackhole, unreachable, prohibit: FR_ACT_* share RTN_* numbers and names.
            other => e.string_bare("action", " ", &route_type(other).to_string()),
        }
        if let Some(proto) = r.u8(FRA_PROTOCOL) {
            if proto != 0 && proto != RTPROT_KERNEL {
                e.string_bare(
                    "protocol",
                    " proto ",
                    &self.names.protocol(proto).to_string(),
                );
            }
        }
        Ok(())
    }
}

/// printf's `%#x`: `0x` before the digits, except for zero, which is plain `0`.
fn c_hex(value: u32) -> String {
    match value {
        0 => "0".to_string(),
        v => format!("{v:#x}"),
    }
}

/// A NUL-terminated name attribute; bytes that are not UTF-8 are shown lossily.
fn c_string(payload: &[u8]) -> String {
    let raw = payload.split(|b| *b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr::push;
    use crate::route::emit::Format;

    fn message(header: [u8; 12], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut msg = header.to_vec();
        for (kind, payload) in attrs {
            push(&mut msg, *kind, payload);
        }
        msg
    }

    fn both(msg: &[u8]) -> (String, String) {
        let names = Names::builtin();
        let rule = Rule::parse(msg).unwrap();
        let mut out = [Vec::new(), Vec::new()];
        for (format, out) in [Format::Text, Format::Json].into_iter().zip(&mut out) {
            let printer = RulePrinter {
                names: &names,
                printable_names: false,
            };
            let mut e = Emitter::new(format, out);
            printer.print(&rule, &mut e).unwrap();
        }
        let [text, json] = out;
        (
            String::from_utf8(text).unwrap(),
            String::from_utf8(json).unwrap(),
        )
    }

    const INET: u8 = libc::AF_INET as u8;

    #[test]
    fn the_default_rules() {
        let msg = message(
            [INET, 0, 0, 0, 254, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0],
            &[
                (FRA_PRIORITY, 32766u32.to_ne_bytes().to_vec()),
                (FRA_TABLE, 254u32.to_ne_bytes().to_vec()),
                (FRA_PROTOCOL, vec![RTPROT_KERNEL]),
            ],
        );
        let (text, json) = both(&msg);
        assert_eq!(text, "32766:\tfrom all lookup main\n");
        assert_eq!(json, r#"{"priority":32766,"src":"all","table":"main"}"#);
    }

    #[test]
    fn inverted_prefixes_marks_and_goto() {
        let mut flags = [0u8; 4];
        flags.copy_from_slice(&(FIB_RULE_INVERT | FIB_RULE_UNRESOLVED).to_ne_bytes());
        let msg = message(
            [
                INET,
                24,
                16,
                0,
                0,
                0,
                0,
                FR_ACT_GOTO,
                flags[0],
                flags[1],
                flags[2],
                flags[3],
            ],
            &[
                (FRA_PRIORITY, 5u32.to_ne_bytes().to_vec()),
                (FRA_SRC, vec![10, 1, 0, 0]),
                (FRA_DST, vec![10, 2, 3, 0]),
                (FRA_FWMARK, 0u32.to_ne_bytes().to_vec()),
                (FRA_FWMASK, 0xffu32.to_ne_bytes().to_vec()),
                (FRA_GOTO, 9999u32.to_ne_bytes().to_vec()),
                (FRA_PROTOCOL, vec![4]),
            ],
        );
        let (text, json) = both(&msg);
        assert_eq!(
            text,
            "5:\tnot from 10.1.0.0/16 to 10.2.3.0/24 fwmark 0/0xff goto 9999 [unresolved] proto static\n"
        );
        assert_eq!(
            json,
            r#"{"priority":5,"not":null,"src":"10.1.0.0","srclen":16,"dst":"10.2.3.0","dstlen":24,"fwmark":"0","fwmask":"0xff","goto":9999,"unresolved":null,"protocol":"static"}"#
        );
    }

    #[test]
    fn ranges_and_actions() {
        let ports = |a: u16, b: u16| [a.to_ne_bytes(), b.to_ne_bytes()].concat();
        let uids = [1000u32.to_ne_bytes(), 2000u32.to_ne_bytes()].concat();
        let msg = message(
            [INET, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0],
            &[
                (FRA_UID_RANGE, uids),
                (FRA_IP_PROTO, vec![255]),
                (FRA_SPORT_RANGE, ports(1000, 2000)),
                (FRA_DPORT_RANGE, ports(443, 443)),
                (FRA_FLOW, ((3u32 << 16) | 4).to_ne_bytes().to_vec()),
            ],
        );
        let (text, _) = both(&msg);
        assert!(
            text.starts_with("0:\tfrom all uidrange 1000-2000 ipproto "),
            "{text}"
        );
        assert!(
            text.ends_with(" sport 1000-2000 dport 443 realms 3/4 blackhole\n"),
            "{text}"
        );
    }

    #[test]
    fn a_short_address_is_an_error() {
        let msg = message(
            [INET, 0, 32, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            &[(FRA_SRC, vec![10, 1])],
        );
        assert!(Rule::parse(&msg).is_err());
    }

    #[test]
    fn hex_as_printf_writes_it() {
        assert_eq!(c_hex(0), "0");
        assert_eq!(c_hex(0x10), "0x10");
        assert_eq!(c_hex(u32::MAX), "0xffffffff");
    }
}
