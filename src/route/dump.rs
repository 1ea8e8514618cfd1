//! Streams a routing table dump to an output as the kernel sends it.
//!
//! Memory stays flat: each datagram is decoded and printed into one output buffer that
//! is written out whenever it fills. Nothing is collected.

use std::io::Write;

use super::message::{Route, RT_TABLE_MAIN};
use super::print::{is_shown, Format, RoutePrinter};
use crate::error::{Error, Result};
use crate::netlink::{attr, DumpEnd, NetlinkSocket};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// Output is written in blocks of this size (one write per block, not per route).
const OUTPUT_BLOCK: usize = 64 * 1024;
/// An interrupted dump whose output has not left the buffer yet is started again.
const DUMP_ATTEMPTS: usize = 5;

/// Which routes to ask the kernel for: `ip route show [-4|-6] [table T]`.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery {
    /// AF_UNSPEC (0), AF_INET or AF_INET6.
    pub family: u8,
    /// None for `table all`.
    pub table: Option<u32>,
}

impl RouteQuery {
    /// The RTM_GETROUTE dump request: a zeroed rtmsg with the family, and RTA_TABLE so the
    /// kernel (with strict checking on) walks only that table.
    fn request(&self) -> Vec<u8> {
        let mut req = vec![0u8; 12];
        req[0] = self.family;
        if let Some(table) = self.table {
            attr::push(&mut req, super::message::RTA_TABLE, &table.to_ne_bytes());
        }
        req
    }
}

/// Dumps the routes `query` selects and writes each as `printer` formats it.
pub fn stream_routes(
    sock: &mut NetlinkSocket,
    query: RouteQuery,
    printer: &RoutePrinter<'_>,
    out: &mut impl Write,
) -> Result<()> {
    let request = query.request();
    let json = printer.format == Format::Json;
    let mut sink = BlockWriter::new(out);
    for _ in 0..DUMP_ATTEMPTS {
        sink.buf.clear();
        if json {
            sink.buf.push(b'[');
        }
        let mut first = true;
        let mut encapsulated = 0usize;
        let dumped = sock.dump(RTM_GETROUTE, &request, "dumping routes", |msg| {
            if msg.kind != RTM_NEWROUTE {
                return Ok(());
            }
            let route = Route::parse(msg.payload).map_err(|e| {
                Error::Other(format!(
                    "the kernel sent a route machnet cannot decode ({}); nothing after it was printed",
                    e.0
                ))
            })?;
            if !is_shown(&route) || hidden_by_ip6_main_quirk(&route, query) {
                return Ok(());
            }
            if route.has_encap() {
                encapsulated += 1;
            }
            if json && !first {
                sink.buf.push(b',');
            }
            first = false;
            printer.print(&route, &mut sink.buf);
            sink.maybe_flush()
        });
        let end = match (dumped, query.table) {
            (Err(e), Some(table)) if is_missing_table(&e) => {
                if table != RT_TABLE_MAIN {
                    return Err(Error::NoSuchTarget(format!(
                        "there is no routing table {table} in this namespace ({e})"
                    )));
                }
                // ip shows a main table that was never created as empty; so do we.
                sink.buf.truncate(usize::from(json));
                DumpEnd::Complete
            }
            (other, _) => other?,
        };
        match end {
            DumpEnd::Complete => {
                if json {
                    sink.buf.extend_from_slice(b"]\n");
                }
                if encapsulated > 0 {
                    eprintln!(
                        "machnet: note: {encapsulated} route(s) carry an encapsulation whose \
                         details machnet does not print yet (only its type); `machnet exec \
                         TARGET -- ip route` shows them whole"
                    );
                }
                return sink.finish();
            }
            DumpEnd::Interrupted if !sink.flushed_any => continue,
            DumpEnd::Interrupted => {
                return Err(Error::InconsistentDump(
                    "the routing table changed while it was being printed, so the output above \
                     may mix its old and new state; run the command again"
                        .into(),
                ))
            }
        }
    }
    Err(Error::InconsistentDump(format!(
        "the routing table kept changing: {DUMP_ATTEMPTS} dumps in a row were interrupted; try again"
    )))
}

/// iproute2 hides IPv6 `local` routes from `ip -6 route show` (table main) until it has
/// seen an IPv6 route from another table in the same dump (its ip6_multiple_tables flag),
/// which a dump filtered to table main never contains. Match it, line for line.
fn hidden_by_ip6_main_quirk(route: &Route<'_>, query: RouteQuery) -> bool {
    const RTN_LOCAL: u8 = 2;
    query.table == Some(RT_TABLE_MAIN)
        && route.family == super::message::AF_INET6
        && route.kind == RTN_LOCAL
}

/// The kernel answers a dump of a table that does not exist with ENOENT.
fn is_missing_table(e: &Error) -> bool {
    matches!(e, Error::Kernel { source, .. } if source.raw_os_error() == Some(libc::ENOENT))
}

