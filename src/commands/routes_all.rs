//! `machnet routes --all`: every machine's routing table in one go.
//!
//! machined is asked about all machines at once (many calls in flight on one connection),
//! then the namespaces are read by a few threads, each with its own netlink socket, in
//! batches printed in machine order; memory holds one batch of tables at a time.

use std::io::Write;
use std::sync::Mutex;

use futures_util::StreamExt;
use serde_json::Value;

use crate::cli::RoutesArgs;
use crate::error::{Error, Result};
use crate::machined::Machined;
use crate::netlink::NetlinkSocket;
use crate::netns::{ExtraNamespaces, Isolation, PinnedNamespace};
use crate::route::dump::RouteQuery;
use crate::route::names::Names;
use crate::target::pin_machine;

/// machined calls in flight at once: dbus-daemon caps pending replies per connection
/// (max_replies_per_connection, 128 by default), and each lookup has one in flight.
const LOOKUPS: usize = 32;
/// Namespaces read per batch, and so tables held in memory at once.
const BATCH: usize = 64;
/// Threads reading a batch's tables (their sockets are made by one other thread).
const READERS: usize = 4;

pub async fn run(args: &RoutesArgs, query: RouteQuery) -> Result<i32> {
    crate::netns::require_privileges()?;
    crate::netns::raise_open_file_limit();
    let names = Names::load();
    let machined = Machined::connect().await?;
    let listing: Vec<(String, zbus::OwnedObjectPath)> = machined
        .list()
        .await?
        .into_iter()
        .filter(|(name, _)| name != ".host")
        .collect();
    let machined = &machined;
    let mut pinned: Vec<(String, Result<PinnedNamespace>)> = futures_util::stream::iter(listing)
        .map(|(name, path)| async move {
            let pinned = async {
                let machine = machined.machine_at(path).await?;
                pin_machine(machined, &machine, ExtraNamespaces::default()).await
            }
            .await;
            (name, pinned)
        })
        .buffered(LOOKUPS)
        .collect()
        .await;
    pinned.sort_by(|a, b| a.0.cmp(&b.0));

    let mut stdout = std::io::stdout().lock();
    let mut first_json = true;
    let mut skipped = 0;
    if args.json {
        write(&mut stdout, b"[")?;
    }
    for batch in pinned.chunks(BATCH) {
        let tables = read_batch(batch, query, &names, args.json);
        for ((name, _), table) in batch.iter().zip(tables) {
            match table {
                Ok(Some(bytes)) if args.json => {
                    let routes: Vec<Value> = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Other(format!("{name}: re-reading routes: {e}")))?;
                    for route in routes {
                        let mut labelled = serde_json::Map::new();
                        labelled.insert("machine".into(), Value::String(name.clone()));
                        if let Value::Object(fields) = route {
                            labelled.extend(fields);
                        }
                        if !first_json {
                            write(&mut stdout, b",")?;
                        }
                        first_json = false;
                        let text = serde_json::to_vec(&labelled).expect("routes serialise");
                        write(&mut stdout, &text)?;
                    }
                }
                Ok(Some(bytes)) => {
                    let mut out = Vec::with_capacity(bytes.len() + 64);
                    for line in bytes.split_inclusive(|b| *b == b'\n') {
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(line);
                    }
                    write(&mut stdout, &out)?;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("machnet: note: {name} skipped: {e}");
                    // A stale machine has no table to miss; any other failure does.
                    if !matches!(e, Error::StaleMachine(_)) {
                        skipped += 1;
                    }
                }
            }
        }
    }
    if args.json {
        write(&mut stdout, b"]\n")?;
    }
    Ok(if skipped > 0 {
        crate::error::exit::PARTIAL
    } else {
        0
    })
}

fn write(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .map_err(|e| Error::io("writing output", e))
}

/// One machine's table as printed bytes; None for a machine sharing the host's
/// namespace (its routes are the host's).
type Table = Result<Option<Vec<u8>>>;

/// A machine's place in its batch, and the socket to read its table with.
type ReadJob = (usize, Result<NetlinkSocket>);

/// Reads a batch of namespaces: their sockets made on one thread that enters each in turn,
/// then the tables read by READERS threads (no setns there: a socket keeps its namespace).
fn read_batch(
    batch: &[(String, Result<PinnedNamespace>)],
    query: RouteQuery,
    names: &Names,
    json: bool,
) -> Vec<Table> {
    let to_read: Vec<&PinnedNamespace> = batch
        .iter()
        .filter_map(|(_, pinned)| pinned.as_ref().ok())
        .filter(|ns| ns.isolation != Isolation::SharesHost)
        .collect();
    let mut sockets = PinnedNamespace::open_netlink_each(&to_read).into_iter();
    let mut jobs: Vec<ReadJob> = Vec::new();
    let mut results: Vec<Mutex<Option<Table>>> = Vec::with_capacity(batch.len());
    for (i, (_, pinned)) in batch.iter().enumerate() {
        let done = match pinned {
            Err(e) => Some(Err(clone_error(e))),
            Ok(ns) if ns.isolation == Isolation::SharesHost => Some(Ok(None)),
            Ok(_) => {
                jobs.push((i, sockets.next().expect("a socket for each namespace")));
                None
            }
        };
        results.push(Mutex::new(done));
    }
    crate::workers::run_on_threads(jobs, READERS, |(i, socket): ReadJob| {
        let table = socket.and_then(|mut sock| {
            let mut out = Vec::new();
            super::routes::print_table(&mut sock, query, names, json, &mut out)?;
            Ok(Some(out))
        });
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(table);
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every machine's slot is filled")
        })
        .collect()
}

/// Errors are not Clone (they hold io::Error); a pin failure is reported by its text and
/// kind, which is all the note needs.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Permission(m) => Error::Permission(m.clone()),
        Error::StaleMachine(m) => Error::StaleMachine(m.clone()),
        other => Error::Other(other.to_string()),
    }
}
