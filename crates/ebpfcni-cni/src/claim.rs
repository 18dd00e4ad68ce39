//! One ADD at a time per attachment, from its check to its veth.
//!
//! ADD starts the IPAM plugin as soon as it has checked that the
//! attachment's host veth does not exist, and creates the veth beside it.
//! Two ADDs racing for one attachment must not both get past that check:
//! each would take a lease (the IPAM plugin refuses the second) and create
//! a veth (the kernel refuses the second), and when each loses one of the
//! two races, neither is left standing. A claim serialises them: the second
//! ADD waits until the first has its veth (the lasting claim), then finds
//! it and stops before taking anything.
//!
//! Claims are flock(2)s on one of [`STRIPES`] files in /run/ebpfcni,
//! chosen by the host veth's name: attachments sharing a stripe wait for
//! each other only for about a millisecond, the files never pile up, and a
//! lock dies with its process.

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

use ebpfcni::RUN_DIR as DIR;

/// How many lock files claims are spread over.
const STRIPES: u64 = 64;

/// Held from before the host veth check until the veth exists.
pub struct Claim {
    _lock: Flock<File>,
}

impl Claim {
    /// Waits for, then takes, the claim on the attachment whose host veth
    /// is `host_name`.
    pub fn take(host_name: &str) -> Result<Self> {
        let path = stripe(host_name);
        let failed = |e: std::io::Error| {
            Error::Plumbing(format!("claim the attachment (lock {}): {e}", path.display()))
        };
        std::fs::create_dir_all(DIR).map_err(failed)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|lock| Self { _lock: lock })
            .map_err(|(_, errno)| failed(errno.into()))
    }
}

fn stripe(host_name: &str) -> PathBuf {
    let hash = ebpfcni::fnv1a(host_name.as_bytes());
    PathBuf::from(DIR).join(format!("attach-{:02}.lock", hash % STRIPES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A second claim on one attachment waits for the first to go.
    #[test]
    fn a_second_claim_waits_for_the_first() {
        ebpfcni_testutil::require_root!();
        let name = format!("ebctest{}", std::process::id());
        let first = Claim::take(&name).expect("first claim");
        let (taken_tx, taken) = mpsc::channel();
        let second = std::thread::spawn(move || {
            let claim = Claim::take(&name).expect("second claim");
            taken_tx.send(()).unwrap();
            drop(claim);
        });
        assert!(
            taken.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second claim was taken while the first was held"
        );
        drop(first);
        taken
            .recv_timeout(Duration::from_secs(10))
            .expect("the second claim once the first was dropped");
        second.join().unwrap();
    }
}
