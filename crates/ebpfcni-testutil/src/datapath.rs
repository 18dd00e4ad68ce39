//! The program loaded against a private pin directory, run on crafted
//! frames through BPF_PROG_TEST_RUN, with assertions on the verdict and on
//! the drop counter of the expected reason.

use ebpfcni::types::ebpfcni_drop_reason as Reason;
use ebpfcni::{Hook, Maps, Program, TestContext, TraceLevel, TC_ACT_OK, TC_ACT_SHOT};

use crate::TestPinDir;

/// The ifindex the test runs give the program: lo, which exists in every
/// namespace. Tests of the from-pod hook record pod addresses for it.
pub const TEST_IFINDEX: u32 = 1;

/// The program and its maps in a private pin directory (removed on drop),
/// with tracing off.
pub struct Datapath {
    pub program: Program,
    pub maps: Maps,
    pub pins: TestPinDir,
}

impl Datapath {
    pub fn new(test: &str) -> Self {
        let pins = TestPinDir::new(test);
        let program = Program::load(pins.path()).expect("load program");
        let maps = Maps::open(pins.path()).expect("open maps");
        maps.config.set_trace_level(TraceLevel::Off).expect("trace off");
        Self { program, maps, pins }
    }

    /// The program's verdict on `frame` at `hook` (on [`TEST_IFINDEX`]),
    /// a frame the node itself sends (received on no interface).
    pub fn verdict(&self, hook: Hook, frame: &[u8]) -> i32 {
        self.verdict_received_on(hook, frame, 0)
    }

    /// The program's verdict on `frame` at `hook` (on [`TEST_IFINDEX`]) for
    /// a frame the node received on `ingress_ifindex`.
    pub fn verdict_received_on(&self, hook: Hook, frame: &[u8], ingress_ifindex: u32) -> i32 {
        let ctx = TestContext {
            ifindex: TEST_IFINDEX,
            ingress_ifindex,
        };
        self.program
            .test_run(hook, frame, Some(&ctx), 1)
            .expect("test run")
            .verdict
    }

    pub fn drops(&self, reason: Reason) -> u64 {
        self.maps.drops.get(reason).expect("read drop counters")
    }

    /// Asserts the frame passes at `hook` and no drop counter moves.
    pub fn assert_pass(&self, what: &str, hook: Hook, frame: &[u8]) {
        let before = self.maps.drops.all().unwrap();
        assert_eq!(
            self.verdict(hook, frame),
            TC_ACT_OK,
            "{what} ({hook:?}): expected pass"
        );
        assert_eq!(
            self.maps.drops.all().unwrap(),
            before,
            "{what} ({hook:?}): a drop was counted"
        );
    }

    /// Asserts the frame is dropped at `hook`, counted under `reason`.
    pub fn assert_drop(&self, what: &str, hook: Hook, frame: &[u8], reason: Reason) {
        let before = self.drops(reason);
        assert_eq!(
            self.verdict(hook, frame),
            TC_ACT_SHOT,
            "{what} ({hook:?}): expected drop"
        );
        assert_eq!(
            self.drops(reason),
            before + 1,
            "{what} ({hook:?}): not counted as {reason:?}"
        );
    }
}

/// Label policy's pods for the datapath tests: frontend (300) and other
/// (302) under label policy, unrestricted; backend (301) isolated for
/// ingress, taking TCP 8080 from frontend (a rule of policy `policy`);
/// hand (1001), the plan's identity, with no rule.
pub mod label_pods {
    use std::net::Ipv4Addr;

    use ebpfcni::{Identity, Isolation, LabelKind, LabelRule, Protocol, Selector};

    use super::Datapath;

    pub const FRONTEND: Ipv4Addr = Ipv4Addr::new(10, 13, 9, 2);
    pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 13, 9, 3);
    pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 13, 9, 4);
    pub const HAND: Ipv4Addr = Ipv4Addr::new(10, 13, 9, 5);

    /// Writes them into `dp`'s maps (and brings the flags in line).
    pub fn seed(dp: &Datapath, policy: u32) {
        for (ip, n) in [(FRONTEND, 300), (BACKEND, 301), (OTHER, 302), (HAND, 1001)] {
            dp.maps.endpoints.upsert(ip, Identity::new(n).unwrap()).unwrap();
        }
        let labels = &dp.maps.labels;
        labels.set_isolation(300, Isolation::default()).unwrap();
        let ingress = Isolation {
            ingress: true,
            egress: false,
        };
        labels.set_isolation(301, ingress).unwrap();
        labels.set_isolation(302, Isolation::default()).unwrap();
        labels
            .add(&LabelRule {
                subject: 301,
                peer: 300,
                kind: LabelKind::IngressAllow,
                selector: Selector::Ports {
                    protocol: Protocol::TCP,
                    first: 8080,
                    last: 8080,
                },
                policy,
            })
            .unwrap();
        dp.maps.after_policy_change().unwrap();
    }
}
