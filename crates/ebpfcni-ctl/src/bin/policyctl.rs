//! policyctl: which identity may talk to which (pair rules, and port and
//! protocol rules), statefully or not, the tracked connections of stateful
//! rules; and what the datapath does: flow events (monitor), counters
//! (stats), a picture of the policy (graph), trace and event levels.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ebpfcni::{CtTimeouts, EventLevel, Identity, PinnedMap, PolicyRule, Rule, Selector, TraceLevel};
use ebpfcni_api::{PolicyDeletion, SelectorRule};
use ebpfcni_ctl::args::Who;
use ebpfcni_ctl::{
    args, audit, conntrack, exit_status_help, explain, graph, input, label_policy, levels, monitor,
    open_maps_for_reading, parse_rules, policy, report_change, stats, CmdResult, Common, Failure, Format,
    Out,
};

#[derive(Parser, Debug)]
#[command(
    name = "policyctl",
    version,
    about = "Manage ebpfcni policy: which source identity may send to which destination identity",
    long_about = "Manage ebpfcni policy: which source identity may send to which destination identity.\n\n\
                  Policy is default deny: a packet passes only when a rule SRC -> DST of its endpoints' \
                  identities allows it. A rule without --port or --proto allows any protocol and port (the \
                  pair rule); --port and --proto narrow it. Replies need a rule of their own (see \
                  --symmetric), unless the rule is --stateful: then the replies of the connections it \
                  allowed pass, and only those. Rules live in the pinned maps under --pin-dir, created \
                  (with the other maps) when missing, so policy can be loaded before the first pod. Changes \
                  take effect on the next packet. After every change the rules are printed, sorted, with a \
                  REVERSE column that shows MISSING for one-way rules (--quiet to skip it).",
    after_help = concat!(
        "Examples:\n  \
         policyctl allow --src 100 --dst 200 --symmetric\n  \
         policyctl allow --src 100 --dst 200 --port 8080 --stateful\n  \
         policyctl deny --src 100 --dst 200\n  \
         policyctl apply -f rules.txt\n  \
         policyctl list -o json > rules.json && policyctl flush && policyctl apply -f rules.json\n  \
         policyctl ct list\n  \
         policyctl monitor --verdict drop\n  \
         policyctl stats -o prometheus\n  \
         policyctl graph | dot -Tsvg > policy.svg\n\n\
         Label policy, through the node agent (--agent):\n  \
         policyctl apply -f policies.yaml          # NetworkPolicy, CiliumNetworkPolicy, Namespace, List\n  \
         policyctl get policies\n  \
         policyctl delete networkpolicy prod/web   # or: delete -f policies.yaml, delete --all\n  \
         policyctl allow --src app=frontend --dst app=backend --port 8080\n\n",
        exit_status_help!()
    )
)]
struct Cli {
    #[command(flatten)]
    common: Common,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Allow SRC -> DST (and DST -> SRC with --symmetric: both or neither)
    #[command(
        after_help = "Rules are matched in this order: the pair rule (no --port or --proto), then the \
                            rule for the destination port, then the rule for the whole protocol; else the \
                            packet is dropped. Allowing a rule with the selector of one that exists replaces \
                            it (e.g. makes it --stateful).\n\n\
                            Examples:\n  \
                            policyctl allow --src 100 --dst 200               # any protocol and port, one way\n  \
                            policyctl allow --src 100 --dst 200 --symmetric   # both ways\n  \
                            policyctl allow --src 100 --dst 200 --port 8080 --stateful   # TCP 8080 and its replies\n  \
                            policyctl allow --src 100 --dst 300 --port 53/udp --stateful\n  \
                            policyctl allow --src 100 --dst 200 --port 8000-8080/tcp\n  \
                            policyctl allow --src 100 --dst 200 --proto icmp --stateful  # ping, one way\n\n\
                            With label selectors (KEY=VALUE[,KEY=VALUE...]) for --src and --dst, the rule is a selector \
                            rule of the node agent's label policy (--agent): endpoints matching --dst may receive from \
                            those matching --src, on --port (TCP, UDP or SCTP; --proto tcp|udp|sctp for a whole \
                            protocol), as a NetworkPolicy ingress rule would (it isolates --dst's ingress; replies \
                            always pass, --stateful changes nothing). Its name comes from its content: allowing it \
                            again changes nothing; `deny` with the same flags removes it.\n  \
                            policyctl allow --src app=frontend --dst app=backend --port 8080\n  \
                            policyctl allow --src app=web,io.kubernetes.pod.namespace=prod --dst app=db --port 5432/tcp"
    )]
    Allow(RuleArgs),

    /// Remove the rule(s) with exactly these selectors, so the traffic is denied
    ///
    /// Remove the rule SRC -> DST with this --port or --proto (none: the pair rule), and DST -> SRC
    /// with --symmetric. Policy is default deny, so traffic no other rule allows is then dropped,
    /// and the tracked connections of a stateful rule stop at once, replies included. Removing a
    /// rule that is not there is not an error. An identity may be 0 here, to remove an entry `list`
    /// shows as INVALID.
    #[command(after_help = "Examples:\n  \
                            policyctl deny --src 100 --dst 200\n  \
                            policyctl deny --src 100 --dst 200 --port 8080\n  \
                            policyctl deny --src 100 --dst 200 --symmetric   # both directions\n  \
                            policyctl deny --src 0 --dst 200                 # an invalid entry\n  \
                            policyctl deny --src app=frontend --dst app=backend --port 8080   # a selector rule")]
    Deny(DenyArgs),

    /// List every rule, sorted by source, destination, then protocol and port
    #[command(after_help = "Examples:\n  \
                            policyctl list\n  \
                            policyctl list -o json   # [{\"src\": 100, \"dst\": 200, \"port\": \"8080/tcp\", \"stateful\": true, ...}]")]
    List,

    /// Remove every rule (all traffic between endpoints is then dropped)
    #[command(after_help = "Examples:\n  \
                            policyctl flush\n  \
                            policyctl flush --quiet")]
    Flush,

    /// Allow many rules at once from a file (all or none)
    ///
    /// Allow every rule of FILE in one change: all of them, or none when a line is bad (exit 2), a
    /// map has no room for them or a port range overlaps another rule's (exit 1).
    #[command(after_help = "File formats:\n  \
                            text: one rule a line: SRC DST, then optionally port=PORT[-LAST][/tcp|/udp] or\n        \
                            proto=tcp|udp|icmp|N, and stateful (src= and dst= may name the identities);\n        \
                            '#' starts a comment; blank lines are ignored.\n  \
                            JSON: when the first character is '[': [{\"src\": 100, \"dst\": 200, \"port\": \"8080/tcp\",\n        \
                            \"stateful\": true}, ...], as printed by `policyctl list -o json` (\"reverse\" is ignored).\n\
                            Rules add to (or replace) those already there; run `policyctl flush` first to start over.\n  \
                            YAML: policy documents (a line starting with apiVersion: or kind:): NetworkPolicy\n        \
                            (networking.k8s.io/v1), CiliumNetworkPolicy (cilium.io/v2, a subset), Namespace (v1, labels\n        \
                            for namespaceSelector), List; sent to the node agent (--agent), which stores them and\n        \
                            returns once the datapath enforces them. All or nothing: a bad document is named with its\n        \
                            field (exit 2). A document of the same kind, namespace and name replaces the stored one.\n\n\
                            Examples:\n  \
                            printf '# web <-> db\\n100 200\\n200 100\\n100 300 port=8080 stateful\\n' | policyctl apply -f -\n  \
                            policyctl apply -f rules.txt --quiet\n  \
                            policyctl apply -f rules.json\n  \
                            policyctl apply -f networkpolicies.yaml\n  \
                            kubectl get networkpolicy -A -o yaml | policyctl apply -f -")]
    Apply {
        /// Rules file or policy documents (YAML), or '-' for stdin
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },

    /// Show what the node agent enforces: `get policies`
    #[command(
        after_help = "Lists every policy the node agent (--agent) stores: its number (label rules carry \
                            it), kind, namespace, name, the identities it selects now, and its rules.\n\n\
                            Examples:\n  \
                            policyctl get policies\n  \
                            policyctl get policies -o json"
    )]
    Get {
        /// What to show
        #[arg(value_enum)]
        what: GetWhat,
    },

    /// Remove label policies from the node agent (by file, by name, or all)
    ///
    /// Removes NetworkPolicy, CiliumNetworkPolicy, Namespace objects or selector rules from the node
    /// agent (--agent); the command returns once the datapath no longer enforces them. An endpoint
    /// no policy selects any longer is unrestricted again (with the agent's default
    /// --policy-enforcement).
    #[command(after_help = "Examples:\n  \
                            policyctl delete -f policies.yaml            # the documents of the file (by kind, namespace, name)\n  \
                            policyctl delete networkpolicy prod/web\n  \
                            policyctl delete ciliumnetworkpolicy default/deny-world\n  \
                            policyctl delete namespace prod              # its labels (namespaceSelector)\n  \
                            policyctl delete --all")]
    Delete(DeleteArgs),

    /// The connections tracked for stateful rules, and their lifetimes
    #[command(
        subcommand,
        after_help = "Only rules allowed with --stateful track connections; with none, nothing is tracked.\n\n\
                      Examples:\n  \
                      policyctl ct list\n  \
                      policyctl ct flush\n  \
                      policyctl ct timeouts --tcp-established 3600"
    )]
    Ct(CtCommand),

    /// Watch the datapath's flow events live (drops; passes with --level all)
    ///
    /// One line per event: time, verdict and reason, source and destination (address, port,
    /// identity), protocol and TCP flags, the hook (from-pod: sent by the pod; to-pod: sent to it),
    /// the host veth and the pod behind it. `-o json` prints one JSON object per line. Events the
    /// rate limit or a full ring kept from being written are counted on stderr. One monitor reads
    /// a pin directory's events at a time. Ctrl-C ends it and restores the level --level changed.
    #[command(after_help = "Examples:\n  \
                            policyctl monitor\n  \
                            policyctl monitor --verdict drop --identity 1001\n  \
                            policyctl monitor --level all --ip 10.13.0.2\n  \
                            policyctl monitor --reason invalid-source -o json | jq .src_ip\n  \
                            policyctl monitor --count 10 --duration 30")]
    Monitor(monitor::MonitorArgs),

    /// Why a packet from A to B passes or is dropped: the program's own verdict, and the policy
    ///
    /// Crafts the packet and runs this build's program on it (BPF_PROG_TEST_RUN) against the live
    /// pinned maps, on the hooks a real packet meets: the sender's from-pod hook when it is a pod of
    /// this node, then the receiver's to-pod hook when it is one (unless from-pod delivers it
    /// straight into the pod). The test runs change nothing: no connection is tracked, no counter
    /// moves, no event reaches a running monitor. Prints the verdict and reason, each hook's, both
    /// identities with their labels and the label policy that allowed or the isolation that
    /// denied (named by the agent, else `policy #N`). Run it in the network namespace of the host
    /// veths. Exit status 0: it would pass (in audit mode too); 8: it would be dropped.
    #[command(
        after_help = "Endpoints: an IPv4 address, NAMESPACE/POD (an endpoint of the agent, by its pod's
                            namespace and name), world (an address outside the cluster) or host (the node).

                            Examples:
                              policyctl explain --from 10.13.0.2 --to 10.13.0.3 --port 8080/tcp
                              policyctl explain --from prod/frontend --to prod/backend --port 80/tcp
                              policyctl explain --from world --to prod/web --port 53/udp -o json
                              policyctl explain --from prod/a --to prod/b --icmp && echo allowed"
    )]
    Explain(explain::ExplainArgs),

    /// Show whether audit mode is on, or turn it on or off: policy drops pass, counted as audit
    ///
    /// In audit mode a packet that policy would drop (no-policy, no-flow, policy-isolated,
    /// policy-denied) passes instead; it is counted per reason (`policyctl stats`, Prometheus
    /// ebpfcni_audit_total) and reported as AUDIT (`policyctl monitor --verdict audit`). Source
    /// trust (invalid-source, unknown-interface), malformed packets, addresses without an identity
    /// and a full connection table are still dropped. Takes effect on the next packet.
    #[command(after_help = "Examples:
                              policyctl audit            # show it
                              policyctl audit on         # try policy out: nothing it denies is dropped
                              policyctl monitor --verdict audit
                              policyctl audit off        # enforce")]
    Audit {
        /// on or off; without it, show the current mode
        #[arg(value_enum)]
        mode: Option<audit::Mode>,
    },

    /// Counters: drops per reason, events and trace lines written or held back, map occupancy
    #[command(after_help = "Examples:\n  \
                            policyctl stats\n  \
                            policyctl stats -o json | jq '.drops[\"no-policy\"]'\n  \
                            policyctl stats -o prometheus > /var/lib/node_exporter/textfile/ebpfcni.prom")]
    Stats,

    /// Print the policy as a Graphviz DOT graph: identities (with their addresses), rules as edges
    #[command(
        after_help = "Stateful rules are bold. With --flows the events of the next SECONDS are drawn too: \
                            drops in red, passes in green (passes are reported at --level all).\n\n\
                            Examples:\n  \
                            policyctl graph | dot -Tsvg > policy.svg\n  \
                            policyctl graph --flows 10 --level all | dot -Tpng > flows.png"
    )]
    Graph(graph::GraphArgs),

    /// Show which flow events the datapath writes, or set it (takes effect on the next packet)
    #[command(
        after_help = "Events go to the pinned ring buffer that `policyctl monitor` reads, at most as many a \
                            second per CPU as the rate limit allows (see `policyctl rate-limit`).\n\n\
                            Examples:\n  \
                            policyctl events          # show the level\n  \
                            policyctl events flows    # drops, new connections and their state changes\n  \
                            policyctl events drops    # back to the default"
    )]
    Events {
        /// New level; without it, show the current one
        #[arg(value_parser = levels::event_level_parser())]
        level: Option<EventLevel>,
    },

    /// Show the rate limit of flow events and trace lines, or set it
    #[command(
        after_help = "The limit is a token bucket per CPU, for events and trace lines separately: up to BURST \
                            at once, refilled at RATE a second. What it holds back is counted (`policyctl stats`); \
                            the drop counters stay exact.\n\n\
                            Examples:\n  \
                            policyctl rate-limit\n  \
                            policyctl rate-limit --rate 5000 --burst 10000"
    )]
    RateLimit {
        /// Events (and trace lines) a second per CPU, at most 1000000000
        #[arg(long, value_name = "N", value_parser = args::rate())]
        rate: Option<u32>,
        /// At most this many at once (default: as many as the rate)
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = args::count())]
        burst: Option<u32>,
    },

    /// Show the datapath's trace level, or set it (takes effect on the next packet)
    #[command(
        after_help = "Traces go to /sys/kernel/debug/tracing/trace_pipe, at most as many lines a second as \
                            the rate limit allows (see `policyctl stats`).\n\n\
                            Examples:\n  \
                            policyctl trace           # show the level\n  \
                            policyctl trace all       # one line per IPv4 packet, while debugging\n  \
                            policyctl trace drops     # back to the default"
    )]
    Trace {
        /// New level; without it, show the current one
        #[arg(value_parser = levels::trace_level_parser())]
        level: Option<TraceLevel>,
    },

    /// Move every pod of this network namespace onto this build's program (after an upgrade)
    ///
    /// Pods attached before an upgrade keep running the older build's program until they are
    /// attached again (CNI CHECK reports them). This attaches this build's program, pinned under
    /// --pin-dir (loaded first if no pod runs it yet), to every host veth of the namespace it runs
    /// in that runs an ebpfcni program and has a record of its pod's addresses; each moves at once,
    /// never unfiltered. Each pod keeps its kind of attachment (clsact filters or tcx). Host veths
    /// without a record (pods made by a release before source trust) are named and left alone:
    /// recreate those pods. Refused (exit 4), changing nothing, when --pin-dir serves another
    /// network namespace (the one its first pod was added in).
    #[command(after_help = "Examples:\n  \
                            policyctl reattach                                  # in the namespace of the host veths\n  \
                            nsenter --net=/run/netns/node policyctl reattach   # another one")]
    Reattach,

    /// List the datapath's pinned objects under --pin-dir, one path a line (creates nothing)
    #[command(after_help = "Examples:\n  \
                            policyctl pins\n  \
                            policyctl --pin-dir /sys/fs/bpf/test pins | xargs -r rm   # remove everything ebpfcni pinned there")]
    Pins,

    /// Print a shell completion script on stdout
    #[command(after_help = "Examples:\n  \
                            policyctl completions bash > /etc/bash_completion.d/policyctl\n  \
                            policyctl completions fish > ~/.config/fish/completions/policyctl.fish")]
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum CtCommand {
    /// List the tracked connections (opener -> responder)
    #[command(after_help = "Examples:\n  \
                            policyctl ct list\n  \
                            policyctl ct list -o json")]
    List,

    /// Forget every tracked connection (their replies are dropped until tracked anew)
    #[command(after_help = "Examples:\n  \
                            policyctl ct flush")]
    Flush,

    /// Show the connections' lifetimes, or set some of them (seconds)
    #[command(after_help = "Examples:\n  \
                            policyctl ct timeouts\n  \
                            policyctl ct timeouts --tcp-established 3600 --udp 30")]
    Timeouts(conntrack::TimeoutArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GetWhat {
    Policies,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// The documents of FILE ('-': stdin), by kind, namespace and name
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["all", "kind"])]
    file: Option<PathBuf>,
    /// Every policy and Namespace object the agent stores
    #[arg(long, conflicts_with = "kind")]
    all: bool,
    /// networkpolicy, ciliumnetworkpolicy, selectorrule or namespace
    #[arg(value_name = "KIND", requires = "name")]
    kind: Option<String>,
    /// NAMESPACE/NAME (NAME alone: namespace default; a namespace's or selector rule's name)
    #[arg(value_name = "NAMESPACE/NAME")]
    name: Option<String>,
}

