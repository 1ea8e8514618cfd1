//! `machnet rules` and `machnet neigh` against `ip rule show` and `ip neigh show` in the
//! same namespace: text byte for byte, JSON value for value, for every family selection,
//! over rule and neighbour shapes this test adds to the corpus machine and to a scratch
//! namespace of its own.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const MACHINES: &[&str] = &["corpus", "qbittorrent", "empty", "hostshare"];

/// (machnet arguments, the same selection for `ip`), for rules.
const RULE_SELECTIONS: &[(&[&str], &[&str])] = &[
    (&[], &["rule", "show"]),
    (&["-4"], &["-4", "rule", "show"]),
    (&["-6"], &["-6", "rule", "show"]),
];

/// The same for neighbours: each family with the default state filter, proxies, and
/// the `nud` filters that show what the default hides.
const NEIGH_SELECTIONS: &[(&[&str], &[&str])] = &[
    (&[], &["neigh", "show"]),
    (&["-4"], &["-4", "neigh", "show"]),
    (&["-6"], &["-6", "neigh", "show"]),
    (&["--proxy"], &["neigh", "show", "proxy"]),
    (&["-4", "--proxy"], &["-4", "neigh", "show", "proxy"]),
    (&["-6", "--proxy"], &["-6", "neigh", "show", "proxy"]),
    (&["--nud", "all"], &["neigh", "show", "nud", "all"]),
    (
        &["-6", "--nud", "all"],
        &["-6", "neigh", "show", "nud", "all"],
    ),
    (&["--nud", "noarp"], &["neigh", "show", "nud", "noarp"]),
    (
        &["--nud", "perm", "--nud", "none"],
        &["neigh", "show", "nud", "perm", "nud", "none"],
    ),
    (&["--nud", "stale"], &["neigh", "show", "nud", "stale"]),
];

/// Rule shapes, IPv4 (`-4` prefixed as given) and IPv6; `PRIO` is replaced by a priority
/// of the test's own. In the corpus every one must leave ordinary traffic alone (other
/// tests ask that machine for routing decisions), so the selectors match nothing real.
const RULES: &[&str] = &[
    "from 10.201.0.0/16 to 10.202.3.0/24 table 100 priority PRIO",
    "from 10.201.2.3 table 1000 priority PRIO",
    "to 10.203.0.1 table 4294967290 priority PRIO",
    "iif lo from 10.204.0.0/16 table main priority PRIO",
    "oif gone0 table 100 priority PRIO",
    "fwmark 0x10/0xff table 100 priority PRIO",
    "fwmark 0x20 table local priority PRIO",
    "fwmark 0/0xff00 table default priority PRIO",
    "not from 10.205.0.0/16 fwmark 0x30 goto 32766 priority PRIO",
    "fwmark 0x31 goto 30999 priority PRIO",
    "fwmark 0x40 table main suppress_prefixlength 0 priority PRIO",
    "fwmark 0x41 table main suppress_ifgroup 5 priority PRIO",
    "uidrange 61000-61100 table 100 priority PRIO",
    "uidrange 61200-61200 table 100 priority PRIO",
    "ipproto tcp sport 1000-2000 dport 4443 from 10.206.0.0/16 table 100 priority PRIO",
    "ipproto udp dport 5353-5354 from 10.206.0.0/16 table 100 priority PRIO",
    "ipproto 253 from 10.206.0.0/16 table 100 priority PRIO",
    "blackhole from 10.207.0.0/16 priority PRIO",
    "unreachable from 10.208.0.0/16 priority PRIO",
    "prohibit to 10.209.0.0/16 from 10.207.1.0/24 priority PRIO",
    "nop fwmark 0x50 priority PRIO",
    "tos 0x10 from 10.210.0.0/16 table 100 priority PRIO",
    "realms 3/4 from 10.211.0.0/16 table 100 priority PRIO",
    "realms 7 from 10.211.0.0/16 table 100 priority PRIO",
    "from 10.212.0.0/16 table 100 proto static priority PRIO",
    "from 10.212.0.0/16 table 100 proto 200 priority PRIO",
    "from 10.212.0.0/16 table 100 proto kernel priority PRIO",
    "l3mdev fwmark 0x60 priority PRIO",
    "-6 from fd20::/16 to fd21::1 table 100 priority PRIO",
    "-6 iif lo fwmark 0x3 table local priority PRIO",
    "-6 blackhole to fd22::/64 priority PRIO",
    "-6 not from fd23::/16 fwmark 0x70 table 4294967290 priority PRIO",
    "-6 ipproto ipv6-icmp from fd24::/16 table main suppress_prefixlength 64 priority PRIO",
    "-6 uidrange 61000-61100 from fd25::/16 table 1000 priority PRIO",
];

