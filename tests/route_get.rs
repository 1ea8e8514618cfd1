//! `machnet route get` against `ip route get` in the same namespace: the kernel's own
//! decisions across tables (through policy rules this test adds) and route types.

mod common;

use common::*;
use serde_json::Value;

/// Queries as `ip route get` words. Some the kernel refuses (blackhole, unreachable…):
/// then machnet must refuse them too.
const QUERIES: &[&str] = &[
    "10.1.2.3",
    "10.88.0.2",
    "10.88.0.255",
    "127.0.0.1",
    "10.6.0.1",
    "10.6.1.1",
    "10.6.2.1",
    "10.7.0.9",
    "10.13.0.1",
    "10.16.0.1",
    "10.17.0.1",
    "10.18.1.7",
    "10.19.0.1",
    "10.19.0.1 tos 0x10",
    "8.8.8.8",
    "10.1.2.3 from 10.88.0.2",
    "10.1.2.3 oif stub0",
    "10.1.2.3 mark 5",
    "10.1.2.3 fibmatch",
    "10.9.0.1 from 10.88.0.77",
    "10.9.0.1 from 10.88.0.77/24",
    "10.9.1.1 mark 0x1000",
    "10.9.2.1 mark 0x2000",
    "10.9.0.1 ipproto tcp dport 443",
    "10.9.0.1 ipproto udp dport 443",
    "10.9.0.1 ipproto 6 sport 1000 dport 0x1bb",
    "fd01::1",
    "fd02::1",
    "fd88::2",
    "fd07::5",
    "fd06:1::1",
    "fd09::1 from fd88::77",
    "fd09::1 from fd88::77/64",
    "fd09::1 ipproto tcp dport 443",
    "fd01::1 fibmatch",
    "::1",
    "ff02::1",
];

/// Rules that send some lookups to tables 100, 1000 and 4294967290.
const RULES: &[&[&str]] = &[
    &[
        "rule",
        "add",
        "from",
        "10.88.0.77",
        "table",
        "100",
        "priority",
        "100",
    ],
    &[
        "rule", "add", "fwmark", "0x1000", "table", "1000", "priority", "101",
    ],
    &[
        "rule",
        "add",
        "fwmark",
        "0x2000",
        "table",
        "4294967290",
        "priority",
        "102",
    ],
    &[
        "-6", "rule", "add", "from", "fd88::77", "table", "100", "priority", "100",
    ],
    &[
        "rule", "add", "ipproto", "tcp", "dport", "443", "table", "100", "priority", "103",
    ],
    &[
        "-6", "rule", "add", "ipproto", "tcp", "dport", "443", "table", "100", "priority", "103",
    ],
];

struct Rules<'a>(&'a Testbed);

impl<'a> Rules<'a> {
    fn add(bed: &'a Testbed) -> Rules<'a> {
        for rule in RULES {
            ok(bed.ip("corpus", rule), &format!("ip {rule:?}"));
        }
        Rules(bed)
    }
}

impl Drop for Rules<'_> {
    fn drop(&mut self) {
        for rule in RULES {
            let del: Vec<&str> = rule
                .iter()
                .map(|w| if *w == "add" { "del" } else { w })
                .collect();
            let _ = self.0.ip("corpus", &del);
        }
    }
}

#[test]
fn answers_equal_ip_route_get() {
    let bed = testbed();
    let _rules = Rules::add(&bed);
    let (mut answered, mut refused) = (0, 0);
    for query in QUERIES {
        let words: Vec<&str> = query.split_whitespace().collect();
        let mut ip_args = vec!["route", "get"];
        ip_args.extend(&words);
        let ip = bed.ip("corpus", &ip_args);
        let mut args = vec!["route", "get", "corpus"];
        args.extend(&words);
        let mine = machnet(&args);
        if !ip.status.success() {
            let err = fails_cleanly(&mine, 7, &format!("route get {query}"));
            let ip_err = stderr(&ip);
            // ip prints errno text as "RTNETLINK answers: …", and the kernel's own sentence
            // (extended ack) as "Error: ….": machnet quotes the sentence without either.
            let kernel = ip_err
                .trim()
                .trim_start_matches("RTNETLINK answers: ")
                .trim_start_matches("Error: ")
                .trim_end_matches('.');
            assert!(
                err.contains(kernel),
                "{query}: ip said {ip_err:?}, machnet {err:?}"
            );
            refused += 1;
            continue;
        }
        assert_eq!(stdout(&mine), stdout(&ip), "{query}");
        let mut json_args = args.clone();
        json_args.insert(3, "--json");
        let mut ip_json = vec!["-j"];
        ip_json.extend(&ip_args);
        let mine: Value = serde_json::from_str(&ok(machnet(&json_args), "json")).unwrap();
        let theirs: Value = serde_json::from_str(&ok(bed.ip("corpus", &ip_json), "ip -j")).unwrap();
        assert_eq!(mine, theirs, "{query} --json");
        answered += 1;
    }
    assert!(
        answered >= 20 && refused >= 3,
        "answered {answered}, refused {refused}"
    );
}

#[test]
fn many_destinations_on_one_socket_from_arguments_and_stdin() {
    let bed = testbed();
    let dests: Vec<String> = (0..300)
        .map(|i| format!("10.{}.{}.{}", 1 + i % 5, i / 250, i % 250))
        .collect();
    let mut expected = String::new();
    for d in &dests {
        expected += &ok(bed.ip("corpus", &["route", "get", d]), "ip route get");
    }
    let mut args = vec!["route", "get", "corpus"];
    args.extend(dests.iter().map(String::as_str));
    assert_eq!(ok(machnet(&args), "route get many"), expected);

    let input = dests.join("\n") + "\n";
    let out = machnet_with_stdin(&["route", "get", "corpus"], input.as_bytes());
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn one_refused_destination_does_not_hide_the_others() {
    let _bed = testbed();
    let out = machnet(&["route", "get", "corpus", "10.1.2.3", "10.6.1.1", "fd01::1"]);
    assert_eq!(out.status.code(), Some(7));
    let text = stdout(&out);
    assert!(
        text.starts_with("10.1.2.3 via 10.88.0.1 dev eth0"),
        "{text}"
    );
    assert!(text.contains("fd01::1 from :: via fd88::1"), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("10.6.1.1") && err.contains("No route to host"),
        "{err}"
    );
    fails_cleanly(
        &machnet(&["route", "get", "corpus", "10.1.2.3", "mark"]),
        2,
        "malformed",
    );
    fails_cleanly(
        &machnet(&["route", "get", "corpus", "10.1.2.3", "oif", "eth9"]),
        3,
        "no device",
    );
}
