//! Signing in and out: the sign-in page and form (its CSRF token is a double-submit cookie,
//! since there is no session yet), the session cookie, and the throttle on failed attempts.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;

use super::{html, viewer, views, FormData, UiError, UiResult};
use crate::domain::{passwords, tokens};
use crate::http::AppState;
use crate::store::web::NewSession;

/// The session cookie; its value is the session's secret, stored only as a digest.
pub const SESSION_COOKIE: &str = "faultline_session";
/// The sign-in form's CSRF cookie, compared with the form's hidden field.
const SIGN_IN_COOKIE: &str = "faultline_sign_in";
/// How long a session lasts.
const SESSION_DAYS: i64 = 14;

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for `name`: HttpOnly (no script reads it), SameSite=Lax (no other site's form
/// posts carry it), and Secure when the server is reached over https.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.external_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let v =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    // Names and values here are ours (hex), always valid header text.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Where to go after signing in: only a path on this server, never another site.
fn safe_redirect(target: Option<&str>) -> String {
    match target {
        Some(t) if super::is_local_path(t) => t.to_owned(),
        _ => "/".to_owned(),
    }
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> UiResult<Response> {
    let redirect = safe_redirect(query_value(query.as_deref(), "redirect").as_deref());
    if viewer(&state, &headers).await?.is_some() {
        return Ok(super::see_other(&redirect));
    }
    Ok(sign_in_form(&state, StatusCode::OK, &redirect, "", None))
}

/// The sign-in page with a fresh CSRF cookie.
fn sign_in_form(
    state: &AppState,
    status: StatusCode,
    redirect: &str,
    username: &str,
    problem: Option<&str>,
) -> Response {
    let csrf = random_hex();
    let mut resp = html(status, views::sign_in(&csrf, redirect, username, problem));
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, &csrf, 3600),
    );
    resp
}

/// Checked against a made-up hash when the user does not exist, so that the answer takes as
/// long as for a wrong password and does not tell which usernames exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$qLml5cTsrBcY0zPJ0yZ7wTlXGYwTGlFaj7XkEc3IsWk";

pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> UiResult<Response> {
    let form = FormData::read(body).await?;
    let redirect = safe_redirect(form.get("redirect"));
    let field = form.get("csrf").unwrap_or("");
    match cookie(&headers, SIGN_IN_COOKIE) {
        Some(c) if !field.is_empty() && tokens::digests_equal(c.as_bytes(), field.as_bytes()) => {}
        _ => return Err(UiError::Csrf),
    }
    let username = form.get("username").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("").to_owned();
    if let Some(wait) = state.sign_in_throttle.must_wait(&username) {
        let secs = wait.as_secs().max(1);
        let msg = format!("Too many failed sign-ins. Try again in {secs} seconds.");
        let mut resp = sign_in_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &redirect,
            &username,
            Some(&msg),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let found = state.store.password_of(&username).await?;
    let (user, stored) = match found {
        Some((user, Some(hash))) => (Some(user), hash),
        _ => (None, DUMMY_HASH.to_owned()),
    };
    // Argon2 is CPU work by design; off the async threads.
    let ok = tokio::task::spawn_blocking(move || passwords::verify(&password, &stored))
        .await
        .map_err(crate::store::StoreError::from)?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            state.sign_in_throttle.failed(&username);
            tracing::info!("failed web sign-in");
            return Ok(sign_in_form(
                &state,
                StatusCode::UNAUTHORIZED,
                &redirect,
                &username,
                Some("Invalid username or password."),
            ));
        }
    };
    state.sign_in_throttle.succeeded(&username);
    let secret = random_hex();
    state
        .store
        .create_session(NewSession {
            digest: tokens::digest(&secret),
            user_id: user.id,
            csrf: random_hex(),
            expires_at: Utc::now() + chrono::Duration::days(SESSION_DAYS),
        })
        .await?;
    tracing::info!(user_id = user.id, "web sign-in");
    let mut resp = super::see_other(&redirect);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &secret, SESSION_DAYS * 86_400),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, SIGN_IN_COOKIE, "", 0),
    );
    Ok(resp)
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> UiResult<Response> {
    let (_, form) = super::signed_form(&state, &headers, "/", body).await?;
    let _ = form;
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(tokens::digest(&secret)).await?;
    }
    let mut resp = super::see_other("/users/sign_in");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", 0),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_this_server() {
        assert_eq!(
            safe_redirect(Some("/a/b/-/error_tracking?x=1")),
            "/a/b/-/error_tracking?x=1"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "javascript:x",
            "",
        ] {
            assert_eq!(safe_redirect(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_redirect(None), "/");
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; faultline_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