/// Rules added on construction, each at its own priority; deleted when dropped (by
/// priority, which is unique to each), also when the test fails.
struct AddedRules<'a> {
    ip: &'a dyn Fn(&[&str]) -> Output,
    added: Vec<(bool, u32)>,
}

impl<'a> AddedRules<'a> {
    fn add(ip: &'a dyn Fn(&[&str]) -> Output, first_priority: u32) -> AddedRules<'a> {
        let mut rules = AddedRules {
            ip,
            added: Vec::new(),
        };
        for (i, shape) in RULES.iter().enumerate() {
            let prio = (first_priority + i as u32).to_string();
            let line = shape.replace("PRIO", &prio);
            let mut words: Vec<&str> = line.split_whitespace().collect();
            let v6 = words[0] == "-6";
            let family = if v6 { "-6" } else { "-4" };
            if v6 {
                words.remove(0);
            }
            let mut args = vec![family, "rule", "add"];
            args.extend(words);
            ok((rules.ip)(&args), &format!("ip {args:?}"));
            rules.added.push((v6, first_priority + i as u32));
        }
        rules
    }
}

impl Drop for AddedRules<'_> {
    fn drop(&mut self) {
        for (v6, prio) in &self.added {
            let family = if *v6 { "-6" } else { "-4" };
            let prio = prio.to_string();
            let _ = (self.ip)(&[family, "rule", "del", "priority", &prio]);
        }
    }
}

/// Neighbour entries (`ip neigh add` words after `add`), on device DEV of a /24 (IPv4
/// NET.x) and a /64 (IPv6 NET6::x). Only states that stay put without traffic: a
/// reachable or incomplete entry would age between the two reads.
const NEIGHBOURS: &[&str] = &[
    "NET.201 lladdr 02:00:00:00:02:01 dev DEV nud permanent",
    "NET.202 lladdr 02:00:00:00:02:02 dev DEV nud stale",
    "NET.203 lladdr 02:00:00:00:02:03 dev DEV nud noarp",
    "NET.204 lladdr 02:00:00:00:02:04 dev DEV nud stale extern_learn",
    "NET.205 lladdr 02:00:00:00:02:05 dev DEV nud noarp extern_learn",
    "NET.206 lladdr 02:00:00:00:02:06 dev DEV nud permanent protocol static",
    "NET.207 lladdr 02:00:00:00:02:07 dev DEV nud stale protocol 200",
    "NET.208 dev DEV nud none",
    "proxy NET.209 dev DEV",
    "NET6:201 lladdr 02:00:00:00:06:01 dev DEV nud permanent",
    "NET6:202 lladdr 02:00:00:00:06:02 dev DEV router nud stale",
    "NET6:203 lladdr 02:00:00:00:06:03 dev DEV nud noarp",
    "NET6:204 lladdr 02:00:00:00:06:04 dev DEV router nud stale extern_learn",
    "proxy NET6:209 dev DEV",
];

/// Neighbour entries added on construction and deleted when dropped.
struct AddedNeighbours<'a> {
    ip: &'a dyn Fn(&[&str]) -> Output,
    added: Vec<Vec<String>>,
}

impl<'a> AddedNeighbours<'a> {
    fn add(
        ip: &'a dyn Fn(&[&str]) -> Output,
        dev: &str,
        net: &str,
        net6: &str,
    ) -> AddedNeighbours<'a> {
        let mut added = AddedNeighbours {
            ip,
            added: Vec::new(),
        };
        for shape in NEIGHBOURS {
            let line = shape
                .replace("NET6", net6)
                .replace("NET", net)
                .replace("DEV", dev);
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let mut args = vec!["neigh", "add"];
            args.extend(words.iter().map(String::as_str));
            ok((added.ip)(&args), &format!("ip {args:?}"));
            added.added.push(words);
        }
        added
    }
}

