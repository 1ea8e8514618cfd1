//! `machnet route add|del|replace|change|append`, each checked with `ip` in the same
//! namespace. The tests share the corpus machine and some compare its whole table before
//! and after, so each holds the corpus lock while it runs.

mod common;

use std::sync::{Mutex, MutexGuard};

use common::*;

static CORPUS: Mutex<()> = Mutex::new(());

/// The testbed, with the corpus machine to ourselves until the guard drops.
fn corpus() -> (Testbed, MutexGuard<'static, ()>) {
    let guard = CORPUS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = testbed();
    bed.settle_ipv6("corpus");
    (bed, guard)
}

fn ip_show(bed: &Testbed, machine: &str, args: &[&str]) -> String {
    ok(bed.ip(machine, args), &format!("ip {args:?}"))
}

/// Both families, every table (`ip route show table all` without -4/-6 shows both).
/// Both families, every table (`ip route show table all` without -4/-6 shows both).
/// Route expiry counters are masked (they tick during a test).
fn table_all(bed: &Testbed, machine: &str) -> String {
    mask_expires(&ip_show(bed, machine, &["route", "show", "table", "all"]))
}

/// `machnet route WORDS`, the words written as one line.
fn route_w(line: &str) -> std::process::Output {
    route(&line.split_whitespace().collect::<Vec<_>>())
}

fn route(args: &[&str]) -> std::process::Output {
    let mut all = vec!["route"];
    all.extend_from_slice(args);
    machnet(&all)
}

#[test]
fn each_edit_does_what_ip_route_would() {
    let (bed, _corpus) = corpus();
    let show = |prefix: &str| ip_show(&bed, "corpus", &["route", "show", "table", "all", prefix]);

    ok(
        route_w("add corpus 10.210.0.0/16 via 10.88.0.1 metric 5"),
        "add",
    );
    assert_eq!(
        show("10.210.0.0/16"),
        "10.210.0.0/16 via 10.88.0.1 dev eth0 proto 109 metric 5 \n"
    );

    ok(
        route_w("replace corpus 10.210.0.0/16 via 10.88.0.1 metric 5 mtu 1400"),
        "replace",
    );
    assert_eq!(
        show("10.210.0.0/16"),
        "10.210.0.0/16 via 10.88.0.1 dev eth0 proto 109 metric 5 mtu 1400 \n"
    );

    ok(
        route_w("change corpus 10.210.0.0/16 dev stub0 metric 5"),
        "change",
    );
    assert_eq!(
        show("10.210.0.0/16"),
        "10.210.0.0/16 dev stub0 proto 109 scope link metric 5 \n"
    );

    ok(
        route_w("append corpus 10.210.0.0/16 via 10.88.0.1 metric 5 table 1000"),
        "append",
    );
    assert!(show("10.210.0.0/16")
        .contains("10.210.0.0/16 via 10.88.0.1 dev eth0 table 1000 proto 109 metric 5 \n"));

    ok(
        route_w("del corpus 10.210.0.0/16 table 1000"),
        "del table 1000",
    );
    ok(route_w("del corpus 10.210.0.0/16 metric 5"), "del");
    assert_eq!(show("10.210.0.0/16"), "");
}

/// Short IPv4 forms (`10.213/16`, C's octal and hex parts) and an IPv6 prefix with host
/// bits: machnet's route in the table must be the one `ip` makes of the same words.
#[test]
fn short_forms_and_ipv6_host_bits_make_the_route_ip_makes() {
    let (bed, _corpus) = corpus();
    let before = table_all(&bed, "corpus");
    for spec in [
        "10.213/16 via 10.88.0.1",
        "012.214/16 dev eth0",
        "0x0a.0xd7.0x1/24 dev eth0",
        "fd00:9:9::1/64 via fd88::1",
    ] {
        let words: Vec<&str> = spec.split_whitespace().collect();
        // `VERB SPEC proto static` through machnet or ip.
        let edit = |tool: &dyn Fn(&[&str]) -> std::process::Output, verb: &str| {
            let mut args = vec![verb];
            args.extend(&words);
            args.extend(["proto", "static"]);
            ok(tool(&args), &format!("{verb} {spec}"));
        };
        let by_machnet = |args: &[&str]| {
            let mut all = vec![args[0], "corpus"];
            all.extend(&args[1..]);
            route(&all)
        };
        let by_ip = |args: &[&str]| {
            let mut all = vec!["route"];
            all.extend(args);
            bed.ip("corpus", &all)
        };
        edit(&by_machnet, "add");
        let machnets = table_all(&bed, "corpus");
        edit(&by_machnet, "del");
        assert_eq!(table_all(&bed, "corpus"), before, "{spec}: machnet's del");
        edit(&by_ip, "add");
        let ips = table_all(&bed, "corpus");
        edit(&by_ip, "del");
        assert_eq!(machnets, ips, "{spec}");
        assert_ne!(machnets, before, "{spec} added a route");
    }
    assert_eq!(table_all(&bed, "corpus"), before);
}

