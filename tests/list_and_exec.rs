//! `machnet list` against machined and `ip`, and `machnet exec` against nsenter's behaviour.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

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
        bed.settle_ipv6(machine);
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
    let bed = testbed();
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

    let out = machnet_with_stdin(&["exec", "corpus", "--", "cat"], b"through stdin\n");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "through stdin\n");

    // The command sees what nsenter's would (the fds this test process passes on), and
    // none of machnet's own: no bus socket, pidfd or namespace fd.
    let list = "ls /proc/$$/fd";
    let mine = ok(
        machnet(&["exec", "corpus", "--", "sh", "-c", list]),
        "exec ls fds",
    );
    let leader = bed.leader("corpus").to_string();
    let mut nsenter = Command::new("nsenter");
    nsenter.args(["-t", &leader, "-n", "sh", "-c", list]);
    let theirs = ok(run(nsenter), "nsenter ls fds");
    assert_eq!(mine, theirs, "fds reaching the command");

    fails_cleanly(
        &machnet(&["exec", "corpus", "--", "no-such-command-xyz"]),
        127,
        "missing command",
    );
}

#[test]
fn exec_joins_more_namespaces_only_when_asked() {
    let bed = testbed();
    let leader = bed.leader("qbittorrent");
    let link = |p: String| {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let theirs = |kind: &str| link(format!("/proc/{leader}/ns/{kind}"));
    let ours = |kind: &str| link(format!("/proc/self/ns/{kind}"));
    let probe = "readlink /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/pid /proc/self/ns/mnt";
    let seen = |flags: &[&str]| -> Vec<String> {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend(["qbittorrent", "--", "/bin/sh", "-c", probe]);
        ok(machnet(&args), &format!("exec {flags:?}"))
            .lines()
            .map(str::to_string)
            .collect()
    };
    // By default: none of them.
    assert_eq!(
        seen(&[]),
        [ours("uts"), ours("ipc"), ours("pid"), ours("mnt")]
    );
    // Each flag joins exactly its own.
    assert_eq!(
        seen(&["-u"]),
        [theirs("uts"), ours("ipc"), ours("pid"), ours("mnt")]
    );
    assert_eq!(
        seen(&["-i"]),
        [ours("uts"), theirs("ipc"), ours("pid"), ours("mnt")]
    );
    assert_eq!(
        seen(&["-p"]),
        [ours("uts"), ours("ipc"), theirs("pid"), ours("mnt")]
    );
    let uts = ok(
        machnet(&["exec", "-u", "qbittorrent", "--", "hostname"]),
        "exec -u hostname",
    );
    assert_eq!(uts.trim(), "qbittorrent");
    // -m: the command is found and runs inside the container's own file system.
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
    let err = fails_cleanly(
        &machnet(&["exec", "-m", "netns:corpus", "--", "true"]),
        2,
        "-m on a bare netns",
    );
    assert!(err.contains("no process"), "{err}");
}

/// What the caller hands machnet (an open fd, its ignored signals) reaches the command,
/// and a SIGTERM sent to machnet ends the command too, as with nsenter (which execs).
#[test]
fn exec_passes_on_caller_fds_ignored_signals_and_termination() {
    let _bed = testbed();
    let m = machnet_bin();
    let script = format!(
        "exec 3</etc/hostname; {m} exec corpus -- sh -c 'cat <&3 >/dev/null && echo fd3-ok'; \
         trap '' INT; {m} exec corpus -- sh -c 'grep SigIgn /proc/self/status'"
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let out = ok(run(cmd), "fd and signal pass-through");
    assert!(out.contains("fd3-ok"), "{out}");
    let ignored = out.lines().find(|l| l.starts_with("SigIgn")).unwrap();
    let mask = u64::from_str_radix(ignored.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(
        mask & (1 << (libc::SIGINT - 1)) != 0,
        "SIGINT stays ignored: {ignored}"
    );

    // SIGTERM to machnet reaches the command: nothing is left running.
    // A sleep with a duration no other process has, found by its command line.
    let marker = format!("30.{}", std::process::id());
    let mut child = Command::new(m)
        .args(["exec", "corpus", "--", "sleep", &marker])
        .spawn()
        .unwrap();
    let found = |marker: &str| {
        let wanted = format!("sleep\0{marker}\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| c == wanted.as_bytes())
                    .unwrap_or(false)
            })
    };
    for _ in 0..100 {
        if found(&marker) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(found(&marker), "the command started");
    // SAFETY: signalling the machnet process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "machnet reports the command's death"
    );
    assert!(!found(&marker), "the command ended with machnet");
}
