//! `GET /api/scp-client`: the participants' files as one zip (upstream's path and
//! answers); `pool::participant_files` gathers them.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::pool::participant_files::{self, Collected};
use crate::server::auth::Admin;
use crate::server::state::App;

pub async fn download(State(app): State<App>, admin: Admin) -> Result<Response, ApiError> {
    admin.not_read_only("collect participants' data from the VMs")?;
    let Collected { zip, stamp } = participant_files::collect(&app.pool, &admin.actor()).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(zip),
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=lablink_data{stamp}.zip"),
            ),
        ],
        body,
    )
        .into_response())
}
