//! `--desktop-user`: the account everything of the participant's desktop runs as
//! (start-host, the Chrome Remote Desktop daemon, the tutorial clone, the lab's startup
//! script), with that account's uid, gid and groups and an environment built from an
//! allow-list. The agent itself runs as root and keeps its credential: the desktop cannot
//! read the token file, the agent's `/proc/<pid>/environ`, or a copy in its own environment.

use std::ffi::{CString, OsStr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

/// What the desktop keeps of the agent's environment: the search path, the locale and the
/// GPU runtime's settings. Everything else (API_TOKEN, API_TOKEN_FILE, the agent's own
/// settings) stays with the agent.
const KEPT: [&str; 5] = ["PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH"];
const KEPT_PREFIXES: [&str; 3] = ["LC_", "NVIDIA_", "CUDA_"];

#[derive(Clone, Debug)]
pub struct DesktopUser {
    name: String,
    uid: Uid,
    gid: Gid,
    /// Supplementary groups, from the group database (only needed when switching).
    groups: Vec<Gid>,
    home: PathBuf,
    shell: PathBuf,
    /// The agent runs as another account (root) and switches to this one for each program.
    switch: bool,
}

fn kept(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    KEPT.contains(&name) || KEPT_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl DesktopUser {
    /// Looks the account up and checks the agent may run programs as it.
    pub fn lookup(name: &str) -> Result<DesktopUser, String> {
        let flag = format!("--desktop-user {name}");
        let user = User::from_name(name)
            .map_err(|e| format!("{flag}: cannot look the account up: {e}"))?
            .ok_or_else(|| format!("{flag}: no such account"))?;
        if user.uid.is_root() {
            return Err(format!(
                "{flag}: the desktop must not run as root (Chrome Remote Desktop refuses it)"
            ));
        }
        let me = nix::unistd::getuid();
        let switch = user.uid != me;
        if switch && !me.is_root() {
            return Err(format!(
                "{flag}: running the desktop as another account needs the agent to run as root (it runs as uid {me})"
            ));
        }
        let groups = if switch {
            let cname = CString::new(name).map_err(|_| format!("{flag}: not a user name"))?;
            nix::unistd::getgrouplist(&cname, user.gid)
                .map_err(|e| format!("{flag}: cannot read its groups: {e}"))?
        } else {
            Vec::new()
        };
        Ok(DesktopUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell: user.shell,
            switch,
        })
    }

    /// Gives `path` to this user (a folder the agent made for them).
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        if !self.switch {
            return Ok(());
        }
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(std::io::Error::from)
    }

    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Makes `cmd` run as this account: its uid, gid and groups, its home as working
    /// directory, and an environment of the allow-listed variables plus USER, LOGNAME, HOME,
    /// SHELL and XDG_RUNTIME_DIR for it. Call before setting the program's own variables.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env_clear();
        for (key, value) in std::env::vars_os().filter(|(key, _)| kept(key)) {
            cmd.env(key, value);
        }
        cmd.env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("HOME", &self.home)
            .env("SHELL", &self.shell);
        if let Some(dir) = self.runtime_dir() {
            cmd.env("XDG_RUNTIME_DIR", dir);
        }
        if self.home.is_dir() {
            cmd.current_dir(&self.home);
        }
        if self.switch {
            self.switch_before_exec(cmd);
        }
    }

    /// `/run/user/<uid>`, created for the account when missing: start-host fails without it.
    fn runtime_dir(&self) -> Option<PathBuf> {
        let dir = PathBuf::from(format!("/run/user/{}", self.uid));
        if !dir.is_dir() {
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create("/run/user")
                .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(&dir))
                .and_then(|()| {
                    if self.switch {
                        std::os::unix::fs::chown(
                            &dir,
                            Some(self.uid.as_raw()),
                            Some(self.gid.as_raw()),
                        )
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = made {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot create the desktop user's runtime directory");
            }
        }
        dir.is_dir().then_some(dir)
    }

    /// Groups, gid, then uid, in the child between fork and exec (std's `uid()` would drop
    /// the supplementary groups the desktop needs, such as chrome-remote-desktop).
    #[allow(unsafe_code)]
    fn switch_before_exec(&self, cmd: &mut Command) {
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // setgroups, setgid and setuid system calls on values prepared before the fork: no
        // allocation, no lock, nothing that is not async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_variables_reach_the_desktop() {
        for name in [
            "PATH",
            "LANG",
            "LC_ALL",
            "NVIDIA_DRIVER_CAPABILITIES",
            "CUDA_VERSION",
        ] {
            assert!(kept(OsStr::new(name)), "{name}");
        }
        for name in [
            "API_TOKEN",
            "API_TOKEN_FILE",
            "ALLOCATOR_URL",
            "LABLINK_LOG",
            "HOME",
            "NOTIFY_SOCKET",
            "CREDENTIALS_DIRECTORY",
        ] {
            assert!(!kept(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn root_is_never_the_desktop_user() {
        let err = DesktopUser::lookup("root").expect_err("root refused");
        assert!(err.contains("must not run as root"), "{err}");
        let err = DesktopUser::lookup("no-such-user-lablink").expect_err("unknown user");
        assert!(err.contains("no such account"), "{err}");
    }
}
