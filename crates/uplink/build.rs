//! Compiles the XDP classifier (`bpf/classify.c`) into `$OUT_DIR/classify.o`, which
//! `af_xdp.rs` embeds. Needs clang and libbpf's headers (Debian: `clang libbpf-dev`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/classify.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("classify.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        // Debian keeps <asm/types.h> under the multiarch directory.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {src} ({s}); install clang and libbpf-dev"),
        Err(e) => panic!("cannot run {clang} to compile {src}: {e}; install clang and libbpf-dev"),
    }
}
