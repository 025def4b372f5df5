//! The review console: HTTPS for the security team, served by `stapsteen serve`.
//!
//! Invariants:
//! - TLS 1.3 only; every response carries HSTS, a strict CSP and no-sniff/no-frame headers.
//! - Every page except login, enrolment and the static assets needs a console login. Only a
//!   WebAuthn assertion with user verification, from a key enrolled for a reviewer named in the
//!   policy in force, gives one. It ends after `idle_timeout` without a request (a live view is
//!   none), at logout, or when the reviewer is no longer in the policy.
//! - Requests other than GET must carry the console's own `Origin`.
//! - Recording ids from URLs are parsed into [`SessionId`] before they touch the file system.
//! - Request bodies and headers are bounded in size and in time; connections that do not finish
//!   the TLS handshake in time, or stop reading their answers, are closed.
//! - Every console action is an audit event (`CONSOLE_*`), naming the reviewer and the source.

mod assets;
mod auth;
pub(crate) mod catalog;
mod enrolment;
mod evidence;
pub mod index;
mod live;
mod logins;
mod pages;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::{Full, Slots};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use webauthn_rs::prelude::{PasskeyAuthentication, PasskeyRegistration, Url, Uuid};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::app::Bastion;
use crate::audit::{Code, Event};
use crate::ids::SessionId;
use crate::policy::ReviewerName;

pub use enrolment::{Reviewers, code_hash, new_code};
use logins::{COOKIE, Check, Logins, Pending};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console TLS: {0}")]
    Tls(String),
    #[error("console WebAuthn setup: {0}")]
    WebAuthn(String),
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Largest request body: WebAuthn answers and forms are a few KiB.
const MAX_BODY: usize = 64 * 1024;
/// Most of a too large body read (and dropped) so that its 413 reaches the client.
const MAX_DRAIN: usize = 1024 * 1024;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once, and from one source (IPv4 address or IPv6 /64); more are closed
/// at once (`CONSOLE_REFUSED`), so one source cannot hold every connection.
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_SOURCE: usize = 32;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request head (hyper's header timeout) and, after it, for its body.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an answer may wait for a client that stopped reading; then the connection is closed
/// (see [`crate::net::Stall`]).
const WRITE_STALL: Duration = Duration::from_secs(30);

/// An enrolment waiting for the browser: who, under which user handle, the WebAuthn state.
type Enrolling = (ReviewerName, Uuid, PasskeyRegistration);

/// The console's state, shared by its handlers.
pub struct Console {
    pub shared: Arc<Bastion>,
    webauthn: Webauthn,
    logins: Logins,
    enrolling: Pending<Enrolling>,
    logging_in: Pending<(ReviewerName, PasskeyAuthentication)>,
    /// Serialises changes to the reviewer files.
    reviewers: tokio::sync::Mutex<Reviewers>,
    origins: Vec<String>,
    index: Arc<index::Index>,
}

type App = Arc<Console>;

impl Console {
    /// The login behind a cookie's token, counted as activity; a reviewer who is no longer in
    /// the policy in force loses it.
    fn check_login(&self, token: &str) -> Check {
        let policy = self.shared.policy();
        self.logins
            .check(token, |r| policy.reviewer(r.as_str()).is_some())
    }

    /// The same, for a live view: not counted as activity.
    fn watch_login(&self, token: &str) -> Check {
        let policy = self.shared.policy();
        self.logins
            .peek(token, |r| policy.reviewer(r.as_str()).is_some())
    }
}

/// The reviewer a request is logged in as; put there by [`require_login`].
#[derive(Clone)]
pub struct Reviewer(pub ReviewerName);

/// Where the request came from, for audit events.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What `stapsteen check` verifies: a configured certificate and key load and belong together.
/// (A self-signed certificate is made by the daemon on first start, not here.)
pub fn check(config: &crate::config::Config) -> Result<(), ConsoleError> {
    match &config.console {
        Some(c) if c.cert.is_some() => tls::Identity::load(c, &config.console_dir())?
            .server_config()
            .map(|_| ()),
        _ => Ok(()),
    }
}

/// Binds the console's listeners and starts serving; returns the tasks.
pub async fn start(shared: Arc<Bastion>) -> Result<Vec<tokio::task::JoinHandle<()>>, ConsoleError> {
    let Some(config) = shared.config.console.clone() else {
        return Ok(Vec::new());
    };
    // `serve` has made it, with the other state directories.
    let dir = shared.config.console_dir();
    let identity = tls::Identity::load(&config, &dir)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config()?);
    let rp_origin = Url::parse(&format!("https://{}", config.host))
        .map_err(|e| ConsoleError::WebAuthn(e.to_string()))?;
    let webauthn = WebauthnBuilder::new(&config.host, &rp_origin)
        .and_then(|b| {
            b.rp_name("stapsteen review console")
                .allow_any_port(true)
                .build()
        })
        .map_err(|e| ConsoleError::WebAuthn(e.to_string()))?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleError::Listen {
                addr: *addr,
                source,
            })?;
        listeners.push(l);
    }
    let origins = config
        .listen
        .iter()
        .map(|a| match a.port() {
            443 => format!("https://{}", config.host),
            p => format!("https://{}:{p}", config.host),
        })
        .collect();
    let index = Arc::new(index::Index::open(
        &shared.config.index_path(),
        shared.audit.path(),
        shared.store.clone(),
        shared.audit.verifier().clone(),
    )?);
    let clock = shared.clock.clone();
    let app: App = Arc::new(Console {
        logins: Logins::new(clock.clone(), config.idle_timeout),
        enrolling: Pending::new(clock.clone()),
        logging_in: Pending::new(clock),
        reviewers: tokio::sync::Mutex::new(Reviewers::new(dir)),
        webauthn,
        origins,
        index: index.clone(),
        shared,
    });
    let router = router(app.clone());
    let limit = Arc::new(Slots::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE));
    let mut tasks = vec![tokio::spawn(keep_index(index))];
    let mut addrs = Vec::new();
    for l in listeners {
        if let Ok(a) = l.local_addr() {
            addrs.push(a.to_string());
        }
        tasks.push(tokio::spawn(accept_loop(
            l,
            acceptor.clone(),
            router.clone(),
            limit.clone(),
        )));
    }
    Event::new(Code::ConsoleStart)
        .fingerprint(&identity.fingerprint)
        .detail("listen", addrs)
        .detail("url", app.origins.first().cloned().unwrap_or_default())
        .detail("spki_sha256", identity.spki_sha256.clone())
        .emit();
    eprintln!(
        "review console: {} (certificate SHA-256 {})",
        app.origins.first().map_or("", String::as_str),
        identity.fingerprint
    );
    Ok(tasks)
}

