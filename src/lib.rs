//! machnet: the network inside systemd-nspawn machines, by machine name.
//!
//! The path every command takes: a target name is resolved through systemd-machined
//! (machined.rs, target.rs), its leader pinned by pidfd and its network namespace held
//! (netns.rs), a netlink socket opened inside that namespace, and the answers decoded and
//! printed as iproute2 prints them (netlink/, route/, link.rs).

pub mod apply;
pub mod argv;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod error;
pub mod link;
pub mod link_brief;
pub mod link_edit;
pub mod machined;
pub mod nat;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod peer;
pub mod pid_view;
pub mod route;
pub mod routeset;
pub mod rule;
pub mod sockets;
pub mod survey;
pub mod target;
pub mod topology;
pub mod watch;
pub mod whois;
pub mod why;
pub mod workers;
