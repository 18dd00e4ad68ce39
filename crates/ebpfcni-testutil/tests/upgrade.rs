//! Upgrading keeps everything: maps pinned by the first release (its own
//! program, tests/release1/, compiled and loaded here the way it loaded
//! them) are reused or migrated by this build with every endpoint, rule,
//! setting and count kept, and new maps are created beside them.

use std::net::Ipv4Addr;
use std::path::Path;

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{
    Hook, Identity, Maps, PinnedMap, PolicyRule, Program, Rule, Stored, TestContext, TraceLevel, TC_ACT_OK,
    TC_ACT_SHOT,
};
use ebpfcni_testutil::datapath::TEST_IFINDEX;
use ebpfcni_testutil::frames::ipv4;
use ebpfcni_testutil::{bpf, require_root, TestPinDir};
use libbpf_rs::{MapCore as _, MapFlags, MapHandle, Object, ObjectBuilder};

const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 13, 0, 3);

/// The maps the first release pinned, by their names.
const RELEASE1_MAPS: [&str; 4] = ["endpoint_map", "policy_map", "config_map", "drop_counters"];

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// Loads the first release's program with its maps pinned under `pin_dir`,
/// as that release's library did.
fn load_release1(pin_dir: &Path) -> Object {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/release1");
    let bytes = bpf::compile(&dir.join("ebpfcni.bpf.c"), &[&dir]);
    let mut open = ObjectBuilder::default()
        .open_memory(&bytes)
        .expect("open release 1");
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if RELEASE1_MAPS.contains(&name.as_str()) {
            map.set_pin_path(pin_dir.join(&name)).expect("pin path");
        }
    }
    open.load().expect("load release 1")
}

