//! Compiles the example C CGI program (`examples/cgi-src/hello.c`) into
//! `examples/cgi-bin/hello-c.cgi` with the system C compiler (`$CC`, else `cc`).
//!
//! The example is optional: when there is no compiler, or compiling fails, this prints a
//! cargo warning and the build goes on.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=examples/cgi-src/hello.c");
    println!("cargo:rerun-if-env-changed=CC");
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return;
    };
    let src = dir.join("examples/cgi-src/hello.c");
    let out = dir.join("examples/cgi-bin/hello-c.cgi");
    if !src.exists() || !out.parent().is_some_and(|p| p.is_dir()) {
        return;
    }
    let cc = env::var_os("CC").unwrap_or_else(|| "cc".into());
    // Build next to the target, then rename, so a half-written binary is never served.
    let tmp = out.with_extension("cgi.tmp");
    let result = Command::new(&cc)
        .arg("-O2")
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .status();
    match result {
        Ok(status) if status.success() => {
            if let Err(e) = std::fs::rename(&tmp, &out) {
                println!("cargo:warning=could not install {}: {e}", out.display());
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(status) => {
            println!(
                "cargo:warning=skipping the C CGI example: {} failed ({status})",
                cc.to_string_lossy()
            );
            let _ = std::fs::remove_file(&tmp);
        }
        Err(e) => println!(
            "cargo:warning=skipping the C CGI example: cannot run {}: {e}",
            cc.to_string_lossy()
        ),
    }
}
