//! `why --probe`: one real packet, beside the simulated verdicts. A TCP connect (or one
//! UDP datagram) is sent from inside the machine with nftrace set on it, in the machine
//! and on the host, and `nft monitor trace` in both namespaces reports every chain that
//! saw it and what it decided.
//!
//! The trace marks are made by one table of machnet's own in each namespace
//! (`inet machnet_probe_PID`, a filter chain at priority -350 on the output and
//! prerouting hooks that only sets `meta nftrace`), deleted again when the probe ends,
//! also on failure.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::firewall::run_nft;
use super::{Hop, Verdict};
use crate::error::{Error, Result};
use crate::netns::PinnedNamespace;

/// How long the connect may take, and how long the monitors listen after it.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
const SETTLE: Duration = Duration::from_millis(300);

/// The probe table in one namespace; deleted when dropped.
struct ProbeTable<'a> {
    namespace: Option<&'a PinnedNamespace>,
    name: String,
}

impl ProbeTable<'_> {
    fn create(namespace: Option<&PinnedNamespace>, dest: IpAddr) -> Result<ProbeTable<'_>> {
        let table = ProbeTable {
            namespace,
            name: format!("machnet_probe_{}", std::process::id()),
        };
        let family = if dest.is_ipv4() { "ip" } else { "ip6" };
        let name = &table.name;
        // Both directions of the flow are marked, on the hooks a packet enters by.
        let script = format!(
            "table inet {name} {{
               chain out {{ type filter hook output priority -350; {family} daddr {dest} meta nftrace set 1; {family} saddr {dest} meta nftrace set 1; }}
               chain pre {{ type filter hook prerouting priority -350; {family} daddr {dest} meta nftrace set 1; {family} saddr {dest} meta nftrace set 1; }}
             }}"
        );
        let path = std::env::temp_dir().join(format!("{name}-{}.nft", namespace.is_some()));
        std::fs::write(&path, script).map_err(|e| Error::io("writing the probe's nft table", e))?;
        let made = run_nft(&["-f", path.to_str().unwrap_or_default()], namespace);
        let _ = std::fs::remove_file(&path);
        made.map_err(|e| Error::Other(format!("the probe's trace table was refused: {e}")))?;
        Ok(table)
    }
}

impl Drop for ProbeTable<'_> {
    fn drop(&mut self) {
        let _ = run_nft(&["delete", "table", "inet", &self.name], self.namespace);
    }
}

/// Sends the probe and returns its hop: the connect's outcome as the verdict, the trace
/// events (chains other than the probe's own, with their verdicts) under it.
pub fn probe(
    machine: &str,
    namespace: &PinnedNamespace,
    dest: IpAddr,
    port: u16,
    udp: bool,
) -> Result<Hop> {
    let host = crate::netns::pin_own()?;
    let _host_table = ProbeTable::create(None, dest)?;
    let _machine_table = ProbeTable::create(Some(namespace), dest)?;
    // Line-buffered (stdbuf): the monitors are killed when done, and a block-buffered
    // stdout would die with them.
    let monitor = ["-oL", "nft", "monitor", "trace"];
    let mut monitors = [
        (".host".to_string(), host.spawn("stdbuf", &monitor)?),
        (machine.to_string(), namespace.spawn("stdbuf", &monitor)?),
    ];
    // The monitors subscribe as they start; give them the moment they take.
    std::thread::sleep(Duration::from_millis(200));
    let to = SocketAddr::new(dest, port);
    let outcome = if udp {
        let bind: SocketAddr = if dest.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        namespace
            .udp_socket(bind)?
            .send_to(b"machnet why --probe", to)
            .map(|_| "one UDP datagram sent".to_string())
    } else {
        namespace
            .tcp_connect(to, CONNECT_TIMEOUT)?
            .map(|()| "connected".to_string())
    };
    std::thread::sleep(SETTLE);
    let mut trace = Vec::new();
    for (name, child) in &mut monitors {
        let _ = child.kill();
        let mut text = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = child.wait();
        let own = format!("machnet_probe_{}", std::process::id());
        trace.extend(
            events(&text, &own)
                .into_iter()
                .map(|e| format!("{name}: {e}")),
        );
    }
    let (verdict, reason) = match outcome {
        Ok(what) => (Verdict::Pass, format!("a real packet to {to}: {what}")),
        Err(e) => (Verdict::Fail, format!("a real packet to {to}: {e}")),
    };
    Ok(Hop {
        hop: "probe",
        namespace: machine.to_string(),
        verdict,
        reason,
        rule: None,
        fix: None,
        trace,
    })
}

/// The decisions in `nft monitor trace` output: each chain's verdict or policy (and the
/// rule that gave it), once per trace id and chain, leaving out the probe's own table.
pub fn events(text: &str, own_table: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("trace id ") else {
            continue;
        };
        // "ID FAMILY TABLE CHAIN WHAT..."
        let mut words = rest.splitn(5, ' ');
        let (_id, family, table, chain, what) = (
            words.next(),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        if table == own_table || what.starts_with("packet:") {
            continue;
        }
        let decided = what.starts_with("policy ")
            || what.starts_with("verdict ")
            || (what.starts_with("rule ") && what.contains("(verdict "));
        if decided {
            let event = format!("{family} {table} {chain}: {}", what.trim_end());
            if !out.contains(&event) {
                out.push(event);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_become_one_event_per_decision() {
        let text = "trace id 8f1e inet machnet_probe_7 out packet: oif \"host0\" ip saddr 10.77.1.2\n\
                    trace id 8f1e inet machnet_probe_7 out rule ip daddr 203.0.113.5 meta nftrace set 1 (verdict continue)\n\
                    trace id 8f1e inet filter forward packet: iif \"ve-q\" oif \"eth0\"\n\
                    trace id 8f1e inet filter forward rule iifname \"ve-*\" accept (verdict accept)\n\
                    trace id 9a00 inet filter forward policy drop\n\
                    trace id 9a00 inet filter forward policy drop\n";
        assert_eq!(
            events(text, "machnet_probe_7"),
            [
                "inet filter forward: rule iifname \"ve-*\" accept (verdict accept)",
                "inet filter forward: policy drop"
            ]
        );
    }
}
