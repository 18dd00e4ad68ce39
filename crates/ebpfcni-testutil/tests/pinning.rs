//! Pinned maps: shared between processes, checked before reuse, created once
//! under concurrency, and kept across program upgrades.
//!
//! "Another process" is the `ebpfcni-test-helper` binary of this crate.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ebpfcni::{Error, Hook, Identity, Maps, PinnedMap, PolicyRule, Program, Rule, Stored};
use ebpfcni_testutil::{require_root, TestPinDir};
use libbpf_rs::{MapCore as _, MapFlags, MapHandle, MapType};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 13, 0, last)
}

fn id(n: u32) -> Identity {
    Identity::new(n).unwrap()
}

/// Starts the helper with `task` on `pin_dir`; its stdout is piped.
fn spawn_helper(task: &str, pin_dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ebpfcni-test-helper"))
        .arg(task)
        .arg(pin_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ebpfcni-test-helper")
}

fn run_helper(task: &str, pin_dir: &Path) -> String {
    let out = spawn_helper(task, pin_dir).wait_with_output().unwrap();
    assert!(out.status.success(), "helper {task} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_second_process_sees_what_the_first_wrote() {
    require_root!();
    let pins = TestPinDir::new("second_process");
    run_helper("write", pins.path());
    let maps = Maps::open(pins.path()).expect("maps pinned by the helper");
    assert_eq!(
        maps.endpoints.list().unwrap(),
        vec![(ip(2), Stored::Valid(id(1001)))]
    );
    assert_eq!(
        maps.policy.list().unwrap(),
        vec![Stored::Valid(Rule::pair(
            PolicyRule::new(id(1001), id(1002)),
            false
        ))]
    );
}

#[test]
fn eight_concurrent_openers_end_with_one_map_of_each_kind() {
    require_root!();
    let pins = TestPinDir::new("concurrent");
    let children: Vec<_> = (0..8).map(|_| spawn_helper("open", pins.path())).collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("IDS"))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "openers saw different maps: {ids:?}"
    );
    let pinned: Vec<_> = std::fs::read_dir(pins.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        pinned.len(),
        PinnedMap::ALL.len() + ebpfcni::LocalMap::ALL.len(),
        "pins: {pinned:?}"
    );
}

#[test]
fn an_incompatible_pinned_map_is_an_error_and_is_kept() {
    require_root!();
    let pins = TestPinDir::new("incompatible");
    // A policy_map from an imagined older build: 4-byte keys.
    let path = PinnedMap::Policy.path(pins.path());
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut old = MapHandle::create(MapType::Hash, Some("policy_map"), 4, 1, 1024, &opts).unwrap();
    old.pin(&path).unwrap();
    old.update(&7u32.to_ne_bytes(), &[1], MapFlags::ANY).unwrap();

    for result in [
        Maps::open_or_create(pins.path()).map(drop),
        Program::load(pins.path()).map(drop),
    ] {
        match result {
            Err(Error::IncompatibleMap { path: p, mismatch }) => {
                assert_eq!(p, path);
                assert!(mismatch.contains("key size is 4, expected 8"), "{mismatch}");
                assert!(
                    mismatch.contains("capacity is 1024, expected 65536"),
                    "{mismatch}"
                );
            }
            other => panic!("expected IncompatibleMap, got {other:?}"),
        }
    }
    // The old map and its entry are still there.
    let kept = MapHandle::from_pinned_path(&path).unwrap();
    assert_eq!(kept.key_size(), 4);
    assert_eq!(
        kept.lookup(&7u32.to_ne_bytes(), MapFlags::ANY).unwrap(),
        Some(vec![1])
    );
}

#[test]
fn open_without_create_names_the_missing_pins() {
    require_root!();
    let pins = TestPinDir::new("missing");
    match Maps::open(pins.path()) {
        Err(Error::MapsNotPinned { missing }) => assert_eq!(missing.len(), PinnedMap::ALL.len()),
        other => panic!("expected MapsNotPinned, got {other:?}"),
    }
}

