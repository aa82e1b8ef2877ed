//! Records the git commit the binary is built from (`herald --version`,
//! `herald_build_info`). `HERALD_GIT_COMMIT` set at build time wins (a
//! Docker build has no `.git`); without either it says `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HERALD_GIT_COMMIT");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    // A new commit moves the branch HEAD points at (or packed-refs).
    let head = format!("{root}/.git/HEAD");
    let mut watched = vec![head.clone(), format!("{root}/.git/packed-refs")];
    if let Ok(text) = std::fs::read_to_string(&head) {
        if let Some(reference) = text.trim().strip_prefix("ref: ") {
            watched.push(format!("{root}/.git/{reference}"));
        }
    }
    for path in watched {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("HERALD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .current_dir(root)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HERALD_GIT_COMMIT={commit}");
}
