//! What one odd object in a namespace must not do: make machnet fail for the whole
//! namespace. In a namespace of this test's own (netns:NAME), deleted at the end.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use common::*;

/// One encapsulation kind the kernel may or may not have been built with
/// (CONFIG_LWTUNNEL and friends): the route that uses it, as `ip -6/-4 route add` words.
struct EncapShape {
    kind: &'static str,
    family: &'static str,
    prefix: &'static str,
    words: &'static [&'static str],
}

const ENCAP_SHAPES: &[EncapShape] = &[
    EncapShape {
        kind: "ip",
        family: "-4",
        prefix: "10.99.2.0/24",
        words: &["encap", "ip", "id", "100", "dst", "10.0.0.9", "dev", "d0"],
    },
    EncapShape {
        kind: "ip6",
        family: "-6",
        prefix: "2001:db8:94::/64",
        words: &[
            "encap",
            "ip6",
            "id",
            "100",
            "dst",
            "2001:db8::9",
            "dev",
            "d0",
        ],
    },
    EncapShape {
        kind: "mpls",
        family: "-4",
        prefix: "10.99.1.0/24",
        words: &["encap", "mpls", "100", "via", "10.0.0.1", "dev", "d0"],
    },
    EncapShape {
        kind: "seg6",
        family: "-6",
        prefix: "2001:db8:99::/64",
        words: &[
            "encap",
            "seg6",
            "mode",
            "encap",
            "segs",
            "2001:db8::1",
            "dev",
            "d0",
        ],
    },
    EncapShape {
        kind: "seg6local",
        family: "-6",
        prefix: "2001:db8:97::/64",
        words: &["encap", "seg6local", "action", "End", "dev", "d0"],
    },
    EncapShape {
        kind: "ioam6",
        family: "-6",
        prefix: "2001:db8:96::/64",
        words: &[
            "encap", "ioam6", "trace", "prealloc", "type", "0x800000", "ns", "1", "size", "12",
            "dev", "d0",
        ],
    },
    EncapShape {
        kind: "rpl",
        family: "-6",
        prefix: "2001:db8:95::/64",
        words: &["encap", "rpl", "segs", "2001:db8::1", "dev", "d0"],
    },
];

#[test]
fn an_encapsulated_route_prints_its_type_and_the_rest_stays_exact() {
    let _bed = testbed();
    let ns = ScratchNetns::new("encap");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["addr", "add", "10.0.0.2/24", "dev", "d0"]);
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
    // Each kind the kernel takes goes in; each it refuses is named with its refusal.
    let mut made = Vec::new();
    let mut missing = Vec::new();
    for shape in ENCAP_SHAPES {
        let mut add = Command::new("ip");
        add.args(["-n", ns.name(), shape.family, "route", "add", shape.prefix])
            .args(shape.words);
        let out = run(add);
        if out.status.success() {
            made.push(shape);
        } else {
            missing.push(format!("{} ({})", shape.kind, stderr(&out).trim()));
        }
    }
    match bpf::pinned_lwt_xmit_program(&ns) {
        Ok(()) => made.push(&BPF_SHAPE),
        Err(why) => missing.push(format!("bpf ({why})")),
    }
    report(&format!(
        "encap kinds this kernel took: {}",
        made.iter().map(|s| s.kind).collect::<Vec<_>>().join(" ")
    ));
    if !missing.is_empty() {
        report(&format!(
            "encap kinds not checked, missing here: {}",
            missing.join("; ")
        ));
    }
    assert!(
        !made.is_empty(),
        "the kernel took no encapsulation kind at all, so nothing was checked: {missing:?}"
    );

    for family in ["-4", "-6"] {
        let theirs = ns.ip(&[family, "route", "show"]);
        let out = machnet(&["routes", &ns.target(), family]);
        let err = stderr(&out);
        let mine = ok(out, "routes with encap routes");
        let encapsulated: Vec<&&EncapShape> = made.iter().filter(|s| s.family == family).collect();
        if !encapsulated.is_empty() {
            let note = format!("{} route(s) carry an encapsulation", encapsulated.len());
            assert!(err.contains(&note), "{family}: {err}");
        }
        assert_eq!(
            mine.lines().count(),
            theirs.lines().count(),
            "{mine}\n{theirs}"
        );
        for (m, t) in mine.lines().zip(theirs.lines()) {
            match encapsulated
                .iter()
                .find(|s| t.starts_with(&format!("{} ", s.prefix)))
            {
                // machnet names the kind and leaves out its details; what follows the
                // details (dev, metric, pref, …) is ip's own text.
                Some(shape) => {
                    let head = format!("{} encap {} ", shape.prefix, shape.kind);
                    assert!(m.starts_with(&head), "{m}\n{t}");
                    assert!(t.ends_with(&m[head.len()..]), "{m}\n{t}");
                }
                None => assert_eq!(m, t),
            }
        }
    }
}

