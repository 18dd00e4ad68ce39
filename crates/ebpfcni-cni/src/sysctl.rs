//! The kernel switches the plugin sets: forwarding in its own (the host's)
//! namespace, and no IPv6 on either end of a pod's veth. /proc/sys/net
//! belongs to the network namespace of the thread that opens it.

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

/// Turns IPv6 off on `ifname` in the calling thread's namespace, so that
/// neither end of a pod's veth has an IPv6 address (not even link-local)
/// nor accepts IPv6: the program judges IPv4 only and lets other frames
/// pass, so IPv6 must not reach anything. A kernel without IPv6 has
/// nothing to turn off.
pub fn disable_ipv6(ifname: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !std::path::Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        other => other,
    }
}
