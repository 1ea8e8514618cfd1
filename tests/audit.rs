//! `machnet audit`, `whois` and `topology` against the real testbed. Every fault is made
//! for real (a loopback taken down, a gateway left off every subnet, a host-side veth
//! down, forwarding off, a duplicated address, NAT missing), checked, then undone.

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::{fails_cleanly, machnet, ok, run, sh, stderr, stdout, testbed, Testbed};
use serde_json::Value;

/// The tests here change the sandbox host and machines: one at a time.
static STATE: Mutex<()> = Mutex::new(());

/// The sandbox "host" (the testbed's own network namespace: never the real host).
fn host(args: &[&str]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    ok(run(cmd), &format!("{args:?}"))
}

const FORWARDING: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Locks the testbed and turns forwarding on (a healthy host: machines route through
/// it), putting the old values back at the end.
struct Healthy {
    bed: Testbed,
    forwarding: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

fn healthy() -> Healthy {
    let lock = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let forwarding = FORWARDING
        .iter()
        .map(|path| {
            let old = std::fs::read_to_string(path).unwrap();
            std::fs::write(path, "1").unwrap();
            old
        })
        .collect();
    let bed = testbed();
    bed.settle_ipv6("qbittorrent");
    Healthy {
        bed,
        forwarding,
        _lock: lock,
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        for (path, old) in FORWARDING.iter().zip(&self.forwarding) {
            let _ = std::fs::write(path, old.trim());
        }
    }
}

/// Findings as parsed JSON, with the exit code.
fn audit(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let out = machnet(&all);
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit --json is not JSON ({e}): {}", stderr(&out)));
    (out.status.code(), findings)
}

/// (rule, machine, subject) of each finding.
fn keys(findings: &[Value]) -> Vec<(String, String, String)> {
    findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            for field in ["severity", "message", "fix"] {
                assert!(f[field].is_string(), "finding without {field}: {f}");
            }
            (s("rule"), s("machine"), s("subject"))
        })
        .collect()
}

fn has(findings: &[Value], rule: &str, machine: &str) -> bool {
    keys(findings)
        .iter()
        .any(|(r, m, _)| r == rule && m == machine)
}

#[test]
fn a_healthy_machine_has_no_finding() {
    let _h = healthy();
    let (code, findings) = audit(&["qbittorrent"]);
    assert_eq!(findings, Vec::<Value>::new());
    assert_eq!(code, Some(0));
    assert_eq!(
        ok(machnet(&["audit", "qbittorrent"]), "table"),
        "no findings\n"
    );
}

#[test]
fn the_standing_faults_of_the_testbed_are_found() {
    let _h = healthy();
    let (code, findings) = audit(&[]);
    assert!(has(&findings, "stale-machine", "stale"), "{findings:?}");
    assert!(
        has(&findings, "shares-host-netns", "hostshare"),
        "{findings:?}"
    );
    // corpus's eth1/eth2 have their host ends down (the corpus fixture).
    assert!(has(&findings, "veth-peer-down", "corpus"), "{findings:?}");
    assert!(
        has(&findings, "route-via-down-link", "corpus"),
        "{findings:?}"
    );
    assert!(!keys(&findings).iter().any(|(_, m, _)| m == "qbittorrent"));
    assert_eq!(code, Some(12), "the worst finding is an error");

    // Only a warning: exit 11.
    let (code, findings) = audit(&["hostshare"]);
    assert_eq!(
        keys(&findings),
        [(
            "shares-host-netns".into(),
            "hostshare".into(),
            "netns".into()
        )]
    );
    assert_eq!(code, Some(11));

    // Stable: the same state prints the same lines, in the same order.
    let table = |_| stdout(&machnet(&["audit"]));
    assert_eq!(table(1), table(2));
}

