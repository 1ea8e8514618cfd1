//! `machnet sockets TARGET`: what listens inside a machine, and which process holds it.

use crate::cli::BriefArgs;
use crate::error::{Error, Result};
use crate::netlink::Protocol;
use crate::pid_view::PidView;
use crate::sockets::{self, endpoint_text};

pub async fn run(args: BriefArgs) -> Result<i32> {
    let namespace = super::pin_for(&args.target, Protocol::SockDiag).await?;
    let mut sock = namespace.open_netlink_of(Protocol::SockDiag)?;
    let mut found = sockets::listening(&mut sock)?;
    sockets::name_devices(&mut found, || {
        crate::link::link_names(&mut namespace.open_netlink()?)
    });
    let view = PidView::from_namespace(namespace.pid_namespace_inode()?);
    sockets::attach_owners(&mut found, &view);
    let mut out = Vec::new();
    if args.json {
        serde_json::to_writer(&mut out, &found).map_err(|e| Error::Other(e.to_string()))?;
        out.push(b'\n');
    } else {
        let rows: Vec<[String; 7]> = found
            .iter()
            .map(|s| {
                let users: Vec<String> = s
                    .process
                    .iter()
                    .map(|o| {
                        format!(
                            "(\"{}\",pid={},fd={})",
                            crate::link::printable_name(&o.name),
                            o.pid,
                            o.fd
                        )
                    })
                    .collect();
                [
                    s.netid.to_string(),
                    s.state.to_string(),
                    s.recv_q.to_string(),
                    s.send_q.to_string(),
                    endpoint_text(&s.local, false),
                    endpoint_text(&s.peer, true),
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!("users:({})", users.join(","))
                    },
                ]
            })
            .collect();
        let header = [
            "Netid",
            "State",
            "Recv-Q",
            "Send-Q",
            "Local Address:Port",
            "Peer Address:Port",
            "Process",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(header.map(str::to_string)).chain(rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$} "));
                }
            }
            out.extend_from_slice(line.trim_end().as_bytes());
            out.push(b'\n');
        }
    }
    super::write_stdout(&out)?;
    Ok(0)
}
