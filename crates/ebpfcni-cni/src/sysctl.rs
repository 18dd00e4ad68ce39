//! The kernel switches the plugin sets in its own (the host's) namespace.
//! /proc/sys/net belongs to the network namespace of the thread that opens
//! it.

use crate::error::{Error, Result};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on (pods reach each other through the host).
pub fn enable_forwarding() -> Result<()> {
    let failed = |context: &str| {
        let context = context.to_string();
        move |source| Error::Sysctl { context, source }
    };
    let current = std::fs::read_to_string(IP_FORWARD).map_err(failed(&format!("read {IP_FORWARD}")))?;
    if current.trim() != "1" {
        std::fs::write(IP_FORWARD, "1").map_err(failed(&format!("write {IP_FORWARD}")))?;
    }
    Ok(())
}
