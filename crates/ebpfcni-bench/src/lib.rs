//! What the benchmarks (in `benches/`) share: filling the maps to capacity
//! with entries that no measured packet hits, so that "full maps" means the
//! same in every bench. Run the benches through `bench/run.sh`.

use std::net::Ipv4Addr;

use ebpfcni::{Identity, Maps, PolicyRule};

/// The i-th filler address: 10.14.0.0 upwards, never a measured pod's.
pub fn filler_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a0e_0000 + i)
}

/// The i-th filler rule's identity indexes: distinct pairs for i < 65,536.
pub fn filler_pair(i: u32) -> (u32, u32) {
    (i / 256, 256 + i % 256)
}

/// Identities of filler entries start here, above any measured pod's.
const FILLER_IDENTITY: u32 = 1000;

fn id(n: u32) -> Identity {
    Identity::new(n).expect("non-zero identity")
}

/// Fills endpoint_map and policy_map up to their capacity with filler
/// entries, keeping what is there. Returns (endpoints, rules) afterwards.
pub fn fill_maps(maps: &Maps) -> ebpfcni::Result<(usize, usize)> {
    let free = maps.endpoints.capacity() as usize - maps.endpoints.list()?.len();
    let endpoints: Vec<(Ipv4Addr, Identity)> = (0..free as u32)
        .map(|i| (filler_ip(i), id(FILLER_IDENTITY + i)))
        .collect();
    maps.endpoints.upsert_batch(&endpoints)?;

    let free = maps.policy.capacity() as usize - maps.policy.len()?;
    let rules: Vec<PolicyRule> = (0..free as u32)
        .map(|i| {
            let (s, d) = filler_pair(i);
            PolicyRule::new(id(FILLER_IDENTITY + s), id(FILLER_IDENTITY + d))
        })
        .collect();
    maps.policy.allow_all(&rules)?;
    Ok((maps.endpoints.list()?.len(), maps.policy.len()?))
}
