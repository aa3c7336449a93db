//! `GET /admin/allocator-log?level=…`: the allocator's own newest log lines.

use maud::Markup;

use crate::error::{ApiError, PageError};
use crate::logging::ring;
use crate::server::api::ApiQuery;
use crate::server::api::allocator_log::level_and_limit;
use crate::server::auth::Admin;
use crate::server::sse::AllocatorLogFrom;
use crate::views::admin::allocator_log;

/// Lines the page shows at first; newer ones stream in.
const SHOWN: usize = 1000;

pub async fn page(
    admin: Admin,
    query: Result<ApiQuery<AllocatorLogFrom>, ApiError>,
) -> Result<Markup, PageError> {
    let ApiQuery(q) = query?;
    let (level, _) = level_and_limit(q.level.as_deref(), None)?;
    let (lines, next) = ring().read(level, None, SHOWN);
    let viewer = admin.viewer(chrono::Utc::now());
    Ok(allocator_log::page(&viewer, level, &lines, next))
}