#[test]
fn an_upgrade_keeps_every_entry() {
    require_root!();
    let pins = TestPinDir::new("upgrade");
    let old = Program::load(pins.path()).unwrap();
    let maps = Maps::open(pins.path()).unwrap();
    maps.endpoints.upsert(ip(2), id(1001)).unwrap();
    maps.policy.allow(PolicyRule::new(id(1001), id(1002))).unwrap();
    maps.config.set_trace_level(ebpfcni::TraceLevel::All).unwrap();
    let ids = maps.ids().unwrap();
    drop(maps);

    let new = Program::load(pins.path()).unwrap();
    assert_ne!(
        old.id(Hook::FromPod),
        new.id(Hook::FromPod),
        "a new program instance was loaded"
    );
    let info = ebpfcni::program_info(new.id(Hook::FromPod)).unwrap();
    assert!(
        info.foreign_maps(&Maps::open(pins.path()).unwrap())
            .unwrap()
            .is_empty()
            && ids.iter().any(|m| info.map_ids.contains(m)),
        "new program uses the pinned maps"
    );
    let maps = Maps::open(pins.path()).unwrap();
    assert_eq!(maps.ids().unwrap(), ids);
    assert_eq!(
        maps.endpoints.list().unwrap(),
        vec![(ip(2), Stored::Valid(id(1001)))]
    );
    assert_eq!(
        maps.policy.list().unwrap(),
        vec![Stored::Valid(Rule::pair(
            PolicyRule::new(id(1001), id(1002)),
            false
        ))]
    );
    assert_eq!(
        maps.config.trace_level().unwrap(),
        Stored::Valid(ebpfcni::TraceLevel::All)
    );
}

#[test]
fn fresh_maps_start_at_trace_level_drops() {
    require_root!();
    let pins = TestPinDir::new("default_trace");
    let maps = Maps::open_or_create(pins.path()).unwrap();
    assert_eq!(
        maps.config.trace_level().unwrap(),
        Stored::Valid(ebpfcni::TraceLevel::Drops)
    );
}

#[test]
fn policy_key_layout_agrees_with_the_object() {
    require_root!();
    let pins = TestPinDir::new("layout");
    let maps = Maps::open_or_create(pins.path()).unwrap();
    drop(maps);
    let policy = MapHandle::from_pinned_path(PinnedMap::Policy.path(pins.path())).unwrap();
    assert_eq!(
        policy.key_size() as usize,
        std::mem::size_of::<ebpfcni::types::policy_key>()
    );
    assert_eq!(std::mem::size_of::<ebpfcni::types::policy_key>(), 8);
    assert_eq!(policy.value_size(), 1);
    assert_eq!(policy.max_entries(), 65536);
    let endpoints = MapHandle::from_pinned_path(PinnedMap::Endpoints.path(pins.path())).unwrap();
    assert_eq!(
        (
            endpoints.key_size(),
            endpoints.value_size(),
            endpoints.max_entries()
        ),
        (4, 4, 16384)
    );
}

#[test]
fn full_maps_are_an_error_that_names_the_map() {
    require_root!();
    let pins = TestPinDir::new("full");
    let maps = Maps::open_or_create(pins.path()).unwrap();
    let cap = maps.endpoints.capacity();
    let all: Vec<_> = (0..cap)
        .map(|i| (Ipv4Addr::from(0x0a00_0000 + i), id(i + 1)))
        .collect();
    maps.endpoints.upsert_batch(&all).unwrap();
    match maps.endpoints.upsert(Ipv4Addr::new(10, 200, 0, 1), id(1)) {
        Err(e @ Error::MapFull { .. }) => {
            // "needed" is the total the map would have held, as for batches.
            let msg = e.to_string();
            assert!(
                msg.contains("endpoint_map is full: capacity 16384 entries, 16385 needed"),
                "{msg}"
            );
        }
        other => panic!("expected MapFull, got {other:?}"),
    }
    // Replacing an existing endpoint's identity still works when full.
    assert_eq!(
        maps.endpoints.upsert(all[0].0, id(7)).unwrap(),
        Some(Stored::Valid(all[0].1))
    );
    assert_eq!(maps.endpoints.list().unwrap().len(), cap as usize);
}