impl Drop for AddedNeighbours<'_> {
    fn drop(&mut self) {
        for words in &self.added {
            // `del` takes the address, the device and `proxy`; not lladdr or states.
            let mut args = vec!["neigh", "del"];
            let mut rest = words.iter().map(String::as_str);
            while let Some(w) = rest.next() {
                match w {
                    "dev" => args.extend(["dev", rest.next().unwrap()]),
                    "lladdr" | "nud" | "protocol" => {
                        rest.next();
                    }
                    "router" | "extern_learn" => {}
                    other => args.push(other),
                }
            }
            let _ = (self.ip)(&args);
        }
    }
}

/// machnet's output for `args` against ip's for `ip_args`, text byte for byte (or JSON
/// value for value). ip is read before and after machnet; should those two reads differ
/// (an entry aging on its own), the comparison is taken again, at most ten times: only
/// a difference while ip's view stood still counts, and it fails the test.
fn assert_same(ip: &dyn Fn(&[&str]) -> Output, args: &[&str], ip_args: &[&str], json: bool) {
    let mut ip_args = ip_args.to_vec();
    let mut args = args.to_vec();
    if json {
        ip_args.insert(0, "-j");
        args.push("--json");
    }
    for _ in 0..10 {
        let before = ok(ip(&ip_args), &format!("ip {ip_args:?}"));
        let mine = ok(machnet(&args), &format!("machnet {args:?}"));
        let after = ok(ip(&ip_args), &format!("ip {ip_args:?}"));
        if before != after {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        if json {
            let theirs: Value = serde_json::from_str(&before).expect("ip prints valid JSON");
            let ours: Value = serde_json::from_str(&mine).expect("machnet prints valid JSON");
            assert_eq!(
                ours, theirs,
                "machnet {args:?} differs from ip {ip_args:?}\nip:      {before}\nmachnet: {mine}"
            );
        } else {
            assert_eq!(mine, before, "machnet {args:?} differs from ip {ip_args:?}");
        }
        return;
    }
    panic!("ip {ip_args:?} never gave the same answer twice in a row");
}

fn compare_all(
    ip: &dyn Fn(&[&str]) -> Output,
    command: &str,
    target: &str,
    selections: &[(&[&str], &[&str])],
) {
    for (ours, theirs) in selections {
        let mut args = vec![command, target];
        args.extend_from_slice(ours);
        for json in [false, true] {
            assert_same(ip, &args, theirs, json);
        }
    }
}

/// Asserts that ip's output holds every needle: the shapes really were made.
fn assert_holds(ip: &dyn Fn(&[&str]) -> Output, args: &[&str], needles: &[&str]) {
    let text = ok(ip(args), &format!("ip {args:?}"));
    for needle in needles {
        assert!(
            text.contains(needle),
            "ip {args:?} lacks {needle:?}:\n{text}"
        );
    }
}

const RULE_NEEDLES: &[&str] = &[
    "not from ",
    " [detached]",
    " fwmark 0x10/0xff ",
    " fwmark 0/0xff00 ",
    " goto 32766",
    " goto 30999 [unresolved]",
    " suppress_prefixlength 0",
    " suppress_ifgroup 5",
    " uidrange 61000-61100 ",
    " ipproto tcp sport 1000-2000 dport 4443 ",
    " dport 5353-5354 ",
    " blackhole",
    " unreachable",
    " prohibit",
    " nop",
    " tos 0x10 ",
    " realms 3/4",
    " realms 7",
    " proto static",
    " proto 200",
    " lookup [l3mdev-table]",
    " lookup 4294967290",
    " lookup 1000",
    " lookup local",
    " lookup default",
];

const NEIGH_NEEDLES: &[&str] = &[
    " PERMANENT ",
    " STALE ",
    " extern_learn ",
    " router ",
    " proto static ",
    " proto 200 ",
];

#[test]
fn rules_equal_ip_rule_show_in_every_machine() {
    let bed = testbed();
    for machine in MACHINES {
        let ip = |args: &[&str]| bed.ip(machine, args);
        compare_all(&ip, "rules", machine, RULE_SELECTIONS);
    }
}

#[test]
fn neighbours_equal_ip_neigh_show_in_every_machine() {
    let bed = testbed();
    for machine in MACHINES {
        bed.settle_ipv6(machine);
        let ip = |args: &[&str]| bed.ip(machine, args);
        compare_all(&ip, "neigh", machine, NEIGH_SELECTIONS);
    }
}

/// Every rule shape in the corpus machine (at priorities 21000 and up, next to its own
/// rules), and every neighbour shape on its working uplink.
#[test]
fn corpus_rules_and_neighbours_equal_ip() {
    let bed = testbed();
    bed.settle_ipv6("corpus");
    let ip = |args: &[&str]| bed.ip("corpus", args);
    let _rules = AddedRules::add(&ip, 21000);
    assert_holds(&ip, &["rule", "show"], RULE_NEEDLES);
    assert_holds(&ip, &["-6", "rule", "show"], &[" blackhole", "not from "]);
    compare_all(&ip, "rules", "corpus", RULE_SELECTIONS);
    let _neighbours = AddedNeighbours::add(&ip, "eth0", "10.88.0", "fd88:");
    assert_holds(&ip, &["neigh", "show"], NEIGH_NEEDLES);
    compare_all(&ip, "neigh", "corpus", NEIGH_SELECTIONS);
}

/// The same in a namespace of the test's own, where nothing else runs: there every
/// shape is also made with a device that is then deleted (`[detached]` rules, and an
/// unknown ifindex's entries vanish with it).
#[test]
fn scratch_rules_and_neighbours_equal_ip() {
    let ns = ScratchNetns::new("rules-neigh");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d0p", "up"]);
    ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "d0"]);
    ns.ip(&["-6", "addr", "add", "fd01::1/64", "dev", "d0", "nodad"]);
    let name = ns.name().to_string();
    let ip = move |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &name]).args(args);
        run(cmd)
    };
    let target = ns.target();
    compare_all(&ip, "rules", &target, RULE_SELECTIONS);
    compare_all(&ip, "neigh", &target, NEIGH_SELECTIONS);
    let _rules = AddedRules::add(&ip, 100);
    ns.ip(&["rule", "add", "iif", "d0", "oif", "d0p", "table", "100"]);
    ns.ip(&["-6", "rule", "add", "oif", "d0", "table", "100"]);
    let _neighbours = AddedNeighbours::add(&ip, "d0", "10.1.0", "fd01:");
    assert_holds(&ip, &["rule", "show"], RULE_NEEDLES);
    assert_holds(&ip, &["rule", "show"], &["iif d0 oif d0p lookup 100"]);
    assert_holds(&ip, &["neigh", "show"], NEIGH_NEEDLES);
    compare_all(&ip, "rules", &target, RULE_SELECTIONS);
    compare_all(&ip, "neigh", &target, NEIGH_SELECTIONS);
    // Deleting the veth pair leaves its rules detached and takes its entries along.
    ns.ip(&["link", "del", "d0"]);
    assert_holds(
        &ip,
        &["rule", "show"],
        &["iif d0 [detached] oif d0p [detached] lookup 100"],
    );
    compare_all(&ip, "rules", &target, RULE_SELECTIONS);
    compare_all(&ip, "neigh", &target, NEIGH_SELECTIONS);
}

#[test]
fn an_unknown_machine_exits_3_with_nothing_on_stdout() {
    let _ = testbed();
    for command in ["rules", "neigh"] {
        for extra in [&[][..], &["--json"], &["-6"]] {
            let mut args = vec![command, "no-such-machine"];
            args.extend_from_slice(extra);
            let err = fails_cleanly(&machnet(&args), 3, &format!("machnet {args:?}"));
            assert!(err.contains("no-such-machine"), "{err}");
        }
    }
    let err = fails_cleanly(
        &machnet(&["neigh", "corpus", "--nud", "bogus"]),
        2,
        "an unknown nud state",
    );
    assert!(err.contains("bogus"), "{err}");
    let out = machnet(&["rules", "corpus", "-4", "-6"]);
    assert_eq!(out.status.code(), Some(2), "-4 with -6");
    assert!(out.stdout.is_empty());
}
