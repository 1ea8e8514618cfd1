//! `machnet list` against machined and `ip`, and `machnet exec` against nsenter's behaviour.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn listing() -> Vec<Value> {
    let out = ok(machnet(&["list", "--json"]), "machnet list --json");
    serde_json::from_str::<Value>(&out)
        .expect("list --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["machine"] == name)
        .unwrap_or_else(|| panic!("list has no {name}: {rows:?}"))
}

#[test]
fn list_shows_every_machine_with_its_namespace() {
    let bed = testbed();
    let rows = listing();
    for name in [
        "qbittorrent",
        "corpus",
        "empty",
        "hostshare",
        "stale",
        ".host",
    ] {
        row(&rows, name);
    }
    let qbit = row(&rows, "qbittorrent");
    assert_eq!(qbit["service"], "systemd-nspawn");
    assert_eq!(qbit["leader"], bed.leader("qbittorrent"));
    assert_eq!(qbit["state"], "running");
    assert_eq!(qbit["netns"], "private");
    let inode = std::fs::metadata(format!("/proc/{}/ns/net", bed.leader("qbittorrent")))
        .unwrap()
        .ino();
    assert_eq!(qbit["netns_inode"], inode);

    assert_eq!(row(&rows, "hostshare")["netns"], "host");
    assert_eq!(row(&rows, "stale")["state"], "stale");
    assert!(row(&rows, "stale")["netns_inode"].is_null());
}

#[test]
fn list_interfaces_match_ip_addr() {
    let bed = testbed();
    for name in ["qbittorrent", "corpus", "empty"] {
        bed.settle_ipv6(name);
    }
    let rows = listing();
    for name in ["qbittorrent", "corpus", "empty"] {
        let ip: Value =
            serde_json::from_str(&ok(bed.ip(name, &["-j", "addr", "show"]), "ip -j addr")).unwrap();
        let ours = row(&rows, name)["interfaces"].as_array().unwrap().clone();
        let ip = ip.as_array().unwrap();
        assert_eq!(ours.len(), ip.len(), "{name}: interface count");
        for (mine, theirs) in ours.iter().zip(ip) {
            assert_eq!(mine["ifname"], theirs["ifname"], "{name}");
            assert_eq!(mine["ifindex"], theirs["ifindex"], "{name}");
            assert_eq!(mine["operstate"], theirs["operstate"], "{name}");
            let addrs = |v: &Value| -> Vec<(String, u64)> {
                v["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a["local"].as_str().unwrap().to_string(),
                            a["prefixlen"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            };
            assert_eq!(addrs(mine), addrs(theirs), "{name} {}", mine["ifname"]);
        }
    }
}

#[test]
fn list_table_labels_host_sharing_and_stale_machines() {
    let _bed = testbed();
    let table = ok(machnet(&["list"]), "machnet list");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_string()
    };
    assert!(line("hostshare").ends_with("shares host netns"), "{table}");
    assert!(line("stale").ends_with("stale"), "{table}");
    assert!(line("qbittorrent").ends_with("private"), "{table}");
    assert!(table.contains("10.77.1.2/24"), "{table}");
}

#[test]
fn exec_runs_a_host_command_in_the_machine_netns() {
    let bed = testbed();
    for machine in ["qbittorrent", "corpus"] {
        let mine = ok(
            machnet(&["exec", machine, "--", "ip", "route", "show", "table", "all"]),
            "exec ip route",
        );
        let theirs = ok(
            bed.ip(machine, &["route", "show", "table", "all"]),
            "nsenter ip route",
        );
        assert_eq!(mask_expires(&mine), mask_expires(&theirs), "{machine}");
    }
    // Only the network namespace moves by default: mount and UTS stay the host's.
    let probe = "readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/uts; hostname";
    let inside = ok(
        machnet(&["exec", "qbittorrent", "--", "sh", "-c", probe]),
        "exec probe",
    );
    let lines: Vec<&str> = inside.lines().collect();
    let leader = bed.leader("qbittorrent");
    let link = |p: String| {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(lines[0], link(format!("/proc/{leader}/ns/net")));
    assert_eq!(lines[1], link("/proc/self/ns/mnt".into()));
    assert_eq!(lines[2], link("/proc/self/ns/uts".into()));
    assert_ne!(lines[3], "qbittorrent", "UTS must not be joined by default");
}

#[test]
fn exec_passes_status_stdio_and_no_file_descriptors() {
    let _bed = testbed();
    let out = machnet(&[
        "exec",
        "corpus",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");

    let out = machnet(&["exec", "corpus", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "signal death maps to 128+N"
    );

    let mut child = Command::new(machnet_bin())
        .args(["exec", "corpus", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "through stdin\n");

    // The child sees fds 0-2 only: no bus socket, pidfd or namespace fd of machnet's.
    let fds = ok(
        machnet(&["exec", "corpus", "--", "sh", "-c", "ls /proc/$$/fd"]),
        "exec ls fds",
    );
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "leaked fds");

    fails_cleanly(
        &machnet(&["exec", "corpus", "--", "no-such-command-xyz"]),
        127,
        "missing command",
    );
}

#[test]
fn exec_joins_more_namespaces_only_when_asked() {
    let _bed = testbed();
    let uts = ok(
        machnet(&["exec", "-u", "qbittorrent", "--", "hostname"]),
        "exec -u hostname",
    );
    assert_eq!(uts.trim(), "qbittorrent");
    let os = ok(
        machnet(&[
            "exec",
            "-m",
            "qbittorrent",
            "--",
            "/bin/cat",
            "/etc/os-release",
        ]),
        "exec -m cat os-release",
    );
    assert!(
        os.contains("machnet-testbed"),
        "the container's own os-release: {os}"
    );
    let pid = ok(
        machnet(&["exec", "-p", "qbittorrent", "--", "sh", "-c", "echo $$"]),
        "exec -p",
    );
    let pid: u32 = pid.trim().parse().unwrap();
    assert!(
        pid < 100,
        "a PID inside the container's PID namespace, got {pid}"
    );
    let err = fails_cleanly(
        &machnet(&["exec", "-m", "netns:corpus", "--", "true"]),
        2,
        "-m on a bare netns",
    );
    assert!(err.contains("no process"), "{err}");
}
