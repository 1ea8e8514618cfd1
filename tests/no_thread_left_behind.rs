//! After many operations in other namespaces, every thread of this process must still be
//! in the namespace it started in: setns happens only on threads that then end.

mod common;

use std::os::unix::fs::MetadataExt;

use machnet::link;
use machnet::machined::Machined;
use machnet::netns::ExtraNamespaces;
use machnet::route::dump::{stream_routes, RouteQuery};
use machnet::route::names::Names;
use machnet::route::print::{Format, RoutePrinter, ShowOptions};
use machnet::target::Target;

fn thread_namespaces() -> Vec<(String, u64)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            let ino = std::fs::metadata(t.join("ns/net")).unwrap().ino();
            (t.display().to_string(), ino)
        })
        .collect()
}

#[test]
fn every_thread_stays_in_its_own_namespace() {
    let _bed = common::testbed();
    let home = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names = Names::load();
    let mut dumped = 0usize;
    runtime.block_on(async {
        let machined = Machined::connect().await.unwrap();
        for round in 0..50 {
            for target in ["qbittorrent", "corpus", "netns:corpus", ".host"] {
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
            }
        }
        // exec forks from a helper thread that joins the PID namespace: it too must end.
        let resolved = Target::Machine("qbittorrent".into())
            .resolve(
                Some(&machined),
                ExtraNamespaces {
                    pid: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let code = resolved
            .namespace
            .exec(
                "true",
                &[],
                ExtraNamespaces {
                    pid: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(code, 0);
    });
    assert!(dumped > 0);
    let assert_all_home = |when: &str| {
        let strays: Vec<_> = thread_namespaces()
            .into_iter()
            .filter(|(_, ino)| *ino != home)
            .collect();
        assert!(
            strays.is_empty(),
            "{when}: threads in other namespaces: {strays:?}"
        );
    };
    assert_all_home("with the runtime's threads alive");
    drop(runtime);
    assert_all_home("after the runtime shut down");
}
