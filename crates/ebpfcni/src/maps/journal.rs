//! The undo record of a change in progress, so that a change killed part
//! way (SIGKILL, a crash of the process) leaves the old state or the new
//! one, never a mix.
//!
//! A change of several entries (an apply, a port range's blocks, a flush)
//! is written entry by entry: no single kernel operation spans an LPM trie
//! and a hash map. So before it writes anything, under the pin directory's
//! lock, the change records in a file (`/run/ebpfcni/change-DEV-INO`,
//! named after the pin directory's device and inode) the value every entry
//! it is about to write or remove had (or that it was absent), in one
//! atomic rename; it removes the file when it is complete, flags and
//! tracked connections included. Whoever opens the maps next ([`Maps::open`]:
//! every CLI command, the CNI plugin) and finds the file while nobody holds
//! the lock knows a change was killed: it puts every recorded entry back,
//! brings the flags and the tracked connections in line with the rules
//! (as after any change), and removes the file. The old state is back.
//!
//! The record lives in /run, like the pins on bpffs it describes: both are
//! gone at reboot. It names the maps' kernel ids: a record of maps that no
//! longer exist (removed and created afresh since) is dropped unused. It is
//! JSON ([`Record`]); one that does not read (another layout, a torn
//! disk) stops every opener with an error naming the file, never guessed at.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::Maps;
use crate::bpffs::PinDirLock;
use crate::error::{Error, Result};
use crate::object::PinnedMap;

/// The record's layout; another one is not read.
const FORMAT: &str = "ebpfcni change 2";

/// The undo record as written: the maps' kernel ids (in [`PinnedMap::ALL`]
/// order), then every entry's map, key and value before the change
/// (`None`: absent), in the order they were recorded.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    format: String,
    ids: Vec<u32>,
    entries: Vec<RecordedEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordedEntry {
    map: String,
    key: Vec<u8>,
    old: Option<Vec<u8>>,
}

/// One recorded entry: which map, its key, and its value before the change
/// (`None`: absent).
type Entry = (PinnedMap, Vec<u8>, Option<Vec<u8>>);

/// The undo record of one change, held with the pin directory's lock.
/// Dropped without [`Journal::commit`] (an error on the way), the change is
/// rolled back as the next opener would.
#[must_use = "a change's record is committed or rolled back"]
pub struct Journal<'m> {
    maps: &'m Maps,
    /// What brings the flags and tracked connections in line with the
    /// entries after an undo ([`Maps::after_policy_change`], given by the
    /// module that makes the change: this one calls nothing above it).
    settle: Settle,
    path: PathBuf,
    entries: Vec<Entry>,
    _lock: PinDirLock,
    done: bool,
}

/// Brings the flags and tracked connections in line with the entries.
pub(super) type Settle = fn(&Maps) -> Result<()>;

/// Where the record of changes to `pin_dir`'s maps is kept.
fn path_for(pin_dir: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(pin_dir).map_err(|e| Error::io(format!("stat {}", pin_dir.display()), e))?;
    Ok(Path::new(crate::RUN_DIR).join(format!("change-{:x}-{:x}", meta.dev(), meta.ino())))
}

impl<'m> Journal<'m> {
    /// Takes the pin directory's lock. The record is written by the first
    /// [`Journal::record`]: a change records every entry before it touches
    /// anything (a flag included), so until then a kill leaves nothing to
    /// undo. From then until [`Journal::commit`], a killed change is undone
    /// by the next opener.
    pub(super) fn begin(maps: &'m Maps, settle: Settle) -> Result<Self> {
        let lock = maps.lock()?;
        maps.config.bump_generation()?;
        Ok(Self {
            maps,
            settle,
            path: path_for(maps.pin_dir())?,
            entries: Vec::new(),
            _lock: lock,
            done: false,
        })
    }

    /// Records what the entries of `map` at `keys` hold now, before the
    /// change writes or removes them (one lookup each).
    pub(super) fn record(&mut self, map: PinnedMap, keys: impl IntoIterator<Item = Vec<u8>>) -> Result<()> {
        let handle = self.maps.handle(map);
        // A trie's lookup finds the longest match, maybe another entry's:
        // only keys that are there have a value of their own.
        let present: Option<HashSet<Vec<u8>>> =
            (handle.map_type() == MapType::LpmTrie).then(|| handle.keys().collect());
        let before = self.entries.len();
        for key in keys {
            let old = match &present {
                Some(present) if !present.contains(&key) => None,
                _ => handle
                    .lookup(&key, MapFlags::ANY)
                    .map_err(|e| Error::bpf(format!("read {map}"), e))?,
            };
            self.entries.push((map, key, old));
        }
        if self.entries.len() > before {
            self.write()?;
        }
        Ok(())
    }

