//! The skeleton that build.rs generates from `bpf/kernel/ebpfcni.bpf.c`:
//! the embedded object, its maps and programs, and (in [`types`]) the Rust
//! types of `bpf/include/ebpfcni.h`, taken from the object's BTF.
//!
//! Generated code and its lint allowances stay in this module. The byte views
//! of the shared types (what map keys and values are made of) are declared
//! here too, next to the asserts that keep their sizes honest.

#[allow(
    clippy::all,
    clippy::pedantic,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/ebpfcni.skel.rs"));
}

pub use generated::*;

use std::mem::size_of;

// The key layout is guarded in C by _Static_assert; guard the Rust side too.
const _: () = assert!(size_of::<types::policy_key>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_policy_action>() == 1);
const _: () = assert!(size_of::<types::ebpfcni_config>() == 128);
const _: () = assert!(size_of::<types::ebpfcni_drop_count>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_prefix_key>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_port_key>() == 16);
const _: () = assert!(size_of::<types::ebpfcni_port_rule>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_ct_key>() == 16);
const _: () = assert!(size_of::<types::ebpfcni_ct_entry>() == 24);
const _: () = assert!(size_of::<types::ebpfcni_frag_key>() == 12);
const _: () = assert!(size_of::<types::ebpfcni_frag_entry>() == 24);
const _: () = assert!(size_of::<types::ebpfcni_event>() == 56);
const _: () = assert!(size_of::<types::ebpfcni_label_key>() == 16);
const _: () = assert!(size_of::<types::ebpfcni_label_exact_key>() == 12);
const _: () = assert!(size_of::<types::ebpfcni_label_rule>() == 8);
const _: () = assert!(size_of::<types::ebpfcni_notify_state>() == 40);
const _: () = assert!(size_of::<types::ebpfcni_local>() == 24);

/// Declares shared types as plain old data: `#[repr(C)]`, no padding (the
/// sizes are asserted above), every bit pattern a valid value.
macro_rules! plain_old_data {
    ($($ty:ty),* $(,)?) => {$(
        // SAFETY: see the macro's comment; the generated type is a
        // #[repr(C)] struct of integers with no padding.
        unsafe impl bytemuck::Zeroable for $ty {}
        // SAFETY: as above; the generated types are Copy and 'static.
        unsafe impl bytemuck::Pod for $ty {}
    )*};
}

plain_old_data!(
    types::policy_key,
    types::ebpfcni_prefix_key,
    types::ebpfcni_interface,
    types::ebpfcni_port_key,
    types::ebpfcni_port_rule,
    types::ebpfcni_label_key,
    types::ebpfcni_label_exact_key,
    types::ebpfcni_label_rule,
    types::ebpfcni_ct_key,
    types::ebpfcni_ct_entry,
    types::ebpfcni_frag_key,
    types::ebpfcni_frag_entry,
    types::ebpfcni_event,
    types::ebpfcni_notify_state,
    types::ebpfcni_local,
    types::ebpfcni_policy_action,
    types::ebpfcni_config,
    types::ebpfcni_drop_count,
);