impl DeleteArgs {
    fn deletion(&self) -> Result<PolicyDeletion, Failure> {
        if self.all {
            return Ok(PolicyDeletion {
                all: true,
                ..Default::default()
            });
        }
        if let Some(file) = &self.file {
            let text = input::read_file(file, |t| Ok::<_, std::convert::Infallible>(t.to_owned()))?;
            return Ok(PolicyDeletion {
                yaml: Some(text),
                ..Default::default()
            });
        }
        let (Some(kind), Some(name)) = (&self.kind, &self.name) else {
            return Err(Failure::Usage(
                "name what to delete: -f FILE, KIND NAMESPACE/NAME, or --all".into(),
            ));
        };
        let (namespace, name) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, name.clone()),
        };
        Ok(PolicyDeletion {
            kind: Some(kind.clone()),
            namespace,
            name: Some(name),
            ..Default::default()
        })
    }
}

/// A selector rule from `allow`/`deny` flags: (rules, or None for the
/// plan's numeric form).
fn selector_rules(
    src: &Who,
    dst: &Who,
    selector: Selector,
    symmetric: bool,
) -> Result<Option<Vec<SelectorRule>>, Failure> {
    let (src, dst) = match (src, dst) {
        (Who::Identity(_), Who::Identity(_)) => return Ok(None),
        (Who::Labels(s), Who::Labels(d)) => (s, d),
        _ => return Err(Failure::Usage(
            "--src and --dst must both be identities (a pair rule) or both label selectors (a selector rule)"
                .into(),
        )),
    };
    let proto_name = |p: ebpfcni::Protocol| match p.0 {
        6 => Ok("TCP".to_string()),
        17 => Ok("UDP".to_string()),
        132 => Ok("SCTP".to_string()),
        n => Err(Failure::Usage(format!(
            "a selector rule names TCP, UDP or SCTP, not protocol {n} (label policy has no rules for others)"
        ))),
    };
    let (protocol, port, end_port) = match selector {
        Selector::Any => (None, None, None),
        Selector::Protocol(p) => (Some(proto_name(p)?), None, None),
        Selector::Ports {
            protocol,
            first,
            last,
        } => (
            Some(proto_name(protocol)?),
            Some(first),
            (last != first).then_some(last),
        ),
    };
    let rule = |src: &ebpfcni_api::Labels, dst: &ebpfcni_api::Labels| SelectorRule {
        src: src.clone(),
        dst: dst.clone(),
        protocol: protocol.clone(),
        port,
        end_port,
    };
    let mut rules = vec![rule(src, dst)];
    if symmetric && src != dst {
        rules.push(rule(dst, src));
    }
    Ok(Some(rules))
}

