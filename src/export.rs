//! The pool as a download (CSV or JSON): assignments and startup timings for the
//! workshop's records. Chrome Remote Desktop codes and PINs are left out: they are
//! credentials, not records.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::model::Vm;

#[derive(Serialize)]
struct Row<'a> {
    hostname: Cow<'a, str>,
    status: Cow<'a, str>,
    gpu_health: Cow<'a, str>,
    in_use: bool,
    participant_email: Cow<'a, str>,
    assigned_at: String,
    terraform_apply_seconds: Option<f64>,
    cloud_init_seconds: Option<f64>,
    container_seconds: Option<f64>,
    total_startup_seconds: Option<f64>,
    reboot_count: u32,
    created_at: String,
}

fn rows(pool: &[Vm]) -> Vec<Row<'_>> {
    pool.iter()
        .map(|vm| Row {
            hostname: Cow::Borrowed(&vm.hostname),
            status: Cow::Borrowed(vm.status.map_or("", |s| s.as_str())),
            gpu_health: Cow::Borrowed(vm.health.as_ref().map_or("", |h| h.as_str())),
            in_use: vm.in_use,
            participant_email: Cow::Borrowed(
                vm.assignment.as_ref().map_or("", |a| a.email.as_str()),
            ),
            assigned_at: vm
                .assignment
                .as_ref()
                .map_or_else(String::new, |a| a.assigned_at.to_rfc3339()),
            terraform_apply_seconds: vm.timings.terraform_apply.duration_seconds,
            cloud_init_seconds: vm.timings.cloud_init.duration_seconds,
            container_seconds: vm.timings.container.duration_seconds,
            total_startup_seconds: vm
                .timings
                .any_measured()
                .then(|| vm.timings.total_seconds()),
            reboot_count: vm.reboot_count,
            created_at: vm.created_at.to_rfc3339(),
        })
        .collect()
}

/// A text cell a spreadsheet would not run as a formula: one that starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` (OWASP's CSV injection rule).
/// Agents report GPU health as free text, and e-mail addresses may start with `=`.
pub fn spreadsheet_safe(cell: Cow<'_, str>) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        cell
    }
}

pub fn csv(pool: &[Vm]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows(pool) {
        let row = Row {
            hostname: spreadsheet_safe(row.hostname),
            status: spreadsheet_safe(row.status),
            gpu_health: spreadsheet_safe(row.gpu_health),
            participant_email: spreadsheet_safe(row.participant_email),
            ..row
        };
        // Writing plain fields into memory cannot fail.
        let _ = out.serialize(row);
    }
    out.into_inner().unwrap_or_default()
}

pub fn json(pool: &[Vm]) -> Vec<u8> {
    serde_json::to_vec_pretty(&rows(pool)).unwrap_or_default()
}

/// Whether a participant's file at `rel` (relative to the desktop) is exported: named
/// `*.<extension>`, and not inside a `models` or `predictions` folder (trained models and
/// inference output are large and can be made again).
pub fn wanted(rel: &Path, extension: &str) -> bool {
    let named = rel
        .extension()
        .is_some_and(|e| e.to_string_lossy() == extension);
    let excluded = rel.parent().is_some_and(|dir| {
        dir.components()
            .any(|c| matches!(c.as_os_str().to_str(), Some("models" | "predictions")))
    });
    named && !excluded
}

/// Every regular file under `dir`, sorted; symbolic links are not followed.
fn files_under(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the wanted files under `from` to the same relative paths under `into`, and
/// returns how many bytes they take. It stops once more than `max_bytes` are copied
/// (the answer is then above `max_bytes`; what was copied is left for the caller).
pub fn copy_wanted(
    from: &Path,
    into: &Path,
    extension: &str,
    max_bytes: u64,
) -> std::io::Result<u64> {
    use std::io::Read;
    let mut copied = 0u64;
    for path in files_under(from)? {
        let Ok(rel) = path.strip_prefix(from) else {
            continue;
        };
        if wanted(rel, extension) {
            let target = into.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let left = max_bytes - copied;
            let mut source = std::fs::File::open(&path)?.take(left.saturating_add(1));
            copied += std::io::copy(&mut source, &mut std::fs::File::create(&target)?)?;
            if copied > max_bytes {
                break;
            }
        }
    }
    Ok(copied)
}

/// Bytes the regular files under `dir` take (0 when it does not exist).
pub fn size_under(dir: &Path) -> u64 {
    files_under(dir).map_or(0, |files| {
        files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Unpacks the regular files of a tar archive below `into` (entries that would land
/// outside it are skipped) and removes the archive.
pub fn unpack_tar(archive: &Path, into: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(into)?;
    let mut tar = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            entry.unpack_in(into)?;
        }
    }
    std::fs::remove_file(archive)
}

/// Name of the zip entry listing the VMs whose files are missing (`_` is never part of a
/// hostname, so it cannot be a VM's folder).
pub const REPORT_NAME: &str = "_lablink_report.txt";

/// Zips the wanted files of every `<root>/<host>/…` as `<host>/…` into `out`, and the
/// `report` lines (if any) as `REPORT_NAME`; returns how many files went in.
pub fn zip_collected(
    root: &Path,
    hosts: &[String],
    extension: &str,
    report: &[String],
    out: std::fs::File,
) -> std::io::Result<usize> {
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut count = 0;
    for host in hosts {
        let base = root.join(host);
        if !base.is_dir() {
            continue;
        }
        for path in files_under(&base)? {
            let Ok(rel) = path.strip_prefix(&base) else {
                continue;
            };
            if !wanted(rel, extension) {
                continue;
            }
            let name = format!("{host}/{}", rel.to_string_lossy());
            zip.start_file(name, options)
                .map_err(std::io::Error::other)?;
            std::io::copy(&mut std::fs::File::open(&path)?, &mut zip)?;
            count += 1;
        }
    }
    if !report.is_empty() {
        zip.start_file(REPORT_NAME, options)
            .map_err(std::io::Error::other)?;
        for line in report {
            std::io::Write::write_all(&mut zip, format!("{line}\n").as_bytes())?;
        }
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_files_outside_models_and_predictions() {
        let yes = ["labels.slp", "session1/labels.slp", "a/b/c.slp"];
        let no = [
            "labels.txt",
            "slp",
            "models/labels.slp",
            "x/predictions/labels.slp",
            "labels.slp.bak",
        ];
        for p in yes {
            assert!(wanted(Path::new(p), "slp"), "{p}");
        }
        for p in no {
            assert!(!wanted(Path::new(p), "slp"), "{p}");
        }
    }

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_quote() {
        for risky in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(spreadsheet_safe(risky.into()), format!("'{risky}"));
        }
        for plain in ["", "vm-1", "ada@example.org", "'quoted", " =x"] {
            assert_eq!(spreadsheet_safe(plain.into()), plain);
        }
    }
}
