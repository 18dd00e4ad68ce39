//! The README walkthrough end to end: demo.sh with the binaries cargo just
//! built and a private pin directory. It creates pods through this plugin,
//! sets identities and policy with endpointctl/policyctl, and checks that
//! ping and curl pass or drop and that the trace shows the drops.

use std::path::Path;
use std::process::Command;

use ebpfcni_testutil::{require_root, TestPinDir};

#[test]
fn demo_walkthrough_holds() {
    require_root!();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ebpfcni")).parent().unwrap();
    for tool in ["endpointctl", "policyctl"] {
        assert!(
            bin_dir.join(tool).exists(),
            "{tool} is not built next to ebpfcni: run `cargo test --workspace`"
        );
    }
    // The agent's part of the demo: its binary beside the others.
    ebpfcni_testutil::workspace_bin("ebpfcni-agent", "ebpfcni-agent");
    let pins = TestPinDir::new("demo");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo.sh");
    let out = Command::new("bash")
        .arg(&demo)
        .env("BIN_DIR", bin_dir)
        .env("PIN_DIR", pins.path())
        .output()
        .expect("run demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("demo: all expectations held"),
        "demo.sh failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
