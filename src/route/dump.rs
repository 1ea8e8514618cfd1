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
            if !is_shown(&route) {
                return Ok(());
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
