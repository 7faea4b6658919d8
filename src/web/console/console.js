// pa-auth admin console: System Configuration > API Tokens.
// Plain script, no dependencies, served from the binary under a strict CSP. Every value that
// came from a user (token names, audit fields) is put into the page with textContent, never
// as HTML.
"use strict";

const state = {
  csrf: null,
  username: null,
  tokens: [],
  sort: { key: "created", dir: -1 },
  filter: "",
  ownerFilter: "",
  page: 0,
  pageSize: 50,
  deleting: null,
  rotating: null,
  endingPrevious: null,
  auditCursor: null,
  detail: null,
  detailAuditCursor: null,
  bulkPreview: null,
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `Request failed (${status})`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, body) {
  const headers = { "X-Requested-With": "pa-console" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!response.ok) {
    if (response.status === 401 && path !== "/admin/api/session") showLogin("Your session ended. Sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

// ---- time display: local time, UTC on hover -------------------------------------------
function timeCell(cell, iso, emptyText) {
  if (!iso) {
    cell.textContent = emptyText;
    return;
  }
  const d = new Date(iso);
  cell.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  cell.title = iso.replace("T", " ").replace("Z", " UTC");
}

// ---- expiry: the day the admin chose, in UTC ------------------------------------------
// A date picked in the create dialog is stored as the first second the token stops working,
// the next midnight UTC (2999-12-31 → 3000-01-01T00:00:00Z). Shown is the last second it
// works, in UTC whatever the browser's time zone: "Dec 31, 2999 (end of day UTC)". An
// expiry set through the API to another instant shows that instant in UTC.
const UTC_DATE = new Intl.DateTimeFormat("en-US", { timeZone: "UTC", month: "short", day: "numeric", year: "numeric" });
const UTC_TIME = new Intl.DateTimeFormat("en-US", { timeZone: "UTC", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const DAY_MS = 86400000;

function utcDateTime(iso) {
  const d = new Date(iso);
  return `${UTC_DATE.format(d)}, ${UTC_TIME.format(d)} UTC`;
}

function expiryText(iso) {
  const ends = new Date(iso);
  if (ends.getTime() % DAY_MS === 0) return `${UTC_DATE.format(new Date(ends.getTime() - 1000))} (end of day UTC)`;
  return utcDateTime(iso);
}

// Whole UTC days from today to the token's last working day (0 = it ends today).
function daysLeft(iso, nowMs) {
  const lastDay = Math.floor((new Date(iso).getTime() - 1000) / DAY_MS);
  return lastDay - Math.floor(nowMs / DAY_MS);
}

function badge(className, text, title) {
  const b = document.createElement("span");
  b.className = className;
  b.textContent = text;
  if (title) b.title = title;
  return b;
}

// Fills an Expiration cell: the date, then "Expired", "Expires in N days" (within 7 days)
// and the lifetime-policy badge. The same in the list and on the detail page.
function expiryCell(cell, token) {
  cell.replaceChildren();
  const date = document.createElement("span");
  date.className = "expiry";
  if (!token.expiresAt) {
    date.textContent = "Never";
    cell.append(date);
  } else {
    date.textContent = expiryText(token.expiresAt);
    date.title = `Stops working at ${token.expiresAt.replace("T", " ").replace("Z", " UTC")}`;
    cell.append(date);
    if (token.status === "expired") {
      cell.append(" ", badge("badge", "Expired"));
    } else {
      const days = daysLeft(token.expiresAt, Date.now());
      if (days <= 7) {
        const text = days <= 0 ? "Expires today" : `Expires in ${days} day${days === 1 ? "" : "s"}`;
        cell.append(" ", badge("badge soon", text));
      }
    }
  }
  if (token.policy) {
    // Made before the server's lifetime policy and outside it: flagged, still working.
    cell.append(" ", badge("badge policy",
      token.policy === "violates-require-expiry" ? "No expiry (policy)" : "Over max lifetime",
      "Outside this server's token lifetime policy; it still works until an admin deletes it."));
  }
}

const OLD_SECRET_END_HINT = "At the latest: an overlap chosen as 'until the new secret is first used' ends at that use.";

// "Rotating — old secret works until …" and the old secret's last use (the stragglers).
function rotationSummary(previous) {
  const used = previous.lastUsedAt
    ? `last used ${new Date(previous.lastUsedAt).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })}`
    : "not used since the new secret";
  return `Rotating — old secret works until ${utcDateTime(previous.expiresAt)}; ${used}`;
}

function showNotice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

// ---- views ----------------------------------------------------------------------------
function showLogin(message) {
  state.csrf = null;
  state.tokens = [];
  $("app-view").hidden = true;
  $("account").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  $("login-username").focus();
}

function showApp(session) {
  state.csrf = session.csrfToken;
  state.username = session.username;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("account").hidden = false;
  $("whoami").textContent = `Signed in as ${session.username}`;
  $("initial-banner").hidden = !session.initialPassword;
  route();
}

// ---- routing: #/tokens (the list), #/audit, #/tokens/<id> (a token's page) -------------
// A hash route, so back, forward and reload work with no server routes of their own.
function route() {
  if (!state.csrf) return;
  const hash = location.hash;
  const detail = /^#\/tokens\/([^/]+)$/.exec(hash);
  let id = null;
  try {
    id = detail && decodeURIComponent(detail[1]);
  } catch (_) {
    id = detail[1]; // malformed escapes: the API answers 404 for it
  }
  if (id) {
    showDetail(id);
  } else {
    selectTab(hash === "#/audit" ? "audit" : "tokens");
  }
}

// A tab sets the hash; choosing the tab already shown reloads it.
function goTo(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function selectTab(which) {
  const tokens = which === "tokens";
  state.detail = null;
  $("detail-panel").hidden = true;
  $("tokens-panel").hidden = !tokens;
  $("audit-panel").hidden = tokens;
  $("tab-tokens").setAttribute("aria-selected", String(tokens));
  $("tab-audit").setAttribute("aria-selected", String(!tokens));
  if (tokens) loadTokens();
  else loadAudit(true);
}

// After a change to one token: the list, and the token's page when it is open.
function refreshAfterChange(id) {
  loadTokens();
  if (state.detail && state.detail.id === id) loadDetail(id);
}

// ---- tokens list ----------------------------------------------------------------------
async function loadTokens() {
  $("list-error").textContent = "";
  try {
    const all = [];
    let cursor = null;
    do {
      const query = cursor ? `?limit=1000&cursor=${encodeURIComponent(cursor)}` : "?limit=1000";
      const page = await api("GET", `/admin/api/tokens${query}`);
      all.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    state.tokens = all;
    renderTokens();
  } catch (e) {
    if (e.status !== 401) $("list-error").textContent = e.message;
  }
}

function sortValue(token, key) {
  if (key === "name") return token.name.toLocaleLowerCase();
  if (key === "owner") return (token.owner || "").toLocaleLowerCase();
  if (key === "lastUsed") return token.lastUsedAt || "";
  return token.createdAt;
}

function visibleTokens() {
  const filter = state.filter.trim().toLocaleLowerCase();
  const ownerFilter = state.ownerFilter.trim().toLocaleLowerCase();
  const list = state.tokens.filter((t) =>
    (!filter || t.name.toLocaleLowerCase().includes(filter)) &&
    (!ownerFilter || (t.owner || "").toLocaleLowerCase().includes(ownerFilter)));
  const { key, dir } = state.sort;
  list.sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    return x < y ? -dir : x > y ? dir : 0;
  });
  return list;
}

function renderTokens() {
  const list = visibleTokens();
  const pages = Math.max(1, Math.ceil(list.length / state.pageSize));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * state.pageSize;
  const rows = $("token-rows");
  rows.replaceChildren();
  for (const token of list.slice(start, start + state.pageSize)) {
    const tr = document.createElement("tr");
    tr.dataset.id = token.id;
    if (token.status === "expired") tr.classList.add("expired");

    const name = document.createElement("td");
    name.className = "name";
    name.dataset.label = "Name";
    const link = document.createElement("a");
    link.href = `#/tokens/${encodeURIComponent(token.id)}`;
    link.textContent = token.name;
    name.append(link);
    if (token.access === "read") {
      name.append(" ", badge("badge readonly", "read-only", "Only GET, HEAD and OPTIONS requests"));
    }
    if (token.allowedCidrs && token.allowedCidrs.length) {
      name.append(" ", badge("badge network", "network", `Only from ${token.allowedCidrs.join(", ")}`));
    }
    if (token.description) name.title = token.description;
    tr.append(name);

    const created = document.createElement("td");
    created.dataset.label = "Created";
    timeCell(created, token.createdAt, "");
    tr.append(created);

    const expires = document.createElement("td");
    expires.dataset.label = "Expiration";
    expires.className = "expires";
    expiryCell(expires, token);
    tr.append(expires);

    const used = document.createElement("td");
    used.dataset.label = "Last used";
    used.className = "last-used";
    timeCell(used, token.lastUsedAt, "Never");
    tr.append(used);

    const owner = document.createElement("td");
    owner.className = "owner";
    owner.dataset.label = "Owner";
    owner.textContent = token.owner || "—";
    tr.append(owner);

    // Empty unless an old secret still works (the mobile layout hides an empty cell).
    const rotation = document.createElement("td");
    rotation.className = "rotation";
    rotation.dataset.label = "Rotation";
    if (token.previousSecret) {
      const text = document.createElement("span");
      text.className = "rotation-state";
      text.textContent = rotationSummary(token.previousSecret).replace(/^Rotating/, "");
      rotation.title = OLD_SECRET_END_HINT;
      rotation.append(badge("badge previous", "Rotating"), text);
    }
    tr.append(rotation);

    const actions = document.createElement("td");
    actions.className = "row-actions";
    const rotate = document.createElement("button");
    rotate.type = "button";
    rotate.className = "rotate";
    rotate.textContent = "Rotate";
    rotate.setAttribute("aria-label", `Rotate token ${token.name}`);
    rotate.addEventListener("click", () => openRotate(token));
    actions.append(rotate, " ");
    const del = document.createElement("button");
    del.type = "button";
    del.className = "danger delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete token ${token.name}`);
    del.addEventListener("click", () => openDelete(token));
    actions.append(del);
    tr.append(actions);
    rows.append(tr);
  }
  $("empty-state").hidden = list.length > 0;
  $("empty-state").textContent = state.tokens.length ? "No API tokens match the filter." : "No API tokens yet.";
  $("page-info").textContent = `Page ${state.page + 1} of ${pages} · ${list.length} token${list.length === 1 ? "" : "s"}`;
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = state.page >= pages - 1;
  for (const button of document.querySelectorAll("button.sort")) {
    const active = button.dataset.sort === state.sort.key;
    button.closest("th").setAttribute("aria-sort", active ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

// ---- create ---------------------------------------------------------------------------
const CREATE_ERRORS = ["token-name-error", "token-expiry-error", "token-owner-error", "token-description-error", "token-cidrs-error", "token-access-error", "create-error"];

// The prefixes typed one per line (commas and spaces also separate them).
function cidrList(text) {
  return text.split(/[\s,]+/).filter((s) => s.length > 0);
}

function openCreate() {
  $("create-form").reset();
  for (const id of CREATE_ERRORS) $(id).textContent = "";
  $("create-fields").hidden = false;
  $("secret-view").hidden = true;
  $("secret-value").value = "";
  $("create-dialog").showModal();
  $("token-name").focus();
}

function forgetSecret() {
  $("secret-value").value = "";
  $("secret-name").textContent = "";
}

async function submitCreate(event) {
  event.preventDefault();
  for (const id of CREATE_ERRORS) $(id).textContent = "";
  const name = $("token-name").value;
  if (!name.trim()) {
    $("token-name-error").textContent = "Name is required";
    $("token-name").focus();
    return;
  }
  const body = { name };
  if ($("token-expiry").value) body.expiresAt = $("token-expiry").value;
  if ($("token-owner").value.trim()) body.owner = $("token-owner").value;
  if ($("token-description").value.trim()) body.description = $("token-description").value;
  const cidrs = cidrList($("token-cidrs").value);
  if (cidrs.length) body.allowedCidrs = cidrs;
  if ($("token-access").value === "read") body.access = "read";
  $("create-submit").disabled = true;
  try {
    const created = await api("POST", "/admin/api/tokens", body);
    $("create-fields").hidden = true;
    $("secret-view").hidden = false;
    $("secret-name").textContent = created.name;
    $("secret-value").value = created.token;
    $("secret-value").select();
    $("copy-secret").focus();
    loadTokens();
  } catch (e) {
    showFieldErrors(e, {
      name: "token-name-error",
      expiresAt: "token-expiry-error",
      owner: "token-owner-error",
      description: "token-description-error",
      allowedCidrs: "token-cidrs-error",
      access: "token-access-error",
    }, "create-error");
  } finally {
    $("create-submit").disabled = false;
  }
}

function showFieldErrors(error, fieldMap, generalId) {
  const fields = (error.body && error.body.errors) || [];
  let placed = false;
  for (const f of fields) {
    // `allowedCidrs[2]`: the list's field, naming the line.
    const indexed = /^(\w+)\[(\d+)\]$/.exec(f.field);
    const target = fieldMap[f.field] || (indexed && fieldMap[indexed[1]]);
    if (target) {
      $(target).textContent = indexed ? `Line ${Number(indexed[2]) + 1}: ${f.message}` : f.message;
      placed = true;
    }
  }
  if (!placed) $(generalId).textContent = error.message;
}

async function copySecret() {
  const value = $("secret-value").value;
  try {
    await navigator.clipboard.writeText(value);
  } catch (_) {
    $("secret-value").select();
    document.execCommand("copy");
  }
  $("copy-secret").textContent = "Copied";
  setTimeout(() => { $("copy-secret").textContent = "Copy"; }, 2000);
}

// ---- rotate ---------------------------------------------------------------------------
function openRotate(token) {
  state.rotating = token;
  $("rotate-form").reset();
  $("rotate-name").textContent = token.name;
  $("rotate-error").textContent = "";
  $("rotate-fields").hidden = false;
  $("rotate-secret-view").hidden = true;
  $("rotate-secret-value").value = "";
  $("rotate-dialog").showModal();
  $("rotate-overlap").focus();
}

function forgetRotatedSecret() {
  $("rotate-secret-value").value = "";
  $("rotate-secret-name").textContent = "";
}

async function submitRotate(event) {
  event.preventDefault();
  const token = state.rotating;
  if (!token) return;
  $("rotate-error").textContent = "";
  $("rotate-submit").disabled = true;
  try {
    const rotated = await api("POST", `/admin/api/tokens/${encodeURIComponent(token.id)}/rotate`,
      { overlap: $("rotate-overlap").value });
    $("rotate-fields").hidden = true;
    $("rotate-secret-view").hidden = false;
    $("rotate-secret-name").textContent = rotated.name;
    $("rotate-secret-value").value = rotated.token;
    $("rotate-secret-value").select();
    $("rotate-done").focus();
    refreshAfterChange(token.id);
  } catch (e) {
    $("rotate-error").textContent = e.message;
  } finally {
    $("rotate-submit").disabled = false;
  }
}

// ---- delete ---------------------------------------------------------------------------
function openDelete(token) {
  state.deleting = token;
  $("delete-name").textContent = token.name;
  $("delete-error").textContent = "";
  $("delete-dialog").showModal();
  $("delete-cancel").focus();
}

async function confirmDelete() {
  const token = state.deleting;
  if (!token) return;
  $("delete-confirm").disabled = true;
  try {
    await api("DELETE", `/admin/api/tokens/${encodeURIComponent(token.id)}`);
    $("delete-dialog").close();
    state.tokens = state.tokens.filter((t) => t.id !== token.id);
    renderTokens();
    showNotice(`Deleted token ${token.name}.`);
    if (state.detail && state.detail.id === token.id) location.hash = "#/tokens";
  } catch (e) {
    $("delete-error").textContent = e.message;
  } finally {
    $("delete-confirm").disabled = false;
  }
}

// ---- leak response: revoke pasted values, bulk delete after a preview -----------------
function openRevoke() {
  $("revoke-form").reset();
  $("revoke-values-error").textContent = "";
  $("revoke-error").textContent = "";
  $("revoke-fields").hidden = false;
  $("revoke-result").hidden = true;
  $("revoke-list").replaceChildren();
  $("revoke-dialog").showModal();
  $("revoke-values").focus();
}

function forgetRevokeValues() {
  $("revoke-values").value = "";
}

function resultItem(token) {
  const li = document.createElement("li");
  const name = document.createElement("strong");
  name.textContent = token.name;
  const id = document.createElement("span");
  id.className = "mono";
  id.textContent = ` ${token.id}`;
  li.append(name, id);
  return li;
}

async function submitRevoke(event) {
  event.preventDefault();
  $("revoke-values-error").textContent = "";
  $("revoke-error").textContent = "";
  const values = $("revoke-values").value.split("\n").filter((line) => line.trim() !== "");
  if (values.length === 0 || values.length > 1000) {
    $("revoke-values-error").textContent = "Paste 1 to 1000 values, one a line.";
    $("revoke-values").focus();
    return;
  }
  $("revoke-submit").disabled = true;
  try {
    const result = await api("POST", "/admin/api/tokens/revoke", { tokens: values });
    forgetRevokeValues();
    const n = result.revoked.length;
    const parts = [`${n} token${n === 1 ? "" : "s"} revoked`];
    if (result.unknown) parts.push(`${result.unknown} not known (never issued here, or already deleted)`);
    if (result.malformed) {
      parts.push(result.malformed === 1 ? "1 value not a pa-auth token" : `${result.malformed} values not pa-auth tokens`);
    }
    if (result.duplicates) parts.push(`${result.duplicates} duplicate${result.duplicates === 1 ? "" : "s"}`);
    if (result.failed.length) parts.push(`${result.failed.length} could not be deleted: retry`);
    $("revoke-summary").textContent = parts.join(", ") + ".";
    $("revoke-list").replaceChildren(...result.revoked.map(resultItem), ...result.failed.map(resultItem));
    $("revoke-fields").hidden = true;
    $("revoke-result").hidden = false;
    $("revoke-done").focus();
    if (n) loadTokens();
  } catch (e) {
    showFieldErrors(e, { tokens: "revoke-values-error" }, "revoke-error");
  } finally {
    $("revoke-submit").disabled = false;
  }
}

function bulkFilter() {
  const filter = {};
  if ($("bulk-owner").value.trim()) filter.owner = $("bulk-owner").value;
  if ($("bulk-prefix").value.trim()) filter.namePrefix = $("bulk-prefix").value;
  if ($("bulk-created").value) filter.createdBefore = $("bulk-created").value;
  if ($("bulk-unused").value) filter.unusedForDays = Number($("bulk-unused").value);
  if ($("bulk-never").checked) filter.neverUsed = true;
  if ($("bulk-all").checked) filter.all = true;
  return filter;
}

function resetBulkPreview() {
  state.bulkPreview = null;
  $("bulk-preview").hidden = true;
  $("bulk-sample").replaceChildren();
  $("bulk-confirm").disabled = true;
  $("bulk-confirm").textContent = "Delete";
}

function openBulk() {
  $("bulk-form").reset();
  $("bulk-error").textContent = "";
  resetBulkPreview();
  $("bulk-dialog").showModal();
  $("bulk-owner").focus();
}

async function previewBulk(event) {
  if (event) event.preventDefault();
  $("bulk-error").textContent = "";
  resetBulkPreview();
  const filter = bulkFilter();
  $("bulk-dry-run").disabled = true;
  try {
    const result = await api("POST", "/admin/api/tokens/bulk-delete", { ...filter, dryRun: true });
    state.bulkPreview = { filter, count: result.count };
    $("bulk-count").textContent = `${result.count} token${result.count === 1 ? "" : "s"} selected` +
      (result.count > result.sample.length ? `; the newest ${result.sample.length}:` : (result.count ? ":" : "."));
    $("bulk-sample").replaceChildren(...result.sample.map(resultItem));
    $("bulk-preview").hidden = false;
    if (result.count > 0) {
      $("bulk-confirm").disabled = false;
      $("bulk-confirm").textContent = `Delete ${result.count} token${result.count === 1 ? "" : "s"}`;
    }
  } catch (e) {
    const fields = (e.body && e.body.errors) || [];
    $("bulk-error").textContent = fields.length ? fields.map((f) => f.message).join(" ") : e.message;
  } finally {
    $("bulk-dry-run").disabled = false;
  }
}

async function confirmBulk() {
  const preview = state.bulkPreview;
  if (!preview) return;
  $("bulk-confirm").disabled = true;
  try {
    const result = await api("POST", "/admin/api/tokens/bulk-delete",
      { ...preview.filter, dryRun: false, confirmCount: preview.count, confirmSelection: preview.selection });
    $("bulk-dialog").close();
    showNotice(`Deleted ${result.deleted} token${result.deleted === 1 ? "" : "s"}.` +
      (result.failed.length ? ` ${result.failed.length} could not be deleted.` : ""));
    loadTokens();
  } catch (e) {
    resetBulkPreview();
    $("bulk-error").textContent = e.status === 409
      ? `${e.message} Nothing was deleted.`
      : e.message;
  }
}

// ---- a token's page: its fields, rotation state, actions and audit trail ----------------
function showDetail(id) {
  $("tokens-panel").hidden = true;
  $("audit-panel").hidden = true;
  $("tab-tokens").setAttribute("aria-selected", "true");
  $("tab-audit").setAttribute("aria-selected", "false");
  $("detail-panel").hidden = false;
  $("detail-body").hidden = true;
  state.detail = { id };
  loadDetail(id);
}

async function loadDetail(id) {
  $("detail-error").textContent = "";
  let token;
  try {
    token = await api("GET", `/admin/api/tokens/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e.status === 404) $("detail-error").textContent = "No such token: it may have been deleted.";
    else if (e.status !== 401) $("detail-error").textContent = e.message;
    $("detail-body").hidden = true;
    return;
  }
  if (!state.detail || state.detail.id !== id) return; // navigated away meanwhile
  state.detail = token;
  renderDetail(token);
  loadDetailUsage(token.id);
  loadDetailAudit(true);
}

function renderDetail(token) {
  $("detail-body").hidden = false;
  $("detail-title").textContent = token.name;
  document.title = `${token.name} — API Tokens — Permission Assist`;
  $("detail-id").textContent = token.id;
  $("detail-owner").textContent = token.owner || "—";
  $("detail-description").textContent = token.description || "—";
  timeCell($("detail-created"), token.createdAt, "");
  expiryCell($("detail-expires"), token);
  timeCell($("detail-last-used"), token.lastUsedAt, "Never");
  $("detail-access").textContent = token.access === "read"
    ? "Read-only (GET, HEAD and OPTIONS)" : "Full";
  $("detail-cidrs").textContent = token.allowedCidrs && token.allowedCidrs.length
    ? token.allowedCidrs.join("\n") : "Any address";
  $("edit-cidrs").value = (token.allowedCidrs || []).join("\n");
  $("edit-access").value = token.access === "read" ? "read" : "full";
  for (const id of RESTRICTION_ERRORS) $(id).textContent = "";
  $("restrictions-saved").textContent = "";
  const previous = token.previousSecret;
  $("detail-previous").hidden = !previous;
  $("detail-previous-hint").hidden = !previous;
  $("detail-end-previous").hidden = !previous;
  if (previous) {
    $("detail-rotation-state").textContent = "Rotating — the new secret and the old one both work until the old one ends.";
    $("detail-previous-until").textContent = utcDateTime(previous.expiresAt);
    $("detail-previous-until").title = OLD_SECRET_END_HINT;
    timeCell($("detail-previous-used"), previous.lastUsedAt, "Not used since the rotation");
  } else {
    $("detail-rotation-state").textContent = "Not rotating: only the current secret works.";
  }
}

// ---- a token's usage: requests per day as a bar chart, and its last client addresses ----
const SVG_NS = "http://www.w3.org/2000/svg";

async function loadDetailUsage(id) {
  $("usage-error").textContent = "";
  let usage;
  try {
    usage = await api("GET", `/admin/api/tokens/${encodeURIComponent(id)}/usage`);
  } catch (e) {
    if (e.status !== 401) $("usage-error").textContent = e.message;
    return;
  }
  if (!state.detail || state.detail.id !== id) return;
  renderUsageChart(usage.days, usage.total);
  renderUsageAddresses(usage.addresses);
}

function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

// An inline SVG of one bar per day (geometry as SVG attributes, colours from console.css:
// the CSP allows no inline style). Each bar carries a <title> (the tooltip and its name for
// assistive technology); the chart as a whole is one labelled image.
function renderUsageChart(days, total) {
  const width = 900, height = 100, step = width / days.length;
  const peak = days.reduce((m, d) => Math.max(m, d.count), 0);
  const busiest = days.find((d) => d.count === peak);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const label = total === 0
    ? `Requests per day, last ${days.length} days: none`
    : `Requests per day, last ${days.length} days: ${plural(total, "request", "requests")} in all, at most ${peak.toLocaleString()} on ${busiest.date}`;
  svg.setAttribute("aria-label", label);
  days.forEach((d, i) => {
    const bar = document.createElementNS(SVG_NS, "rect");
    const h = peak === 0 || d.count === 0 ? 1 : Math.max(2, (d.count / peak) * height);
    bar.setAttribute("x", String(i * step + step * 0.1));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(step * 0.8));
    bar.setAttribute("height", String(h));
    bar.setAttribute("class", d.count === 0 ? "bar zero" : "bar");
    bar.dataset.date = d.date;
    bar.dataset.count = String(d.count);
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${d.date}: ${plural(d.count, "request", "requests")}`;
    bar.append(title);
    svg.append(bar);
  });
  $("usage-chart").replaceChildren(svg);
  $("usage-summary").textContent = total === 0
    ? "No requests in the last 90 days."
    : `${plural(total, "request", "requests")} in the last 90 days (UTC).`;
  $("usage-axis-first").textContent = days.length ? days[0].date : "";
  $("usage-axis-last").textContent = days.length ? days[days.length - 1].date : "";
}

function renderUsageAddresses(addresses) {
  const rows = $("usage-addresses");
  rows.replaceChildren();
  for (const a of addresses) {
    const tr = document.createElement("tr");
    const address = document.createElement("td");
    address.dataset.label = "Address";
    address.className = "mono";
    address.textContent = a.address;
    const first = document.createElement("td");
    first.dataset.label = "First seen";
    timeCell(first, a.firstSeen, "");
    const last = document.createElement("td");
    last.dataset.label = "Last seen";
    timeCell(last, a.lastSeen, "");
    const count = document.createElement("td");
    count.dataset.label = "Requests";
    count.textContent = a.count.toLocaleString();
    tr.append(address, first, last, count);
    rows.append(tr);
  }
  $("usage-addresses-table").hidden = addresses.length === 0;
  $("usage-addresses-empty").hidden = addresses.length > 0;
}

const RESTRICTION_ERRORS = ["edit-cidrs-error", "edit-access-error", "restrictions-error"];

// PATCH the token's allowed networks and access from its page.
async function saveRestrictions(event) {
  event.preventDefault();
  const token = state.detail;
  if (!token || !token.id) return;
  for (const id of RESTRICTION_ERRORS) $(id).textContent = "";
  $("restrictions-saved").textContent = "";
  $("restrictions-save").disabled = true;
  try {
    const updated = await api("PATCH", `/admin/api/tokens/${encodeURIComponent(token.id)}`, {
      allowedCidrs: cidrList($("edit-cidrs").value),
      access: $("edit-access").value,
    });
    if (!state.detail || state.detail.id !== updated.id) return;
    state.detail = updated;
    renderDetail(updated);
    $("restrictions-saved").textContent = "Saved.";
    loadDetailAudit(true);
    loadTokens();
  } catch (e) {
    showFieldErrors(e, { allowedCidrs: "edit-cidrs-error", access: "edit-access-error" }, "restrictions-error");
  } finally {
    $("restrictions-save").disabled = false;
  }
}

async function loadDetailAudit(fresh) {
  const token = state.detail;
  if (!token) return;
  $("detail-audit-error").textContent = "";
  if (fresh) state.detailAuditCursor = null;
  try {
    let query = `?limit=50&tokenId=${encodeURIComponent(token.id)}`;
    if (state.detailAuditCursor) query += `&cursor=${encodeURIComponent(state.detailAuditCursor)}`;
    const page = await api("GET", `/admin/api/audit${query}`);
    if (!state.detail || state.detail.id !== token.id) return;
    if (fresh) $("detail-audit-rows").replaceChildren();
    for (const ev of page.items) {
      const tr = document.createElement("tr");
      const at = document.createElement("td");
      at.dataset.label = "Time";
      timeCell(at, ev.at, "");
      tr.append(at);
      let event = ev.event;
      if (ev.changed) event += ` (${ev.changed.join(", ")})`;
      if (ev.reason) event += ` — ${ev.reason}`;
      if (ev.count) event += ` ×${ev.count}`;
      for (const [label, value] of [["Event", event], ["Actor", ev.actor], ["Address", ev.remoteAddr]]) {
        const td = document.createElement("td");
        td.dataset.label = label;
        td.textContent = value || "";
        if (label === "Event") td.className = "event";
        tr.append(td);
      }
      $("detail-audit-rows").append(tr);
    }
    $("detail-audit-empty").hidden = $("detail-audit-rows").children.length > 0;
    state.detailAuditCursor = page.nextCursor;
    $("detail-audit-more").hidden = !page.nextCursor;
  } catch (e) {
    if (e.status !== 401) $("detail-audit-error").textContent = e.message;
  }
}

// ---- end the old secret now -----------------------------------------------------------
function openEndPrevious() {
  const token = state.detail;
  if (!token || !token.previousSecret) return;
  state.endingPrevious = token;
  $("end-previous-name").textContent = token.name;
  const used = token.previousSecret.lastUsedAt;
  $("end-previous-used").textContent = used
    ? `It was last used ${new Date(used).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })}.`
    : "It has not been used since the rotation.";
  $("end-previous-error").textContent = "";
  $("end-previous-dialog").showModal();
  $("end-previous-cancel").focus();
}

async function confirmEndPrevious() {
  const token = state.endingPrevious;
  if (!token) return;
  $("end-previous-confirm").disabled = true;
  try {
    await api("DELETE", `/admin/api/tokens/${encodeURIComponent(token.id)}/previous-secret`);
    $("end-previous-dialog").close();
    showNotice(`The old secret of ${token.name} no longer works.`);
    refreshAfterChange(token.id);
  } catch (e) {
    if (e.status === 404) {
      // It ended meanwhile (overlap over, or the new secret was used): nothing left to end.
      $("end-previous-dialog").close();
      showNotice(`The old secret of ${token.name} had already stopped working.`);
      refreshAfterChange(token.id);
    } else {
      $("end-previous-error").textContent = e.message;
    }
  } finally {
    $("end-previous-confirm").disabled = false;
  }
}

// ---- password -------------------------------------------------------------------------
function openPassword() {
  $("password-form").reset();
  for (const id of ["current-password-error", "new-password-error", "password-error"]) $(id).textContent = "";
  $("password-dialog").showModal();
  $("current-password").focus();
}

async function submitPassword(event) {
  event.preventDefault();
  for (const id of ["current-password-error", "new-password-error", "password-error"]) $(id).textContent = "";
  try {
    await api("PUT", "/admin/api/password", {
      currentPassword: $("current-password").value,
      newPassword: $("new-password").value,
    });
    $("password-dialog").close();
    $("password-form").reset();
    $("initial-banner").hidden = true;
    showNotice("Password changed.");
  } catch (e) {
    showFieldErrors(e, { currentPassword: "current-password-error", newPassword: "new-password-error" }, "password-error");
  }
}

// ---- audit ----------------------------------------------------------------------------
async function loadAudit(fresh) {
  $("audit-error").textContent = "";
  if (fresh) {
    state.auditCursor = null;
    $("audit-rows").replaceChildren();
  }
  try {
    const query = state.auditCursor ? `?limit=50&cursor=${encodeURIComponent(state.auditCursor)}` : "?limit=50";
    const page = await api("GET", `/admin/api/audit${query}`);
    for (const ev of page.items) {
      const tr = document.createElement("tr");
      const at = document.createElement("td");
      timeCell(at, ev.at, "");
      tr.append(at);
      const event = ev.changed ? `${ev.event} (${ev.changed.join(", ")})` : ev.event;
      for (const value of [event, ev.actor, ev.tokenName || ev.tokenId, ev.remoteAddr]) {
        const td = document.createElement("td");
        td.textContent = value || "";
        tr.append(td);
      }
      $("audit-rows").append(tr);
    }
    state.auditCursor = page.nextCursor;
    $("audit-more").hidden = !page.nextCursor;
  } catch (e) {
    if (e.status !== 401) $("audit-error").textContent = e.message;
  }
}

// ---- wiring ---------------------------------------------------------------------------
async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const session = await api("POST", "/admin/api/session", {
      username: $("login-username").value,
      password: $("login-password").value,
    });
    $("login-password").value = "";
    showApp(session);
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "Wrong username or password." : e.message;
  }
}

async function logout() {
  try { await api("DELETE", "/admin/api/session"); } catch (_) { /* signed out either way */ }
  showNotice("");
  showLogin("You are signed out.");
}

function init() {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("change-password-button").addEventListener("click", openPassword);
  $("banner-change-password").addEventListener("click", openPassword);
  $("tab-tokens").addEventListener("click", () => goTo("#/tokens"));
  $("tab-audit").addEventListener("click", () => goTo("#/audit"));
  window.addEventListener("hashchange", () => {
    document.title = "API Tokens — Permission Assist";
    route();
  });
  $("detail-rotate").addEventListener("click", () => { if (state.detail) openRotate(state.detail); });
  $("detail-delete").addEventListener("click", () => { if (state.detail) openDelete(state.detail); });
  $("detail-end-previous").addEventListener("click", openEndPrevious);
  $("restrictions-form").addEventListener("submit", saveRestrictions);
  $("detail-audit-more").addEventListener("click", () => loadDetailAudit(false));
  $("end-previous-cancel").addEventListener("click", () => $("end-previous-dialog").close());
  $("end-previous-confirm").addEventListener("click", confirmEndPrevious);
  $("audit-more").addEventListener("click", () => loadAudit(false));
  $("create-button").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());
  $("secret-done").addEventListener("click", () => {
    forgetSecret();
    $("create-dialog").close();
  });
  $("create-dialog").addEventListener("cancel", forgetSecret);
  $("create-dialog").addEventListener("close", forgetSecret);
  $("copy-secret").addEventListener("click", copySecret);
  $("rotate-form").addEventListener("submit", submitRotate);
  $("rotate-cancel").addEventListener("click", () => $("rotate-dialog").close());
  $("rotate-done").addEventListener("click", () => $("rotate-dialog").close());
  $("rotate-dialog").addEventListener("cancel", forgetRotatedSecret);
  $("rotate-dialog").addEventListener("close", forgetRotatedSecret);
  $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
  $("delete-confirm").addEventListener("click", confirmDelete);
  $("revoke-button").addEventListener("click", openRevoke);
  $("revoke-form").addEventListener("submit", submitRevoke);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-done").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-dialog").addEventListener("close", forgetRevokeValues);
  $("bulk-button").addEventListener("click", openBulk);
  $("bulk-form").addEventListener("submit", previewBulk);
  $("bulk-form").addEventListener("input", resetBulkPreview);
  $("bulk-cancel").addEventListener("click", () => $("bulk-dialog").close());
  $("bulk-confirm").addEventListener("click", confirmBulk);
  $("password-form").addEventListener("submit", submitPassword);
  $("password-cancel").addEventListener("click", () => $("password-dialog").close());
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    state.page = 0;
    renderTokens();
  });
  $("owner-filter").addEventListener("input", (e) => {
    state.ownerFilter = e.target.value;
    state.page = 0;
    renderTokens();
  });
  $("prev-page").addEventListener("click", () => { state.page -= 1; renderTokens(); });
  $("next-page").addEventListener("click", () => { state.page += 1; renderTokens(); });
  for (const button of document.querySelectorAll("button.sort")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "name" ? 1 : -1 };
      renderTokens();
    });
  }
  api("GET", "/admin/api/session").then(showApp, () => showLogin(""));
}

document.addEventListener("DOMContentLoaded", init);
