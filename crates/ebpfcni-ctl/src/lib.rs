//! What `endpointctl` and `policyctl` share: the common flags, opening the
//! maps, and (in modules) exit codes, printing, and the apply file format.
//!
//! Both binaries parse everything first and touch the maps last, so bad input
//! never changes a map; [`exit`] says what each exit code promises.

pub mod agent;
pub mod args;
pub mod audit;
pub mod conntrack;
pub mod exit;
pub mod explain;
pub mod graph;
pub mod identities_file;
pub mod input;
pub mod label_policy;
pub mod levels;
pub mod links;
pub mod monitor;
pub mod names;
pub mod output;
pub mod policy;
pub mod rules_file;
pub mod stats;

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory};

pub use exit::{
    finish, say, CmdResult, Failure, EXIT_DROPPED, EXIT_FAILURE, EXIT_MISSING, EXIT_UNREACHABLE,
    EXIT_UNREPORTED, EXIT_USAGE,
};
pub use output::{Format, IdentityRow, IdentityState, Out, PolicyUsage, Reverse, RuleRow, View};
pub use rules_file::parse_rules;

/// Flags every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Directory on the bpf filesystem holding the pinned maps; commands that write create them there when missing
    #[arg(long, value_name = "DIR", default_value = ebpfcni::DEFAULT_PIN_DIR, global = true, display_order = 100)]
    pub pin_dir: PathBuf,

    /// After a change, print only what changed, not the map's state
    #[arg(short, long, global = true, display_order = 101)]
    pub quiet: bool,

    /// Output format of listings and of the state printed after a change
    #[arg(
        short,
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = Format::Table,
        global = true,
        display_order = 102
    )]
    pub output: Format,

    /// The node agent's socket: labels are shown, and the agent's endpoints
    /// are protected from hand changes, when an agent answers there
    #[arg(long, value_name = "SOCKET", default_value = ebpfcni_api::DEFAULT_SOCKET, global = true, display_order = 103)]
    pub agent: PathBuf,
}

/// What every binary does first: libbpf's own messages are shown only with
/// EBPFCNI_DEBUG=1 (the error a command ends with says what failed).
pub fn init() {
    if std::env::var_os("EBPFCNI_DEBUG").is_some_and(|v| v == "1") {
        ebpfcni::set_libbpf_log(Some(|msg| crate::say(format_args!("libbpf: {msg}"))));
    } else {
        ebpfcni::set_libbpf_log(None);
    }
}

/// The maps, opened for a change, and the pin directory's lock, held until
/// the command ends: changes from several processes are made one after the
/// other, each checked against what the one before left.
pub struct Writing {
    maps: ebpfcni::Maps,
    _lock: ebpfcni::bpffs::PinDirLock,
}

impl std::ops::Deref for Writing {
    type Target = ebpfcni::Maps;

    fn deref(&self) -> &ebpfcni::Maps {
        &self.maps
    }
}

/// Opens the maps pinned under `--pin-dir` for a command that writes,
/// creating them when missing so that policy can be loaded before the first
/// pod exists, and takes the pin directory's lock.
pub fn open_maps_for_writing(common: &Common) -> Result<Writing, Failure> {
    let action = || format!("open the maps under {}", common.pin_dir.display());
    let maps = ebpfcni::Maps::open_or_create(&common.pin_dir).map_err(|e| Failure::failed(action(), e))?;
    let lock = maps.lock().map_err(|e| Failure::failed(action(), e))?;
    say_recovered(&maps);
    Ok(Writing { maps, _lock: lock })
}

/// Says on stderr when opening the maps undid a change that was killed
/// part way (the old state is back).
fn say_recovered(maps: &ebpfcni::Maps) {
    if let ebpfcni::Recovered::RolledBack(n) = maps.recovered() {
        say(format_args!(
            "note: a change to the maps under {} was interrupted before it was complete; it was undone \
             ({n} entries put back), so they hold what they held before it",
            maps.pin_dir().display()
        ));
    }
}

/// Opens the maps for a command that only reads: when nothing is pinned
/// under `--pin-dir` it says so (exit 1) and creates nothing, so that a
/// mistyped directory does not look like empty maps.
pub fn open_maps_for_reading(common: &Common) -> Result<ebpfcni::Maps, Failure> {
    let maps = ebpfcni::Maps::open_for_reading(&common.pin_dir).map_err(|e| {
        Failure::failed(
            format_args!("open the maps under {}", common.pin_dir.display()),
            e,
        )
    })?;
    say_recovered(&maps);
    Ok(maps)
}

/// Opens the maps for writing (the pin directory's lock held), makes a
/// change with `make` (which returns what it did, one note a line), then
/// reports the notes and what `state` prints (exit 3 when that fails: the
/// change stands). Every command that changes something goes through here.
pub fn change(
    common: &Common,
    make: impl FnOnce(&ebpfcni::Maps) -> Result<Vec<String>, Failure>,
    state: impl FnOnce(&ebpfcni::Maps, &mut Out) -> CmdResult,
) -> CmdResult {
    let maps = open_maps_for_writing(common)?;
    let notes = make(&maps)?;
    let mut out = Out::new(common);
    report_change(&mut out, &notes, |out| state(&maps, out))
}

/// Reports a change that was made: prints `notes` (one-line accounts of
/// what was done), then whatever `state` prints, and flushes. Any failure
/// here is [`Failure::Unreported`] (exit 3): the change stands.
pub fn report_change(
    out: &mut Out,
    notes: &[String],
    state: impl FnOnce(&mut Out) -> CmdResult,
) -> CmdResult {
    let reported = (|| {
        for note in notes {
            out.note(note)?;
        }
        state(out)?;
        out.flush()?;
        Ok(())
    })();
    reported.map_err(Failure::after_change)
}

/// Prints a completion script for `C` on stdout.
pub fn print_completions<C: CommandFactory>(shell: clap_complete::Shell) -> CmdResult {
    let mut cmd = C::command();
    let name = cmd.get_name().to_owned();
    let mut stdout = io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, name, &mut stdout);
    stdout.flush()?;
    Ok(())
}
