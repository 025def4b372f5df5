// End-to-end test of the review console in Debian's chromium, driven by playwright-core, with
// the browser's virtual authenticator (CTAP2, user verification) for WebAuthn.
// Run by tests/console.rs inside the reviewer namespace; everything comes from the environment:
//   CONSOLE_URL, CONSOLE_IP, SPKI, REVIEWER, CODE, DONE_ID, LIVE_ID, WATCH_ID, FIND, KILL_REASON,
//   IDLE_SECONDS, ARTIFACTS. With COOKIE_OUT it stops after the login and writes the login
//   cookie's value there.
// Prints one "ok: ..." line per check; any failure exits 1 with the reason.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing ${name}`);
  return v;
};
const url = env("CONSOLE_URL");
const host = new URL(url).hostname;
const artifacts = env("ARTIFACTS");
const problems = [];
const check = (cond, what) => {
  if (!cond) throw new Error(`failed: ${what}`);
  console.log(`ok: ${what}`);
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--host-resolver-rules=MAP ${host} ${env("CONSOLE_IP")}`,
    // Trusts exactly the console's self-signed key, as an operator who checked the fingerprint.
    `--ignore-certificate-errors-spki-list=${env("SPKI")}`,
  ],
});
// Requests from inside the page, so that they go the browser's way (name mapping, pinned key,
// cookies, its own Origin header).
const fetchIn = (page, path, init = {}) =>
  page.evaluate(async ([path, init]) => {
    const r = await fetch(path, init);
    const bytes = new Uint8Array(await r.arrayBuffer());
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return { status: r.status, type: r.type, headers: Object.fromEntries(r.headers), body: btoa(bin) };
  }, [path, init]);
const text = (r) => Buffer.from(r.body, "base64").toString();
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });

try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId: authenticator } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "usb",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  // No login, no pages.
  await page.goto(`${url}/sessions`);
  check(new URL(page.url()).pathname === "/login", "without a login /sessions sends to /login");
  const direct = await fetchIn(page, "/login/finish", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ceremony: "made-up", credential: { id: "x", rawId: "eA", type: "public-key", response: { authenticatorData: "eA", clientDataJSON: "eA", signature: "eA" } } }),
  });
  check(direct.status === 403, "a login answer without a WebAuthn ceremony is refused");
  const noCookie = await fetchIn(page, "/sessions/x/cast", { redirect: "manual" });
  check(noCookie.type === "opaqueredirect", "no login, no recordings");

  // Enrolment with the one-time code.
  await page.goto(`${url}/enrol`);
  await page.fill("#name", env("REVIEWER"));
  await page.fill("#code", env("CODE"));
  await page.click("button[type=submit]");
  await page.waitForFunction(() => /Enrolled/.test(document.getElementById("status").textContent), null, { timeout: 15000 });
  check(true, "enrolled a security key with the one-time code");
  await shot(page, "01-enrolled");
  const reuse = await page.evaluate(async ([name, code]) => {
    const r = await fetch("/enrol/start", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, code }) });
    return [r.status, (await r.json()).error];
  }, [env("REVIEWER"), env("CODE")]);
  check(reuse[0] === 403 && /no enrolment code/.test(reuse[1]), `the code cannot be used again (${reuse[1]})`);

  // Login.
  await page.goto(`${url}/login`);
  await shot(page, "02-login");
  await page.fill("#name", env("REVIEWER"));
  await page.click("button[type=submit]");
  await page.waitForURL(`${url}/sessions`, { timeout: 15000 });
  check(true, "logged in with the security key (user verified)");
  const cookies = await context.cookies();
  const c = cookies.find((k) => k.name === "__Host-stapsteen");
  check(c && c.secure && c.httpOnly && c.sameSite === "Strict", "the login cookie is __Host-, Secure, HttpOnly, SameSite=Strict");
  // Only a login, for a test that goes on with curl.
  if (process.env.COOKIE_OUT) {
    writeFileSync(process.env.COOKIE_OUT, c.value);
    await browser.close();
    process.exit(0);
  }

  // Sessions page, filters and full-text search.
  const doneId = env("DONE_ID");
  const liveId = env("LIVE_ID");
  const execId = env("EXEC_ID");
  check(await page.locator(`a[href="/sessions/${doneId}"]`).count() === 1, "the recorded session is listed");
  check(await page.locator(`tr.live a[href="/sessions/${liveId}"]`).count() === 1, "the running session is listed as live");
  const execRow = page.locator("tr", { has: page.locator(`a[href="/sessions/${execId}"]`) });
  check(/sealed/.test(await execRow.textContent()) && /success/.test(await execRow.textContent()), "a session without a terminal is recorded and listed, with its exit status");
  await shot(page, "03-sessions");
  await page.fill("input[name=q]", env("FIND"));
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/q=/);
  check(await page.locator("#sessions tbody tr").count() === 1 && await page.locator(`a[href="/sessions/${doneId}"]`).count() === 1, "full-text search finds exactly the session that printed the text");
  await shot(page, "04-search");
  await page.goto(`${url}/sessions?q=text-that-was-never-printed`);
  check(await page.locator("#sessions tbody tr").count() === 0, "a search for text never printed finds nothing");
  await page.goto(`${url}/sessions?status=live`);
  check(await page.locator("#sessions tbody tr").count() === 2, "the live filter shows only the live sessions (one to end, one to watch)");
  await page.goto(`${url}/sessions?integrity=problem`);
  check(await page.locator("#sessions tbody tr").count() === 0, "no session has an integrity problem");
  await page.goto(`${url}/sessions?admin=alice&from=2000-01-01T00:00&to=2999-01-01T00:00`);
  check(await page.locator("#sessions tbody tr").count() === 5, "admin and time range filters");
  await page.goto(`${url}/sessions?status=success`);
  check(await page.locator("#sessions tbody tr").count() === 3, "the exit status filter");
  await page.goto(`${url}/sessions?from=2999-01-01T00:00`);
  check(await page.locator("#sessions tbody tr").count() === 0, "a time range in the future is empty");

  // Replay with markers and the integrity verdict.
  await page.goto(`${url}/sessions/${doneId}`);
  const verdict = await page.locator("#integrity").textContent();
  check(/sealed/.test(verdict), `the integrity verdict is shown: ${verdict.trim()}`);
  await page.waitForSelector(".ap-player", { timeout: 15000 });
  const markers = await page.locator("ol.markers li").allTextContents();
  check(markers.some((m) => /start:/.test(m)) && markers.some((m) => /end:/.test(m)) && markers.some((m) => /target:/.test(m)), `markers for start, target and end (${markers.length} markers)`);
  check(markers.some((m) => /\$ echo/.test(m)), "a marker for the typed command");
  await page.evaluate(() => window.stapsteenPlayer.play());
  await page.waitForFunction((text) => document.querySelector(".ap-player").textContent.includes(text), env("FIND"), { timeout: 20000 });
  check(true, "the player replays the recorded output");
  await page.evaluate(() => window.stapsteenPlayer.pause());
  await shot(page, "05-replay");
  await page.evaluate(() => window.stapsteenPlayer.seek(0));
  check(await page.evaluate(() => window.stapsteenPlayer.getCurrentTime()) < 1, "seeking works");

  // An sftp session's page lists its file operations.
  await page.goto(`${url}/sessions/${env("SFTP_ID")}`);
  const ops = await page.locator("ol.markers li").allTextContents();
  check(ops.some((m) => /SFTP_OPEN .*SFTP-PUT\.txt/.test(m)) && ops.some((m) => /SFTP_CLOSE .*SFTP-PUT\.txt.*write_bytes=19/.test(m)), `the sftp session lists its file operations (${ops.length} markers)`);

  // Downloads.
  const cast = await fetchIn(page, `/sessions/${doneId}/cast?download=1`);
  check(cast.status === 200 && /attachment/.test(cast.headers["content-disposition"]) && text(cast).includes("FINDME-42"), "the recording downloads as .cast");
  const bundle = await fetchIn(page, `/sessions/${doneId}/evidence`);
  check(bundle.status === 200 && bundle.headers["content-type"] === "application/x-tar", "the evidence bundle downloads");
  writeFileSync(`${artifacts}/evidence.tar`, Buffer.from(bundle.body, "base64"));

  // Path traversal and malformed ids.
  for (const bad of ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fx", "..%2Fstapsteen.toml", "20261123T000000Z-0000000g", "x%00y"]) {
    for (const tail of ["", "/cast", "/evidence"]) {
      const r = await fetchIn(page, `/sessions/${bad}${tail}`);
      if (r.status !== 404 || /root:|listen =/.test(text(r))) throw new Error(`path ${bad}${tail}: ${r.status}`);
    }
  }
  const asset = await fetchIn(page, "/assets/..%2F..%2FCargo.toml");
  check(asset.status === 404, "traversal in recording ids and asset names gives 404 and no file");

  // Access overview.
  await page.goto(`${url}/access`);
  const access = await page.locator("#access").textContent();
  check(/alice/.test(access) && /pacs01/.test(access), "the access overview shows who can reach what");
  check(await page.locator("#access tr.expiring").count() >= 1, "a grant that ends within 24 hours is highlighted");
  await shot(page, "06-access");

  // Live view, then kill with a reason.
  await page.goto(`${url}/sessions/${liveId}`);
  await page.waitForFunction(() => /LIVE-MARK \d+/.test(document.querySelector(".ap-player")?.textContent ?? ""), null, { timeout: 20000 });
  const before = await page.evaluate(() => document.querySelector(".ap-player").textContent.match(/LIVE-MARK (\d+)/g).pop());
  await page.waitForFunction((seen) => {
    const all = document.querySelector(".ap-player").textContent.match(/LIVE-MARK (\d+)/g) ?? [];
    return all.length && all.pop() !== seen;
  }, before, { timeout: 20000 });
  check(true, "the live view follows the running session");
  await shot(page, "07-live");
  await page.click("#kill button");
  // The browser does not submit a form whose required field is empty.
  check(await page.locator("#reason").evaluate((el) => el.validity.valueMissing), "the reason field is required");
  check(/^live/.test((await page.locator("#status").textContent()).trim()), "the kill button needs a reason (the form did not submit)");
  const noReason = await fetchIn(page, `/sessions/${liveId}/kill`, { method: "POST", body: new URLSearchParams({ reason: " " }).toString(), headers: { "content-type": "application/x-www-form-urlencoded" } });
  check(noReason.status === 400, "the server refuses a kill without a reason");
  await page.fill("#reason", env("KILL_REASON"));
  await Promise.all([page.waitForNavigation(), page.click("#kill button")]);
  for (let i = 0; i < 50; i++) {
    await page.goto(`${url}/sessions/${liveId}`);
    if (!/^live/.test((await page.locator("#status").textContent()).trim())) break;
    await page.waitForTimeout(200);
  }
  const ended = await page.locator("#status").textContent();
  check(/ended by reviewer/.test(ended), `the session ended: ${ended.trim()}`);
  await shot(page, "08-killed");

  // Idle expiry, with a live view left open: watching is no activity.
  await page.goto(`${url}/sessions/${env("WATCH_ID")}`);
  await page.waitForFunction(() => /WATCH-MARK \d+/.test(document.querySelector(".ap-player")?.textContent ?? ""), null, { timeout: 20000 });
  await page.waitForTimeout(Number(env("IDLE_SECONDS")) * 1000 + 1500);
  await page.goto(`${url}/sessions`);
  check(page.url().endsWith("/login?why=expired"), "after the idle timeout, a live view left open included, the console asks for a new login");
  await shot(page, "09-expired");

  // A key that does not verify the user (no PIN) does not log in.
  await cdp.send("WebAuthn.setUserVerified", { authenticatorId: authenticator, isUserVerified: false });
  await page.goto(`${url}/login`);
  await page.fill("#name", env("REVIEWER"));
  await page.click("button[type=submit]");
  await page.waitForFunction(() => /verif|not allowed|NotAllowed|timed out/i.test(document.getElementById("status").textContent), null, { timeout: 60000 });
  check(new URL(page.url()).pathname === "/login", `without user verification there is no login (${await page.locator("#status").textContent()})`);

  check(problems.length === 0, `no CSP violations or page errors (${problems.join("; ")})`);
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  if (problems.length) console.log(`page problems: ${problems.join("; ")}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
