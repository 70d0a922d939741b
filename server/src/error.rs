//! The API's error: a status, a stable code word and a message, answered as JSON
//! (`{"error": "code", "message": "…"}`). The full cause chain goes to the log, not the client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::storage::StorageError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code word.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds the client should wait (429, 503).
    pub retry_after: Option<u64>,
    /// The methods a resource allows (405).
    pub allow: Option<&'static str>,
    /// The device a refused upload request came from, once its manifest's signature verified
    /// (never from an unverified claim): the metrics middleware, which counts refusals, also
    /// counts them per device for the console.
    pub device: Option<String>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
            device: None,
        }
    }

    /// This error, refusing a request of the device `id` (whose signature verified), unless it
    /// names one already.
    pub fn of_device(mut self, id: &str) -> Self {
        self.device.get_or_insert_with(|| id.to_owned());
        self
    }

    /// 400 `bad_id`.
    pub fn bad_id(what: &str) -> Self {
        Self::new(400, "bad_id", format!("{what} is not a valid id"))
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, "not_found", what)
    }

    /// 500 `internal`, logging the cause.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(cause = %chain, "internal error");
        Self::new(500, "internal", "internal error; it was logged")
    }
}

/// A storage that is busy or out of reach for now answers 503 with `Retry-After` (clients and
/// load balancers try again); every other storage failure is internal.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => {
                tracing::warn!(cause = %e, "storage unavailable");
                let mut answer = Self::new(
                    503,
                    "storage_unavailable",
                    "the server's storage is busy or out of reach; try again in a few seconds",
                );
                answer.retry_after = Some(5);
                answer
            }
            e => Self::internal(&e),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal(&e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.insert_header(("Tus-Resumable", "1.0.0"));
        r.insert_header(("Cache-Control", "no-store"));
        if let Some(methods) = self.allow {
            r.insert_header(("Allow", methods));
        }
        if let Some(secs) = self.retry_after {
            r.insert_header(("Retry-After", secs.to_string()));
        }
        r.json(serde_json::json!({ "error": self.code, "message": self.message }))
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[test]
    fn an_unavailable_storage_answers_503_with_retry_after_and_a_broken_one_500() {
        let busy = ApiError::from(StorageError::Unavailable("database is locked".into()));
        assert_eq!(
            (busy.status.as_u16(), busy.code, busy.retry_after),
            (503, "storage_unavailable", Some(5))
        );
        assert!(!busy.message.contains("locked"), "the cause stays in the log");
        let broken = ApiError::from(StorageError::Corrupt("bad row".into()));
        assert_eq!(
            (broken.status.as_u16(), broken.code, broken.retry_after),
            (500, "internal", None)
        );
    }
}
