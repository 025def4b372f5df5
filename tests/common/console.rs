//! The review console's side of the test bed: its options (a reviewer network, the console on
//! 8443), a reviewer's login through the real browser (WebAuthn), curl with and without the
//! login cookie, and the bastion's peak memory. Used by tests/console.rs and the console
//! benchmark.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Env, Options, stdout};

pub const HOST: &str = "console.stapsteen.test";
pub const CONSOLE_IP: &str = "10.77.3.1";
pub const IDLE_SECONDS: u64 = 20;

pub fn console_options(extra_policy: &str) -> Options {
    let soon = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap())
        .strftime("%Y-%m-%d %H:%M");
    Options {
        reviewer_network: true,
        extra_config: format!(
            "reviewer_networks = [\"10.77.3.0/24\"]\n[console]\nlisten = [\"0.0.0.0:8443\"]\nhost = \"{HOST}\"\nidle_timeout = \"{IDLE_SECONDS}s\"\n"
        ),
        extra_policy: format!(
            "[[grant]]\nname = \"short-notice\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nvalid_until = \"{soon}\"\n\n\
             [[reviewer]]\nname = \"c.visser\"\nfull_name = \"Claire Visser, CISO office\"\n\n{extra_policy}"
        ),
        ..Options::default()
    }
}

/// curl against the console from a namespace; returns (exit code, HTTP status or 000, body).
pub fn curl(env: &Env, ns: &str, args: &[&str]) -> (i32, String, String) {
    let body = env.path("curl-body");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sk", "--max-time", "5"])
        .args(["--resolve", &format!("{HOST}:8443:{CONSOLE_IP}")])
        .args(["-o", body.to_str().unwrap(), "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        stdout(&out),
        std::fs::read_to_string(&body).unwrap_or_default(),
    )
}

pub fn url(path: &str) -> String {
    format!("https://{HOST}:8443{path}")
}

pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
/// The bastion's peak resident memory (KiB) since the last [`reset_peak`].
pub fn peak_rss(env: &Env) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.bastion_pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sets the bastion's peak resident memory back to what it holds now.
pub fn reset_peak(env: &Env) {
    std::fs::write(format!("/proc/{}/clear_refs", env.bastion_pid()), "5").unwrap();
}

/// Enrols a key for c.visser and logs in with it in the browser (WebAuthn); the login cookie.
pub fn browser_login(env: &Env, spki: &str) -> String {
    let enrol = env.cli(&["console", "enrol", "c.visser"]);
    assert!(enrol.status.success(), "{}", super::stderr(&enrol));
    let cookie_file = env.path("cookie");
    let login = Command::new("ip")
        .args(["netns", "exec", env.ns_reviewer.as_ref().unwrap(), "node"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/console.mjs"
        ))
        .env("CONSOLE_URL", url(""))
        .env("CONSOLE_IP", CONSOLE_IP)
        .env("SPKI", spki)
        .env("REVIEWER", "c.visser")
        .env("CODE", stdout(&enrol).trim())
        .env("ARTIFACTS", artifacts())
        .env("COOKIE_OUT", &cookie_file)
        .output()
        .unwrap();
    let failed: Vec<String> = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "CONSOLE_LOGIN_FAILED" || e["code"] == "CONSOLE_REFUSED")
        .map(|e| e.to_string())
        .collect();
    assert!(
        login.status.success(),
        "{}{}\n{failed:?}",
        stdout(&login),
        super::stderr(&login)
    );
    std::fs::read_to_string(&cookie_file).unwrap()
}

/// curl from the reviewer network with a login cookie, to a file; (exit code, HTTP status).
pub fn curl_logged_in(
    env: &Env,
    cookie: &str,
    max_time: u32,
    path: &str,
    out: &Path,
) -> (i32, String) {
    let ns = env.ns_reviewer.clone().unwrap();
    let done = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-skN", "--max-time"])
        .arg(max_time.to_string())
        .args(["--resolve", &format!("{HOST}:8443:{CONSOLE_IP}")])
        .args(["-H", &format!("Cookie: __Host-stapsteen={cookie}")])
        .args([
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &url(path),
        ])
        .output()
        .unwrap();
    (done.status.code().unwrap_or(-1), stdout(&done))
}