#[test]
fn each_fault_made_for_real_is_found_and_goes_away_when_mended() {
    let h = healthy();
    let bed = &h.bed;
    type Fault<'a> = (&'a str, &'a str, Vec<Vec<&'a str>>, Vec<Vec<&'a str>>);
    // (rule, machine it is reported on, make it (ip in a machine / on the host), undo it)
    let faults: Vec<Fault> = vec![
        (
            "lo-down",
            "empty",
            vec![vec!["@empty", "link", "set", "lo", "down"]],
            vec![vec!["@empty", "link", "set", "lo", "up"]],
        ),
        (
            "gateway-unreachable",
            "qbittorrent",
            vec![
                vec![
                    "@qbittorrent",
                    "addr",
                    "add",
                    "10.55.0.2/24",
                    "dev",
                    "host0",
                ],
                vec![
                    "@qbittorrent",
                    "route",
                    "add",
                    "10.56.0.0/16",
                    "via",
                    "10.55.0.1",
                ],
                vec![
                    "@qbittorrent",
                    "addr",
                    "del",
                    "10.55.0.2/24",
                    "dev",
                    "host0",
                ],
            ],
            vec![vec!["@qbittorrent", "route", "del", "10.56.0.0/16"]],
        ),
        (
            "veth-peer-down",
            "qbittorrent",
            vec![vec!["ip", "link", "set", "ve-qbittorrent", "down"]],
            vec![
                vec!["ip", "link", "set", "ve-qbittorrent", "up"],
                vec![
                    "ip",
                    "addr",
                    "replace",
                    "10.77.1.1/24",
                    "dev",
                    "ve-qbittorrent",
                ],
            ],
        ),
        (
            // What a container looks like after its DHCP client gave up: IPv4LL's
            // address (networkd gives it metric 2048), the kernel's fe80::, no default.
            "link-local-only",
            "empty",
            vec![
                vec![
                    "@empty", "link", "add", "dh0", "type", "veth", "peer", "name", "dh1",
                ],
                vec!["@empty", "link", "set", "dh1", "up"],
                vec!["@empty", "link", "set", "dh0", "up"],
                vec![
                    "@empty",
                    "addr",
                    "add",
                    "169.254.121.54/16",
                    "dev",
                    "dh0",
                    "metric",
                    "2048",
                ],
            ],
            vec![vec!["@empty", "link", "del", "dh0"]],
        ),
        (
            "duplicate-address",
            "empty",
            vec![vec!["@empty", "addr", "add", "10.77.1.2/32", "dev", "lo"]],
            vec![vec!["@empty", "addr", "del", "10.77.1.2/32", "dev", "lo"]],
        ),
        (
            "overlapping-subnet",
            "empty",
            vec![vec!["@empty", "addr", "add", "10.77.1.50/24", "dev", "lo"]],
            vec![vec!["@empty", "addr", "del", "10.77.1.50/24", "dev", "lo"]],
        ),
        (
            "host-forwarding-off",
            ".host",
            vec![vec!["sysctl", "-qw", "net.ipv4.ip_forward=0"]],
            vec![vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"]],
        ),
        (
            "mtu-mismatch",
            "qbittorrent",
            vec![vec!["ip", "link", "set", "ve-qbittorrent", "mtu", "1400"]],
            vec![vec!["ip", "link", "set", "ve-qbittorrent", "mtu", "1500"]],
        ),
        (
            "wildcard-matches-nothing",
            ".host",
            vec![
                vec!["nft", "add", "table", "inet", "machnet_test_wild"],
                vec![
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "machnet_test_wild",
                    "fw",
                    "{ type filter hook forward priority 0 ; }",
                ],
                vec![
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "machnet_test_wild",
                    "fw",
                    "iifname",
                    "\"ve-+\"",
                    "accept",
                ],
            ],
            vec![vec!["nft", "delete", "table", "inet", "machnet_test_wild"]],
        ),
    ];
    let apply = |steps: &[Vec<&str>]| {
        for step in steps {
            match step[0].strip_prefix('@') {
                Some(machine) => {
                    ok(bed.ip(machine, &step[1..]), &format!("{step:?}"));
                }
                None => {
                    host(step);
                }
            }
        }
    };
    for (rule, machine, make, undo) in &faults {
        let (_, before) = audit(&["--rule", rule]);
        assert!(
            !has(&before, rule, machine),
            "{rule} before the fault: {before:?}"
        );
        apply(make);
        let (code, during) = audit(&["--rule", rule]);
        apply(undo);
        assert!(has(&during, rule, machine), "{rule} not found: {during:?}");
        assert!(
            code == Some(11) || code == Some(12),
            "{rule}: exit {code:?}"
        );
        let (_, after) = audit(&["--rule", rule]);
        assert!(
            !has(&after, rule, machine),
            "{rule} after mending: {after:?}"
        );
    }
    bed.settle_ipv6("qbittorrent");
    let (_, findings) = audit(&["qbittorrent"]);
    assert_eq!(findings, Vec::<Value>::new(), "qbittorrent healthy again");
}

#[test]
fn nat_is_missing_until_a_masquerade_rule_covers_the_machine() {
    let _h = healthy();
    // The sandbox host reaches "beyond" once it has a default route of its own.
    host(&["ip", "route", "add", "default", "via", "10.77.1.2"]);
    let (_, without) = audit(&["--rule", "nat-missing"]);
    host(&["nft", "add", "table", "ip", "machnet_test"]);
    host(&[
        "nft",
        "add",
        "chain",
        "ip",
        "machnet_test",
        "post",
        "{ type nat hook postrouting priority 100 ; }",
    ]);
    host(&[
        "nft",
        "add",
        "rule",
        "ip",
        "machnet_test",
        "post",
        "ip",
        "saddr",
        "10.77.1.0/24",
        "masquerade",
    ]);
    let (_, with) = audit(&["--rule", "nat-missing"]);
    host(&["nft", "delete", "table", "ip", "machnet_test"]);
    host(&["ip", "route", "del", "default"]);
    assert!(has(&without, "nat-missing", "qbittorrent"), "{without:?}");
    assert!(!has(&with, "nat-missing", "qbittorrent"), "{with:?}");
}

/// The host's forward chain dropping what a machine sends out (judged by why's nftables
/// evaluator), and a unique-local IPv6 address leaving with no NAT66. The sandbox host
/// gets default routes of its own so that there is an "out".
#[test]
fn a_forward_drop_and_a_missing_nat66_are_found_from_the_real_ruleset() {
    let _h = healthy();
    sh("ip route add default via 10.77.1.2
        ip -6 route add default via fd77:1::2");
    let (_, before) = audit(&["--rule", "forward-dropped"]);
    sh("nft add table inet machnet_test_drop
        nft 'add chain inet machnet_test_drop fw { type filter hook forward priority 0 ; policy drop ; }'");
    let (code, dropped) = audit(&["--rule", "forward-dropped"]);
    let (_, nat66) = audit(&["--rule", "nat66-missing"]);
    sh("nft delete table inet machnet_test_drop
        nft add table ip6 machnet_test_nat6
        nft 'add chain ip6 machnet_test_nat6 post { type nat hook postrouting priority 100 ; }'
        nft add rule ip6 machnet_test_nat6 post ip6 saddr fd88::/64 masquerade");
    let (_, covered) = audit(&["--rule", "nat66-missing"]);
    sh("nft delete table ip6 machnet_test_nat6
        ip route del default
        ip -6 route del default");
    assert!(
        !has(&before, "forward-dropped", "qbittorrent"),
        "{before:?}"
    );
    assert!(
        has(&dropped, "forward-dropped", "qbittorrent"),
        "{dropped:?}"
    );
    assert_eq!(code, Some(12));
    let message = dropped
        .iter()
        .find(|f| f["machine"] == "qbittorrent")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("table inet machnet_test_drop chain fw: policy drop"),
        "{message}"
    );
    // corpus routes IPv6 out through the host (default via fd88::1) from fd88::2.
    assert!(has(&nat66, "nat66-missing", "corpus"), "{nat66:?}");
    assert!(!has(&covered, "nat66-missing", "corpus"), "{covered:?}");
}

/// A loopback nameserver (a resolved stub) in a machine where nothing listens on 53.
#[test]
fn a_loopback_nameserver_with_nothing_behind_it_is_found() {
    let h = healthy();
    let conf = format!("/proc/{}/root/etc/resolv.conf", h.bed.leader("qbittorrent"));
    assert!(
        !std::path::Path::new(&conf).exists(),
        "the busybox root has none"
    );
    std::fs::write(&conf, "nameserver 127.0.0.53\n").unwrap();
    let (_, found) = audit(&["--rule", "loopback-nameserver"]);
    std::fs::remove_file(&conf).unwrap();
    let (_, after) = audit(&["--rule", "loopback-nameserver"]);
    assert!(
        has(&found, "loopback-nameserver", "qbittorrent"),
        "{found:?}"
    );
    assert!(
        !has(&after, "loopback-nameserver", "qbittorrent"),
        "{after:?}"
    );
}

#[test]
fn route_drift_compares_with_an_apply_file() {
    let h = healthy();
    let dir = std::env::temp_dir().join(format!("machnet-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = dir.join("set.toml");
    std::fs::write(
        &set,
        "[machines.qbittorrent]\nroutes = [ { destination = \"192.0.2.0/24\", type = \"blackhole\" } ]\n",
    )
    .unwrap();
    let set = set.to_str().unwrap();
    ok(machnet(&["apply", set]), "apply");
    let (code, in_sync) = audit(&["qbittorrent", "--expect", set]);
    ok(
        h.bed.ip("qbittorrent", &["route", "del", "192.0.2.0/24"]),
        "drift",
    );
    let (_, drifted) = audit(&["qbittorrent", "--expect", set]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((code, in_sync), (Some(0), vec![]));
    assert_eq!(
        keys(&drifted),
        [(
            "route-drift".into(),
            "qbittorrent".into(),
            "blackhole 192.0.2.0/24".into()
        )]
    );
    assert!(drifted[0]["message"].as_str().unwrap().contains("missing"));
}

#[test]
fn prometheus_output_parses_and_counts_the_findings() {
    let _h = healthy();
    let (_, findings) = audit(&[]);
    let out = machnet(&["audit", "--prometheus"]);
    assert_eq!(out.status.code(), Some(12));
    let text = stdout(&out);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let count = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .collect::<Vec<_>>()
    };
    let per_finding: f64 = count("machnet_audit_finding")
        .iter()
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(per_finding as usize, findings.len());
    let errors = count("machnet_audit_findings")
        .into_iter()
        .find(|s| s.labels.get("severity") == Some("error"))
        .expect("errors total");
    let n_errors = findings.iter().filter(|f| f["severity"] == "error").count();
    assert!(matches!(errors.value, prometheus_parse::Value::Gauge(v) if v as usize == n_errors));
    assert!(count("machnet_audit_machines").len() == 1);
    let stale = count("machnet_audit_finding")
        .into_iter()
        .find(|s| s.labels.get("machine") == Some("stale"))
        .expect("the stale machine's series");
    assert_eq!(stale.labels.get("rule"), Some("stale-machine"));
    assert_eq!(stale.labels.get("severity"), Some("error"));
}

#[test]
fn rules_can_be_chosen_and_skipped_and_unknown_ones_are_refused() {
    let _h = healthy();
    let (_, only) = audit(&["--rule", "stale-machine"]);
    assert!(keys(&only).iter().all(|(r, _, _)| r == "stale-machine") && !only.is_empty());
    let (_, skipped) = audit(&["--skip", "stale-machine", "--skip", "veth-peer-down"]);
    assert!(!keys(&skipped)
        .iter()
        .any(|(r, _, _)| r == "stale-machine" || r == "veth-peer-down"));
    let err = fails_cleanly(&machnet(&["audit", "--rule", "nope"]), 2, "unknown rule");
    assert!(err.contains("lo-down"), "{err}");
    let err = fails_cleanly(&machnet(&["audit", "nosuchmachine"]), 3, "unknown machine");
    assert!(err.contains("qbittorrent"), "{err}");
    let list = ok(machnet(&["audit", "--list-rules"]), "list rules");
    assert_eq!(list.lines().count(), machnet::audit::rule_ids().len());
}

#[test]
fn whois_names_the_owner_and_those_directly_connected() {
    let _h = healthy();
    let answers = ok(machnet(&["whois", "10.77.1.2"]), "whois");
    assert_eq!(
        answers,
        "qbittorrent  owns       10.77.1.2/24 dev host0\n\
         .host        connected  10.77.1.0/24 dev ve-qbittorrent\n\
         qbittorrent  connected  10.77.1.0/24 dev host0\n"
    );
    // What ip sees in each namespace agrees.
    let ip_owner = ok(
        testbed().ip("qbittorrent", &["-br", "addr", "show", "to", "10.77.1.2"]),
        "ip",
    );
    assert!(ip_owner.starts_with("host0@"), "{ip_owner}");
    let json: Vec<Value> =
        serde_json::from_slice(&machnet(&["whois", "10.88.0.0/16", "--json"]).stdout).unwrap();
    let owners: Vec<(&str, &str)> = json
        .iter()
        .filter(|a| a["relation"] == "owns")
        .map(|a| {
            (
                a["namespace"].as_str().unwrap(),
                a["prefix"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        [(".host", "10.88.0.1/24"), ("corpus", "10.88.0.2/24")]
    );
    let err = fails_cleanly(&machnet(&["whois", "192.0.2.99"]), 3, "nobody has it");
    assert!(err.contains("192.0.2.99"), "{err}");
    fails_cleanly(&machnet(&["whois", "10.0.0.0/40"]), 2, "bad prefix");
}

#[test]
fn topology_shows_veth_pairs_and_renders_with_graphviz() {
    let _h = healthy();
    let json: Value = serde_json::from_slice(&machnet(&["topology", "--format", "json"]).stdout)
        .expect("topology JSON");
    let veths: Vec<(String, String)> = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "veth")
        .map(|e| {
            (
                format!(
                    "{}:{}",
                    e["a"]["namespace"].as_str().unwrap(),
                    e["a"]["interface"].as_str().unwrap()
                ),
                format!(
                    "{}:{}",
                    e["b"]["namespace"].as_str().unwrap(),
                    e["b"]["interface"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert!(
        veths.contains(&("qbittorrent:host0".into(), ".host:ve-qbittorrent".into())),
        "{veths:?}"
    );
    let qb = json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "qbittorrent")
        .unwrap();
    assert_eq!(qb["default_routes"][0], "default via 10.77.1.1 dev host0");

    let dot = ok(machnet(&["topology", "--format", "dot"]), "dot");
    let svg_path =
        std::env::temp_dir().join(format!("machnet-topology-{}.svg", std::process::id()));
    let mut render = Command::new("sh");
    render.args([
        "-c",
        &format!("dot -Tsvg -o {} <<'EOF'\n{dot}EOF", svg_path.display()),
    ]);
    ok(run(render), "dot -Tsvg");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let _ = std::fs::remove_file(&svg_path);
    assert!(
        svg.contains("<svg") && svg.contains("ve&#45;qbittorrent"),
        "svg"
    );

    let mermaid = ok(machnet(&["topology", "--format", "mermaid"]), "mermaid");
    assert!(mermaid.starts_with("flowchart LR\n") && mermaid.contains("===|veth|"));
}
