//! The participants' files (`*.<machine.extension>` from each VM's desktop) gathered into
//! one zip, `<hostname>/<path on the desktop>`: fetched by the provider (SSH for Terraform
//! VMs) a few VMs at a time within the export budget, into a scratch folder that is gone
//! once the zip is open. Audited.

use std::path::Path;

use futures_util::StreamExt;

use super::{Actor, Pool, PoolError};
use crate::fetch_budget::{Budget, Share, free_bytes};
use crate::store::vms;

/// VMs fetched from at once.
const PARALLEL: usize = 8;

/// The zip, open (its folder is already gone), and when it was made.
pub struct Collected {
    pub zip: std::fs::File,
    /// `YYYYMMDD_HHMMSS`, for the download's name.
    pub stamp: String,
}

pub async fn collect(pool: &Pool, actor: &Actor) -> Result<Collected, PoolError> {
    let listed = pool
        .store
        .read(vms::list)
        .await
        .map_err(PoolError::store("Failed to read the pool."))?;
    if listed.is_empty() {
        return Err(PoolError::NotFound("No VMs found in the database.".into()));
    }
    // A name stored by an older LabLink is not trusted as a folder name: `..` would
    // lead out of the scratch folder.
    let (hosts, misnamed): (Vec<String>, Vec<String>) = listed
        .into_iter()
        .map(|vm| vm.hostname)
        .partition(|host| crate::model::validate_hostname(host).is_ok());
    let extension = pool.config.machine.extension.clone();
    let data_dir = pool.config.data_dir();
    let free = free_bytes(&data_dir).map_err(|e| {
        PoolError::Failed(format!(
            "cannot read the free space of {}: {e}",
            data_dir.display()
        ))
    })?;
    let budget = Budget::new(&pool.config, free);
    let stamp = pool.clock.now().format("%Y%m%d_%H%M%S").to_string();
    let scratch = data_dir
        .join("exports")
        .join(format!("{stamp}-{}", crate::store::meta::random_secret()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| PoolError::Failed(format!("cannot make a scratch folder: {e}")))?;

    let mut failures: Vec<String> = misnamed
        .iter()
        .map(|host| format!("{host:?}: not a valid hostname; its files were not fetched"))
        .collect();
    let budget = &budget;
    let fetched: Vec<String> = futures_util::stream::iter(hosts.clone())
        .map(|host| {
            let (into, ext) = (scratch.join(&host), extension.clone());
            async move { fetch_one(pool, budget, &host, &ext, &into).await }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    failures.extend(fetched);

    let zip_path = scratch.join("lablink_data.zip");
    let zipped = {
        let (root, hosts, ext, report, path) = (
            scratch.clone(),
            hosts.clone(),
            extension.clone(),
            failures.clone(),
            zip_path.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let out = std::fs::File::create(&path)?;
            let count = crate::export::zip_collected(&root, &hosts, &ext, &report, out)?;
            Ok::<_, std::io::Error>((count, std::fs::File::open(&path)?))
        })
        .await
        .map_err(|e| PoolError::Failed(e.to_string()))
        .and_then(|r| r.map_err(|e| PoolError::Failed(format!("cannot write the zip: {e}"))))
    };
    // The open file stays readable after its folder is removed.
    let _ = std::fs::remove_dir_all(&scratch);
    let (count, file) = zipped?;
    pool.audit_by(
        actor,
        "download-data",
        format!(
            "{count} .{extension} file(s) from {} VM(s){}",
            hosts.len(),
            if failures.is_empty() {
                String::new()
            } else {
                format!("; not fetched: {}", failures.join("; "))
            }
        ),
    )
    .await;
    if count == 0 {
        return Err(if failures.is_empty() {
            PoolError::NotFound(format!("No {extension} files found in any VMs."))
        } else {
            PoolError::Failed(format!(
                "No {extension} files could be fetched; {}",
                failures.join("; ")
            ))
        });
    }
    for failure in &failures {
        tracing::warn!(%failure, "participant files not fetched from a VM");
    }
    Ok(Collected { zip: file, stamp })
}

/// Fetches the files of one VM within its share of the budget; the report's line when
/// they are missing.
async fn fetch_one(
    pool: &Pool,
    budget: &Budget,
    host: &str,
    extension: &str,
    into: &Path,
) -> Option<String> {
    let Share::Fetch(share) = budget.share().await else {
        return Some(budget.total_line(host));
    };
    let fetched = pool
        .provisioner
        .collect_files(host, extension, into, share)
        .await;
    let over = matches!(fetched, Ok(bytes) if bytes > share);
    let folder = into.to_path_buf();
    let kept = tokio::task::spawn_blocking(move || {
        if over {
            let _ = std::fs::remove_dir_all(&folder);
        }
        crate::export::size_under(&folder)
    })
    .await
    .unwrap_or(share);
    let skipped = budget.settle(host, share, kept, over);
    match fetched {
        Err(why) => Some(format!("{host}: {why}")),
        Ok(_) => skipped,
    }
}
