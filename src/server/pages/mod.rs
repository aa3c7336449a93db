//! HTML pages.

pub mod accounts;
pub mod admin;
pub mod allocator_log;
pub mod api_tokens;
pub mod classroom;
pub mod desktop;
pub mod event;
pub mod login;
pub mod participant;
pub mod report;
pub mod rescue;
pub mod seat;
pub mod session_metrics;
pub mod wall;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::PageError;
use crate::server::api::{ApiForm, ApiPath};

/// Path parameters of a page: a bad one answers an error page.
pub struct PagePath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PagePath<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let ApiPath(value) = ApiPath::from_request_parts(parts, state).await?;
        Ok(PagePath(value))
    }
}

/// A urlencoded form posted to a page: one that cannot be read answers an error page.
pub struct PageForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let ApiForm(value) = ApiForm::from_request(req, state).await?;
        Ok(PageForm(value))
    }
}
