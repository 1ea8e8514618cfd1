//! A neighbour entry as iproute2 6.1's `ip neigh show` prints it (ip/ipneigh.c,
//! print_neigh, without -s), in text or `ip -j` JSON. Every text field ends in a space,
//! so every line does too, as ip's do.

use std::collections::HashMap;

use super::*;
use crate::link::LinkNames;
use crate::route::emit::Emitter;
use crate::route::format::ip_string;
use crate::route::names::Names;

/// The namespace's devices: names for `dev`, and types, which decide how `lladdr` prints.
pub struct Devices {
    pub names: LinkNames,
    pub types: HashMap<u32, u16>,
}

impl Devices {
    pub fn from_links(links: &[crate::link::Link]) -> Devices {
        Devices {
            names: LinkNames::from_links(links),
            types: links
                .iter()
                .map(|l| (l.ifindex, l.detail.link_type))
                .collect(),
        }
    }
}

pub struct NeighPrinter<'n> {
    pub names: &'n Names,
    pub devices: &'n Devices,
}

impl NeighPrinter<'_> {
    pub(crate) fn print(&self, n: &Neighbour<'_>, e: &mut Emitter<'_>) {
        e.open_object(None);
        if let Some(dst) = n.dst {
            e.string("dst", "", &ip_string(dst));
        }
        if n.ifindex != 0 {
            e.string("dev", "dev ", &self.devices.names.name(n.ifindex));
        }
        if let Some(lladdr) = n.lladdr {
            // ll_index_to_type: 0 for a device it does not know, so plain hex.
            let kind = self.devices.types.get(&n.ifindex).copied().unwrap_or(0);
            let text = crate::link_brief::hardware_address(lladdr, kind);
            e.string("lladdr", "lladdr ", &text);
        }
        for (set, word) in [
            (n.flags & NTF_ROUTER != 0, "router"),
            (n.flags & NTF_PROXY != 0, "proxy"),
            (n.ext_flags & NTF_EXT_MANAGED != 0, "managed"),
            (n.flags & NTF_EXT_LEARNED != 0, "extern_learn"),
            (n.flags & NTF_OFFLOADED != 0, "offload"),
        ] {
            if set {
                e.null(word, &format!("{word} "));
            }
        }
        // An entry in no state (NUD_NONE) has no "state" key at all.
        if n.state != 0 {
            e.open_array("state");
            for (bit, word) in NUD_STATES {
                if n.state & bit != 0 {
                    e.array_string(word);
                }
            }
            e.close_array();
        }
        if n.protocol != 0 {
            let name = self.names.protocol(n.protocol).to_string();
            e.string("protocol", "proto ", &name);
        }
        e.close_object();
        e.text("\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::emit::Format;

    fn both(n: &Neighbour<'_>) -> (String, String) {
        let names = Names::builtin();
        let devices = Devices {
            names: LinkNames::from_pairs([(2, "eth0".to_string())]),
            types: [(2, 1)].into_iter().collect(),
        };
        let printer = NeighPrinter {
            names: &names,
            devices: &devices,
        };
        let mut out = [Vec::new(), Vec::new()];
        for (format, out) in [Format::Text, Format::Json].into_iter().zip(&mut out) {
            printer.print(n, &mut Emitter::new(format, out));
        }
        let [text, json] = out;
        (
            String::from_utf8(text).unwrap(),
            String::from_utf8(json).unwrap(),
        )
    }

    #[test]
    fn an_ipv6_router_entry() {
        let mac = [2, 0, 0, 0, 0, 0x12];
        let n = Neighbour {
            family: libc::AF_INET6 as u8,
            ifindex: 2,
            state: 0x04,
            flags: NTF_ROUTER | NTF_EXT_LEARNED,
            dst: Some("fd01::2".parse().unwrap()),
            lladdr: Some(&mac),
            protocol: 4,
            ext_flags: 0,
        };
        let (text, json) = both(&n);
        assert_eq!(
            text,
            "fd01::2 dev eth0 lladdr 02:00:00:00:00:12 router extern_learn STALE proto static \n"
        );
        assert_eq!(
            json,
            r#"{"dst":"fd01::2","dev":"eth0","lladdr":"02:00:00:00:00:12","router":null,"extern_learn":null,"state":["STALE"],"protocol":"static"}"#
        );
    }

    #[test]
    fn a_proxy_entry_and_an_unknown_device() {
        let n = Neighbour {
            family: libc::AF_INET as u8,
            ifindex: 9,
            state: 0,
            flags: NTF_PROXY,
            dst: Some("10.1.0.20".parse().unwrap()),
            lladdr: None,
            protocol: 0,
            ext_flags: 0,
        };
        let (text, json) = both(&n);
        assert_eq!(text, "10.1.0.20 dev if9 proxy \n");
        assert_eq!(json, r#"{"dst":"10.1.0.20","dev":"if9","proxy":null}"#);
    }
}