    /// Records every entry `map` holds (before a flush).
    pub(super) fn record_all(&mut self, map: PinnedMap) -> Result<()> {
        let keys: Vec<Vec<u8>> = self.maps.handle(map).keys().collect();
        self.record(map, keys)
    }

    /// Writes the record afresh, all of it, and renames it into place.
    fn write(&self) -> Result<()> {
        let record = Record {
            format: FORMAT.to_owned(),
            ids: self.maps.ids.to_vec(),
            entries: self
                .entries
                .iter()
                .map(|(map, key, old)| RecordedEntry {
                    map: map.name().to_owned(),
                    key: key.clone(),
                    old: old.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_vec(&record).expect("a record always serialises");
        std::fs::create_dir_all(crate::RUN_DIR)
            .map_err(|e| Error::io(format!("create {}", crate::RUN_DIR), e))?;
        let tmp = self.path.with_extension("new");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        written.map_err(|e| Error::io(format!("write the change's record {}", self.path.display()), e))
    }

    /// The change is complete: its record goes.
    pub(super) fn commit(mut self) -> Result<()> {
        self.done = true;
        if self.entries.is_empty() {
            return Ok(());
        }
        std::fs::remove_file(&self.path)
            .map_err(|e| Error::io(format!("remove the change's record {}", self.path.display()), e))
    }
}

impl Drop for Journal<'_> {
    fn drop(&mut self) {
        // Left as it is when undoing fails: the next opener tries again.
        if !self.done && !self.entries.is_empty() && undo(self.maps, &self.entries, self.settle).is_ok() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn undo(maps: &Maps, entries: &[Entry], settle: Settle) -> Result<()> {
    // Nothing recorded: nothing was written yet, not even a flag (every
    // change records its entries before it touches anything).
    if entries.is_empty() {
        return Ok(());
    }
    for (map, key, old) in entries.iter().rev() {
        let handle = maps.handle(*map);
        let done = match old {
            Some(value) => handle.update(key, value, MapFlags::ANY),
            None => match handle.delete(key) {
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        done.map_err(|e| Error::bpf(format!("put back an entry of {map}"), e))?;
    }
    settle(maps)
}

/// What [`recover`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No change was left unfinished.
    Nothing,
    /// A killed change was undone: this many entries were put back.
    RolledBack(usize),
}

/// Undoes a change that was killed part way, if its record is there and
/// nobody is making it (the lock is free): see the module's documentation.
/// Called by [`Maps::open`].
pub(super) fn recover(maps: &Maps, settle: Settle) -> Result<Recovered> {
    let path = path_for(maps.pin_dir())?;
    if !path.exists() {
        return Ok(Recovered::Nothing);
    }
    // Waits for a change in progress to end (it removes its record).
    let lock = maps.lock()?;
    if lock.is_nested() {
        // This very thread is making the change.
        return Ok(Recovered::Nothing);
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::Nothing),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let bad = || Error::Io {
        context: format!(
            "the record of an unfinished change {} cannot be read; look at it, then remove it",
            path.display()
        ),
        source: std::io::ErrorKind::InvalidData.into(),
    };
    let record: Record = serde_json::from_str(&text).map_err(|_| bad())?;
    if record.format != FORMAT {
        return Err(bad());
    }
    if record.ids[..] != maps.ids[..] {
        // The maps it was written for are gone: nothing to undo here.
        let _ = std::fs::remove_file(&path);
        return Ok(Recovered::Nothing);
    }
    let entries = record
        .entries
        .into_iter()
        .map(|e| {
            let map = PinnedMap::ALL
                .into_iter()
                .find(|m| m.name() == e.map)
                .ok_or_else(bad)?;
            Ok((map, e.key, e.old))
        })
        .collect::<Result<Vec<Entry>>>()?;
    undo(maps, &entries, settle)?;
    std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    drop(lock);
    Ok(Recovered::RolledBack(entries.len()))
}

impl Maps {
    /// The map handle of `map`, for the record's generic entries.
    fn handle(&self, map: PinnedMap) -> &MapHandle {
        match map {
            PinnedMap::Endpoints => &self.endpoints.map,
            PinnedMap::Policy => &self.policy.map,
            PinnedMap::Config => &self.config.map,
            PinnedMap::Prefixes => &self.prefixes.map,
            PinnedMap::PortPolicy => &self.ports.map,
            PinnedMap::Interfaces => &self.interfaces.map,
            PinnedMap::Conntrack => &self.conntrack.map,
            PinnedMap::DropCounters
            | PinnedMap::EventRing
            | PinnedMap::NotifyState
            | PinnedMap::Fragments
            | PinnedMap::LabelIsolation
            | PinnedMap::LabelRules
            | PinnedMap::LabelExact
            | PinnedMap::Local => {
                unreachable!("{map} is never part of a recorded change")
            }
        }
    }
}
