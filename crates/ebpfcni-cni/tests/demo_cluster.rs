//! demo-cluster.sh end to end with the binaries cargo just built: etcd,
//! two nodes with `ebpfcni-agent --etcd`, a frontend on n1 and a backend on
//! n2, curl denied then allowed across nodes, n2's agent killed and
//! restarted while the verdicts hold.

use std::path::Path;
use std::process::Command;

use ebpfcni_testutil::{require_root, tools_present, ETCD_BIN};

#[test]
fn demo_cluster_holds() {
    require_root!();
    if !tools_present("demo_cluster_holds", &[ETCD_BIN]) {
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ebpfcni")).parent().unwrap();
    for tool in ["endpointctl", "policyctl"] {
        assert!(
            bin_dir.join(tool).exists(),
            "{tool} is not built next to ebpfcni: run `cargo test --workspace`"
        );
    }
    ebpfcni_testutil::workspace_bin("ebpfcni-agent", "ebpfcni-agent");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo-cluster.sh");
    let out = Command::new("bash")
        .arg(&demo)
        .env("BIN_DIR", bin_dir)
        .output()
        .expect("run demo-cluster.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("demo-cluster: all expectations held"),
        "demo-cluster.sh failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
