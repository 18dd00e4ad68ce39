//! After an upgrade: moving every pod of the calling thread's network
//! namespace onto this build's program. Pods attached before the upgrade
//! keep running the older program (their tc hooks hold it) until this is
//! done; attaching replaces it atomically, so no pod is a moment
//! unfiltered. Each pod keeps its kind of attachment (clsact or tcx).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::maps::Maps;
use crate::program::{Hook, Program, Provenance};
use crate::tc;

/// What [`reattach`] did, interface by interface (name, ifindex).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reattached {
    /// Whether this build's program was loaded now (no pod ran it yet).
    pub loaded: bool,
    /// Moved onto this build's program.
    pub moved: Vec<(String, u32)>,
    /// Already on it.
    pub current: Vec<(String, u32)>,
    /// Node interfaces (cluster mode's fabric interface) whose from-fabric
    /// was an older build's, moved onto this build's (an agent's restart
    /// does the same).
    pub fabric: Vec<(String, u32)>,
    /// Running an ebpfcni program but without a record of the pod's
    /// addresses (interface_map), so this build's program would drop all
    /// the pod sends: left on the old program. Pods made before source
    /// trust; recreate them.
    pub unrecorded: Vec<(String, u32)>,
}

/// Attaches this build's program (pinned under `pin_dir`, loaded first
/// when needed) to every interface of this namespace that runs an ebpfcni
/// program and has an address record, and its from-fabric where an older
/// one runs. Refused ([`Error::OtherNetns`]),
/// with nothing changed, when `pin_dir` serves another network namespace:
/// its records name other interfaces (see [`crate::bind_netns`]).
pub fn reattach(maps: &Maps, pin_dir: &std::path::Path) -> Result<Reattached> {
    crate::netns::bind_netns(pin_dir)?;
    let (program, provenance) = Program::shared(pin_dir)?;
    let recorded: HashSet<u32> = maps
        .interfaces
        .list()?
        .into_iter()
        .map(|(index, _)| index)
        .collect();
    let mut report = Reattached {
        loaded: provenance == Provenance::Loaded,
        ..Default::default()
    };
    let interfaces =
        nix::net::if_::if_nameindex().map_err(|e| Error::errno("list the network interfaces", e))?;
    for interface in interfaces.iter() {
        let index = interface.index();
        let name = interface.name().to_string_lossy().into_owned();
        if let Some(id) = tc::fabric_attachment(index)? {
            if id != program.id(Hook::FromFabric) {
                program.attach_fabric(index)?; // replaces only its own, atomically
                report.fabric.push((name.clone(), index));
            }
        }
        let attached = tc::attachment(index)?;
        if attached.ingress.is_none() && attached.egress.is_none() {
            continue;
        }
        let entry = (name, index);
        if attached.ingress == Some(program.id(Hook::FromPod))
            && attached.egress == Some(program.id(Hook::ToPod))
        {
            report.current.push(entry);
        } else if recorded.contains(&index) {
            program.attach_as(index, attached.mode)?;
            report.moved.push(entry);
        } else {
            report.unrecorded.push(entry);
        }
    }
    Ok(report)
}
