//! `machnet links|addrs` against `ip -br link|addr` in the same namespace, and the veth
//! peers ip cannot show, checked against the host's own view.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const MACHINES: &[&str] = &["qbittorrent", "corpus", "empty"];

/// machnet's line must be ip's line, then at most a ` peer IFNAME@NS [master BR]` suffix.
fn assert_brief_matches(mine: &str, theirs: &str, what: &str) -> Vec<Option<String>> {
    let (mine, theirs): (Vec<&str>, Vec<&str>) = (mine.lines().collect(), theirs.lines().collect());
    assert_eq!(mine.len(), theirs.len(), "{what}: line count");
    mine.iter()
        .zip(&theirs)
        .map(|(m, t)| {
            let rest = m
                .strip_prefix(t)
                .unwrap_or_else(|| panic!("{what}:\nip:      {t:?}\nmachnet: {m:?}"));
            assert!(
                rest.is_empty() || rest.starts_with("peer "),
                "{what}: extra {rest:?}"
            );
            (!rest.is_empty()).then(|| rest.to_string())
        })
        .collect()
}

fn without_peers(json: &str) -> Value {
    let mut v: Value = serde_json::from_str(json).expect("JSON");
    for obj in v.as_array_mut().unwrap() {
        obj.as_object_mut().unwrap().remove("peer");
    }
    v
}

#[test]
fn brief_links_and_addresses_equal_ip() {
    let bed = testbed();
    for machine in MACHINES {
        bed.settle_ipv6(machine);
        for (cmd, ip_cmd) in [("links", "link"), ("addrs", "addr")] {
            let mine = ok(machnet(&[cmd, machine]), cmd);
            let theirs = ok(bed.ip(machine, &["-br", ip_cmd]), "ip -br");
            assert_brief_matches(&mine, &theirs, &format!("{cmd} {machine}"));
            let mine = without_peers(&ok(machnet(&[cmd, machine, "--json"]), cmd));
            let theirs: Value =
                serde_json::from_str(&ok(bed.ip(machine, &["-j", "-br", ip_cmd]), "ip -j -br"))
                    .unwrap();
            assert_eq!(mine, theirs, "{cmd} {machine} --json");
        }
    }
}

/// An address's metric (the priority of its prefix route, which DHCP and IPv4LL clients
/// set: systemd-networkd's link-local address has 2048) shows as `ip -br addr` shows it.
#[test]
fn address_metrics_show_as_ip_shows_them() {
    let _bed = testbed();
    let ns = ScratchNetns::new("metric");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&[
        "addr",
        "add",
        "169.254.121.54/16",
        "dev",
        "d0",
        "metric",
        "2048",
    ]);
    ns.ip(&["addr", "add", "10.1.1.1/24", "dev", "d0"]);
    ns.ip(&[
        "addr",
        "add",
        "10.2.2.2",
        "peer",
        "10.2.2.1/32",
        "dev",
        "d1",
        "metric",
        "5",
    ]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        "fd00::1/64",
        "dev",
        "d0",
        "metric",
        "77",
        "nodad",
    ]);
    let mine = ok(machnet(&["addrs", &ns.target()]), "addrs");
    let theirs = ns.ip(&["-br", "addr"]);
    assert!(
        theirs.contains("169.254.121.54/16 metric 2048 "),
        "{theirs}"
    );
    assert_brief_matches(&mine, &theirs, "addrs with metrics");
    let mine = without_peers(&ok(machnet(&["addrs", &ns.target(), "--json"]), "json"));
    let theirs: Value = serde_json::from_str(&ns.ip(&["-j", "-br", "addr"])).unwrap();
    assert_eq!(mine, theirs, "addrs --json with metrics");
}

#[test]
fn veth_peers_are_named_across_the_namespace_boundary() {
    let bed = testbed();
    let peers = |machine: &str| {
        let mine = ok(machnet(&["links", machine]), "links");
        let theirs = ok(bed.ip(machine, &["-br", "link"]), "ip -br link");
        assert_brief_matches(&mine, &theirs, machine)
    };
    let qbit = peers("qbittorrent");
    assert_eq!(qbit, [None, Some("peer ve-qbittorrent@.host".to_string())]);
    let corpus = peers("corpus");
    assert!(
        corpus.contains(&Some("peer vc-corpus@.host".to_string())),
        "{corpus:?}"
    );

    // The host's own view agrees: ve-qbittorrent's peer index is host0's.
    let host0 = ok(
        bed.ip("qbittorrent", &["-j", "link", "show", "host0"]),
        "host0",
    );
    let host0: Value = serde_json::from_str(&host0).unwrap();
    let mut ip = Command::new("ip");
    ip.args(["-j", "link", "show", "ve-qbittorrent"]);
    let ve: Value = serde_json::from_str(&ok(run(ip), "ve-qbittorrent")).unwrap();
    assert_eq!(ve[0]["link_index"], host0[0]["ifindex"]);

    // On a bridge, the bridge is named too.
    let host_ip = |args: &[&str]| {
        let mut ip = Command::new("ip");
        ip.args(args);
        ok(run(ip), &format!("ip {args:?}"))
    };
    host_ip(&["link", "add", "mnbr0", "type", "bridge"]);
    host_ip(&["link", "set", "ve-qbittorrent", "master", "mnbr0"]);
    let with_bridge = peers("qbittorrent");
    host_ip(&["link", "set", "ve-qbittorrent", "nomaster"]);
    host_ip(&["link", "del", "mnbr0"]);
    assert_eq!(
        with_bridge[1].as_deref(),
        Some("peer ve-qbittorrent@.host master mnbr0")
    );
    let json: Value =
        serde_json::from_str(&ok(machnet(&["links", "qbittorrent", "--json"]), "json")).unwrap();
    assert_eq!(json[1]["peer"]["ifname"], "ve-qbittorrent");
}

/// A name holding an escape sequence is shown escaped on a terminal (script(1) gives
/// machnet one) and kept byte for byte in a pipe, as ip prints it. In a namespace of the
/// test's own, so the other tests' tables stay as they were.
#[test]
fn escape_sequences_in_names_do_not_reach_a_terminal() {
    let _bed = testbed();
    let ns = ScratchNetns::new("evil");
    let evil = "ev\x1b[31mil";
    ns.ip(&[
        "link", "add", evil, "type", "veth", "peer", "name", "evilpeer",
    ]);
    let target = ns.target();
    let piped = ok(machnet(&["links", &target]), "links in a pipe");
    let mut script = Command::new("script");
    script.args([
        "-qec",
        &format!("{} links {target}", machnet_bin()),
        "/dev/null",
    ]);
    let on_terminal = ok(run(script), "links on a terminal");
    drop(ns);
    assert!(piped.contains(evil), "pipes get ip's bytes: {piped:?}");
    assert!(
        !on_terminal.contains('\x1b'),
        "no escape reaches the terminal: {on_terminal:?}"
    );
    assert!(on_terminal.contains("ev\\x1b[31mil"), "{on_terminal:?}");
}
