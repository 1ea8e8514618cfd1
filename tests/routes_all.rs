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

/// Commands that read every machine hold two descriptors per machine for their whole run;
/// a soft limit far below what that needs (the usual 1024 stopped them near 500
/// machines) is raised to the hard limit rather than failing with EMFILE.
#[test]
fn a_low_soft_limit_on_open_files_is_raised_not_hit() {
    let _bed = testbed();
    for args in [&["routes", "--all"][..], &["audit"][..]] {
        let unlimited = machnet(args);
        let mut low = std::process::Command::new("prlimit");
        low.args(["--nofile=12:4096", common::machnet_bin()])
            .args(args);
        let out = common::run(low);
        assert!(
            !stderr(&out).contains("Too many open files"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), unlimited.status.code(), "{args:?}");
        assert_eq!(common::stdout(&out), common::stdout(&unlimited), "{args:?}");
    }
}
