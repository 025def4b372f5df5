//! Static files, all in the binary: the player from its npm package (see build.rs) and the
//! console's own small script and style sheet. Nothing is fetched from elsewhere.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "asciinema-player.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!(concat!(
            env!("STAPSTEEN_PLAYER_DIR"),
            "/asciinema-player.min.js"
        )),
    ),
    (
        "asciinema-player.css",
        "text/css; charset=utf-8",
        include_bytes!(concat!(
            env!("STAPSTEEN_PLAYER_DIR"),
            "/asciinema-player.css"
        )),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("web/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("web/console.css"),
    ),
];

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, kind, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    res
}
