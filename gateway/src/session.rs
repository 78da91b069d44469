//! The dashboard's login sessions: what the `/ui/login` form hands out and `auth` accepts
//! besides basic authentication.
//!
//! A session is a random token in an `HttpOnly; SameSite=Strict` cookie. The gateway keeps
//! each session in memory (never on disk, so a restart logs everyone out): the token's first
//! half names it, the second half is compared in constant time, and it ends after
//! [`IDLE_TIMEOUT`] without use or [`LIFETIME`] after login, whichever comes first. Each
//! session carries its own CSRF token, which the dashboard's script sends in
//! [`CSRF_HEADER`] on every write; a cookie-authenticated write without it is refused.
//!
//! Tokens are never logged and never leave the process except in the cookie itself. The
//! store is bounded ([`MAX_SESSIONS`]): when full, the least recently used session ends.
//!
//! Knows cookies and time; nothing of routes, functions or the credentials themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{HeaderMap, header};

/// The cookie's name.
pub(crate) const COOKIE: &str = "courier_session";

/// The header the dashboard's script sends the session's CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-courier-csrf";

/// How long a session lasts after login at most.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How long a session lasts without a request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// Most sessions kept at once.
pub(crate) const MAX_SESSIONS: usize = 256;

/// Bytes of the part of a token that names its session.
const ID_BYTES: usize = 16;
/// Bytes of the part of a token that proves it.
const SECRET_BYTES: usize = 16;

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The operating system gave no random bytes.
    #[error("no randomness available for a session token: {0}")]
    Randomness(getrandom::Error),
}

/// One logged-in browser.
struct Session {
    secret: [u8; SECRET_BYTES],
    csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < LIFETIME
            && now.saturating_duration_since(self.last_used) < IDLE_TIMEOUT
    }
}

/// A session just made: the cookie's value (its CSRF token is what [`Sessions::check`]
/// answers).
#[derive(Clone)]
pub(crate) struct NewSession {
    /// The cookie's value.
    pub(crate) token: String,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSession(<redacted>)")
    }
}

/// The sessions of one gateway.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<[u8; ID_BYTES], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(<redacted>)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], SessionError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(SessionError::Randomness)?;
    Ok(bytes)
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token's id and secret, or `None` when it is not one of ours.
fn split(token: &str) -> Option<([u8; ID_BYTES], [u8; SECRET_BYTES])> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if bytes.len() != ID_BYTES + SECRET_BYTES {
        return None;
    }
    let (id, secret) = bytes.split_at(ID_BYTES);
    Some((id.try_into().ok()?, secret.try_into().ok()?))
}