fn run_selector_rules(common: &Common, rules: &[SelectorRule], allow: bool) -> CmdResult {
    for r in rules {
        label_policy::selector_rule(common, r, allow)?;
    }
    Ok(())
}

/// SRC and DST, the selector, and the flags of `allow`.
#[derive(Args, Debug)]
struct RuleArgs {
    /// Source identity, a decimal integer from 1 to 4294967295; or a label selector KEY=VALUE[,...]
    #[arg(long, value_name = "ID|SELECTOR", allow_negative_numbers = true, value_parser = args::who())]
    src: Who,
    /// Destination identity, a decimal integer from 1 to 4294967295; or a label selector KEY=VALUE[,...]
    #[arg(long, value_name = "ID|SELECTOR", allow_negative_numbers = true, value_parser = args::who())]
    dst: Who,
    #[command(flatten)]
    selector: SelectorArgs,
    /// Also the reverse rule DST -> SRC, with the same selector
    #[arg(long)]
    symmetric: bool,
    /// Track the connections this rule allows, so that their replies pass (and only their replies)
    #[arg(long)]
    stateful: bool,
}

/// --port or --proto; neither: any protocol and port.
#[derive(Args, Debug)]
#[group(multiple = false)]
struct SelectorArgs {
    /// Destination port or range, TCP unless /udp: 8080, 53/udp, 8000-8080/tcp
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = args::ports())]
    port: Option<Selector>,
    /// A whole protocol: tcp, udp, icmp or a number from 1 to 255
    #[arg(long, value_name = "PROTO", value_parser = args::protocol())]
    proto: Option<Selector>,
}

