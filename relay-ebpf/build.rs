//! Rebuild the XDP object when the bpf-linker binary changes (cargo cannot see it as a
//! dependency on its own).
fn main() {
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(linker) = std::env::split_paths(&path)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
        {
            println!("cargo:rerun-if-changed={}", linker.display());
        }
    }
}
