//! Routes: decoding the kernel's messages, naming numbers as iproute2 does, and printing
//! `ip route show` lines and `ip -j route show` objects, streamed from a dump.

pub mod dump;
pub mod emit;
pub mod format;
pub mod get;
pub mod identity;
pub mod message;
pub mod names;
pub mod print;
pub mod protocols;
pub mod request;
pub mod spec;