impl SelectorArgs {
    fn get(&self) -> Selector {
        self.port.or(self.proto).unwrap_or(Selector::Any)
    }
}

impl RuleArgs {
    fn rules(&self) -> Vec<Rule> {
        let id = |w: &Who| match w {
            Who::Identity(n) => Identity::new(*n).expect("parsed from 1"),
            Who::Labels(_) => unreachable!("numeric form only"),
        };
        let rule = Rule {
            pair: PolicyRule::new(id(&self.src), id(&self.dst)),
            selector: self.selector.get(),
            stateful: self.stateful,
        };
        if self.symmetric && rule.pair.src != rule.pair.dst {
            vec![
                rule,
                Rule {
                    pair: rule.pair.reverse(),
                    ..rule
                },
            ]
        } else {
            vec![rule]
        }
    }
}

/// The identities of rules to remove, as stored (0 names an invalid entry),
/// and their selector.
#[derive(Args, Debug)]
struct DenyArgs {
    /// Source identity, a decimal integer from 0 to 4294967295; or a label selector KEY=VALUE[,...]
    #[arg(long, value_name = "ID|SELECTOR", allow_negative_numbers = true, value_parser = args::stored_who())]
    src: Who,
    /// Destination identity, a decimal integer from 0 to 4294967295; or a label selector KEY=VALUE[,...]
    #[arg(long, value_name = "ID|SELECTOR", allow_negative_numbers = true, value_parser = args::stored_who())]
    dst: Who,
    #[command(flatten)]
    selector: SelectorArgs,
    /// Also the reverse rule DST -> SRC
    #[arg(long)]
    symmetric: bool,
}

