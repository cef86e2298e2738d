//! Embeds every built-in collector definition (collectors/*.toml): adding a file needs no code.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=collectors");
    // Read when the script runs, not baked in when it is compiled: a build script binary
    // reused from a shared target/ (another checkout, a worktree) must read this checkout.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest).join("collectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("collectors/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("]\n");
    let target =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_collectors.rs");
    std::fs::write(target, out).unwrap();
}
