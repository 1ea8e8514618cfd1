//! `machnet routes --all` against `ip` in each machine of the testbed.

mod common;

use common::{machnet, ok, stderr, testbed};
use serde_json::Value;

#[test]
fn every_machines_table_is_what_ip_prints_there() {
    let bed = testbed();
    let out = machnet(&["routes", "--all"]);
    let text = ok(out.clone(), "routes --all");
    for machine in ["qbittorrent", "corpus", "empty"] {
        let mine: String = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{machine}: ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let theirs = ok(bed.ip(machine, &["route", "show"]), "ip route show");
        assert_eq!(mine, theirs, "{machine}");
    }
    // The stale machine is skipped, and says so; the host-sharing one is not repeated.
    assert!(stderr(&out).contains("stale skipped"), "{}", stderr(&out));
    assert!(
        !text.lines().any(|l| l.starts_with("hostshare: ")),
        "{text}"
    );

    let json: Vec<Value> =
        serde_json::from_slice(&machnet(&["routes", "--all", "--json"]).stdout).unwrap();
    let theirs: Vec<Value> =
        serde_json::from_slice(&bed.ip("qbittorrent", &["-j", "route", "show"]).stdout).unwrap();
    let mine: Vec<Value> = json
        .iter()
        .filter(|r| r["machine"] == "qbittorrent")
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("machine");
            r
        })
        .collect();
    assert_eq!(mine, theirs);
    assert_eq!(
        json.iter().filter(|r| r["machine"] == "stale").count(),
        0,
        "nothing from a stale machine"
    );
}
