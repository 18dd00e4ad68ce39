//! Loading the embedded object against a pin directory: pins that exist are
//! reused after their layout is checked, pins of an older release's layout
//! are migrated ([`crate::migrate`]), missing ones are created. Both
//! [`crate::program`] (which keeps the loaded program) and [`crate::maps`]
//! (which only needs the pins to exist) come here.

use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::skel::OpenSkel;
use libbpf_rs::{MapCore, MapFlags};

use crate::bpffs::{self, PinDirLock};
use crate::error::{Error, Result};
use crate::local_maps::LocalMap;
use crate::migrate;
use crate::object::{default_config, open_object, open_pinned, MapSpec, PinnedMap, CONFIG_KEY};
use crate::skel::EbpfcniSkel;

/// Loads the embedded object with its maps pinned under `pin_dir` and hands
/// the loaded skeleton to `keep`, which takes what it wants to outlive the
/// call (the program) before the skeleton is dropped. Pins that exist are
/// reused after their layout is checked; pins of an older layout are
/// migrated; missing ones are created and pinned; a config map created here
/// starts from [`default_config`]. Concurrent loaders serialise on a lock of
/// `pin_dir` and end with one map of each kind.
pub(crate) fn load<R>(pin_dir: &Path, keep: impl FnOnce(&EbpfcniSkel<'_>) -> Result<R>) -> Result<R> {
    let created = bpffs::prepare_pin_dir(pin_dir)?;
    let _lock = PinDirLock::acquire(pin_dir)?;
    let migrating = migrate::set_aside(pin_dir)?;

    let mut storage = MaybeUninit::uninit();
    let mut open = open_object(&mut storage)?;
    let mut config_created = false;
    for map in PinnedMap::ALL {
        let path = map.path(pin_dir);
        let open_map = map.in_object(&mut open.maps);
        if open_pinned(map, pin_dir, &MapSpec::of_open(open_map))?.is_none() {
            config_created |= map == PinnedMap::Config;
        }
        open_map
            .set_pin_path(&path)
            .map_err(|e| Error::bpf(format!("set pin path {}", path.display()), e))?;
    }
    let skel = open.load().map_err(|e| {
        Error::bpf(
            format!("load the BPF program with maps in {}", pin_dir.display()),
            e,
        )
    })?;
    if config_created {
        skel.maps
            .config_map
            .update(&CONFIG_KEY, bytemuck::bytes_of(&default_config()), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("initialise {}", PinnedMap::Config.name()), e))?;
    }
    migrate::finish(pin_dir, &migrating)?;
    for map in LocalMap::ALL {
        map.create_locked(pin_dir)?;
    }
    let kept = keep(&skel)?;
    created.keep();
    Ok(kept)
}

/// Loads the embedded object as [`load`] would, without changing anything:
/// the maps pinned under `pin_dir` are reused (after checking their layout),
/// missing ones (and ones a load would migrate) are created for the check
/// only, unpinned, and everything goes when the call returns. Nothing is
/// mounted, created, migrated or pinned. Tells whether the kernel accepts
/// the program with these maps.
pub(crate) fn verify(pin_dir: &Path) -> Result<()> {
    let mut storage = MaybeUninit::uninit();
    let mut open = open_object(&mut storage)?;
    for map in PinnedMap::ALL {
        let path = map.path(pin_dir);
        let open_map = map.in_object(&mut open.maps);
        match open_pinned(map, pin_dir, &MapSpec::of_open(open_map)) {
            Ok(Some(_)) => open_map
                .set_pin_path(&path)
                .map_err(|e| Error::bpf(format!("set pin path {}", path.display()), e))?,
            Ok(None) | Err(Error::OlderLayout { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    open.load()
        .map(drop)
        .map_err(|e| Error::bpf("load the BPF program", e))
}
