//! The witness's HTTP interface: the submission prefix (`POST /add-checkpoint`) and the
//! monitoring prefix (`GET /logs`, `GET /checkpoint?origin=…`), both at the root.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};
use hattama_core::witness::{Refusal, SIZE_CONTENT_TYPE, size_body};
use serde_json::json;

use crate::store::{Store, StoreError};

/// Largest add-checkpoint body accepted: a checkpoint note with a few signatures and 63 proof
/// lines fit many times over.
pub const MAX_BODY: usize = 64 * 1024;

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message }))
}

async fn add_checkpoint(store: web::Data<Arc<Store>>, body: web::Bytes) -> HttpResponse {
    let store = Arc::clone(&store);
    let result = web::block(move || store.add_checkpoint(&body)).await;
    match result {
        Ok(Ok(line)) => HttpResponse::Ok().content_type(ContentType::plaintext()).body(line),
        Ok(Err(StoreError::Refused(r))) => {
            tracing::info!(status = r.status(), refusal = %r, "add-checkpoint refused");
            match r {
                Refusal::Conflict { latest } | Refusal::OtherRoot { latest } => {
                    HttpResponse::Conflict().content_type(SIZE_CONTENT_TYPE).body(size_body(latest))
                }
                Refusal::BadRequest(m) => error(StatusCode::BAD_REQUEST, "bad_request", &m),
                Refusal::UnknownLog(_) => error(
                    StatusCode::NOT_FOUND,
                    "unknown_log",
                    "this witness does not witness the checkpoint's log (origin)",
                ),
                Refusal::BadSignature => error(
                    StatusCode::FORBIDDEN,
                    "bad_signature",
                    "no signature on the checkpoint verifies under the log's key",
                ),
                Refusal::BadProof => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_proof",
                    "the consistency proof does not verify: the checkpoint does not extend the \
                     one this witness cosigned",
                ),
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "add-checkpoint failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the witness failed; retry later")
        }
        Err(e) => {
            tracing::error!(error = %e, "add-checkpoint task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the witness failed; retry later")
        }
    }
}

async fn logs(store: web::Data<Arc<Store>>) -> HttpResponse {
    let store = Arc::clone(&store);
    match web::block(move || store.logs()).await {
        Ok(Ok(logs)) => HttpResponse::Ok().json(
            logs.iter()
                .map(|l| {
                    json!({
                        "origin": l.origin,
                        "vkey": l.vkey,
                        "size": l.latest.as_ref().map(|x| x.0),
                        "time": l.latest.as_ref().map(|x| x.2),
                        "checkpoint": l.latest.as_ref().map(|x| String::from_utf8_lossy(&x.1)),
                        "refused": l.refused,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        _ => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the witness failed; retry later")
        }
    }
}

#[derive(serde::Deserialize)]
struct OriginQuery {
    origin: String,
}

async fn checkpoint(store: web::Data<Arc<Store>>, q: web::Query<OriginQuery>) -> HttpResponse {
    let store = Arc::clone(&store);
    match web::block(move || store.logs()).await {
        Ok(Ok(logs)) => match logs.into_iter().find(|l| l.origin == q.origin) {
            Some(l) => match l.latest {
                Some((_, note, _)) => {
                    HttpResponse::Ok().content_type(ContentType::plaintext()).body(note)
                }
                None => {
                    error(StatusCode::NOT_FOUND, "nothing_cosigned", "no checkpoint cosigned yet")
                }
            },
            None => error(
                StatusCode::NOT_FOUND,
                "unknown_log",
                "this witness does not witness that log",
            ),
        },
        _ => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the witness failed; retry later")
        }
    }
}

async fn identity(store: web::Data<Arc<Store>>) -> HttpResponse {
    let key = store.cosigner().public();
    HttpResponse::Ok().json(json!({ "name": key.name(), "vkey": key.vkey() }))
}

/// Serves the witness on an already bound listener until the process ends.
pub async fn serve(store: Store, listener: TcpListener) -> std::io::Result<()> {
    let store = web::Data::new(Arc::new(store));
    HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/", web::get().to(identity))
            .route("/add-checkpoint", web::post().to(add_checkpoint))
            .route("/logs", web::get().to(logs))
            .route("/checkpoint", web::get().to(checkpoint))
    })
    .workers(2)
    .listen(listener)?
    .run()
    .await
}
