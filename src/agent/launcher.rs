//! The "I need help" button itself: a freedesktop launcher that runs `lablink hand` (this
//! executable), put in the desktop user's applications menu and on their Desktop when a
//! participant's desktop starts. The home is the desktop user's, and the agent runs as
//! root: every folder below the home is opened without following links, and the file is
//! written under a temporary name and renamed inside that opened folder, so a link the
//! user planted cannot make the agent write anywhere else.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::desktop_user::DesktopUser;

pub const FILE_NAME: &str = "lablink-hand.desktop";
/// Below the home: the menu's entries (XDG_DATA_HOME's default).
const APPLICATIONS: &str = ".local/share/applications";

pub struct Launcher {
    /// This executable, as the entry runs it.
    pub exe: PathBuf,
    /// The agent's socket, named in the entry so the button finds this agent.
    pub socket: PathBuf,
    pub home: Option<PathBuf>,
    pub desktop_dir: PathBuf,
    pub user: Option<DesktopUser>,
}

impl Launcher {
    /// Writes the entry into the menu and onto the Desktop; failures are logged (the
    /// page's button still works).
    pub fn install(&self) {
        let entry = match entry(&self.exe, &self.socket) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!("no \"I need help\" launcher: {e}");
                return;
            }
        };
        let owner = self.user.as_ref().map(|u| (u.uid(), u.gid()));
        let mut places = Vec::new();
        if let Some(home) = &self.home {
            places.push((home.clone(), PathBuf::from(APPLICATIONS)));
        }
        places.push(self.desktop_place());
        for (base, below) in places {
            let target = base.join(&below).join(FILE_NAME);
            match write_below(&base, &below, entry.as_bytes(), owner) {
                Ok(()) => {
                    tracing::info!(file = %target.display(), "\"I need help\" launcher installed")
                }
                Err(e) => {
                    tracing::warn!(file = %target.display(), error = %e, "cannot install the \"I need help\" launcher")
                }
            }
        }
    }

    /// Takes the launcher off the Desktop before a reset moves the folder aside, so a
    /// participant who left nothing there leaves no folder behind (the menu's entry stays
    /// for the next one).
    pub fn remove_from_desktop(&self) {
        let (base, below) = self.desktop_place();
        let removed = open_below(&base, &below, false, None)
            .and_then(|dir| unlinkat(&dir, FILE_NAME, UnlinkatFlags::NoRemoveDir).map_err(io));
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the \"I need help\" launcher off the Desktop")
            }
        }
    }

    /// The Desktop folder as a trusted base and the part below it the user controls.
    fn desktop_place(&self) -> (PathBuf, PathBuf) {
        if let Some(home) = &self.home
            && let Ok(below) = self.desktop_dir.strip_prefix(home)
        {
            return (home.clone(), below.to_path_buf());
        }
        match (self.desktop_dir.parent(), self.desktop_dir.file_name()) {
            (Some(parent), Some(name)) => (parent.to_path_buf(), PathBuf::from(name)),
            _ => (self.desktop_dir.clone(), PathBuf::new()),
        }
    }
}

/// The desktop entry: "I need help" runs `EXE hand --socket SOCKET`, its action "I no
/// longer need help" the same with `--lower`.
pub fn entry(exe: &Path, socket: &Path) -> Result<String, String> {
    let command = |lower: bool| -> Result<String, String> {
        let mut args = vec![
            path_arg(exe)?,
            "hand".to_owned(),
            "--socket".to_owned(),
            path_arg(socket)?,
        ];
        if lower {
            args.push("--lower".to_owned());
        }
        Ok(args.join(" "))
    };
    Ok(format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Version=1.0\n\
         Name=I need help\n\
         Comment=Ask the workshop's helpers to come to your seat\n\
         Icon=help-browser\n\
         Exec={}\n\
         Terminal=false\n\
         StartupNotify=false\n\
         Categories=Education;\n\
         Actions=lower;\n\
         \n\
         [Desktop Action lower]\n\
         Name=I no longer need help\n\
         Exec={}\n",
        command(false)?,
        command(true)?
    ))
}

fn path_arg(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    exec_arg(text).ok_or_else(|| format!("{text:?} holds a control character"))
}

