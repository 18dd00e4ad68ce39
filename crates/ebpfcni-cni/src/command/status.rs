//! STATUS: whether the plugin is ready to add pods. A probe: it changes
//! nothing (no mount, no directory, no pin).

use crate::config::NetConf;
use crate::env::Env;
use crate::error::{Error, Result};

/// Ready when the pin directory is (or can be made) a directory on bpffs,
/// the kernel accepts the program with the pinned maps, and the IPAM plugin
/// is on CNI_PATH (in agent mode: the agent answers).
pub fn status(conf: &NetConf, env: &Env) -> Result<()> {
    let ipam = super::delegated_ipam(conf, env, &[])?;
    let pin_dir = conf.pin_dir();
    ebpfcni::bpffs::check_pin_dir(&pin_dir)
        .map_err(|e| Error::NotReady(format!("bpffs not usable at {}: {e}", pin_dir.display())))?;
    ebpfcni::Program::verify(&pin_dir)
        .map_err(|e| Error::NotReady(format!("the program does not load: {e}")))?;
    if let Some(ipam) = ipam.filter(|i| i.find().is_none()) {
        return Err(Error::NotReady(format!(
            "IPAM plugin {:?} not found on CNI_PATH {}",
            ipam.plugin, env.path
        )));
    }
    if let Some(client) = crate::agent::client(conf) {
        client
            .health()
            .map_err(|e| Error::NotReady(format!("agent mode: {e}")))?;
    }
    Ok(())
}
