//! Fixtures for ebpfcni's tests and benchmarks. Nothing but tests and
//! benches depends on this crate; its own `tests/` hold the datapath's
//! integration tests (they need these fixtures, and the library must not
//! depend on them).
//!
//! - [`require_root!`], [`privileged`], [`tools_present`]: tests that need
//!   root or a tool skip on a developer's laptop but fail under `CI=true`.
//! - [`TestPinDir`]: a private pin directory under /sys/fs/bpf, removed on drop.
//! - [`Netns`], [`VethPair`], [`TwoPods`]: throwaway namespaces and topologies.
//! - [`run`], [`succeeds`], [`output_with_stdin`]: child processes.
//! - [`hook_programs`]: what runs on a tc hook (tcx programs, clsact filters).
//! - [`frames`]: frame builders; [`median`], [`quantile`], [`Ratio`]: summaries.
//! - [`bpf`]: compiling and test-running BPF objects other than the product's.
//! - [`datapath`]: the program on crafted frames, asserting verdicts and reasons.
//! - [`AgentProcess`]: an `ebpfcni-agent` of the test's own (socket, state
//!   and pin directory), started in a node namespace, stopped by pid.
//! - [`EtcdProcess`]: a real etcd of the test's own (loopback, free ports,
//!   private data directory), killable with SIGKILL and restartable.
//! - [`Fabric`]: node namespaces on a bridge of their own, for many nodes.
//! - [`FabricNode`]: one node namespace's routes and neighbours, for test
//!   runs of the from-fabric source check.
//!
//! Names carry the process id and a counter, so tests run in parallel
//! without meeting each other.

mod agent;
pub mod bpf;
pub mod datapath;
mod etcd;
mod fabric;
mod fabric_node;
pub mod frames;
mod hooks;
mod netns;
mod pins;
mod privilege;
mod process;
mod stats;

use std::sync::atomic::{AtomicU32, Ordering};

pub use agent::{workspace_bin, AgentProcess};
pub use etcd::{EtcdProcess, ETCD_BIN};
pub use fabric::Fabric;
pub use fabric_node::FabricNode;
pub use hooks::{hook_programs, HookPrograms};
pub use netns::{Netns, TwoPods, VethPair};
pub use pins::TestPinDir;
pub use privilege::{privileged, tools_present};
pub use process::{output_with_stdin, run, succeeds, text};
pub use stats::{median, quantile, Ratio};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `{prefix}{pid}x{n}`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
