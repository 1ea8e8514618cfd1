//! The machine1 members machnet uses, held to the introspection XML in dbus/VERSION/
//! (taken from a real machined of each systemd version CI runs), and that XML held to the
//! machined running on the testbed.

mod common;

use std::collections::HashMap;

use machnet::machined::{
    MachineListing, MACHINE_INTERFACE, MACHINE_PROPERTIES, MANAGER_INTERFACE, MANAGER_PATH,
    OPTIONAL_MACHINE_PROPERTIES, SERVICE,
};
use quick_xml::events::Event;
use zbus::wire::Type;
use zbus::OwnedObjectPath;

/// An interface as introspection XML declares it: method → (in signature, out signature),
/// property → type.
#[derive(Debug, Default, PartialEq)]
struct Interface {
    methods: HashMap<String, (String, String)>,
    properties: HashMap<String, String>,
}

fn parse(xml: &str, interface: &str) -> Interface {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Interface::default();
    let (mut inside, mut method): (bool, Option<String>) = (false, None);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == name.as_bytes())
                        .map(|a| String::from_utf8(a.value.to_vec()).unwrap())
                };
                match e.name().as_ref() {
                    b"interface" => inside = attr("name").as_deref() == Some(interface),
                    b"method" if inside => {
                        let name = attr("name").unwrap();
                        out.methods.insert(name.clone(), Default::default());
                        method = Some(name);
                    }
                    b"arg" if inside => {
                        if let Some(m) = &method {
                            let sigs = out.methods.get_mut(m).unwrap();
                            let ty = attr("type").unwrap();
                            match attr("direction").as_deref() {
                                Some("out") => sigs.1.push_str(&ty),
                                _ => sigs.0.push_str(&ty),
                            }
                        }
                    }
                    b"property" if inside => {
                        out.properties
                            .insert(attr("name").unwrap(), attr("type").unwrap());
                    }
                    _ => {}
                }
            }
            Event::End(e) if e.name().as_ref() == b"method" => method = None,
            Event::End(e) if e.name().as_ref() == b"interface" => inside = false,
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// The systemd versions whose machined XML is committed: the ones CI runs against.
const VERSIONS: [&str; 2] = ["252", "262"];

fn committed(version: &str, interface: &str) -> Interface {
    let path = format!(
        "{}/dbus/{version}/{interface}.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let parsed = parse(&xml, interface);
    assert!(
        !parsed.methods.is_empty() || !parsed.properties.is_empty(),
        "{path} declares nothing"
    );
    parsed
}

#[test]
fn manager_proxy_matches_the_xml() {
    for version in VERSIONS {
        let manager = committed(version, MANAGER_INTERFACE);
        // The signatures the proxy's Rust types produce, against the declared ones.
        let listing = <MachineListing as Type>::SIGNATURE.to_string();
        assert_eq!(
            manager.methods["ListMachines"],
            (String::new(), listing),
            "systemd {version}"
        );
        let path = <OwnedObjectPath as Type>::SIGNATURE.to_string();
        let name = <&str as Type>::SIGNATURE.to_string();
        assert_eq!(
            manager.methods["GetMachine"],
            (name, path),
            "systemd {version}"
        );
    }
}

#[test]
fn machine_properties_match_the_xml() {
    for version in VERSIONS {
        let machine = committed(version, MACHINE_INTERFACE);
        for (name, ty) in MACHINE_PROPERTIES {
            assert_eq!(
                machine.properties.get(name).map(String::as_str),
                Some(ty),
                "systemd {version}: property {name}"
            );
        }
    }
    // LeaderPIDFDId is 262's (257 lacks it too): read only where machined has it, and
    // then with the type the code expects.
    let old = committed("252", MACHINE_INTERFACE);
    let new = committed("262", MACHINE_INTERFACE);
    for (name, ty) in OPTIONAL_MACHINE_PROPERTIES {
        assert!(!old.properties.contains_key(name), "{name} is not in 252");
        assert_eq!(
            new.properties.get(name).map(String::as_str),
            Some(ty),
            "{name} in 262"
        );
    }
}

/// The systemd version of the machined on the testbed (scripts/testbed says it).
fn testbed_systemd_version() -> String {
    std::env::var("MACHNET_TESTBED_SYSTEMD_VERSION")
        .expect("scripts/testbed sets MACHNET_TESTBED_SYSTEMD_VERSION")
}

/// The committed XML of the testbed's systemd version is what its machined really says (so
/// it was not written by hand and does not drift from the systemd the tests run against).
/// A version with no committed XML fails: commit its XML before CI runs it.
#[test]
fn committed_xml_matches_the_live_machined() {
    let _bed = common::testbed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (manager_xml, machine_xml) = runtime.block_on(async {
        let conn = zbus::Connection::system().await.expect("system bus");
        let introspect = |path: String| {
            let conn = conn.clone();
            async move {
                let xml: String = zbus::fdo::IntrospectableProxy::builder(&conn)
                    .destination(SERVICE)
                    .path(path)
                    .build()
                    .await
                    .unwrap()
                    .introspect()
                    .await
                    .unwrap()
                    .to_string();
                xml
            }
        };
        let manager = introspect(MANAGER_PATH.to_string()).await;
        let machine = introspect(format!("{MANAGER_PATH}/machine/corpus")).await;
        (manager, machine)
    });
    let version = testbed_systemd_version();
    assert_eq!(
        parse(&manager_xml, MANAGER_INTERFACE),
        committed(&version, MANAGER_INTERFACE),
        "systemd {version}"
    );
    assert_eq!(
        parse(&machine_xml, MACHINE_INTERFACE),
        committed(&version, MACHINE_INTERFACE),
        "systemd {version}"
    );
}

/// `machnet routes NAME` asks for a machine's properties at the path it expects machined
/// to give NAME, in the same round trip as GetMachine, and keeps them only if GetMachine
/// agrees. Held to the live machined here (a name with `-` and `.` included), so the
/// round trip it saves is really saved.
#[test]
fn expected_machine_paths_are_the_ones_machined_gives() {
    let _bed = common::testbed();
    let script = format!("{}/tests/testbed/late-machine", env!("CARGO_MANIFEST_DIR"));
    let mut register = std::process::Command::new(script);
    register.arg("web-1.lab");
    let leader: i32 = common::ok(common::run(register), "late-machine")
        .trim()
        .parse()
        .unwrap();
    let _leader = common::MachineLeader {
        pid: leader,
        machine: Some("web-1.lab".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listed = runtime.block_on(async {
        let machined = machnet::machined::Machined::connect().await.unwrap();
        machined.list().await.unwrap()
    });
    assert!(
        listed.iter().any(|(name, _)| name == "web-1.lab"),
        "{listed:?}"
    );
    for (name, path) in &listed {
        assert_eq!(
            machnet::machined::expected_machine_path(name).as_ref(),
            Some(path),
            "machine {name}"
        );
    }
}
