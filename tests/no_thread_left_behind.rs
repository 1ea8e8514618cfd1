//! After operations in other namespaces, every thread of this process must still be in
//! the namespaces it started in: setns happens only on threads that then end (or in a
//! forked child). Checked after every single operation, for every namespace kind
//! (including pid_for_children, which exec's PID join moves), so a stray setns on any
//! thread is caught before a later operation could move it back.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use machnet::link;
use machnet::machined::Machined;
use machnet::netlink::Protocol;
use machnet::netns::ExtraNamespaces;
use machnet::route::dump::{stream_routes, RouteQuery};
use machnet::route::names::Names;
use machnet::route::print::{Format, RoutePrinter, ShowOptions};
use machnet::target::Target;

const KINDS: [&str; 6] = ["net", "mnt", "uts", "ipc", "pid", "pid_for_children"];

/// (thread, namespace kind) → inode, for every thread of this process.
fn thread_namespaces() -> BTreeMap<(String, &'static str), u64> {
    let mut all = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        for kind in KINDS {
            // A thread may end while we look; what is gone is not astray.
            if let Ok(meta) = std::fs::metadata(task.join("ns").join(kind)) {
                all.insert((task.display().to_string(), kind), meta.ino());
            }
        }
    }
    all
}

fn assert_all_home(home: &BTreeMap<&'static str, u64>, when: &str) {
    let strays: Vec<_> = thread_namespaces()
        .into_iter()
        .filter(|((_, kind), ino)| home[kind] != *ino)
        .collect();
    assert!(
        strays.is_empty(),
        "{when}: threads in other namespaces: {strays:?}"
    );
}

#[test]
fn every_thread_stays_in_its_own_namespaces() {
    let _bed = common::testbed();
    let home: BTreeMap<&'static str, u64> = KINDS
        .iter()
        .map(|k| {
            (
                *k,
                std::fs::metadata(format!("/proc/self/ns/{k}"))
                    .unwrap()
                    .ino(),
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names = Names::load();
    let mut dumped = 0usize;
    runtime.block_on(async {
        let machined = Machined::connect().await.unwrap();
        for round in 0..25 {
            for target in [".host", "qbittorrent", "corpus", "netns:corpus", "pid:1"] {
                let target: Target = target.parse().unwrap();
                let resolved = target
                    .resolve(Some(&machined), ExtraNamespaces::default())
                    .await
                    .unwrap();
                let mut sock = resolved.namespace.open_netlink().unwrap();
                let links = link::link_names(&mut sock).unwrap();
                let printer = RoutePrinter {
                    names: &names,
                    links: &links,
                    options: ShowOptions { all_tables: true },
                    format: if round % 2 == 0 {
                        Format::Text
                    } else {
                        Format::Json
                    },
                    hz: 100,
                };
                let mut out = Vec::new();
                stream_routes(
                    &mut sock,
                    RouteQuery {
                        family: 0,
                        table: None,
                    },
                    &printer,
                    &mut out,
                )
                .unwrap();
                dumped += out.len();
                // A task on a runtime worker in between, so worker threads are in play.
                tokio::task::spawn(async {}).await.unwrap();
                assert_all_home(&home, &format!("after reading {target}"));
            }
        }
        // The direct path makes its socket on a thread started before the namespace is
        // known; that thread must have ended too, and so must one never handed a job.
        for (target, prepare) in [
            ("qbittorrent", Some(Protocol::Route)),
            ("corpus", Some(Protocol::SockDiag)),
            ("hostshare", Some(Protocol::Route)),
        ] {
            let resolved = machnet::target::resolve_machine_directly(
                target,
                ExtraNamespaces::default(),
                prepare,
            )
            .unwrap()
            .expect("machined answers plainly for a running machine");
            let mut sock = resolved.namespace.open_netlink().unwrap();
            link::link_names(&mut sock).unwrap();
            assert_all_home(&home, &format!("after the direct path to {target}"));
        }
        // exec forks from a helper thread that joins the PID namespace: it too must end,
        // and no other thread may keep the machine's pid_for_children.
        let all = ExtraNamespaces {
            mount: true,
            uts: true,
            ipc: true,
            pid: true,
        };
        let resolved = Target::Machine("qbittorrent".into())
            .resolve(Some(&machined), all)
            .await
            .unwrap();
        // With -m the program is found inside the container (busybox there).
        let code = resolved
            .namespace
            .exec("/bin/busybox", &["true".to_string()], all)
            .unwrap();
        assert_eq!(code, 0);
        assert_all_home(&home, "after exec joined every namespace");
    });
    assert!(dumped > 0);
    drop(runtime);
    assert_all_home(&home, "after the runtime shut down");
}
