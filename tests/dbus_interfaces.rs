//! The machine1 members machnet uses, held to the introspection XML in dbus/ (taken from
//! a real machined), and that XML held to the machined running on the testbed.

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

fn committed(interface: &str) -> Interface {
    let path = format!("{}/dbus/{interface}.xml", env!("CARGO_MANIFEST_DIR"));
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
    let manager = committed(MANAGER_INTERFACE);
    // The signatures the proxy's Rust types produce, against the declared ones.
    let listing = <MachineListing as Type>::SIGNATURE.to_string();
    assert_eq!(manager.methods["ListMachines"], (String::new(), listing));
    let path = <OwnedObjectPath as Type>::SIGNATURE.to_string();
    let name = <&str as Type>::SIGNATURE.to_string();
    assert_eq!(manager.methods["GetMachine"], (name, path));
}

#[test]
fn machine_properties_match_the_xml() {
    let machine = committed(MACHINE_INTERFACE);
    for (name, ty) in MACHINE_PROPERTIES {
        assert_eq!(
            machine.properties.get(name).map(String::as_str),
            Some(ty),
            "property {name}"
        );
    }
    // Newer machined only: absent from 252's XML, and read only when present.
    for (name, _) in OPTIONAL_MACHINE_PROPERTIES {
        assert!(
            !machine.properties.contains_key(name),
            "{name} is not in systemd 252"
        );
    }
}

/// The committed XML is what the machined on the testbed really says (so it was not
/// written by hand and does not drift from the systemd the tests run against).
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
    assert_eq!(
        parse(&manager_xml, MANAGER_INTERFACE),
        committed(MANAGER_INTERFACE)
    );
    assert_eq!(
        parse(&machine_xml, MACHINE_INTERFACE),
        committed(MACHINE_INTERFACE)
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
