//! Compiles bpf/kernel/ebpfcni.bpf.c with clang-19 and generates the Rust
//! skeleton (program, maps and the BTF types of bpf/include/ebpfcni.h).
//! The object is embedded in the skeleton, so binaries need nothing at run
//! time. `EBPFCNI_CLANG` overrides the compiler.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let bpf_dir = manifest_dir.join("../../bpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let clang = env::var("EBPFCNI_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    // <asm/types.h> lives in the multiarch include directory on Debian/Ubuntu;
    // clang -target bpf does not search it by itself.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("no multiarch include directory known for {other}"),
    };

    let object = out_dir.join("ebpfcni.bpf.o");
    SkeletonBuilder::new()
        .source(bpf_dir.join("kernel/ebpfcni.bpf.c"))
        .obj(&object)
        .clang(&clang)
        .clang_args([
            "-Wall".into(),
            "-Werror".into(),
            format!("-I{}", bpf_dir.join("include").display()),
            format!("-I{}", bpf_dir.join("lib").display()),
            format!("-I/usr/include/{multiarch}"),
        ])
        .build_and_generate(out_dir.join("ebpfcni.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("building the BPF program with {clang} failed (is clang-19 installed? ./build.sh installs it): {e:#}")
        });

    // The program's build id: a hash of the object, so that a binary
    // reuses a pinned program only when it is exactly the one it carries.
    let bytes = std::fs::read(&object).expect("read the compiled BPF object");
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    println!("cargo:rustc-env=EBPFCNI_PROGRAM_BUILD_ID={hash:016x}");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=EBPFCNI_CLANG");
}