impl Sessions {
    /// Starts a session at `now`.
    pub(crate) fn create(&self, now: Instant) -> Result<NewSession, SessionError> {
        let id: [u8; ID_BYTES] = random()?;
        let secret: [u8; SECRET_BYTES] = random()?;
        let csrf = encode(&random::<16>()?);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| s.alive(now));
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
        {
            live.remove(&oldest);
        }
        live.insert(
            id,
            Session {
                secret,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        let mut token = id.to_vec();
        token.extend_from_slice(&secret);
        Ok(NewSession {
            token: encode(&token),
        })
    }

    /// The CSRF token of the live session `token` names, marking it used at `now`; `None`
    /// when there is no such session (unknown, wrong secret, expired).
    pub(crate) fn check(&self, token: &str, now: Instant) -> Option<String> {
        let (id, secret) = split(token)?;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let session = live.get_mut(&id)?;
        if !crate::auth::constant_time_eq(&session.secret, &secret) {
            return None;
        }
        if !session.alive(now) {
            live.remove(&id);
            return None;
        }
        session.last_used = now;
        Some(session.csrf.clone())
    }

    /// Ends the session `token` names (logout); whether there was one.
    pub(crate) fn end(&self, token: &str) -> bool {
        let Some((id, secret)) = split(token) else {
            return false;
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(&id) {
            Some(s) if crate::auth::constant_time_eq(&s.secret, &secret) => {
                live.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// How many sessions are kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The session cookie's value in a request, if it carries one.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// Whether the request reached the gateway over TLS, as far as it can tell: a TLS-terminating
/// proxy in front says so with `X-Forwarded-Proto: https` or `Forwarded: proto=https` (the
/// gateway itself serves plain HTTP). Only ever makes the cookie stricter.
pub(crate) fn came_over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .filter_map(|p| p.trim().split_once('='))
                .any(|(k, v)| {
                    k.eq_ignore_ascii_case("proto")
                        && v.trim_matches('"').eq_ignore_ascii_case("https")
                })
        });
    forwarded_proto || forwarded
}

/// The `Set-Cookie` value that hands `token` to the browser.
pub(crate) fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_session_is_found_by_its_token_and_only_by_it() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let new = sessions.create(now).unwrap();
        let csrf = sessions.check(&new.token, now).unwrap();
        assert_eq!(sessions.check(&new.token, now), Some(csrf.clone()));
        let other = sessions.create(now).unwrap();
        assert_ne!(new.token, other.token);
        assert_ne!(Some(csrf), sessions.check(&other.token, now));
        // Same id, another secret.
        let mut forged = split(&new.token).unwrap();
        forged.1[0] ^= 1;
        let forged = encode(&[&forged.0[..], &forged.1[..]].concat());
        assert_eq!(sessions.check(&forged, now), None);
        assert_eq!(sessions.check("", now), None);
        assert_eq!(sessions.check("not base64 at all!", now), None);
        assert!(!sessions.end(&forged));
        assert!(sessions.end(&new.token));
        assert_eq!(sessions.check(&new.token, now), None);
        assert!(sessions.check(&other.token, now).is_some());
    }

    #[test]
    fn a_session_ends_when_idle_or_old() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let new = sessions.create(start).unwrap();
        let idle = start + IDLE_TIMEOUT;
        assert_eq!(sessions.check(&new.token, idle), None);

        let kept = sessions.create(start).unwrap();
        let mut now = start;
        while now + IDLE_TIMEOUT / 2 < start + LIFETIME {
            now += IDLE_TIMEOUT / 2;
            assert!(sessions.check(&kept.token, now).is_some(), "{now:?}");
        }
        assert_eq!(sessions.check(&kept.token, start + LIFETIME), None);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_least_recently_used() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.create(start).unwrap();
        let second = sessions.create(start + Duration::from_secs(1)).unwrap();
        // The first is used again, so the second is the least recently used.
        assert!(
            sessions
                .check(&first.token, start + Duration::from_secs(2))
                .is_some()
        );
        for i in 0..MAX_SESSIONS - 1 {
            sessions
                .create(start + Duration::from_secs(3 + i as u64))
                .unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let later = start + Duration::from_secs(600);
        assert!(sessions.check(&first.token, later).is_some());
        assert_eq!(sessions.check(&second.token, later), None);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; courier_session=tok; z=1"),
        );
        assert_eq!(cookie(&headers), Some("tok"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        let plain = set_cookie("t", false);
        assert!(plain.starts_with("courier_session=t; Path=/; HttpOnly; SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));

        let mut headers = HeaderMap::new();
        assert!(!came_over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(came_over_tls(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https;host=x"),
        );
        assert!(came_over_tls(&headers));
        headers.insert(header::FORWARDED, HeaderValue::from_static("proto=http"));
        assert!(!came_over_tls(&headers));
    }

    #[test]
    fn debug_hides_the_tokens() {
        let sessions = Sessions::default();
        let new = sessions.create(Instant::now()).unwrap();
        assert!(!format!("{new:?}").contains(&new.token));
        let csrf = sessions.check(&new.token, Instant::now()).unwrap();
        let shown = format!("{sessions:?}");
        assert!(!shown.contains(&csrf) && !shown.contains(&new.token));
    }
}
