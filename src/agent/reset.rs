//! After a participant leaves (released, moved, re-seated): the desktop stopped and their
//! files moved aside, so the next participant starts clean and nothing is lost.

use std::path::{Path, PathBuf};

/// Moves the desktop folder to `<its parent>/lablink-previous/<time>-<name>` and leaves an
/// empty one; the folder it went to, or `None` when there was nothing to keep.
pub fn move_files_aside(desktop_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let has_files = std::fs::read_dir(desktop_dir).is_ok_and(|mut d| d.next().is_some());
    if !has_files {
        std::fs::create_dir_all(desktop_dir)?;
        return Ok(None);
    }
    let parent = desktop_dir.parent().unwrap_or_else(|| Path::new("."));
    let keep = parent.join("lablink-previous");
    std::fs::create_dir_all(&keep)?;
    let name = desktop_dir
        .file_name()
        .map_or_else(|| "Desktop".into(), |n| n.to_string_lossy().into_owned());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let target = keep.join(format!("{stamp}-{name}"));
    std::fs::rename(desktop_dir, &target)?;
    std::fs::create_dir_all(desktop_dir)?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_moved_aside_and_the_desktop_left_empty() {
        let home = tempfile::tempdir().expect("tempdir");
        let desktop = home.path().join("Desktop");
        std::fs::create_dir_all(desktop.join("project")).expect("mkdir");
        std::fs::write(desktop.join("project/labels.slp"), "work").expect("write");
        let kept = move_files_aside(&desktop).expect("move").expect("moved");
        assert_eq!(
            std::fs::read_to_string(kept.join("project/labels.slp")).expect("kept"),
            "work"
        );
        assert!(
            std::fs::read_dir(&desktop)
                .expect("desktop")
                .next()
                .is_none()
        );
        assert_eq!(move_files_aside(&desktop).expect("again"), None);
    }
}