fn router(app: App) -> Router {
    let private = Router::new()
        .route("/", get(|| async { Redirect::to("/sessions") }))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{id}", get(pages::session))
        .route("/sessions/{id}/cast", get(evidence::cast))
        .route("/sessions/{id}/evidence", get(evidence::bundle))
        .route("/sessions/{id}/live", get(live::stream))
        .route("/sessions/{id}/kill", post(live::kill))
        .route("/access", get(pages::access))
        .route("/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_login));
    Router::new()
        .route("/login", get(pages::login))
        .route("/enrol", get(pages::enrol))
        .route("/login/start", post(auth::login_start))
        .route("/login/finish", post(auth::login_finish))
        .route("/enrol/start", post(auth::enrol_start))
        .route("/enrol/finish", post(auth::enrol_finish))
        .route("/assets/{name}", get(assets::serve))
        .merge(private)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// How often the index reads what is new in the chain (so pages find little left to read) and
/// how often it looks for recordings changed on disk.
const INDEX_TICK: Duration = Duration::from_secs(5);
const INDEX_SWEEP: Duration = Duration::from_secs(60);

/// Keeps the index up to date in the background: a long backlog (the first build, years of
/// history) is read here in steps, never by a page view, which reads only a small budget.
async fn keep_index(index: Arc<index::Index>) {
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(INDEX_TICK);
    loop {
        tick.tick().await;
        let sweep = last_sweep.is_none_or(|t| t.elapsed() >= INDEX_SWEEP);
        let idx = index.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), index::IndexError> {
            while idx.update(index::STEP)?.more {}
            if sweep {
                idx.sweep()?;
            }
            Ok(())
        })
        .await;
        match done {
            Ok(Ok(())) => {
                if sweep {
                    last_sweep = Some(tokio::time::Instant::now());
                }
            }
            Ok(Err(e)) => tracing::warn!("console index: {e}"),
            Err(e) => tracing::warn!("console index: {e}"),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    limit: Arc<Slots>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("console accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match limit.take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                Event::new(Code::ConsoleRefused)
                    .source(Some(peer))
                    .reason(match full {
                        Full::Total => "too many connections",
                        Full::Source => "too many connections from this source",
                    })
                    .emit();
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tcp = crate::net::Stall::new(tcp, WRITE_STALL);
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts.extensions.insert(ConnectInfo(peer));
                    let body = match read_body(body).await {
                        Ok(b) => b,
                        Err(refused) => return Ok(refused),
                    };
                    router
                        .oneshot(Request::from_parts(parts, axum::body::Body::from(body)))
                        .await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A request's whole body, read before any handler runs: at most [`MAX_BODY`] bytes within
/// [`BODY_TIMEOUT`], so a slow or endless body cannot hold a connection (and its place among
/// [`MAX_CONNECTIONS`]). Of a larger body up to [`MAX_DRAIN`] bytes are read and thrown away
/// before the 413: closing a connection with unread data makes the kernel reset it, and the
/// reset can overtake the answer, so the client would never see why it was refused.
async fn read_body(body: hyper::body::Incoming) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        with_headers(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or broken",
            )
                .into_response(),
        )
    };
    // A declared length past what is drained gets its answer at once: reading cannot save it.
    if usize::try_from(hyper::body::Body::size_hint(&body).lower()).map_or(true, |n| n > MAX_DRAIN)
    {
        return Err(too_large());
    }
    let read = async {
        let mut body = body;
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| too_large())?.into_data() else {
                continue; // trailers
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > MAX_DRAIN {
                break;
            } else {
                kept = Vec::new();
            }
        }
        if seen > MAX_BODY {
            return Err(too_large());
        }
        Ok(axum::body::Bytes::from(kept))
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(read) => read,
        Err(_) => Err(with_headers(
            (StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response(),
        )),
    }
}

const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// For every request: reviewer networks, same-origin state changes, security headers.
async fn guard(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let fw = &app.shared.config.firewall;
    let refuse = |status: StatusCode, why: &str| {
        Event::new(Code::ConsoleRefused)
            .source(Some(peer))
            .reason(why)
            .detail(
                "path",
                req.uri().path().chars().take(200).collect::<String>(),
            )
            .emit();
        with_headers((status, why.to_owned()).into_response())
    };
    // The kernel drops these already; this is the second lock on the same door.
    if fw.enabled && !fw.reviewer_networks.iter().any(|n| n.contains(&peer.ip())) {
        return refuse(StatusCode::FORBIDDEN, "not from a reviewer network");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| app.origins.iter().any(|ok| ok == o)) {
            return refuse(
                StatusCode::FORBIDDEN,
                "request not from the console's own origin",
            );
        }
    }
    req.extensions_mut().insert(Peer(peer));
    with_headers(next.run(req).await)
}

