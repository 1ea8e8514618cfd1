//! `machnet sockets` against `ss -tulpn` run inside the same namespace, with listeners
//! this test starts (and ends, by PID).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const LISTENERS: &str = r#"
import ctypes, os, socket, sys, time
socks = []
for family, kind, addr in [
    (socket.AF_INET, socket.SOCK_STREAM, ("10.88.0.2", 9090)),
    (socket.AF_INET6, socket.SOCK_STREAM, ("::", 8080)),
    (socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 5353)),
    (socket.AF_INET6, socket.SOCK_DGRAM, ("fd88::2", 5354)),
    (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 9091)),
    (socket.AF_INET6, socket.SOCK_DGRAM, ("::", 5355)),
]:
    s = socket.socket(family, kind)
    if addr[1] in (9091, 5355):
        # Bound to a device: ss shows it as ADDR%DEV.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo" if addr[1] == 9091 else b"eth0")
    if family == socket.AF_INET6 and addr[0] == "fd88::2":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(addr)
    if kind == socket.SOCK_STREAM:
        s.listen(5)
    socks.append(s)
# One more listener, held by a child that then leaves for PID 1's network namespace (the
# testbed's host): its owner is no longer in corpus, and ss -p still names it.
away = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
away.bind(("10.88.0.2", 9092))
away.listen(5)
read_end, write_end = os.pipe()
if os.fork() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: it ends with the listener the test ends
    for s in socks:
        s.close()  # one owner a socket, as before
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        os._exit(1)
    os.write(write_end, b"x")
    time.sleep(60)
    os._exit(0)
os.read(read_end, 1)
away.close()
print("ready", flush=True)
time.sleep(60)
"#;

struct Listeners(std::process::Child);

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rows as (netid, state, local, peer, process), whitespace-split as ss prints them.
fn rows(text: &str) -> BTreeSet<Vec<String>> {
    text.lines()
        .filter(|l| !l.starts_with("Netid"))
        .map(|l| {
            let f: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let mut row = vec![f[0].clone(), f[1].clone(), f[4].clone(), f[5].clone()];
            row.push(f.get(6).cloned().unwrap_or_default());
            row
        })
        .collect()
}

#[test]
fn listening_sockets_and_owners_match_ss() {
    let bed = testbed();
    let mut child = Command::new("ip")
        .args(["netns", "exec", "corpus", "python3", "-c", LISTENERS])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in corpus");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let listeners = Listeners(child);
    assert_eq!(ready.trim(), "ready");

    let mine = ok(machnet(&["sockets", "corpus"]), "machnet sockets");
    let leader = bed.leader("corpus").to_string();
    let mut ss = Command::new("nsenter");
    ss.args(["-t", &leader, "-n", "ss", "-H", "-tulpn"]);
    let theirs = ok(run(ss), "ss -tulpn");
    assert_eq!(
        rows(&mine),
        rows(&theirs),
        "machnet:\n{mine}\nss:\n{theirs}"
    );
    let pid = listeners.0.id().to_string();
    for port in [
        "10.88.0.2:9090",
        "*:8080",
        "0.0.0.0:5353",
        "[fd88::2]:5354",
        "127.0.0.1%lo:9091",
        "*%eth0:5355",
    ] {
        let line = mine
            .lines()
            .find(|l| l.contains(port))
            .unwrap_or_else(|| panic!("{port}:\n{mine}"));
        assert!(line.contains(&format!("\"python3\",pid={pid},")), "{line}");
    }

    // 9092's only holder has left for another network namespace; ss -p still names it.
    let away = mine
        .lines()
        .find(|l| l.contains("10.88.0.2:9092"))
        .unwrap_or_else(|| panic!("9092:\n{mine}"));
    assert!(
        away.contains("users:((\"python3\",pid=") && !away.contains(&format!("pid={pid},")),
        "{away}"
    );

    let json: Value =
        serde_json::from_str(&ok(machnet(&["sockets", "corpus", "--json"]), "json")).unwrap();
    let by_port = |port: u16| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|s| s["local"]["port"] == port)
            .unwrap_or_else(|| panic!("{port} in JSON"))
    };
    let tcp9090 = by_port(9090);
    assert_eq!(tcp9090["netid"], "tcp");
    assert_eq!(tcp9090["local"]["address"], "10.88.0.2");
    assert_eq!(tcp9090["process"][0]["name"], "python3");
    assert!(tcp9090["local"].get("device").is_none(), "{tcp9090}");
    assert_eq!(by_port(9091)["local"]["device"], "lo");
}

/// In a container with a PID namespace of its own, `ss -p` run inside names a socket's
/// owner by its PID there; machnet prints the same, and gives the host PID in JSON.
#[test]
fn owners_in_a_container_have_the_pids_ss_inside_shows() {
    let bed = testbed();
    let leader = bed.leader("qbittorrent").to_string();
    let listener = r#"
import ctypes, os, socket, time
ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: ends with the nsenter we end
s = socket.socket()
s.bind(("0.0.0.0", 7071))
s.listen(5)
print(os.getpid(), flush=True)
time.sleep(60)
"#;
    // nsenter -p forks: python3 is nsenter's child, inside the container's PID namespace.
    let mut child = Command::new("nsenter")
        .args(["-t", &leader, "-n", "-p", "python3", "-c", listener])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in qbittorrent's namespaces");
    let mut inner_pid = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut inner_pid)
        .unwrap();
    let nsenter = Listeners(child);
    let inner_pid: u32 = inner_pid.trim().parse().expect("python3's PID inside");
    let children = format!("/proc/{}/task/{}/children", nsenter.0.id(), nsenter.0.id());
    let host_pid: u32 = std::fs::read_to_string(&children)
        .expect("nsenter's children")
        .trim()
        .parse()
        .expect("one child");
    assert_ne!(
        inner_pid, host_pid,
        "the container has a PID namespace of its own"
    );

    // ss as it runs inside: the container's network and PID namespaces, its own /proc.
    let mut ss = Command::new("nsenter");
    ss.args([
        "-t",
        &leader,
        "-n",
        "-p",
        "--",
        "unshare",
        "--mount",
        "--mount-proc",
    ])
    .args(["ss", "-H", "-tulpn"]);
    let theirs = ok(run(ss), "ss -tulpn inside qbittorrent");
    let mine = ok(machnet(&["sockets", "qbittorrent"]), "machnet sockets");
    assert_eq!(
        rows(&mine),
        rows(&theirs),
        "machnet:\n{mine}\nss:\n{theirs}"
    );
    assert!(
        mine.contains(&format!("users:((\"python3\",pid={inner_pid},fd=")),
        "{mine}"
    );

    let json: Value =
        serde_json::from_str(&ok(machnet(&["sockets", "qbittorrent", "--json"]), "json")).unwrap();
    let owner = &json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["local"]["port"] == 7071)
        .unwrap_or_else(|| panic!("7071 in {json}"))["process"][0];
    assert_eq!(owner["pid"], inner_pid, "{owner}");
    assert_eq!(owner["host_pid"], host_pid, "{owner}");
}
