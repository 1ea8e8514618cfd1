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
use crate::netns::{ExtraNamespaces, Isolation, PinnedNamespace};
use crate::route::dump::RouteQuery;
use crate::route::names::Names;
use crate::target::pin_machine;

/// machined calls in flight at once: dbus-daemon caps pending replies per connection
/// (max_replies_per_connection, 128 by default), and each lookup has one in flight.
const LOOKUPS: usize = 32;
/// Namespaces read at once (one thread each), and so tables held in memory at once.
/// 32 at once (with 64 lookups) measured slower on 2 cores: 0.13-0.14x against 0.12/0.09x.
const READERS: usize = 8;

pub async fn run(args: &RoutesArgs, query: RouteQuery) -> Result<i32> {
    crate::netns::require_privileges()?;
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
    if args.json {
        write(&mut stdout, b"[")?;
    }
    for batch in pinned.chunks(READERS) {
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
                Err(e @ Error::Permission(_)) => return Err(e),
                Err(e) => eprintln!("machnet: note: {name} skipped: {e}"),
            }
        }
    }
    if args.json {
        write(&mut stdout, b"]\n")?;
    }
    Ok(0)
}

fn write(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .map_err(|e| Error::io("writing output", e))
}

/// One machine's table as printed bytes; None for a machine sharing the host's
/// namespace (its routes are the host's).
type Table = Result<Option<Vec<u8>>>;

/// Reads a batch of namespaces, one thread each (a batch is at most READERS long).
fn read_batch(
    batch: &[(String, Result<PinnedNamespace>)],
    query: RouteQuery,
    names: &Names,
    json: bool,
) -> Vec<Table> {
    let results: Vec<Mutex<Option<Table>>> = batch.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for ((_, pinned), slot) in batch.iter().zip(&results) {
            scope.spawn(move || {
                let table = match pinned {
                    Err(e) => Err(clone_error(e)),
                    Ok(ns) if ns.isolation == Isolation::SharesHost => Ok(None),
                    Ok(ns) => ns.open_netlink().and_then(|mut sock| {
                        let mut out = Vec::new();
                        super::routes::print_table(&mut sock, query, names, json, &mut out)?;
                        Ok(Some(out))
                    }),
                };
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(table);
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every reader fills its slot")
        })
        .collect()
}

/// Errors are not Clone (they hold io::Error); a pin failure is reported by its text and
/// kind, which is all the note needs.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Permission(m) => Error::Permission(m.clone()),
        other => Error::Other(other.to_string()),
    }
}