/// One argument of an `Exec` key, as the Desktop Entry Specification reads it: quoted
/// when it holds a reserved character (inside the quotes `"`, `` ` ``, `$` and `\` get a
/// backslash), `%` doubled (no field code), then the string escape of `\` (`\\`). A
/// launcher runs the result as an argument vector, never through a shell.
fn exec_arg(arg: &str) -> Option<String> {
    if arg.is_empty() || arg.chars().any(char::is_control) {
        return None;
    }
    const RESERVED: &[char] = &[
        ' ', '\t', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(', ')', '`',
    ];
    let quoted = if arg.contains(RESERVED) {
        let mut out = String::from("\"");
        for c in arg.chars() {
            if matches!(c, '"' | '`' | '$' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    } else {
        arg.to_owned()
    };
    Some(quoted.replace('%', "%%").replace('\\', "\\\\"))
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

fn give(fd: &OwnedFd, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) => {
            fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(io)
        }
        None => Ok(()),
    }
}

/// The folder `base/below`: `base` opened as it is, each folder of `below` without
/// following links, and (with `create`) made for `owner` when missing.
fn open_below(
    base: &Path,
    below: &Path,
    create: bool,
    owner: Option<(u32, u32)>,
) -> std::io::Result<OwnedFd> {
    let folder = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut dir = open(base, folder, Mode::empty()).map_err(io)?;
    for part in below.components() {
        let Component::Normal(name) = part else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a plain folder path", below.display()),
            ));
        };
        dir = match openat(&dir, name, folder | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create => {
                mkdirat(&dir, name, Mode::from_bits_truncate(0o755)).map_err(io)?;
                let next =
                    openat(&dir, name, folder | OFlag::O_NOFOLLOW, Mode::empty()).map_err(io)?;
                give(&next, owner)?;
                next
            }
            Err(e) => return Err(io(e)),
        };
    }
    Ok(dir)
}

/// Writes `contents` as `base/below/FILE_NAME`, mode 0755 (a Desktop launcher must be
/// executable), given to `owner`. `base` is the administrator's (the home from the
/// account database, or the folder holding the Desktop); each folder of `below` is
/// opened without following links and made (for `owner`) when missing.
fn write_below(
    base: &Path,
    below: &Path,
    contents: &[u8],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let dir = open_below(base, below, true, owner)?;
    let temp = format!(
        ".{FILE_NAME}.{}-{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    );
    let fd = openat(
        &dir,
        temp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io)?;
    let written = (|| {
        give(&fd, owner)?;
        fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(io)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)?;
        file.sync_all()?;
        // Replaces whatever has the name (a link included) without following it.
        renameat(&dir, temp.as_str(), &dir, OsStr::new(FILE_NAME)).map_err(io)
    })();
    if written.is_err() {
        let _ = unlinkat(&dir, temp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_as_the_specification_says() {
        assert_eq!(
            exec_arg("/usr/bin/lablink").as_deref(),
            Some("/usr/bin/lablink")
        );
        assert_eq!(
            exec_arg("/opt/lab link/lablink").as_deref(),
            Some("\"/opt/lab link/lablink\"")
        );
        // `$` and `` ` `` are escaped inside quotes, then every `\` once more as a string.
        assert_eq!(
            exec_arg("/x/$(id)`id`").as_deref(),
            Some("\"/x/\\\\$(id)\\\\`id\\\\`\"")
        );
        assert_eq!(exec_arg("/x/100%").as_deref(), Some("/x/100%%"));
        assert_eq!(exec_arg("/x/a\nb"), None);
        assert_eq!(exec_arg(""), None);
    }

    #[test]
    fn a_link_in_the_home_is_not_followed() {
        let home = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), home.path().join("Desktop")).expect("symlink");
        let e = write_below(home.path(), Path::new("Desktop"), b"x", None)
            .expect_err("a link is refused");
        // O_NOFOLLOW with O_DIRECTORY: Linux says "not a directory", others "a loop".
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{e}"
        );
        assert_eq!(
            std::fs::read_dir(elsewhere.path()).expect("list").count(),
            0
        );

        // A link in the launcher's own place is replaced, its target left alone.
        let target = elsewhere.path().join("victim");
        std::fs::write(&target, "keep").expect("write");
        let apps = home.path().join(APPLICATIONS);
        std::fs::create_dir_all(&apps).expect("mkdir");
        std::os::unix::fs::symlink(&target, apps.join(FILE_NAME)).expect("symlink");
        write_below(home.path(), Path::new(APPLICATIONS), b"entry", None).expect("written");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        let written = apps.join(FILE_NAME);
        assert!(!written.is_symlink());
        assert_eq!(std::fs::read_to_string(&written).expect("read"), "entry");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