#[test]
fn routes_carry_machnets_protocol_unless_told_otherwise() {
    let (bed, _corpus) = corpus();
    ok(route_w("add corpus 10.211.1.0/24 via 10.88.0.1"), "add");
    ok(
        route_w("add corpus --protocol static 10.211.2.0/24 via 10.88.0.1"),
        "add --protocol",
    );
    ok(
        route_w("add corpus 10.211.3.0/24 via 10.88.0.1 proto dhcp"),
        "add proto dhcp",
    );
    let json = ip_show(
        &bed,
        "corpus",
        &["-j", "route", "show", "root", "10.211.0.0/16"],
    );
    let routes: serde_json::Value = serde_json::from_str(&json).unwrap();
    let protos: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"].as_str().unwrap().starts_with("10.211."))
        .map(|r| r["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(protos, ["109", "static", "dhcp"]);
    for n in 1..=3 {
        ok(
            route(&["del", "corpus", &format!("10.211.{n}.0/24")]),
            "del",
        );
    }
}

#[test]
fn delete_matches_every_field_given_and_reports_a_missing_route() {
    let (bed, _corpus) = corpus();
    ok(
        route_w("add corpus 10.212.0.0/16 via 10.88.0.1 metric 5"),
        "add 5",
    );
    ok(
        route_w("add corpus 10.212.0.0/16 via 10.88.0.1 metric 6"),
        "add 6",
    );
    ok(
        route_w("add corpus -6 blackhole 2001:db8:212::/48"),
        "add v6 blackhole",
    );
    let before = table_all(&bed, "corpus");

    // A key that matches nothing: reported as missing, and nothing is deleted.
    for spec in [
        &["10.212.0.0/16", "metric", "7"][..],
        &["10.212.0.0/16", "metric", "5", "table", "100"],
        &["10.212.0.0/16", "via", "10.88.0.9", "metric", "5"],
        &["10.212.0.0/16", "metric", "5", "proto", "static"],
        &["unreachable", "10.212.0.0/16", "metric", "5"],
        // IPv6: the kernel ignores the type on delete; machnet must not.
        &["-6", "unreachable", "2001:db8:212::/48"],
    ] {
        let mut args = vec!["del", "corpus"];
        args.extend_from_slice(spec);
        let err = fails_cleanly(&route(&args), 7, &format!("del {spec:?}"));
        assert!(err.contains("nothing was deleted"), "{err}");
        assert_eq!(
            table_all(&bed, "corpus"),
            before,
            "del {spec:?} changed the table"
        );
    }

    ok(
        route_w("del corpus 10.212.0.0/16 via 10.88.0.1 metric 6"),
        "del metric 6",
    );
    let left = ip_show(&bed, "corpus", &["route", "show", "10.212.0.0/16"]);
    assert_eq!(
        left,
        "10.212.0.0/16 via 10.88.0.1 dev eth0 proto 109 metric 5 \n"
    );
    // --protocol on a delete is matched too: these routes are machnet's (109), not static.
    let err = fails_cleanly(
        &route_w("del corpus --protocol static 10.212.0.0/16 metric 5"),
        7,
        "del --protocol static",
    );
    assert!(err.contains("nothing was deleted"), "{err}");

    // IPv6: two routes on one prefix, of different types; the kernel ignores the type on
    // delete, machnet must not: only the unreachable one goes.
    ok(
        route_w("add corpus -6 unreachable 2001:db8:213::/48 metric 2048"),
        "add v6 unreachable",
    );
    ok(
        route_w("add corpus 2001:db8:213::/48 dev eth0 metric 1024"),
        "add v6 unicast",
    );
    ok(
        route_w("del corpus -6 unreachable 2001:db8:213::/48"),
        "del v6 unreachable",
    );
    let left = ip_show(
        &bed,
        "corpus",
        &["-6", "route", "show", "2001:db8:213::/48"],
    );
    assert_eq!(
        left,
        "2001:db8:213::/48 dev eth0 proto 109 metric 1024 pref medium\n"
    );
    let err = fails_cleanly(
        &route_w("del corpus -6 blackhole 2001:db8:213::/48"),
        7,
        "no blackhole",
    );
    assert!(err.contains("nothing was deleted"), "{err}");
    ok(route_w("del corpus 2001:db8:213::/48"), "del v6 unicast");

    ok(route_w("del corpus 10.212.0.0/16 metric 5"), "del metric 5");
    ok(
        route_w("del corpus blackhole 2001:db8:212::/48"),
        "del v6 blackhole",
    );
}

#[test]
fn bad_specs_are_refused_before_the_kernel_sees_them() {
    let (bed, _corpus) = corpus();
    let before = table_all(&bed, "corpus");
    for (args, code, needle) in [
        (
            &["add", "corpus", "10.213.0.0/16", "via", "bogus"][..],
            2,
            "word 3 \"bogus\"",
        ),
        (&["add", "corpus", "10.213.0.1/16"], 2, "host bits"),
        (
            &["add", "corpus", "10.213.0.0/16", "metrc", "5"],
            2,
            "word 2 \"metrc\"",
        ),
        (
            &["add", "corpus", "2001:db8:213::/48", "via", "fe80::1"],
            2,
            "link-local",
        ),
        (
            &["add", "corpus", "10.213.0.0/16", "dev", "eth9"],
            3,
            "no device \"eth9\"",
        ),
        (
            &[
                "add",
                "corpus",
                "--protocol",
                "nope",
                "10.213.0.0/16",
                "dev",
                "eth0",
            ],
            2,
            "nope",
        ),
    ] {
        let err = fails_cleanly(&route(args), code, &format!("{args:?}"));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(table_all(&bed, "corpus"), before);
}

#[test]
fn a_kernel_refusal_is_quoted_and_changes_nothing() {
    let (bed, _corpus) = corpus();
    let before = table_all(&bed, "corpus");
    let err = fails_cleanly(
        &route_w("add corpus 10.214.0.0/16 via 10.250.0.1"),
        7,
        "unreachable gateway",
    );
    assert!(
        err.contains("10.214.0.0/16 via 10.250.0.1"),
        "names the route: {err}"
    );
    assert!(
        err.contains("the kernel said: Nexthop has invalid gateway"),
        "quotes the kernel: {err}"
    );
    assert!(err.contains("onlink"), "says what to try: {err}");
    let err = fails_cleanly(
        &route_w("add corpus default via 10.88.0.1 metric 100"),
        7,
        "exists",
    );
    assert!(err.contains("File exists"), "{err}");
    assert_eq!(table_all(&bed, "corpus"), before);
}

#[test]
fn machines_sharing_the_host_netns_are_refused_unless_asked() {
    let (bed, _corpus) = corpus();
    let host_before = ok(
        machnet(&["routes", ".host", "--table", "all"]),
        "host routes",
    );
    for target in ["hostshare", ".host"] {
        let err = fails_cleanly(
            &route(&["add", target, "10.215.0.0/16", "dev", "lo"]),
            2,
            target,
        );
        assert!(err.contains("--allow-host"), "{err}");
    }
    assert_eq!(
        ok(
            machnet(&["routes", ".host", "--table", "all"]),
            "host routes"
        ),
        host_before
    );
    // Said explicitly: allowed (this "host" is the testbed's throwaway namespace).
    ok(
        route_w("add hostshare --allow-host 10.215.0.0/16 dev lo"),
        "add --allow-host",
    );
    let shown = ok(machnet(&["routes", ".host"]), "host routes");
    assert!(
        shown.contains("10.215.0.0/16 dev lo proto 109 scope link"),
        "{shown}"
    );
    ok(
        route_w("del .host --allow-host 10.215.0.0/16"),
        "del --allow-host",
    );
    let _ = bed;
}
