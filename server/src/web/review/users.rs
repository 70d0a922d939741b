//! The console's accounts page (`/review/users`): admins add, disable and reset accounts with
//! the rules of `hattama-server user` (`review::create_user`, `review::reset_password`,
//! `ReviewStorage::disable_user`, each writing its own audit event); a console event names the
//! admin who asked. A new password is generated and shown once, on the answer to the form
//! (never in a URL, never stored in clear). Supervisors read the list; coordinators get 403.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::console::admin;
use super::pages::private;
use super::{Reviewer, reviewer};
use crate::console;
use crate::review::{self, ReviewError};
use crate::startup::AppState;
use crate::storage::StorageError;
use crate::storage::review::{NewAudit, NewUser, Role};
use crate::web::{Lang, PageCtx, WebError, html, see_other};

struct UserRow {
    username: String,
    name: String,
    role: &'static str,
    regions: String,
    disabled: bool,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    ctx: PageCtx,
    can_admin: bool,
    users: Vec<UserRow>,
    form: UserForm,
    /// A generated password to hand over once: (user name, password).
    password: Option<(String, String)>,
    done: Option<String>,
    error: Option<String>,
}

/// The add form (and the disable and reset forms, which carry `username` only).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    regions: String,
}

fn role_id(role: Role) -> &'static str {
    match role {
        Role::Admin => "role-admin",
        Role::Coordinator => "role-coordinator",
        Role::Supervisor => "role-supervisor",
    }
}

async fn users_page(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    r: &Reviewer,
    form: UserForm,
    password: Option<(String, String)>,
    done: Option<String>,
    error: Option<String>,
) -> Result<HttpResponse, WebError> {
    let storage = state.review.clone();
    let users = web::block(move || storage.users()).await?.map_err(|e| WebError::internal(&e))?;
    let page = UsersPage {
        ctx: r.ctx(req),
        can_admin: console::may_administer(&r.user),
        users: users
            .iter()
            .filter(|u| u.username != crate::observed::IMPORT_USER)
            .map(|u| UserRow {
                username: u.username.clone(),
                name: u.display_name.clone(),
                role: role_id(u.role),
                regions: u.regions.join(", "),
                disabled: u.disabled,
                is_me: u.id == r.user.id,
            })
            .collect(),
        form,
        password,
        done,
        error,
    };
    html(&page).map(private)
}

/// `?done=`.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// `GET /review/users`.
pub async fn users(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, WebError> {
    let r = reviewer(&req, &state).await?;
    if !console::may_read(&r.user) {
        return Err(WebError::Forbidden);
    }
    let lang = Lang::of_request(&req);
    let done = (query.done.as_deref() == Some("disabled")).then(|| lang.t("users-done-disabled"));
    let form = UserForm { role: "coordinator".into(), ..Default::default() };
    users_page(&req, &state, &r, form, None, done, None).await
}

/// Records which admin asked for a change to an account.
async fn record(
    state: &web::Data<AppState>,
    r: &Reviewer,
    action: &str,
    username: &str,
) -> Result<(), WebError> {
    let event = NewAudit {
        at_ms: hattama_core::now_ms(),
        user_id: Some(r.user.id),
        action: action.to_owned(),
        after: Some(serde_json::json!({ "username": username }).to_string()),
        ..Default::default()
    };
    let storage = state.review.clone();
    web::block(move || storage.append_audit(&event)).await?.map_err(|e| WebError::internal(&e))
}

/// What a refusal of the account rules says to the admin.
fn refusal(lang: Lang, e: &ReviewError) -> Result<String, WebError> {
    match e {
        ReviewError::Invalid(m) => Ok(format!("{} {m}", lang.t("users-refused"))),
        // The only conflict of a new account: its name is taken.
        ReviewError::Conflict | ReviewError::Storage(StorageError::Conflict(_)) => {
            Ok(lang.t("users-taken"))
        }
        ReviewError::NotFound(_) => Err(WebError::NotFound),
        other => Err(WebError::internal(other)),
    }
}

/// `POST /review/users`: adds an account with a generated password, shown once.
pub async fn add(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<UserForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    let lang = Lang::of_request(&req);
    let Some(role) = Role::parse(&form.role) else { return Err(WebError::BadRequest) };
    let regions: Vec<String> = form
        .regions
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let new = NewUser {
        username: form.username.trim().to_owned(),
        display_name: form.name.trim().to_owned(),
        role,
        regions,
    };
    let password = review::generate_password();
    let storage = state.review.clone();
    let (n, p) = (new.clone(), password.clone());
    let result =
        web::block(move || review::create_user(&*storage, &n, &p, hattama_core::now_ms())).await?;
    match result {
        Ok(user) => {
            record(&state, &r, "console-user-add", &user.username).await?;
            let done = Some(lang.t("users-done-added"));
            let form = UserForm { role: "coordinator".into(), ..Default::default() };
            users_page(&req, &state, &r, form, Some((user.username, password)), done, None).await
        }
        Err(e) => {
            let message = refusal(lang, &e)?;
            let page = users_page(&req, &state, &r, form, None, None, Some(message)).await?;
            let mut page = page;
            *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(page)
        }
    }
}

/// `POST /review/users/disable`: disables an account and ends its sessions (not one's own).
pub async fn disable(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<UserForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    if form.username == r.user.username {
        let lang = Lang::of_request(&req);
        let error = Some(lang.t("users-not-yourself"));
        let mut page = users_page(&req, &state, &r, UserForm::default(), None, None, error).await?;
        *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(page);
    }
    let storage = state.review.clone();
    let name = form.username.clone();
    let found =
        web::block(move || crate::review::disable_user(&*storage, &name, hattama_core::now_ms()))
            .await?
            .map_err(|e| WebError::internal(&e))?;
    if !found {
        return Err(WebError::NotFound);
    }
    record(&state, &r, "console-user-disable", &form.username).await?;
    Ok(see_other("/review/users?done=disabled"))
}

/// `POST /review/users/reset`: a new generated password (shown once); enables the account and
/// ends its sessions.
pub async fn reset(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<UserForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let r = admin(&req, &state, &form.csrf).await?;
    let lang = Lang::of_request(&req);
    let password = review::generate_password();
    let storage = state.review.clone();
    let (name, p) = (form.username.clone(), password.clone());
    let result =
        web::block(move || review::reset_password(&*storage, &name, &p, hattama_core::now_ms()))
            .await?;
    if let Err(e) = result {
        refusal(lang, &e)?;
        return Err(WebError::BadRequest);
    }
    record(&state, &r, "console-user-reset", &form.username).await?;
    let done = Some(lang.t("users-done-reset"));
    let form2 = UserForm { role: "coordinator".into(), ..Default::default() };
    users_page(&req, &state, &r, form2, Some((form.username, password)), done, None).await
}
