// The review console's browser side: WebAuthn enrolment and login, and the player.
// WebAuthn options and answers travel as JSON through the browser's own
// PublicKeyCredential.parse*OptionsFromJSON and credential.toJSON().
"use strict";

function say(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

async function post(url, body) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(answer.error || res.statusText);
  return answer;
}

function field(id) {
  return document.getElementById(id).value.trim();
}

function onSubmit(id, run) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await run();
    } catch (err) {
      say(err.message);
    }
  });
}

onSubmit("enrol", async () => {
  const code = field("code");
  say("Touch your security key…");
  const start = await post("/enrol/start", { name: field("name"), code });
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(start.options.publicKey);
  const credential = await navigator.credentials.create({ publicKey });
  await post("/enrol/finish", { ceremony: start.ceremony, code, credential: credential.toJSON() });
  say("Enrolled. You can log in now.");
  document.getElementById("enrol").replaceChildren();
});

onSubmit("login", async () => {
  say("Touch your security key…");
  const start = await post("/login/start", { name: field("name") });
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(start.options.publicKey);
  const credential = await navigator.credentials.get({ publicKey });
  await post("/login/finish", { ceremony: start.ceremony, credential: credential.toJSON() });
  location.assign("/sessions");
});

const player = document.getElementById("player");
if (player) {
  const live = player.dataset.live;
  const source = live ? { driver: "eventsource", url: live } : player.dataset.src;
  window.stapsteenPlayer = AsciinemaPlayer.create(source, player, {
    markers: JSON.parse(player.dataset.markers || "[]"),
    autoPlay: Boolean(live),
    fit: "width",
  });
}