impl DenyArgs {
    fn keys(&self) -> Vec<(u32, u32)> {
        let (src, dst) = match (&self.src, &self.dst) {
            (Who::Identity(s), Who::Identity(d)) => (*s, *d),
            _ => unreachable!("numeric form only"),
        };
        if self.symmetric && src != dst {
            vec![(src, dst), (dst, src)]
        } else {
            vec![(src, dst)]
        }
    }
}

fn main() -> ExitCode {
    ebpfcni_ctl::init();
    ebpfcni_ctl::finish("policyctl", run(Cli::parse()))
}

fn run(cli: Cli) -> CmdResult {
    let common = &cli.common;
    if common.output == Format::Prometheus && !matches!(cli.command, Command::Stats) {
        return Err(Failure::Usage(
            "-o prometheus is only for `policyctl stats`".into(),
        ));
    }
    match cli.command {
        Command::Completions { shell } => ebpfcni_ctl::print_completions::<Cli>(shell),
        Command::Pins => print_pins(&common.pin_dir),
        Command::Reattach => reattach(common),
        Command::List => policy::list(common),
        Command::Trace { level: None } => levels::show_level::<TraceLevel>(common),
        Command::Trace { level: Some(level) } => levels::set_level(common, level),
        Command::Allow(args) => {
            match selector_rules(&args.src, &args.dst, args.selector.get(), args.symmetric)? {
                Some(rules) => run_selector_rules(common, &rules, true),
                None => policy::change(common, |maps| policy::allow(maps, &args.rules())),
            }
        }
        Command::Deny(args) => {
            match selector_rules(&args.src, &args.dst, args.selector.get(), args.symmetric)? {
                Some(rules) => run_selector_rules(common, &rules, false),
                None => policy::change(common, |maps| {
                    policy::deny(maps, &args.keys(), args.selector.get())
                }),
            }
        }
        Command::Get {
            what: GetWhat::Policies,
        } => label_policy::get_policies(common),
        Command::Delete(args) => label_policy::delete(common, &args.deletion()?),
        Command::Flush => policy::change(common, policy::flush),
        Command::Apply { file } => {
            // Read and checked before the maps are opened (which may create them).
            let text = input::read_file(&file, |t| Ok::<_, std::convert::Infallible>(t.to_owned()))?;
            if label_policy::is_policy_documents(&text) {
                return label_policy::apply(common, &text);
            }
            let (rules, repeats) = parse_rules(&text).map_err(|e| {
                Failure::Usage(format!("{}: {e}; nothing was written", input::source_name(&file)))
            })?;
            policy::change(common, |maps| {
                policy::apply(maps, &rules, repeats, &input::source_name(&file))
            })
        }
        Command::Ct(CtCommand::List) => conntrack::list(common),
        Command::Ct(CtCommand::Flush) => conntrack::flush(common),
        Command::Ct(CtCommand::Timeouts(args)) => conntrack::timeouts(common, &args),
        Command::Monitor(args) => monitor::monitor(common, &args),
        Command::Stats => stats::stats(common),
        Command::Explain(args) => explain::explain(common, &args),
        Command::Audit { mode: None } => audit::show(common),
        Command::Audit { mode: Some(mode) } => audit::set(common, mode),
        Command::Graph(args) => graph::graph(common, &args),
        Command::Events { level: None } => levels::show_level::<EventLevel>(common),
        Command::Events { level: Some(level) } => levels::set_level(common, level),
        Command::RateLimit {
            rate: None,
            burst: None,
        } => levels::show_rate_limit(common),
        Command::RateLimit { rate, burst } => levels::set_rate_limit(common, rate, burst),
    }
}