fn with_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in [
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "publickey-credentials-get=(self), publickey-credentials-create=(self), camera=(), microphone=(), geolocation=()",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// The login token from the request's cookie.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// A cookie that the browser drops at once.
fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-stapsteen=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Lets a request through only with a valid login of a reviewer in the policy in force.
async fn require_login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = token(req.headers()).map(str::to_owned);
    let check = token
        .as_deref()
        .map_or(Check::Unknown, |t| app.check_login(t));
    let event = |code: Code, why: &str| {
        Event::new(code).source(Some(peer)).reason(why).detail(
            "path",
            req.uri().path().chars().take(200).collect::<String>(),
        )
    };
    let why = match check {
        Check::Valid(name) => {
            req.extensions_mut().insert(Reviewer(name));
            return next.run(req).await;
        }
        Check::Removed(name) => {
            event(Code::ConsoleExpired, "reviewer no longer in the policy")
                .detail("reviewer", name.to_string())
                .emit();
            "removed"
        }
        Check::Expired(name) => {
            event(
                Code::ConsoleExpired,
                "idle for longer than the console's idle timeout",
            )
            .detail("reviewer", name.to_string())
            .emit();
            "expired"
        }
        Check::Unknown => {
            event(Code::ConsoleRefused, "not logged in").emit();
            "login"
        }
    };
    let mut res = if req.method() == Method::GET {
        Redirect::to(&format!("/login?why={why}")).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "log in first").into_response()
    };
    if token.is_some() {
        res.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    }
    res
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// A logged-in reviewer's request about one session, from `/sessions/{id}...`. An id that does
/// not parse is audited and answered 404 before any handler runs.
pub struct SessionRequest {
    pub id: SessionId,
    pub reviewer: Reviewer,
    pub peer: Peer,
}

impl axum::extract::FromRequestParts<App> for SessionRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &App,
    ) -> Result<Self, Response> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(IntoResponse::into_response)?;
        let (Some(reviewer), Some(peer)) = (
            parts.extensions.get::<Reviewer>().cloned(),
            parts.extensions.get::<Peer>().copied(),
        ) else {
            return Err((StatusCode::UNAUTHORIZED, "log in first").into_response());
        };
        let Some(id) = SessionId::parse(&raw) else {
            action(Code::ConsoleRefused, &reviewer, peer)
                .reason("not a session id")
                .detail("id", raw.chars().take(100).collect::<String>())
                .emit();
            return Err(no_session());
        };
        Ok(Self { id, reviewer, peer })
    }
}

fn no_session() -> Response {
    (StatusCode::NOT_FOUND, "no such session").into_response()
}

/// An audit event for a reviewer's action.
fn action(code: Code, reviewer: &Reviewer, peer: Peer) -> Event {
    Event::new(code)
        .source(Some(peer.0))
        .detail("reviewer", reviewer.0.to_string())
}
