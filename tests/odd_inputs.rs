//! What one odd object in a namespace must not do: make machnet fail for the whole
//! namespace. In a namespace of this test's own (netns:NAME), deleted at the end.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use common::*;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("{tag}-{}", std::process::id());
        let mut add = Command::new("ip");
        add.args(["netns", "add", &name]);
        ok(run(add), "ip netns add");
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.0]).args(args);
        ok(run(cmd), "ip")
    }

    fn target(&self) -> String {
        format!("netns:{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut del = Command::new("ip");
        del.args(["netns", "del", &self.0]);
        let _ = run(del);
    }
}

#[test]
fn an_encapsulated_route_prints_its_type_and_the_rest_stays_exact() {
    let _bed = testbed();
    let ns = Netns::new("encap");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["-6", "addr", "add", "2001:db8::2/64", "dev", "d0", "nodad"]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:98::/64",
        "via",
        "2001:db8::1",
        "dev",
        "d0",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/64",
        "encap",
        "seg6",
        "mode",
        "encap",
        "segs",
        "2001:db8::1",
        "dev",
        "d0",
    ]);
    let theirs = ns.ip(&["-6", "route", "show"]);
    let out = machnet(&["routes", &ns.target(), "-6"]);
    let err = stderr(&out);
    let mine = ok(out, "routes with an encap route");
    assert!(err.contains("1 route(s) carry an encapsulation"), "{err}");
    for (m, t) in mine.lines().zip(theirs.lines()) {
        if t.contains(" encap ") {
            assert!(m.starts_with("2001:db8:99::/64 encap seg6 "), "{m}");
        } else {
            assert_eq!(m, t);
        }
    }
    assert_eq!(mine.lines().count(), theirs.lines().count());
}

#[test]
fn an_interface_name_that_is_not_utf8_does_not_break_the_namespace() {
    let _bed = testbed();
    let ns = Netns::new("bytes");
    let odd = OsStr::from_bytes(b"v\xff");
    ns.ip(&[
        OsStr::new("link"),
        OsStr::new("add"),
        odd,
        OsStr::new("type"),
        OsStr::new("veth"),
        OsStr::new("peer"),
        OsStr::new("name"),
        OsStr::new("w0"),
    ]);
    let routes = machnet(&["routes", &ns.target(), "--table", "all"]);
    assert!(routes.status.success(), "{}", stderr(&routes));
    let links = ok(machnet(&["links", &ns.target()]), "links");
    assert!(links.contains("w0@v\u{fffd}"), "shown lossily: {links}");
}