/// Prints the paths of the pins that exist under `pin_dir`: the maps
/// (the program's, then those only userspace reads), then the programs (of
/// any build). None: says so (exit 1).
fn print_pins(pin_dir: &std::path::Path) -> CmdResult {
    ebpfcni::bpffs::check_pin_dir(pin_dir).map_err(|e| Failure::failed("list the pins", e))?;
    let maps = PinnedMap::ALL
        .into_iter()
        .map(|map| map.path(pin_dir))
        .chain(ebpfcni::LocalMap::ALL.iter().map(|m| m.path(pin_dir)))
        .filter(|p| p.exists());
    let programs = ebpfcni::program_pins(pin_dir)
        .into_iter()
        .map(|(_, _, path)| path);
    let pins: Vec<PathBuf> = maps.chain(programs).collect();
    if pins.is_empty() {
        return Err(Failure::Runtime(format!(
            "nothing of ebpfcni's is pinned in {} (check --pin-dir)",
            pin_dir.display()
        )));
    }
    let mut out = std::io::stdout().lock();
    for path in pins {
        writeln!(out, "{}", path.display())?;
    }
    out.flush()?;
    Ok(())
}

fn reattach(common: &Common) -> CmdResult {
    let maps = open_maps_for_reading(common)?;
    let report = ebpfcni::reattach(&maps, &common.pin_dir)
        .map_err(|e| Failure::failed("attach this build's program", e))?;
    let names = |list: &[(String, u32)]| {
        list.iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut notes = vec![format!(
        "this build's program (build {}){}: {} host veths moved onto it, {} already on it",
        ebpfcni::PROGRAM_BUILD_ID,
        if report.loaded {
            " was loaded and pinned"
        } else {
            ""
        },
        report.moved.len(),
        report.current.len()
    )];
    if !report.moved.is_empty() {
        notes.push(format!("moved: {}", names(&report.moved)));
    }
    if !report.fabric.is_empty() {
        notes.push(format!(
            "the source check on the fabric (from-fabric) moved onto it on: {}",
            names(&report.fabric)
        ));
    }
    if !report.unrecorded.is_empty() {
        notes.push(format!(
            "left on their program, no record of their pod's addresses (recreate these pods): {}",
            names(&report.unrecorded)
        ));
    }
    let mut out = Out::new(common);
    report_change(&mut out, &notes, |_| Ok(()))
}

// Keeps the defaults' names in one place for `ct timeouts --help`.
const _: CtTimeouts = CtTimeouts::DEFAULT;
