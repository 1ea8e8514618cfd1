//! A command that ends in `ip` words takes its own options after them too, as `machnet
//! routes NAME --json` always has: `route get NS 10.5.0.9 --json`, `route add NS SPEC
//! --protocol static -6`, `addr add NS SPEC --allow-host`. In a namespace of this test's own.

mod common;

use common::*;
use serde_json::Value;

fn scratch() -> ScratchNetns {
    let ns = ScratchNetns::new("optend");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["addr", "add", "10.5.0.2/24", "dev", "d0"]);
    ns
}

#[test]
fn route_get_takes_json_after_the_destination() {
    let _bed = testbed();
    let ns = scratch();
    let t = ns.target();
    let after = ok(
        machnet(&["route", "get", &t, "10.5.0.9", "--json"]),
        "--json last",
    );
    let before = ok(
        machnet(&["route", "get", &t, "--json", "10.5.0.9"]),
        "--json first",
    );
    assert_eq!(after, before);
    let mine: Value = serde_json::from_str(&after).expect("JSON");
    let theirs: Value = serde_json::from_str(&ns.ip(&["-j", "route", "get", "10.5.0.9"])).unwrap();
    assert_eq!(mine, theirs);
    // Short and long forms, and between the destination's own options.
    let mixed = ok(
        machnet(&["route", "get", &t, "10.5.0.9", "-j", "from", "10.5.0.2"]),
        "-j between the words",
    );
    let theirs: Value =
        serde_json::from_str(&ns.ip(&["-j", "route", "get", "10.5.0.9", "from", "10.5.0.2"]))
            .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&mixed).unwrap(), theirs);
}

#[test]
fn route_edits_take_their_options_after_the_spec() {
    let _bed = testbed();
    let ns = scratch();
    let t = ns.target();
    ok(
        machnet(&[
            "route",
            "add",
            &t,
            "10.77.0.0/16",
            "via",
            "10.5.0.1",
            "--protocol",
            "static",
        ]),
        "add with --protocol last",
    );
    assert_eq!(
        ns.ip(&["route", "show", "10.77.0.0/16"]),
        "10.77.0.0/16 via 10.5.0.1 dev d0 proto static \n"
    );
    ok(
        machnet(&[
            "route", "add", &t, "default", "dev", "d0", "table", "7", "-6",
        ]),
        "-6 last",
    );
    let six = ns.ip(&["-6", "route", "show", "table", "7"]);
    assert!(six.starts_with("default dev d0 proto "), "{six}");
    let four = ns.ip(&["-4", "route", "show", "table", "all"]);
    assert!(
        !four.contains("table 7"),
        "-6 made it an IPv6 route: {four}"
    );
    ok(
        machnet(&["route", "del", &t, "10.77.0.0/16", "--protocol=static"]),
        "del with --protocol=static last",
    );
    assert_eq!(ns.ip(&["route", "show", "10.77.0.0/16"]), "");
}

#[test]
fn link_and_addr_edits_take_their_options_after_the_spec() {
    let _bed = testbed();
    let ns = scratch();
    let t = ns.target();
    ok(
        machnet(&["link", "set", &t, "d0", "mtu", "1400", "-v"]),
        "link set, -v last",
    );
    assert!(ns.ip(&["link", "show", "d0"]).contains(" mtu 1400 "));
    ok(
        machnet(&[
            "addr",
            "add",
            &t,
            "10.6.0.2/24",
            "dev",
            "d0",
            "--allow-host",
        ]),
        "addr add, --allow-host last",
    );
    assert!(ns
        .ip(&["-4", "addr", "show", "d0"])
        .contains("inet 10.6.0.2/24 "));
}

#[test]
fn an_unknown_option_after_the_spec_is_named_and_changes_nothing() {
    let _bed = testbed();
    let ns = scratch();
    let t = ns.target();
    let before = ns.ip(&["route", "show", "table", "all"]);
    let out = machnet(&[
        "route",
        "add",
        &t,
        "10.78.0.0/16",
        "via",
        "10.5.0.1",
        "--jsn",
    ]);
    let err = fails_cleanly(&out, 2, "unknown option last");
    assert!(err.contains("'--jsn'"), "{err}");
    assert_eq!(ns.ip(&["route", "show", "table", "all"]), before);
    let out = machnet(&["route", "get", &t, "10.5.0.9", "--jsn"]);
    let err = fails_cleanly(&out, 2, "unknown option after a destination");
    assert!(err.contains("'--jsn'"), "{err}");
}
