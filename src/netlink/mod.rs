//! A small, synchronous rtnetlink client: just enough to send a request, stream the
//! answer message by message, and tell the kernel's errors apart from ours.
//!
//! Why not the rtnetlink crate (the design card's first choice): its connection task reads
//! the socket into an unbounded channel, so a consumer slower than the kernel (a terminal,
//! a pipe) makes memory grow with the table; and its parsed message types allocate per
//! route. A dump here is flow-controlled by our own `recv` (the kernel fills the next
//! buffer only when we ask for it) and messages are borrowed views into one reused buffer,
//! so memory stays flat however large the table is.
//!
//! The socket is *created* inside the target namespace by `netns.rs` and then used from
//! whatever thread holds it: a netlink socket stays bound to the namespace it was made in.

pub mod attr;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// Set by the kernel on a dump message when the object list changed while dumping.
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The kernel never puts more than 32 KiB into one dump datagram; twice that leaves room.
const RECV_BUFFER: usize = 64 * 1024;

pub fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One netlink message as the kernel sent it: its type, flags and payload (header removed).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub payload: &'a [u8],
}

/// Which netlink family a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// rtnetlink: links, addresses, routes.
    Route = libc::NETLINK_ROUTE as isize,
    /// sock_diag: the sockets of a namespace.
    SockDiag = libc::NETLINK_SOCK_DIAG as isize,
}

/// Whether `read_messages` goes on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What a finished dump reports besides the messages it handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpEnd {
    Complete,
    /// The kernel flagged the dump as interrupted (`NLM_F_DUMP_INTR`): what was handed out
    /// may mix two states of the table. The caller decides whether it can start again.
    Interrupted,
}

pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NetlinkSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkSocket")
            .field("fd", &self.fd)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl NetlinkSocket {
    /// Opens an rtnetlink socket in the network namespace of the *calling thread*. Only
    /// `netns.rs` calls this, on a thread it has moved into the target namespace.
    pub(crate) fn open_in_current_netns(protocol: Protocol) -> io::Result<NetlinkSocket> {
        // SAFETY: plain syscall; the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol as libc::c_int,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Strict checking makes the kernel honour the table/protocol filters of a dump
        // request instead of walking every table; the ack options get us the kernel's own
        // words when it refuses something.
        for opt in [NETLINK_GET_STRICT_CHK, NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            set_sockopt_int(&fd, libc::SOL_NETLINK, opt, 1)?;
        }
        // FORCE passes the sysctl cap as root; without privileges the plain option does
        // what it can.
        if set_sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER).is_err() {
            let _ = set_sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER);
        }
        Ok(NetlinkSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Sets the kernel's receive queue for this socket (SO_RCVBUFFORCE: past the sysctl
    /// cap, as root). The kernel doubles the figure for its bookkeeping, as for SO_RCVBUF.
    pub fn set_receive_buffer(&mut self, bytes: u32) -> Result<()> {
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        set_sockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .map_err(|e| Error::io("setting the receive buffer (SO_RCVBUFFORCE)", e))
    }

    /// Wraps any datagram socket: tests use a socketpair to play a kernel that sends what
    /// the real one cannot be made to send (interrupted dumps, malformed messages).
    #[cfg(test)]
    pub(crate) fn from_datagram_socket(fd: OwnedFd) -> NetlinkSocket {
        NetlinkSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        }
    }

    /// Sends `kind` with the given payload as a dump request and hands each answer message
    /// to `on_message` as it arrives. Stops at NLMSG_DONE; a kernel error ends the dump with
    /// [`Error::Kernel`]; an error from `on_message` ends it early.
    pub fn dump(
        &mut self,
        kind: u16,
        payload: &[u8],
        what: &str,
        mut on_message: impl FnMut(Message<'_>) -> Result<()>,
    ) -> Result<DumpEnd> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_DUMP, payload, what)?;
        let mut end = DumpEnd::Complete;
        self.read_messages(what, |msg, msg_seq| {
            if msg_seq != seq {
                return Ok(Flow::Continue); // a late answer to an earlier request
            }
            if msg.flags & NLM_F_DUMP_INTR != 0 {
                end = DumpEnd::Interrupted;
            }
            match msg.kind {
                NLMSG_DONE => {
                    let errno = read_errno(msg.payload);
                    if errno != 0 {
                        // A failed dump ends in DONE carrying the errno, then ack TLVs.
                        let text = extack_message(msg.payload.get(4..).unwrap_or(&[]));
                        return Err(Error::kernel(what, errno, text));
                    }
                    Ok(Flow::Stop)
                }
                NLMSG_ERROR => match refusal(msg.payload, what) {
                    Some(refusal) => Err(refusal),
                    None => Ok(Flow::Continue),
                },
                _ => on_message(msg).map(|_| Flow::Continue),
            }
        })?;
        Ok(end)
    }

    /// Sends one request that changes something and waits for the kernel's ack; a refusal
    /// comes back as [`Error::Kernel`] with the kernel's own words when it gave them.
    pub fn request(&mut self, kind: u16, flags: u16, payload: &[u8], what: &str) -> Result<()> {
        let seq = self.send(kind, REQUEST_ACK | flags, payload, what)?;
        self.read_messages(what, |msg, msg_seq| {
            if msg_seq != seq || msg.kind != NLMSG_ERROR {
                return Ok(Flow::Continue);
            }
            match refusal(msg.payload, what) {
                Some(refusal) => Err(refusal),
                None => Ok(Flow::Stop),
            }
        })
    }

    /// Asks many one-answer questions (RTM_GETROUTE for a destination, say) with few
    /// system calls: up to [`QUERY_WINDOW`] requests go out in one datagram, then their
    /// answers are read. `on_answer(i, answer)` gets the answer to `payloads[i]`, in order:
    /// the message, or the kernel's refusal of that one question.
    pub fn query_many(
        &mut self,
        kind: u16,
        payloads: &[Vec<u8>],
        what: &str,
        mut on_answer: impl FnMut(usize, std::result::Result<Message<'_>, Error>) -> Result<()>,
    ) -> Result<()> {
        for (window, chunk) in payloads.chunks(QUERY_WINDOW).enumerate() {
            let mut datagram = Vec::new();
            let first_seq = self.seq.wrapping_add(1);
            for payload in chunk {
                self.seq = self.seq.wrapping_add(1);
                push_message(&mut datagram, kind, NLM_F_REQUEST, self.seq, payload);
            }
            self.send_raw(&datagram, what)?;
            let mut answered = 0;
            self.read_messages(what, |msg, seq| {
                let index = seq.wrapping_sub(first_seq) as usize;
                if index >= chunk.len() {
                    return Ok(Flow::Continue); // not an answer to this window
                }
                let answer = match msg.kind {
                    NLMSG_ERROR => match refusal(msg.payload, what) {
                        Some(refusal) => Err(refusal),
                        // a bare ack; the answer itself comes separately
                        None => return Ok(Flow::Continue),
                    },
                    _ => Ok(msg),
                };
                on_answer(window * QUERY_WINDOW + index, answer)?;
                answered += 1;
                Ok(if answered == chunk.len() {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })?;
        }
        Ok(())
    }

    /// Sends many requests that change something, many per datagram, and learns what
    /// became of each: one round trip per [`BATCH_BYTES`] of requests instead of one per
    /// request. Request `i` (of `count`) is `request(i)`, made when its datagram is filled,
    /// so a million requests are never all held at once.
    ///
    /// Only the last request of a datagram asks for an ack. The kernel answers every
    /// refusal whether asked or not, and runs a datagram's requests in order, carrying on
    /// after a refusal; so when the last one is answered, every request before it is done
    /// or has been refused. That spares the kernel making, and us reading, an ack per
    /// route (BENCHMARKS.md, apply).
    ///
    /// `on_ack(i, outcome)` hears about each request in order: `None` for done, or the
    /// kernel's refusal. After a datagram with a refusal, no further one is sent; nor when
    /// `stop()` says so, which it is asked before each datagram (when every request sent
    /// so far has been answered). Returns how many requests were sent (and answered).
    pub fn request_many<'r>(
        &mut self,
        count: usize,
        request: impl Fn(usize) -> Request<'r>,
        what: &str,
        mut on_ack: impl FnMut(usize, Option<Error>),
        stop: impl Fn() -> bool,
    ) -> Result<usize> {
        let mut sent = 0;
        let mut datagram = Vec::with_capacity(BATCH_BYTES + 4096);
        while sent < count && !stop() {
            datagram.clear();
            let first = sent;
            let first_seq = self.seq.wrapping_add(1);
            let mut last_at = 0;
            while sent < count && (sent == first || datagram.len() < BATCH_BYTES) {
                let r = request(sent);
                self.seq = self.seq.wrapping_add(1);
                last_at = datagram.len();
                push_message(
                    &mut datagram,
                    r.kind,
                    NLM_F_REQUEST | r.flags,
                    self.seq,
                    r.payload,
                );
                sent += 1;
            }
            set_flag(&mut datagram[last_at..], NLM_F_ACK);
            self.send_raw(&datagram, what)?;
            let batch = sent - first;
            let mut refusals: Vec<(usize, Error)> = Vec::new();
            self.read_messages(what, |msg, seq| {
                let offset = seq.wrapping_sub(first_seq) as usize;
                if msg.kind != NLMSG_ERROR || offset >= batch {
                    return Ok(Flow::Continue);
                }
                if let Some(error) = refusal(msg.payload, what) {
                    refusals.push((offset, error));
                }
                Ok(if offset == batch - 1 {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })?;
            let refused = !refusals.is_empty();
            refusals.sort_by_key(|(offset, _)| *offset);
            let mut refusals = refusals.into_iter().peekable();
            for offset in 0..batch {
                let outcome = refusals.next_if(|(o, _)| *o == offset).map(|(_, e)| e);
                on_ack(first + offset, outcome);
            }
            if refused {
                break;
            }
        }
        Ok(sent)
    }

    /// Joins rtnetlink multicast groups (RTNLGRP_*): the kernel then sends this socket a
    /// notification for every change in those groups, in its namespace.
    pub fn subscribe(&mut self, groups: &[u32]) -> Result<()> {
        const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
        // A socket that never sent anything has no port id yet, and the kernel skips
        // port id 0 when it broadcasts (that is its own): bind first, which assigns one.
        // SAFETY: a zeroed sockaddr_nl (pid 0: "kernel, pick one") of its own size.
        let bound = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(Error::io(
                "binding a netlink socket",
                io::Error::last_os_error(),
            ));
        }
        for group in groups {
            set_sockopt_int(
                &self.fd,
                libc::SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                *group as i32,
            )
            .map_err(|e| Error::io(format!("joining netlink group {group}"), e))?;
        }
        Ok(())
    }

    /// Reads the notifications queued on the socket without waiting, handing each message
    /// to `on_message`. Returns Ok(false) when the queue is empty (the caller waits for
    /// readiness), Ok(true) after reading a datagram. A queue that overflowed (ENOBUFS:
    /// the kernel dropped notifications) is reported as `Err(Overrun)` once, and reading
    /// goes on.
    pub fn read_notifications(
        &mut self,
        mut on_message: impl FnMut(Message<'_>),
    ) -> std::result::Result<bool, NotificationError> {
        // SAFETY: self.buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
                Some(libc::ENOBUFS) => Err(NotificationError::Overrun),
                _ => Err(NotificationError::Io(err)),
            };
        }
        let n = (n as usize).min(self.buf.len());
        let mut rest = &self.buf[..n];
        while !rest.is_empty() {
            match split_message(rest, "reading notifications") {
                Ok((msg, _, next)) => {
                    on_message(msg);
                    rest = next;
                }
                Err(_) => break,
            }
        }
        Ok(true)
    }

    /// The one receive loop: reads datagrams and hands each message, with its sequence
    /// number, to `handle` until it says stop (or fails).
    fn read_messages(
        &mut self,
        what: &str,
        mut handle: impl FnMut(Message<'_>, u32) -> Result<Flow>,
    ) -> Result<()> {
        loop {
            let len = self.recv(what)?;
            let mut rest = &self.buf[..len];
            while !rest.is_empty() {
                let (msg, seq, next) = split_message(rest, what)?;
                rest = next;
                if handle(msg, seq)? == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, payload: &[u8], what: &str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(align(NLMSG_HDRLEN + payload.len()));
        push_message(&mut msg, kind, flags, self.seq, payload);
        self.send_raw(&msg, what)?;
        Ok(self.seq)
    }

    fn send_raw(&mut self, datagram: &[u8], what: &str) -> Result<()> {
        // SAFETY: datagram is a valid buffer of its length for the duration of the call.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                datagram.as_ptr().cast(),
                datagram.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(Error::io(
                format!("{what}: sending the request"),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn recv(&mut self, what: &str) -> Result<usize> {
        loop {
            // MSG_TRUNC makes recv return the datagram's real length, so a message larger
            // than our buffer is an error we can name instead of silently cut data.
            // SAFETY: self.buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(format!("{what}: reading from the kernel"), err));
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(Error::Other(format!(
                    "{what}: the kernel sent a {n}-byte datagram, larger than machnet's \
                     {}-byte buffer; this is a bug in machnet",
                    self.buf.len()
                )));
            }
            return Ok(n);
        }
    }
}

/// How often a small dump (links, addresses, rules, neighbours) is taken again when the
/// kernel flags it interrupted, before machnet gives up.
const DUMP_ATTEMPTS: usize = 5;

/// Runs a whole dump into a fresh collection until one completes without the kernel
/// flagging it interrupted (NLM_F_DUMP_INTR): for tables small enough to hold, a clean
/// second look beats printing a mix of two states.
pub fn retry_interrupted<T: Default>(
    what: &str,
    mut dump: impl FnMut(&mut T) -> Result<DumpEnd>,
) -> Result<T> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut items = T::default();
        if dump(&mut items)? == DumpEnd::Complete {
            return Ok(items);
        }
    }
    Err(Error::InconsistentDump(format!(
        "{what}: the kernel interrupted the dump {DUMP_ATTEMPTS} times in a row (the table \
         is changing fast); try again"
    )))
}

/// Why reading notifications stopped short.
#[derive(Debug)]
pub enum NotificationError {
    /// The socket's queue overflowed and the kernel dropped notifications.
    Overrun,
    Io(io::Error),
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// One request for `request_many`: message type, extra flags (create, replace, …), body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: u16,
    pub flags: u16,
    pub payload: &'a [u8],
}

/// How many bytes of requests `request_many` puts in one datagram. Each is answered by a
/// 36-byte ack (CAP_ACK), so a batch's acks fit the receive buffer many times over; the
/// datagram stays well under the socket's default send buffer (208 KiB).
const BATCH_BYTES: usize = 64 * 1024;

/// How many questions `query_many` puts in one datagram. Their answers queue up in the
/// socket's receive buffer until read: a multipath answer can be several KiB, so the
/// window stays small and the buffer is raised (RECEIVE_BUFFER) to hold a window's worth.
const QUERY_WINDOW: usize = 32;
/// SO_RCVBUF(FORCE) for our sockets: room for a query window of large answers.
const RECEIVE_BUFFER: i32 = 4 * 1024 * 1024;

/// Appends one netlink message (header, payload, padding) to a datagram.
/// ORs `flag` into the nlmsg_flags of the message at the start of `message`.
fn set_flag(message: &mut [u8], flag: u16) {
    let flags = u16::from_ne_bytes([message[6], message[7]]) | flag;
    message[6..8].copy_from_slice(&flags.to_ne_bytes());
}

fn push_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, payload: &[u8]) {
    let total = NLMSG_HDRLEN + payload.len();
    buf.extend_from_slice(&(total as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + align(total) - total, 0);
}

/// The ack flag, for requests that change something.
pub const REQUEST_ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;

fn set_sockopt_int(fd: &OwnedFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: value lives across the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Splits the first message off a datagram: (message, its sequence number, the rest).
fn split_message<'a>(data: &'a [u8], what: &str) -> Result<(Message<'a>, u32, &'a [u8])> {
    let bad = |why: &str| {
        Error::Other(format!(
            "{what}: the kernel sent a netlink message machnet cannot decode ({why})"
        ))
    };
    if data.len() < NLMSG_HDRLEN {
        return Err(bad("short header"));
    }
    let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
    if len < NLMSG_HDRLEN || len > data.len() {
        return Err(bad("length out of bounds"));
    }
    let msg = Message {
        kind: u16::from_ne_bytes([data[4], data[5]]),
        flags: u16::from_ne_bytes([data[6], data[7]]),
        payload: &data[NLMSG_HDRLEN..len],
    };
    let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
    let next = align(len).min(data.len());
    Ok((msg, seq, &data[next..]))
}

/// The (positive) errno of an NLMSG_ERROR / NLMSG_DONE payload; 0 means success.
fn read_errno(payload: &[u8]) -> i32 {
    payload
        .get(0..4)
        .map(|b| -i32::from_ne_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

/// The refusal an NLMSG_ERROR payload carries (None for an ack): errno, then the echoed
/// request header (with CAP_ACK, no body), then extended-ack attributes.
fn refusal(payload: &[u8], what: &str) -> Option<Error> {
    let errno = read_errno(payload);
    (errno != 0).then(|| {
        let tlvs = payload.get(4 + NLMSG_HDRLEN..).unwrap_or(&[]);
        Error::kernel(what, errno, extack_message(tlvs))
    })
}

/// The kernel's own sentence (NLMSGERR_ATTR_MSG) among extended-ack attributes.
fn extack_message(tlvs: &[u8]) -> Option<String> {
    attr::Attrs::new(tlvs)
        .filter_map(|a| a.ok())
        .find(|a| a.kind == NLMSGERR_ATTR_MSG)
        .map(|a| {
            String::from_utf8_lossy(a.payload.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
        })
}
