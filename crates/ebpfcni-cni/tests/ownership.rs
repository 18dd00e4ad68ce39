//! An invocation touches only its own attachment: DEL removes interfaces
//! that belong to (network, container id, ifname) and nothing else, and of
//! two ADDs racing for one attachment the loser leaves the winner's
//! interfaces and lease alone.

mod common;

use common::{host_veth, pod_ip, Node, Outcome, Pod};
use ebpfcni_testutil::{require_root, unique_name};
use serde_json::Value;

/// What of an attachment ADD made is still in place.
struct Attachment<'a> {
    node: &'a Node,
    pod: &'a Pod,
    result: &'a Value,
}

impl Attachment<'_> {
    fn assert_intact(&self, when: &str) {
        let (host, ip) = (host_veth(self.result), pod_ip(self.result));
        assert!(
            self.node.links().contains(&host),
            "{when}: host veth {host} gone: {:?}",
            self.node.links()
        );
        let addr = self.pod.ns.ip_text(&["-o", "-4", "addr", "show"]);
        assert!(
            addr.contains(&format!("{ip}/24")) && addr.contains("eth0"),
            "{when}: pod address gone: {addr}"
        );
        let routes = self.node.output("ip", &["-4", "route", "show"]);
        assert!(
            routes.contains(&format!("{ip} dev {host}")),
            "{when}: host route gone: {routes}"
        );
        assert!(self.node.allocated(&ip), "{when}: lease of {ip} released");
    }

    fn assert_removed(&self, when: &str) {
        let host = host_veth(self.result);
        assert!(
            !self.node.links().contains(&host),
            "{when}: host veth {host} left"
        );
        assert!(
            !self.pod.ns.links().iter().any(|l| l == "eth0"),
            "{when}: eth0 left in the pod"
        );
        assert!(
            self.node.allocations().is_empty(),
            "{when}: leases left: {:?}",
            self.node.allocations()
        );
    }
}

/// The fault campaign's case: B's ADD is refused because A's eth0 is in
/// the namespace; B's DEL must then not take A's network away.
#[test]
fn del_of_a_refused_container_leaves_the_owner_of_the_interface_alone() {
    require_root!();
    let node = Node::new("own");
    let pod = Pod::new("own-pod");
    let conf = node.config("1.1.0");
    let netns = pod.ns.path_string();
    let result = node.add(&conf, &pod).ok();
    let a = Attachment {
        node: &node,
        pod: &pod,
        result: &result,
    };

    let intruder = unique_name("ctr-b");
    let msg = node.call("ADD", &conf, &intruder, &netns, "eth0").err(101);
    assert!(msg.contains("eth0 already exists"), "{msg}");
    node.call("DEL", &conf, &intruder, &netns, "eth0").ok();

    a.assert_intact("after the intruder's DEL");
    node.check(&conf, &pod, &result).ok();
    node.del(&conf, &pod).ok();
    a.assert_removed("after the owner's DEL");
}

/// A host veth that carries this attachment's name but another owner's
/// alias (a name-hash collision) is not DEL's to remove, nor is its peer.
#[test]
fn del_leaves_a_host_veth_whose_alias_names_another_owner() {
    require_root!();
    let node = Node::new("collide");
    let pod = Pod::new("collide-pod");
    let conf = node.config("1.1.0");
    let result = node.add(&conf, &pod).ok();
    let host = host_veth(&result);
    let other = format!("ebpfcni/{}/someone-else/eth0", node.network);
    node.output("ip", &["link", "set", "dev", &host, "alias", &other]);

    node.del(&conf, &pod).ok();
    assert!(node.links().contains(&host), "{host} removed: {:?}", node.links());
    assert!(
        pod.ns.links().iter().any(|l| l == "eth0"),
        "the peer of {host} removed"
    );
    // The pod and node namespaces take the pair with them on drop.
}

/// An ADD killed between creating the pair and setting its alias leaves a
/// host veth without alias; its name is derived from this attachment, so
/// the next DEL cleans it up.
#[test]
fn del_removes_this_attachments_host_veth_without_alias() {
    require_root!();
    let node = Node::new("noalias");
    let pod = Pod::new("noalias-pod");
    let conf = node.config("1.1.0");
    let result = node.add(&conf, &pod).ok();
    let host = host_veth(&result);
    node.output("ip", &["link", "set", "dev", &host, "alias", ""]);
    let shown = node.output("ip", &["-d", "link", "show", "dev", &host]);
    assert!(
        !shown.lines().any(|l| l.trim_start().starts_with("alias ")),
        "alias not cleared: {shown}"
    );

    node.del(&conf, &pod).ok();
    Attachment {
        node: &node,
        pod: &pod,
        result: &result,
    }
    .assert_removed("after DEL");
}

/// Two ADDs of one attachment at once: exactly one wins, and the loser
/// leaves the winner's veth, addresses, routes and lease in place.
#[test]
fn racing_adds_of_one_attachment_leave_one_intact_winner() {
    require_root!();
    const ROUNDS: usize = 8;
    let node = Node::new("race");
    let conf = node.config("1.1.0");
    for round in 0..ROUNDS {
        let pod = Pod::new(&format!("race{round}"));
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2).map(|_| s.spawn(|| node.add(&conf, &pod))).collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let (won, lost): (Vec<Outcome>, Vec<Outcome>) = outcomes.into_iter().partition(|o| o.success);
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} ADDs succeeded: {won:#?} {lost:#?}",
            won.len()
        );
        let result = won.into_iter().next().unwrap().ok();
        let winner = Attachment {
            node: &node,
            pod: &pod,
            result: &result,
        };
        winner.assert_intact(&format!("round {round}, after the loser's ADD"));
        node.check(&conf, &pod, &result).ok();
        node.del(&conf, &pod).ok();
        winner.assert_removed(&format!("round {round}, after DEL"));
    }
}
