//! `machnet routes` against `ip route show` in the same namespace: every machine of the
//! testbed, every table and family selection, text byte for byte and JSON value for value.

mod common;

use common::*;
use serde_json::Value;

/// (machnet arguments, the same selection for `ip route show`).
const SELECTIONS: &[(&[&str], &[&str])] = &[
    (&[], &["route", "show"]),
    (&["-4"], &["-4", "route", "show"]),
    (&["-6"], &["-6", "route", "show"]),
    (&["--table", "all"], &["route", "show", "table", "all"]),
    (
        &["-4", "--table", "all"],
        &["-4", "route", "show", "table", "all"],
    ),
    (
        &["-6", "--table", "all"],
        &["-6", "route", "show", "table", "all"],
    ),
    (&["--table", "local"], &["route", "show", "table", "local"]),
    (
        &["-6", "--table", "local"],
        &["-6", "route", "show", "table", "local"],
    ),
    (&["--table", "100"], &["route", "show", "table", "100"]),
    (
        &["-6", "--table", "100"],
        &["-6", "route", "show", "table", "100"],
    ),
    (&["--table", "1000"], &["route", "show", "table", "1000"]),
    (
        &["--table", "4294967290"],
        &["route", "show", "table", "4294967290"],
    ),
    (
        &["-6", "--table", "4294967290"],
        &["-6", "route", "show", "table", "4294967290"],
    ),
];

const MACHINES: &[&str] = &["corpus", "qbittorrent", "empty", "hostshare"];

#[test]
fn text_equals_ip_route_show_line_for_line() {
    let bed = testbed();
    for machine in MACHINES {
        bed.settle_ipv6(machine);
        for (ours, theirs) in SELECTIONS {
            let mut args = vec!["routes", machine];
            args.extend_from_slice(ours);
            let Some(ip) = ip_or_missing_table(bed.ip(machine, theirs), &args) else {
                continue;
            };
            let mine = ok(machnet(&args), &format!("machnet {args:?}"));
            assert_same_text(&ip, &mine, &format!("{machine} {ours:?}"));
        }
    }
}

#[test]
fn json_equals_ip_j_route_show() {
    let bed = testbed();
    for machine in MACHINES {
        bed.settle_ipv6(machine);
        for (ours, theirs) in SELECTIONS {
            let mut args = vec!["routes", machine, "--json"];
            args.extend_from_slice(ours);
            let mut ip_args = vec!["-j"];
            ip_args.extend_from_slice(theirs);
            let Some(ip) = ip_or_missing_table(bed.ip(machine, &ip_args), &args) else {
                continue;
            };
            let mine = ok(machnet(&args), &format!("machnet {args:?}"));
            let mut mine: Value = serde_json::from_str(&mine).expect("machnet prints valid JSON");
            let mut ip: Value = serde_json::from_str(&ip).expect("ip prints valid JSON");
            settle_expires_json(&mut ip, &mut mine, &format!("{machine} {ours:?}"));
            assert_eq!(ip, mine, "{machine} {ours:?}: JSON differs from ip -j");
        }
    }
}

/// `ip` fails on a table the namespace does not have ("FIB table does not exist"); then
/// machnet must fail too, cleanly, saying which table. Returns ip's output otherwise.
fn ip_or_missing_table(ip: std::process::Output, args: &[&str]) -> Option<String> {
    if ip.status.success() {
        return Some(stdout(&ip));
    }
    assert!(
        stderr(&ip).contains("FIB table does not exist"),
        "ip failed: {}",
        stderr(&ip)
    );
    let err = fails_cleanly(
        &machnet(args),
        3,
        &format!("machnet {args:?} on a missing table"),
    );
    assert!(err.contains("there is no routing table"), "{err}");
    None
}

/// The corpus must actually hold the shapes the comparison is meant to cover; a corpus
/// that silently lost them would make the tests above prove little.
#[test]
fn corpus_covers_every_route_shape() {
    let bed = testbed();
    let all = ok(
        machnet(&["routes", "corpus", "--table", "all"]),
        "machnet routes corpus --table all",
    );
    let needles = [
        "blackhole ",
        "unreachable ",
        "prohibit ",
        "throw ",
        "\tnexthop via ",
        "weight 2 ",
        " onlink ",
        " linkdown ",
        "mtu lock ",
        "advmss ",
        "rtt ",
        "initcwnd ",
        "congctl ",
        " src ",
        " metric ",
        "pref high",
        "pref low",
        "expires ",
        "table 100 ",
        "table 1000 ",
        "table 4294967290 ",
        "local ",
        "broadcast ",
        "anycast ",
        "multicast ",
        "proto static ",
        "proto 200 ",
        "scope link ",
        "scope host ",
    ];
    let missing: Vec<&str> = needles
        .iter()
        .copied()
        .filter(|n| !all.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "corpus lacks shapes {missing:?}:\n{all}"
    );
    // The nspawn container is a real one, registered by systemd-nspawn itself.
    let _ = bed.leader("qbittorrent");
}

/// Text lines must match exactly, except that an `expires Nsec` may tick by one second
/// between the two dumps.
fn assert_same_text(ip: &str, mine: &str, what: &str) {
    let (ip_lines, my_lines): (Vec<&str>, Vec<&str>) =
        (ip.lines().collect(), mine.lines().collect());
    assert_eq!(
        ip_lines.len(),
        my_lines.len(),
        "{what}: line count\nip:\n{ip}\nmachnet:\n{mine}"
    );
    for (a, b) in ip_lines.iter().zip(&my_lines) {
        if a == b {
            continue;
        }
        let (a_rest, a_exp) = split_expires(a);
        let (b_rest, b_exp) = split_expires(b);
        let close = matches!((a_exp, b_exp), (Some(x), Some(y)) if x.abs_diff(y) <= 1);
        assert!(
            close && a_rest == b_rest,
            "{what}:\nip:      {a:?}\nmachnet: {b:?}"
        );
    }
    assert_eq!(
        ip.ends_with('\n'),
        mine.ends_with('\n'),
        "{what}: final newline"
    );
}

fn settle_expires_json(ip: &mut Value, mine: &mut Value, what: &str) {
    let (Some(a), Some(b)) = (ip.as_array_mut(), mine.as_array_mut()) else {
        return;
    };
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        if let (Some(ex), Some(ey)) = (
            x.get("expires").and_then(Value::as_i64),
            y.get("expires").and_then(Value::as_i64),
        ) {
            assert!((ex - ey).abs() <= 1, "{what}: expires {ex} vs {ey}");
            y["expires"] = Value::from(ex);
        }
    }
}
