//! How a machine name becomes a pinned namespace: the direct path (one blocking bus
//! connection, everything sent at once) when machined's answers are plain successes, and
//! zbus, which words the error, when they are not. Both against the real machined.

mod common;

use std::process::Command;

use common::*;

const DIRECT: &str = "resolved machine qbittorrent on the direct path";
const STEPPED_ASIDE: &str = "asking machined through zbus instead";

/// machnet -vv with DBUS_SYSTEM_BUS_ADDRESS set to `address`.
fn machnet_at(address: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(machnet_bin());
    cmd.arg("-vv")
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .env_remove("RUST_LOG");
    run(cmd)
}

fn testbed_bus() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS").expect("the testbed sets DBUS_SYSTEM_BUS_ADDRESS")
}

fn socket_path(address: &str) -> String {
    let path = address
        .strip_prefix("unix:path=")
        .expect("the testbed's bus is a unix:path address");
    path.split(',').next().unwrap().to_string()
}

#[test]
fn a_machine_by_name_takes_the_direct_path_and_prints_what_ip_prints() {
    let bed = testbed();
    let out = machnet_at(&testbed_bus(), &["routes", "qbittorrent"]);
    let err = stderr(&out);
    let routes = ok(out, "machnet -vv routes qbittorrent");
    assert!(err.contains(DIRECT), "{err}");
    assert!(!err.contains(STEPPED_ASIDE), "{err}");
    assert_eq!(
        routes,
        stdout(&bed.ip("qbittorrent", &["route", "show"])),
        "machnet routes against ip route in the container"
    );

    // exec takes it too, and runs its command in the machine.
    let out = machnet_at(
        &testbed_bus(),
        &["exec", "qbittorrent", "--", "ip", "route"],
    );
    let err = stderr(&out);
    assert_eq!(ok(out, "machnet -vv exec qbittorrent"), routes);
    assert!(err.contains(DIRECT), "{err}");
}

#[test]
fn an_escaped_bus_path_is_read_and_a_wrong_guid_is_not_trusted() {
    let _bed = testbed();
    let path = socket_path(&testbed_bus());
    let escaped = format!("unix:path={}", path.replace('/', "%2f"));
    let out = machnet_at(&escaped, &["routes", "qbittorrent"]);
    let err = stderr(&out);
    ok(out, "routes with an escaped bus path");
    assert!(err.contains(DIRECT), "{err}");

    // A bus that answers with another GUID than the address promised is not the bus
    // meant: the direct path steps aside (what zbus then does is zbus's business).
    let wrong = format!("unix:path={path},guid=0123456789abcdef0123456789abcdef");
    let err = stderr(&machnet_at(&wrong, &["routes", "qbittorrent"]));
    assert!(err.contains(STEPPED_ASIDE), "{err}");
    assert!(err.contains("another guid than its address"), "{err}");
    assert!(!err.contains(DIRECT), "{err}");
}

#[test]
fn an_error_reply_is_left_to_zbus_which_words_it() {
    let _bed = testbed();
    let out = machnet_at(&testbed_bus(), &["routes", "qbitorrent"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(&format!(
            "{STEPPED_ASIDE}: GetMachine was answered org.freedesktop.machine1.NoSuchMachine"
        )),
        "{err}"
    );
    assert!(err.contains("did you mean \"qbittorrent\""), "{err}");
}

#[test]
fn an_address_it_cannot_reach_is_left_to_zbus() {
    let _bed = testbed();
    let path = socket_path(&testbed_bus());
    // Two addresses to try in turn: zbus's to handle, even though the first would do.
    let list = format!("unix:path={path};unix:path=/nonexistent");
    let err = stderr(&machnet_at(&list, &["routes", "qbittorrent"]));
    assert!(
        err.contains(&format!(
            "{STEPPED_ASIDE}: DBUS_SYSTEM_BUS_ADDRESS is not a single unix:path"
        )),
        "{err}"
    );
}
