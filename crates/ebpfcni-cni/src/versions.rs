//! The CNI spec versions this plugin speaks. A leaf: everything that needs
//! them (config checks, errors, IPAM delegation, VERSION) imports it.

/// Spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The version errors are reported in when the config names none we know.
pub const LATEST: &str = "1.1.0";