fn pinned(pin_dir: &Path, name: &str) -> MapHandle {
    MapHandle::from_pinned_path(pin_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Release 1 running: frontend 1001 may send to backend 1002 (one way),
/// trace level "all", and three of backend's replies dropped for lack of a
/// reverse rule, counted by release 1's own program.
fn release1_with_state(pin_dir: &Path) -> Object {
    let release1 = load_release1(pin_dir);
    let endpoints = pinned(pin_dir, "endpoint_map");
    for (ip, identity) in [(FRONTEND, 1001u32), (BACKEND, 1002)] {
        endpoints
            .update(
                &u32::from(ip).to_ne_bytes(),
                &identity.to_ne_bytes(),
                MapFlags::ANY,
            )
            .unwrap();
    }
    let rule = [1001u32.to_ne_bytes(), 1002u32.to_ne_bytes()].concat();
    pinned(pin_dir, "policy_map")
        .update(&rule, &[1], MapFlags::ANY)
        .unwrap();
    pinned(pin_dir, "config_map")
        .update(&0u32.to_ne_bytes(), &2u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    let program = release1
        .progs()
        .find(|p| p.name() == "process_tc")
        .expect("process_tc");
    let (verdict, _) = bpf::test_run(std::os::fd::AsFd::as_fd(&program), &ipv4(BACKEND, FRONTEND), 3);
    assert_eq!(verdict, TC_ACT_SHOT, "release 1 drops the reply");
    release1
}

/// Checks that everything release 1 held is there, in this build's layout.
fn assert_kept(pin_dir: &Path) {
    let maps = Maps::open(pin_dir).expect("every map in this build's layout");
    assert_eq!(
        maps.endpoints.list().unwrap(),
        vec![
            (FRONTEND, Stored::Valid(id(1001))),
            (BACKEND, Stored::Valid(id(1002)))
        ]
    );
    assert_eq!(
        maps.policy.list().unwrap(),
        vec![Stored::Valid(Rule::pair(
            PolicyRule::new(id(1001), id(1002)),
            false
        ))]
    );
    assert_eq!(maps.config.trace_level().unwrap(), Stored::Valid(TraceLevel::All));
    // Release 1's program counted its drops (the exact count is checked by
    // the caller, which read it before the upgrade).
    assert!(
        maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap() >= 1,
        "release 1's drop count was lost"
    );
    let config = pinned(pin_dir, "config_map");
    assert_eq!(
        config.value_size(),
        std::mem::size_of::<ebpfcni::types::ebpfcni_config>() as u32,
        "config_map migrated to this build's layout"
    );
    let drops = pinned(pin_dir, "drop_counters");
    assert_eq!(drops.max_entries(), 64, "drop_counters migrated");
    let leftovers: Vec<_> = std::fs::read_dir(pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("_old"))
        .collect();
    assert!(leftovers.is_empty(), "set-aside pins left: {leftovers:?}");
}

#[test]
fn pins_of_the_first_release_are_migrated_by_the_next_pod() {
    require_root!();
    let pins = TestPinDir::new("upgrade_release1");
    let release1 = release1_with_state(pins.path());
    let before = pinned(pins.path(), "drop_counters");
    let counted: u64 = before
        .lookup_percpu(&(Reason::EBPFCNI_DROP_NO_POLICY.0).to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
        .sum();
    let kept_ids = [
        pinned(pins.path(), "endpoint_map").info().unwrap().info.id,
        pinned(pins.path(), "policy_map").info().unwrap().info.id,
    ];

    // What the CNI plugin does for the next pod.
    let program = Program::load(pins.path()).expect("this build loads against release 1's pins");
    assert_kept(pins.path());
    let maps = Maps::open(pins.path()).unwrap();
    assert_eq!(maps.drops.get(Reason::EBPFCNI_DROP_NO_POLICY).unwrap(), counted);
    let ids = maps.ids().unwrap();
    assert_eq!(
        &ids[..2],
        &kept_ids,
        "endpoint_map and policy_map are reused as they are"
    );
    // The new program (its from-pod hook checks sources against the
    // records the CNI plugin writes at ADD: one for the test interface here).
    maps.interfaces.set(TEST_IFINDEX, &[FRONTEND, BACKEND]).unwrap();
    let ctx = TestContext {
        ifindex: TEST_IFINDEX,
        ..Default::default()
    };
    for hook in Hook::ALL {
        let run = |frame: &[u8]| program.test_run(hook, frame, Some(&ctx), 1).unwrap().verdict;
        assert_eq!(run(&ipv4(FRONTEND, BACKEND)), TC_ACT_OK, "{hook:?}");
        assert_eq!(run(&ipv4(BACKEND, FRONTEND)), TC_ACT_SHOT, "{hook:?}");
    }
    drop(release1);
}

#[test]
fn a_read_only_command_completes_the_upgrade_too() {
    require_root!();
    let pins = TestPinDir::new("upgrade_reader");
    let _release1 = release1_with_state(pins.path());
    match Maps::open(pins.path()) {
        Err(ebpfcni::Error::OlderLayout { path }) => {
            assert!(path.ends_with("config_map"), "{}", path.display())
        }
        other => panic!("expected OlderLayout, got {other:?}"),
    }
    Maps::open_for_reading(pins.path()).expect("open for reading migrates");
    assert_kept(pins.path());
}

/// A migration interrupted after the old pin was set aside (the process
/// killed) is finished by the next load, with nothing lost.
#[test]
fn an_interrupted_migration_is_finished_by_the_next_load() {
    require_root!();
    let pins = TestPinDir::new("upgrade_interrupted");
    let _release1 = release1_with_state(pins.path());
    for name in ["config_map", "drop_counters"] {
        std::fs::rename(pins.path().join(name), pins.path().join(format!("{name}_old"))).unwrap();
    }
    Program::load(pins.path()).expect("load finishes the migration");
    assert_kept(pins.path());
    let names: Vec<&str> = PinnedMap::ALL.iter().map(|m| m.name()).collect();
    for name in RELEASE1_MAPS {
        assert!(names.contains(&name), "{name} is still one of this build's maps");
    }
}

/// config_map of 64 bytes (the build before local_redirect, policy_gen and
/// audit) is migrated to this build's 128 with every setting kept; the new
/// fields read 0 (what the old layout's reserved words held): no local
/// delivery lookup until a record asks for it, every packet judged until
/// the first change bumps policy_gen.
#[test]
fn a_64_byte_config_map_is_migrated_with_its_settings() {
    require_root!();
    let pins = TestPinDir::new("upgrade_config64");
    drop(Program::load(pins.path()).expect("load"));
    let path = PinnedMap::Config.path(pins.path());
    let mut settings = pinned(pins.path(), "config_map")
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .expect("key 0");
    assert_eq!(settings.len(), 128);
    settings.truncate(64);
    // trace level 3, event level 2, conntrack on, notify rate 500,
    // generation 42 (offsets of struct ebpfcni_config).
    for (offset, value) in [(0, 3u32), (4, 2), (8, 1), (32, 500), (52, 42), (56, 0), (60, 0)] {
        settings[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }
    std::fs::remove_file(&path).unwrap();
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut old = MapHandle::create(libbpf_rs::MapType::Array, Some("config_map"), 4, 64, 1, &opts).unwrap();
    old.pin(&path).unwrap();
    old.update(&0u32.to_ne_bytes(), &settings, MapFlags::ANY).unwrap();
    drop(old);

    let maps = Maps::open_or_create(pins.path()).expect("open migrates");
    assert_eq!(pinned(pins.path(), "config_map").value_size(), 128);
    let migrated = pinned(pins.path(), "config_map")
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .expect("key 0");
    assert_eq!(&migrated[..64], &settings[..], "every setting kept");
    assert_eq!(maps.config.generation().unwrap(), 42);
    assert!(maps.config.conntrack().unwrap());
    assert_eq!(maps.config.policy_gen().unwrap(), 0, "every packet judged");
    assert!(!maps.config.local_redirect().unwrap());
    maps.after_policy_change().unwrap();
    assert_ne!(maps.config.policy_gen().unwrap(), 0, "bumped by the first change");
}

/// interface_map of 16-byte records (the build before records carried the
/// agent's identity) is migrated to 20-byte ones with every record kept,
/// carrying no identity: from-pod looks the source's up as before, so every
/// verdict stays; the agent's next write adds the identity.
#[test]
fn interface_records_without_an_identity_are_migrated_and_kept() {
    require_root!();
    let pins = TestPinDir::new("upgrade_iface16");
    drop(Program::load(pins.path()).expect("load"));
    let path = PinnedMap::Interfaces.path(pins.path());
    std::fs::remove_file(&path).unwrap();
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut old = MapHandle::create(
        libbpf_rs::MapType::Hash,
        Some("interface_map"),
        4,
        16,
        16384,
        &opts,
    )
    .unwrap();
    old.pin(&path).unwrap();
    let record = |addrs: &[Ipv4Addr]| -> Vec<u8> {
        let mut v = vec![0u8; 16];
        for (i, a) in addrs.iter().enumerate() {
            v[i * 4..i * 4 + 4].copy_from_slice(&a.octets());
        }
        v
    };
    old.update(&TEST_IFINDEX.to_ne_bytes(), &record(&[FRONTEND]), MapFlags::ANY)
        .unwrap();
    old.update(&77u32.to_ne_bytes(), &record(&[BACKEND, FRONTEND]), MapFlags::ANY)
        .unwrap();
    drop(old);

    let maps = Maps::open_or_create(pins.path()).expect("open migrates");
    assert_eq!(pinned(pins.path(), "interface_map").value_size(), 20);
    assert_eq!(
        maps.interfaces.list().unwrap(),
        vec![(TEST_IFINDEX, vec![FRONTEND]), (77, vec![BACKEND, FRONTEND])],
        "every record kept"
    );
    assert_eq!(maps.interfaces.carried_identity(TEST_IFINDEX).unwrap(), None);
    // The migrated record still gates the source, and the source's identity
    // is looked up: frontend 1001 may send to backend 1002.
    maps.endpoints.upsert(FRONTEND, id(1001)).unwrap();
    maps.endpoints.upsert(BACKEND, id(1002)).unwrap();
    maps.policy
        .allow_all(&[PolicyRule::new(id(1001), id(1002))])
        .unwrap();
    let program = Program::load(pins.path()).expect("load after the migration");
    let ctx = TestContext {
        ifindex: TEST_IFINDEX,
        ..Default::default()
    };
    let run = |src, dst| {
        program
            .test_run(Hook::FromPod, &ipv4(src, dst), Some(&ctx), 1)
            .unwrap()
            .verdict
    };
    assert_eq!(run(FRONTEND, BACKEND), TC_ACT_OK);
    assert_eq!(
        run(BACKEND, FRONTEND),
        TC_ACT_SHOT,
        "backend is not behind this interface"
    );
}
