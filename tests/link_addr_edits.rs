//! `machnet link set` and `machnet addr add|del`, checked with `ip` in the same namespace.
//! One test, in order, on the `empty` machine, which it leaves as it found it.

mod common;

use common::*;

#[test]
fn loopback_down_and_up_addresses_added_and_deleted() {
    let bed = testbed();
    let brief = |args: &[&str]| ok(bed.ip("empty", args), &format!("ip {args:?}"));

    // The classic fault, made and mended: lo down, then up again.
    ok(machnet(&["link", "set", "empty", "lo", "down"]), "lo down");
    assert!(brief(&["-br", "link", "show", "lo"]).contains(" DOWN "));
    ok(
        machnet(&["link", "set", "empty", "lo", "up", "mtu", "1400"]),
        "lo up mtu",
    );
    let lo = brief(&["link", "show", "lo"]);
    assert!(lo.contains("<LOOPBACK,UP,LOWER_UP> mtu 1400 "), "{lo}");
    ok(
        machnet(&["link", "set", "empty", "lo", "mtu", "65536"]),
        "mtu back",
    );

    ok(
        machnet(&[
            "addr",
            "add",
            "empty",
            "10.55.0.1/24",
            "dev",
            "lo",
            "brd",
            "+",
        ]),
        "addr add v4",
    );
    ok(
        machnet(&["addr", "add", "empty", "fd55::1/64", "dev", "lo"]),
        "addr add v6",
    );
    let addrs = brief(&["addr", "show", "dev", "lo"]);
    assert!(
        addrs.contains("inet 10.55.0.1/24 brd 10.55.0.255 scope global lo"),
        "{addrs}"
    );
    assert!(addrs.contains("inet6 fd55::1/64 scope global"), "{addrs}");

    let err = fails_cleanly(
        &machnet(&["addr", "add", "empty", "10.55.0.1/24", "dev", "lo"]),
        7,
        "duplicate address",
    );
    assert!(
        err.contains("Address already assigned"),
        "quotes the kernel: {err}"
    );

    // brd + on a /31 sets no broadcast: the other address is the peer (as ip does).
    ok(
        machnet(&[
            "addr",
            "add",
            "empty",
            "10.57.0.0/31",
            "dev",
            "lo",
            "brd",
            "+",
        ]),
        "addr add /31",
    );
    let local = brief(&["route", "show", "table", "local"]);
    assert!(!local.contains("broadcast 10.57.0.1"), "{local}");
    ok(
        machnet(&["addr", "del", "empty", "10.57.0.0/31", "dev", "lo"]),
        "addr del /31",
    );

    ok(
        machnet(&["addr", "del", "empty", "10.55.0.1/24", "dev", "lo"]),
        "addr del v4",
    );
    ok(
        machnet(&["addr", "del", "empty", "fd55::1/64", "dev", "lo"]),
        "addr del v6",
    );
    let err = fails_cleanly(
        &machnet(&["addr", "del", "empty", "fd55::1/64", "dev", "lo"]),
        7,
        "missing",
    );
    assert!(err.contains("address not found"), "{err}");
    assert_eq!(
        brief(&["-br", "addr"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo", "UNKNOWN", "127.0.0.1/8", "::1/128"]
    );

    // Bad input: refused before the kernel, nothing changed.
    fails_cleanly(
        &machnet(&["link", "set", "empty", "eth7", "up"]),
        3,
        "no such device",
    );
    fails_cleanly(
        &machnet(&["link", "set", "empty", "lo", "sideways"]),
        2,
        "bad change",
    );
    fails_cleanly(
        &machnet(&["addr", "add", "empty", "10.55.0.1/33", "dev", "lo"]),
        2,
        "bad length",
    );
    fails_cleanly(
        &machnet(&["addr", "add", "empty", "10.55.0.1/24"]),
        2,
        "no device",
    );
    for target in ["hostshare", ".host"] {
        let err = fails_cleanly(&machnet(&["link", "set", target, "lo", "down"]), 2, target);
        assert!(err.contains("--allow-host"), "{err}");
        let err = fails_cleanly(
            &machnet(&["addr", "add", target, "10.56.0.1/24", "dev", "lo"]),
            2,
            target,
        );
        assert!(err.contains("--allow-host"), "{err}");
    }
    let mut ip = std::process::Command::new("ip");
    ip.args(["-br", "link", "show", "lo"]);
    assert!(
        ok(run(ip), "host lo").contains(" UNKNOWN "),
        "the host's lo stayed up"
    );
}
