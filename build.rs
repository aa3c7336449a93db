//! Records what `lablink version` reports: the git commit and the target triple.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LABLINK_GIT_COMMIT");
    // A source tarball has no .git; the release pipeline may then pass the commit in.
    let commit = std::env::var("LABLINK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LABLINK_GIT_COMMIT={}", commit.trim());
    println!(
        "cargo:rustc-env=LABLINK_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

fn git_commit() -> Option<String> {
    let git_dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let git_dir = String::from_utf8(git_dir.stdout).ok()?;
    let git_dir = git_dir.trim();
    // Rebuild when HEAD moves (a commit or a checkout).
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/refs/heads");
    println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8(head.stdout).ok()?;
    Some(commit)
}
