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
    let dirs = Command::new("git")
        .args(["rev-parse", "--git-dir", "--git-common-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let dirs = String::from_utf8(dirs.stdout).ok()?;
    let mut dirs = dirs.lines().map(str::trim);
    let (git_dir, common_dir) = (dirs.next()?, dirs.next()?);
    // Rebuild when HEAD moves (a commit or a checkout). In a worktree HEAD is its own but
    // the branches are the main repository's.
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={common_dir}/refs/heads");
    println!("cargo:rerun-if-changed={common_dir}/packed-refs");
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8(head.stdout).ok()?;
    Some(commit)
}