/// The bpf kind needs a program: load the smallest LWT xmit program there is
/// (`r0 = BPF_OK; exit`) with bpf(2), pin it in a bpffs of the test's own, and route
/// through it with `encap bpf xmit pinned PATH`.
const BPF_SHAPE: EncapShape = EncapShape {
    kind: "bpf",
    family: "-4",
    prefix: "10.99.3.0/24",
    words: &[],
};

mod bpf {
    use super::*;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_PROG_TYPE_LWT_XMIT: u32 = 12;

    /// The leading fields of union bpf_attr for BPF_PROG_LOAD; the kernel takes a shorter
    /// attr and treats what is not there as zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
    }

    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<i64, std::io::Error> {
        // SAFETY: attr is a live, initialised struct of the size passed.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    pub fn pinned_lwt_xmit_program(ns: &ScratchNetns) -> Result<(), String> {
        // mov64 r0, 0 ; exit
        let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
        let license = c"GPL";
        let load = ProgLoad {
            prog_type: BPF_PROG_TYPE_LWT_XMIT,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
        };
        let fd = bpf(BPF_PROG_LOAD, &load).map_err(|e| format!("loading a program: {e}"))?;
        // SAFETY: fd was just returned to us by bpf(2) and is owned here.
        let _prog =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let dir = std::env::temp_dir().join(format!("machnet-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let _fs = BpfFs::mount(&dir)?;
        let path = dir.join("xmit");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let pin = ObjPin {
            pathname: c_path.as_ptr() as u64,
            bpf_fd: fd as u32,
            file_flags: 0,
        };
        bpf(BPF_OBJ_PIN, &pin).map_err(|e| format!("pinning it: {e}"))?;
        let mut add = Command::new("ip");
        add.args([
            "-n",
            ns.name(),
            "-4",
            "route",
            "add",
            BPF_SHAPE.prefix,
            "encap",
            "bpf",
            "xmit",
        ])
        .arg("pinned")
        .arg(&path)
        .args(["dev", "d0"]);
        let out = run(add);
        if out.status.success() {
            Ok(())
        } else {
            Err(stderr(&out).trim().to_string())
        }
    }

    /// A bpffs mounted for the pin and taken down after (the route keeps the program).
    struct BpfFs(std::path::PathBuf);

    impl BpfFs {
        fn mount(dir: &std::path::Path) -> Result<BpfFs, String> {
            let mut mount = Command::new("mount");
            mount.args(["-t", "bpf", "bpf"]).arg(dir);
            let out = run(mount);
            if out.status.success() {
                Ok(BpfFs(dir.to_path_buf()))
            } else {
                let _ = std::fs::remove_dir(dir);
                Err(format!("mounting a bpffs: {}", stderr(&out).trim()))
            }
        }
    }

    impl Drop for BpfFs {
        fn drop(&mut self) {
            let mut umount = Command::new("umount");
            umount.arg(&self.0);
            let _ = run(umount);
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

#[test]
fn an_interface_name_that_is_not_utf8_does_not_break_the_namespace() {
    let _bed = testbed();
    let ns = ScratchNetns::new("bytes");
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
