//! `machnet firewall`: the machine's own ruleset exactly as nft prints it inside, and the
//! host rules that concern the machine (and only those).

mod common;

use std::process::Command;

use common::*;

/// Tables this test made, deleted when it ends, passing or not.
struct Tables(u32);

impl Drop for Tables {
    fn drop(&mut self) {
        let leader = self.0;
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "nsenter -t {leader} -n nft delete table inet fw_test_own; \
                     nft delete table ip fw_test_nat; nft delete table inet fw_test_filter"
                ),
            ])
            .status();
    }
}

#[test]
fn the_machines_ruleset_and_the_host_rules_that_concern_it() {
    let bed = testbed();
    let leader = bed.leader("qbittorrent");
    let _tables = Tables(leader);
    sh(&format!(
        "nsenter -t {leader} -n nft add table inet fw_test_own
         nsenter -t {leader} -n nft 'add chain inet fw_test_own in {{ type filter hook input priority filter; policy accept; }}'
         nsenter -t {leader} -n nft add rule inet fw_test_own in tcp dport 22 accept
         nft add table ip fw_test_nat
         nft 'add chain ip fw_test_nat post {{ type nat hook postrouting priority srcnat; }}'
         nft add rule ip fw_test_nat post oifname eth9 ip saddr 10.77.1.0/24 masquerade
         nft add table inet fw_test_filter
         nft 'add chain inet fw_test_filter fw {{ type filter hook forward priority filter; }}'
         nft add rule inet fw_test_filter fw iifname \"ve-*\" accept
         nft add rule inet fw_test_filter fw iifname vc-corpus accept
         nft add rule inet fw_test_filter fw ip daddr 10.88.0.2 accept"
    ));
    let inside = sh(&format!("nsenter -t {leader} -n nft list ruleset"));
    let text = ok(machnet(&["firewall", "qbittorrent"]), "firewall");
    let (own, host) = text
        .split_once("\n# .host: ")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        own,
        format!("# machine qbittorrent: its own ruleset\n{inside}"),
        "the machine's part is nft's own text"
    );
    assert!(
        host.contains("table ip fw_test_nat chain post handle 2: oifname \"eth9\" ip saddr 10.77.1.0/24 masquerade   # covers 10.77.1.2"),
        "{host}"
    );
    assert!(
        host.contains("iifname \"ve-*\" accept   # matches ve-qbittorrent"),
        "{host}"
    );
    assert!(!host.contains("vc-corpus"), "{host}");
    assert!(!host.contains("10.88.0.2"), "{host}");

    let json = ok(
        machnet(&["firewall", "qbittorrent", "--json"]),
        "firewall --json",
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let inside: serde_json::Value =
        serde_json::from_str(&sh(&format!("nsenter -t {leader} -n nft -j list ruleset"))).unwrap();
    assert_eq!(json["ruleset"], inside);
    let rules: Vec<&str> = json["host_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["table"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["fw_test_nat", "fw_test_filter"], "{json}");
}

#[test]
fn an_unknown_machine_fails_cleanly() {
    let _bed = testbed();
    fails_cleanly(
        &machnet(&["firewall", "nosuchmachine"]),
        3,
        "unknown machine",
    );
}