/// Buffers output and writes it in large blocks, remembering whether anything has
/// already left (after which a dump can no longer be silently restarted).
struct BlockWriter<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    flushed_any: bool,
}

impl<'w, W: Write> BlockWriter<'w, W> {
    fn new(out: &'w mut W) -> Self {
        BlockWriter {
            out,
            buf: Vec::with_capacity(OUTPUT_BLOCK + 4096),
            flushed_any: false,
        }
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= OUTPUT_BLOCK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.out
            .write_all(&self.buf)
            .map_err(|e| Error::io("writing output", e))?;
        self.flushed_any = true;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.write_out()?;
        self.out.flush().map_err(|e| Error::io("writing output", e))
    }
}

#[cfg(test)]
mod tests {
    //! A stand-in kernel on a unix socketpair, for the two faults a real kernel cannot be
    //! made to show on demand: a dump flagged interrupted, and a message that does not
    //! decode. Everything else is tested against the real kernel (tests/).

    use std::os::unix::net::UnixDatagram;

    use super::*;
    use crate::link::LinkNames;
    use crate::netlink::{NLMSG_DONE, NLM_F_DUMP_INTR};
    use crate::route::names::Names;

    /// What the stand-in kernel answers one request with, given the request's sequence.
    type Answer = Box<dyn Fn(u32) -> Vec<Vec<u8>> + Send>;

    /// One RTM_NEWROUTE for 10.N.0.0/16 via 10.0.0.1, with `flags` on its header.
    fn route_message(seq: u32, n: u8, flags: u16, gateway_len: usize) -> Vec<u8> {
        let mut payload = vec![2, 16, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        attr::push(&mut payload, 1, &[10, n, 0, 0]);
        attr::push(&mut payload, 5, &[10, 0, 0, 1, 9, 9][..gateway_len]);
        message(RTM_NEWROUTE, flags, seq, &payload)
    }

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg
    }

    /// Serves one dump request per entry of `answers`: each gets the datagrams the entry
    /// makes from the request's sequence number, then NLMSG_DONE.
    fn fake_kernel(answers: Vec<Answer>) -> NetlinkSocket {
        let (ours, kernel) = UnixDatagram::pair().unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let mut req = [0u8; 4096];
                let n = match kernel.recv(&mut req) {
                    Ok(n) => n,
                    Err(_) => return,
                };
                assert!(n >= 16);
                let seq = u32::from_ne_bytes(req[8..12].try_into().unwrap());
                for datagram in answer(seq) {
                    kernel.send(&datagram).unwrap();
                }
                kernel
                    .send(&message(NLMSG_DONE, 0, seq, &0i32.to_ne_bytes()))
                    .unwrap();
            }
        });
        NetlinkSocket::from_datagram_socket(ours.into())
    }

    fn print_dump(mut sock: NetlinkSocket) -> (Result<()>, String) {
        let names = Names::builtin();
        let links = LinkNames::default();
        let printer = RoutePrinter {
            names: &names,
            links: &links,
            options: super::super::print::ShowOptions { all_tables: false },
            format: Format::Text,
            hz: 100,
        };
        let mut out = Vec::new();
        let query = RouteQuery {
            family: 2,
            table: Some(254),
        };
        let result = stream_routes(&mut sock, query, &printer, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn an_interrupted_dump_is_retried_and_printed_once() {
        let sock = fake_kernel(vec![
            Box::new(|seq| vec![route_message(seq, 1, NLM_F_DUMP_INTR, 4)]),
            Box::new(|seq| vec![route_message(seq, 1, 0, 4), route_message(seq, 2, 0, 4)]),
        ]);
        let (result, out) = print_dump(sock);
        result.unwrap();
        assert_eq!(
            out,
            "10.1.0.0/16 via 10.0.0.1 proto static \n10.2.0.0/16 via 10.0.0.1 proto static \n"
        );
    }

    #[test]
    fn a_dump_interrupted_every_time_is_an_error() {
        let answers: Vec<Answer> = (0..DUMP_ATTEMPTS)
            .map(|_| Box::new(|seq| vec![route_message(seq, 1, NLM_F_DUMP_INTR, 4)]) as Answer)
            .collect();
        let (result, out) = print_dump(fake_kernel(answers));
        assert!(
            matches!(result, Err(Error::InconsistentDump(_))),
            "{result:?}"
        );
        assert_eq!(out, "");
    }

    #[test]
    fn a_route_that_does_not_decode_is_an_error_not_a_gap() {
        // The second route's gateway is 6 bytes: no IPv4 address is.
        let sock = fake_kernel(vec![Box::new(|seq| {
            vec![route_message(seq, 1, 0, 4), route_message(seq, 2, 0, 6)]
        })]);
        let (result, out) = print_dump(sock);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("cannot decode"), "{err}");
        assert_eq!(out, "", "nothing may be printed from a dump that failed");
    }
}
