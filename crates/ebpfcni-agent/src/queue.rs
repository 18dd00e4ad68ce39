//! Deletions the CNI plugin queued on disk while the agent could not be
//! reached (Cilium's deleteQueue): one JSON [`Deletion`] per file in
//! [`ebpfcni_api::delete_queue_dir`]. The agent carries them out at start,
//! before it serves (and so before it hands out any address), and removes
//! each file once its deletion is done.

use std::path::Path;

use ebpfcni_api::Deletion;

use crate::agent::{Agent, AgentError};

/// Carries out every queued deletion; returns how many there were. A file
/// that is not a deletion is reported and left where it is.
pub fn drain(agent: &Agent, dir: &Path) -> Result<usize, AgentError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AgentError::Internal(format!("read {}: {e}", dir.display()))),
    };
    let mut done = 0;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let deletion: Deletion = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(why) => {
                log::warn!(
                    "queued deletion {}: unreadable ({why}), left alone",
                    path.display()
                );
                continue;
            }
        };
        let existed = agent.delete(&deletion.container_id, &deletion.ifname)?;
        log::info!(
            "queued deletion of {}/{} carried out ({})",
            deletion.container_id,
            deletion.ifname,
            if existed { "removed" } else { "already gone" }
        );
        std::fs::remove_file(&path)
            .map_err(|e| AgentError::Internal(format!("remove {}: {e}", path.display())))?;
        done += 1;
    }
    Ok(done)
}
