//! When a test may run: tests that need root or a tool skip on a developer's
//! laptop, but fail loudly under `CI=true`, where a skip would hide breakage.

use std::path::Path;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns false, saying why) or, under `CI=true`, panics.
fn skip(test: &str, why: &str) -> bool {
    if in_ci() {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// True when the test may run: we are root (BPF, network namespaces).
pub fn privileged(test: &str) -> bool {
    nix::unistd::geteuid().is_root() || skip(test, "needs root (BPF, netns)")
}

/// True when every one of `paths` (programs the test runs) exists.
pub fn tools_present(test: &str, paths: &[&str]) -> bool {
    let missing: Vec<&str> = paths.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    missing.is_empty() || skip(test, &format!("needs {missing:?} (scripts/install-deps.sh test)"))
}

/// Returns from the calling test unless it may run (see [`privileged`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged(module_path!()) {
            return;
        }
    };
}
