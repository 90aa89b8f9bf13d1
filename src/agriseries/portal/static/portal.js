// agriseries portal: search the STAC API of the service, draw footprints and products on an
// OpenLayers map (tiles from the portal's titiler endpoints), chart a pixel's time series,
// fill and download the basket. Plain JavaScript, no build step; talks to its own host only.
"use strict";

const PREFIX = document.querySelector('meta[name="agriseries-prefix"]').content;
const $ = (id) => document.getElementById(id);
const state = {
  config: null, token: sessionStorage.getItem("agriseries-token") || "", user: null,
  search: null, next: null, items: [], shown: null, layers: [], layer: null,
  bits: null, series: null, drawing: false, area: null,
};

// ------------------------------------------------------------------ messages and requests

function message(text, kind) {
  const m = $("message");
  if (!text) { m.hidden = true; m.textContent = ""; return; }
  m.textContent = text;
  m.className = kind === "info" ? "info" : "";
  m.hidden = false;
}

async function detail(resp) {
  try {
    const body = await resp.json();
    const d = body.detail || body.description || body.message || body;
    return typeof d === "string" ? d : JSON.stringify(d);
  } catch (e) {
    return resp.statusText || "no details";
  }
}

// fetch on the service; a failure becomes an Error whose message says what went wrong
async function call(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token && options.auth !== false) headers.Authorization = "Bearer " + state.token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  let resp;
  try {
    resp = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  } catch (e) {
    throw new Error("the service cannot be reached (" + e.message + ")");
  }
  if (!resp.ok) {
    throw new Error((options.what || path) + " failed: HTTP " + resp.status + ", " +
                    await detail(resp));
  }
  return options.raw ? resp : resp.json();
}

// private search: pictures (tiles, quicklooks) are fetched with the token, since an <img>
// cannot send a header; the bytes go to the image as an object URL
function privateMode() {
  return state.config && !state.config.public_search;
}

async function pictureURL(src) {
  const resp = await fetch(src, { headers: state.token ? { Authorization: "Bearer " + state.token } : {} });
  if (!resp.ok) throw new Error("HTTP " + resp.status);
  return URL.createObjectURL(await resp.blob());
}

function loadWithToken(tile, src) {
  const img = tile.getImage();
  pictureURL(src).then((url) => {
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
  }).catch(() => tile.setState(3)  /* ol TileState.ERROR */);
}

function guarded(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      message(e.message);
    }
  };
}

// ------------------------------------------------------------------------------ the map

const footprints = new ol.source.Vector();
const footprintLayer = new ol.layer.Vector({
  source: footprints,
  style: (f) => new ol.style.Style({
    stroke: new ol.style.Stroke({ color: f.get("selected") ? "#e0a100" : "#24452f",
                                  width: f.get("selected") ? 3 : 1.5 }),
    fill: new ol.style.Fill({ color: "rgba(36, 69, 47, 0.06)" }),
  }),
});
const areaSource = new ol.source.Vector();
const areaLayer = new ol.layer.Vector({
  source: areaSource,
  style: new ol.style.Style({ stroke: new ol.style.Stroke({ color: "#1f5fbf", width: 2,
                                                            lineDash: [6, 4] }) }),
});
// its own canvas (className): the product's pixels as the tiles have them
const productLayer = new ol.layer.Tile({ opacity: 1, visible: false, className: "product-layer" });
const map = new ol.Map({
  target: "map",
  layers: [productLayer, footprintLayer, areaLayer],
  view: new ol.View({ center: ol.proj.fromLonLat([5, 48]), zoom: 4 }),
});
const geojson = new ol.format.GeoJSON({ featureProjection: "EPSG:3857" });
let drawInteraction = null;

function basemap(cfg) {
  if (!cfg.basemap_url) return;
  map.getLayers().insertAt(0, new ol.layer.Tile({
    source: new ol.source.XYZ({ url: cfg.basemap_url, attributions: cfg.basemap_attribution,
                                crossOrigin: "anonymous" }),
  }));
}

function toggleDraw() {
  if (drawInteraction) {
    map.removeInteraction(drawInteraction);
    drawInteraction = null;
    $("draw").setAttribute("aria-pressed", "false");
    return;
  }
  drawInteraction = new ol.interaction.Draw({ source: areaSource, type: "Circle",
                                              geometryFunction: ol.interaction.Draw.createBox() });
  drawInteraction.on("drawstart", () => areaSource.clear());
  drawInteraction.on("drawend", (ev) => {
    const ext = ol.proj.transformExtent(ev.feature.getGeometry().getExtent(), "EPSG:3857",
                                        "EPSG:4326");
    state.area = ext.map((v) => Math.round(v * 1e6) / 1e6);
    toggleDraw();
  });
  map.addInteraction(drawInteraction);
  $("draw").setAttribute("aria-pressed", "true");
}

// ----------------------------------------------------------------------------- search

function searchBody() {
  const level = $("level").value;
  const body = { collections: ["agriseries-" + level.toLowerCase()], limit: 50,
                 sortby: [{ field: "properties.datetime", direction: "asc" }] };
  const from = $("from").value, to = $("to").value;
  if (from || to) {
    body.datetime = (from ? from + "T00:00:00Z" : "..") + "/" + (to ? to + "T23:59:59Z" : "..");
  }
  if (state.area) body.bbox = state.area;
  const args = [];
  const tile = $("tile").value.trim().toUpperCase();
  if (tile) {
    if (!/^T?\d{2}[A-Z]{3}$/.test(tile)) throw new Error("tile " + tile + ": expected e.g. T31UDS");
    args.push({ op: "=", args: [{ property: "agriseries:tile" },
                                tile.startsWith("T") ? tile : "T" + tile] });
  }
  const cloud = $("cloud").value;
  if (cloud !== "") args.push({ op: "<=", args: [{ property: "eo:cloud_cover" }, Number(cloud)] });
  const sensor = $("sensor").value;
  if (sensor) args.push({ op: "like", args: [{ property: "constellation" }, sensor + "%"] });
  if (args.length) {
    body.filter = args.length === 1 ? args[0] : { op: "and", args };
    body["filter-lang"] = "cql2-json";
  }
  return body;
}

async function runSearch(body, append) {
  const doc = await call(state.config.stac + "search", { method: "POST", json: body,
                                                       what: "search", auth: !state.config.public_search });
  const feats = doc.features || [];
  if (!append) {
    state.items = [];
    footprints.clear();
    $("results").textContent = "";
  }
  state.items.push(...feats);
  for (const f of feats) {
    const feature = geojson.readFeature(f);
    feature.setId(f.id);
    footprints.addFeature(feature);
    $("results").appendChild(resultEntry(f));
  }
  const nxt = (doc.links || []).find((l) => l.rel === "next");
  state.next = nxt && nxt.body ? nxt.body : null;
  $("more").hidden = !state.next;
  const n = state.items.length;
  const total = doc.numberMatched !== undefined ? doc.numberMatched : (doc.context || {}).matched;
  $("count").textContent = n ? (n + (total && total > n ? " of " + total : "") + " product(s)")
    : "No product matches this search.";
  $("add-series").disabled = !n || !state.user;
  if (n && !append) {
    map.getView().fit(footprints.getExtent(), { padding: [40, 40, 40, 40], maxZoom: 15,
                                                duration: 0 });
  }
  if (!n) message("No product matches this search: widen the dates, the area or the cloud limit.",
                  "info");
}

function resultEntry(f) {
  const li = document.createElement("li");
  li.tabIndex = 0;
  li.dataset.id = f.id;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", "false");
  const img = document.createElement("img");
  img.alt = "";
  img.loading = "lazy";
  const src = PREFIX + "/api/quicklook?item=" + encodeURIComponent(f.id);
  img.onerror = () => { img.style.visibility = "hidden"; };
  if (privateMode()) {
    pictureURL(src).then((url) => {
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      img.src = url;
    }).catch(() => { img.style.visibility = "hidden"; });
  } else {
    img.src = src;
  }
  const text = document.createElement("div");
  const p = f.properties || {};
  const when = (p.datetime || p.start_datetime || "").slice(0, 10);
  const cloud = p["eo:cloud_cover"] !== undefined ? ", cloud " + Math.round(p["eo:cloud_cover"]) + " %" : "";
  text.innerHTML = "<div class='id'></div><div class='when'></div>";
  text.querySelector(".id").textContent = f.id;
  text.querySelector(".when").textContent = when + cloud;
  const add = document.createElement("button");
  add.type = "button";
  add.textContent = "+";
  add.title = "Add to basket";
  add.setAttribute("aria-label", "Add " + f.id + " to basket");
  add.className = "add";
  add.addEventListener("click", guarded(async (ev) => {
    ev.stopPropagation();
    await addItems([{ collection: f.collection, id: f.id }]);
  }));
  li.append(img, text, add);
  li.addEventListener("click", guarded(() => showProduct(f.id)));
  li.addEventListener("keydown", guarded(async (ev) => {
    if (ev.target !== li) return;
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); await showProduct(f.id); }
    if (ev.key === "ArrowDown" && li.nextElementSibling) { ev.preventDefault(); li.nextElementSibling.focus(); }
    if (ev.key === "ArrowUp" && li.previousElementSibling) { ev.preventDefault(); li.previousElementSibling.focus(); }
  }));
  return li;
}

// -------------------------------------------------------------------- a product on the map

async function showProduct(id) {
  const info = await call(PREFIX + "/api/layers?item=" + encodeURIComponent(id),
                          { what: "layers of " + id });
  state.shown = id;
  state.layers = info.layers;
  for (const li of $("results").children) li.setAttribute("aria-selected", String(li.dataset.id === id));
  footprints.forEachFeature((f) => f.set("selected", f.getId() === id));
  $("shown").textContent = id;
  const choice = $("layerchoice");
  choice.textContent = "";
  info.layers.forEach((layer, i) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "layer";
    radio.value = layer.id;
    radio.checked = i === 0;
    radio.addEventListener("change", () => setLayer(layer));
    label.append(radio, " " + layer.title);
    label.style.display = "block";
    choice.appendChild(label);
  });
  $("layerbox").hidden = false;
  // tiles only where the product is: no request for tiles outside its footprint
  state.extent = info.bbox ? ol.proj.transformExtent(info.bbox, "EPSG:4326", "EPSG:3857") : undefined;
  if (info.layers.length) setLayer(info.layers[0]);
  else message(id + " has no layer that can be drawn on the map", "info");
}

function tileUrl(layer) {
  let url = layer.tiles;
  if (layer.kind === "maskbits") {
    url += "&algorithm_params=" + encodeURIComponent(JSON.stringify({ bits: state.bits }));
  }
  return url;
}

// the tile source of a layer (a new one for each change of the layer or of its mask bits:
// OpenLayers keeps the tiles of a source it has drawn, a changed URL alone redraws nothing)
function layerSource(layer) {
  // classes and mask bits: nearest neighbour when a tile is scaled (no blended colours)
  const source = new ol.source.XYZ({ url: tileUrl(layer), crossOrigin: "anonymous",
                                     transition: 0, interpolate: layer.kind === "rgb" || layer.kind === "ramp" });
  if (privateMode()) source.setTileLoadFunction(loadWithToken);
  const count = { loading: 0, loaded: 0, failed: 0 };  // this source's tiles
  state.tiles = count;
  source.on("tileloadstart", () => { count.loading++; });
  source.on("tileloadend", () => { count.loading--; count.loaded++; });
  source.on("tileloaderror", () => {
    count.loading--;
    count.failed++;
    message("a map tile of " + state.shown + " could not be loaded");
  });
  return source;
}

function setLayer(layer) {
  state.layer = layer;
  if (layer.kind === "maskbits" && state.bits === null) {
    state.bits = layer.bits.filter((b) => b.default).reduce((s, b) => s + b.value, 0);
  }
  productLayer.setExtent(state.extent);
  productLayer.setSource(layerSource(layer));
  productLayer.setVisible(true);
  productLayer.setOpacity(layer.kind === "maskbits" ? 0.75 : 1);
  legend(layer);
}

function legend(layer) {
  const box = $("legend");
  box.textContent = "";
  if (layer.kind === "ramp") {
    const ramp = document.createElement("div");
    ramp.className = "ramp";
    ramp.style.background = "linear-gradient(to right, " + layer.colours.join(", ") + ")";
    const ends = document.createElement("div");
    ends.className = "ends";
    ends.innerHTML = "<span></span><span></span>";
    ends.children[0].textContent = layer.range[0];
    ends.children[1].textContent = layer.range[1];
    box.append(ramp, ends);
  } else if (layer.kind === "classes") {
    for (const c of layer.classes) {
      const row = document.createElement("div");
      row.className = "class";
      row.dataset.value = c.value;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.colour;
      row.append(sw, c.name === String(c.value) ? c.name : c.value + " " + c.name);
      box.appendChild(row);
    }
  } else if (layer.kind === "maskbits") {
    for (const b of layer.bits) {
      const label = document.createElement("label");
      label.style.display = "block";
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.value = b.value;
      cb.checked = (state.bits & b.value) !== 0;
      cb.addEventListener("change", () => {
        state.bits = cb.checked ? state.bits | b.value : state.bits & ~b.value;
        productLayer.setSource(layerSource(layer));
      });
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = b.colour;
      label.append(cb, " ", sw, b.name.replace("_", " "));
      box.appendChild(label);
    }
  } else if (layer.rescale) {
    const p = document.createElement("div");
    p.textContent = "stretch " + layer.rescale.map((r) => r.map((v) => Math.round(v)).join("-")).join(", ");
    box.appendChild(p);
  }
}

// --------------------------------------------------------------------- pixel time series

const SERIES_LEVEL = { L2A: "L2A", L3A: "L3A", L3B: "L3B", L4A: "L3B", L4B: "L3B" };

async function pixel(lonlat) {
  const level = SERIES_LEVEL[state.shown ? state.shown.slice(0, 3) : $("level").value];
  const q = new URLSearchParams({ lon: lonlat[0].toFixed(6), lat: lonlat[1].toFixed(6), level });
  const s = await call(PREFIX + "/api/series?" + q, { what: "time series" });
  state.series = s;
  $("csv").href = PREFIX + "/api/series?" + q + "&format=csv";
  $("chart-title").textContent = level + " at " + lonlat[0].toFixed(5) + ", " + lonlat[1].toFixed(5);
  const vars = level === "L3B" ? ["LAI", "FAPAR", "FCOVER"]
    : ["ndvi", "blue", "green", "red", "nir", "swir16", "swir22"];
  const sel = $("variable");
  const keep = sel.value;
  sel.textContent = "";
  for (const v of vars.filter((v) => s.columns.includes(v))) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v === "ndvi" ? "NDVI" : v;
    sel.appendChild(o);
  }
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  $("chartbox").hidden = false;
  map.updateSize();
  chart();
  if (!s.rows.length) message("No " + level + " product holds this point.", "info");
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function chart() {
  const svg = $("chart");
  svg.textContent = "";
  const s = state.series;
  const v = $("variable").value;
  if (!s || !v) return;
  const W = svg.clientWidth || 640, H = 220, L = 46, R = 12, T = 12, B = 28;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const obs = s.rows.filter((r) => r.kind === "observation");
  const smooth = s.rows.filter((r) => r.kind === "smoothed");
  const all = s.rows.filter((r) => r[v] !== null && r[v] !== undefined);
  const t = (r) => Date.parse(r.date);
  if (!all.length) {
    el("text", { x: L, y: H / 2 }, svg).textContent = "no " + v + " value at this pixel";
    return;
  }
  const t0 = Math.min(...s.rows.map(t)), t1 = Math.max(...s.rows.map(t));
  let y0 = Math.min(...all.map((r) => r[v])), y1 = Math.max(...all.map((r) => r[v]));
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  const X = (r) => L + (t1 === t0 ? (W - L - R) / 2 : (t(r) - t0) / (t1 - t0) * (W - L - R));
  const Y = (val) => T + (1 - (val - y0) / (y1 - y0)) * (H - T - B);
  el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
  el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
  for (let i = 0; i <= 4; i++) {
    const val = y0 + (y1 - y0) * i / 4;
    el("text", { x: 4, y: Y(val) + 4 }, svg).textContent = val.toFixed(2);
  }
  const ticks = Math.min(6, obs.length || smooth.length);
  const src = obs.length ? obs : smooth;
  for (let i = 0; i < ticks; i++) {
    const r = src[Math.round(i * (src.length - 1) / Math.max(1, ticks - 1))];
    el("text", { x: X(r) - 28, y: H - 8 }, svg).textContent = r.date.slice(0, 10);
  }
  if (smooth.length) {
    const pts = smooth.filter((r) => r[v] !== null).map((r) => X(r) + "," + Y(r[v])).join(" ");
    el("polyline", { points: pts, class: "smooth", "data-series": "smoothed" }, svg);
  } else {
    const clear = obs.filter((r) => r[v] !== null && !r.cloudy);
    el("polyline", { points: clear.map((r) => X(r) + "," + Y(r[v])).join(" "), class: "line" }, svg);
  }
  for (const r of obs) {
    if (r[v] === null || r[v] === undefined) continue;
    const cloudy = r.cloudy === true || r.masked === true;
    const c = el("circle", { cx: X(r), cy: Y(r[v]), r: 4, class: cloudy ? "cloudy" : "obs",
                             "data-date": r.date, "data-value": r[v], "data-item": r.item,
                             "data-cloudy": String(cloudy) }, svg);
    el("title", {}, c).textContent = r.date.slice(0, 10) + " " + v + " " + r[v] +
      (cloudy ? " (cloudy)" : "");
  }
  for (const r of smooth) {
    if (r[v] === null) continue;
    el("circle", { cx: X(r), cy: Y(r[v]), r: 2, class: "smooth", "data-date": r.date,
                   "data-value": r[v], "data-series": "smoothed" }, svg);
  }
}

// ------------------------------------------------------------------------ account, basket

async function signIn(token) {
  state.token = token;
  try {
    state.user = await call("/account", { what: "sign-in" });
  } catch (e) {
    state.token = "";
    state.user = null;
    sessionStorage.removeItem("agriseries-token");
    accountView();
    throw e;
  }
  sessionStorage.setItem("agriseries-token", token);
  accountView();
  await basket();
}

// ----------------------------------------------------------------- single sign-on (OIDC)
// authorization code flow with PKCE (RFC 7636, S256) as a public client: the page goes to the
// issuer, comes back to PREFIX/ with a code, trades it (and the verifier only it knows) for
// an access token at the token endpoint; the token (a JWT) is then sent as any bearer token
// and checked by the service against the issuer's keys.

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function redirectUri() {
  return location.origin + PREFIX + "/";
}

async function ssoStart() {
  const o = state.config.oidc;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const nonce = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem("agriseries-oidc", JSON.stringify({ verifier, state: nonce }));
  const q = new URLSearchParams({ response_type: "code", client_id: o.client_id,
                                  redirect_uri: redirectUri(), scope: o.scope, state: nonce,
                                  code_challenge: challenge, code_challenge_method: "S256" });
  location.assign(o.authorization_endpoint + "?" + q);
}

// back from the issuer (?code=&state= or ?error=): the token, else an Error in words
async function ssoFinish() {
  const p = new URLSearchParams(location.search);
  if (!p.has("code") && !p.has("error")) return;
  const saved = JSON.parse(sessionStorage.getItem("agriseries-oidc") || "null");
  sessionStorage.removeItem("agriseries-oidc");
  history.replaceState(null, "", location.pathname);  // the code is used once, not kept
  const o = state.config.oidc;
  if (p.has("error")) {
    throw new Error("single sign-on refused: " + p.get("error") +
                    (p.get("error_description") ? ", " + p.get("error_description") : ""));
  }
  if (!o || !o.token_endpoint) throw new Error("single sign-on is not configured on this service");
  if (!saved || saved.state !== p.get("state")) {
    throw new Error("single sign-on: the answer is not for a request of this page (state differs)");
  }
  const body = new URLSearchParams({ grant_type: "authorization_code", code: p.get("code"),
                                     redirect_uri: redirectUri(), client_id: o.client_id,
                                     code_verifier: saved.verifier });
  let resp;
  try {
    resp = await fetch(o.token_endpoint, { method: "POST", body });
  } catch (e) {
    throw new Error("single sign-on: the issuer's token endpoint cannot be reached (" + e.message + ")");
  }
  if (!resp.ok) {
    let why = resp.statusText;
    try { const d = await resp.json(); why = d.error_description || d.error || why; } catch (e) { /* words above */ }
    throw new Error("single sign-on: the token request failed: HTTP " + resp.status + ", " + why);
  }
  const tok = await resp.json();
  if (!tok.access_token) throw new Error("single sign-on: the issuer gave no access token");
  await signIn(tok.access_token);
}

function signOut() {
  state.token = "";
  state.user = null;
  sessionStorage.removeItem("agriseries-token");
  accountView();
  $("basket-items").textContent = "";
  $("basket-state").textContent = "Sign in to use the basket.";
  $("basket-actions").hidden = true;
  message("Signed out.", "info");
}

function accountView() {
  $("signin").hidden = !!state.user;
  $("signedin").hidden = !state.user;
  $("user").textContent = state.user ? "Signed in as " + state.user.user : "";
  $("token").value = "";
  $("add-series").disabled = !state.items.length || !state.user;
}

function size(n) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

async function basket() {
  if (!state.user) return;
  const b = await call("/basket", { what: "basket" });
  const files = b.count ? await call("/basket/files", { what: "basket files" }) : { bytes: 0, count: 0 };
  const acct = await call("/account", { what: "account" });
  state.user = acct;
  const left = acct.quota_bytes_per_day - acct.bytes_today;
  $("basket-state").textContent = b.count + " product(s), " + files.count + " file(s), " +
    size(files.bytes) + "; quota left today " + size(Math.max(0, left)) + " of " +
    size(acct.quota_bytes_per_day) + (files.bytes > left ? " (the basket is larger than the quota left)" : "");
  $("basket-state").dataset.count = b.count;
  $("basket-state").dataset.bytes = files.bytes;
  const ul = $("basket-items");
  ul.textContent = "";
  for (const it of b.items) {
    const li = document.createElement("li");
    li.textContent = it.id;
    ul.appendChild(li);
  }
  $("basket-actions").hidden = !b.count;
}

async function addItems(items) {
  if (!state.user) throw new Error("sign in with your API token to use the basket");
  const r = await call("/basket/items", { method: "POST", json: { items }, what: "add to basket" });
  message(r.added + " product(s) added to the basket", "info");
  await basket();
}

async function addSeries() {
  if (!state.user) throw new Error("sign in with your API token to use the basket");
  const body = Object.assign({}, state.search);
  delete body.limit;
  delete body.sortby;
  const r = await call("/basket/search", { method: "POST", json: body, what: "add the series" });
  message(r.matched + " product(s) of the search, " + r.added + " new in the basket", "info");
  await basket();
}

// the basket's archive or list: the service gives a short-lived signed URL, and the browser
// downloads it as any link (streamed to disk; the page never holds the bytes)
async function download(which) {
  const links = await call("/basket/links", { method: "POST", what: "download" });
  const a = document.createElement("a");
  a.href = links[which];
  a.download = "";
  a.rel = "noopener";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------------ operator page

async function statusPage() {
  const box = $("status");
  box.textContent = "";
  let st;
  try {
    st = await call(PREFIX + "/api/status", { what: "production state" });
  } catch (e) {
    box.textContent = e.message;
    return;
  }
  const table = (title, head, rows) => {
    const h = document.createElement("h3");
    h.textContent = title;
    const t = document.createElement("table");
    const tr = t.createTHead().insertRow();
    for (const c of head) { const th = document.createElement("th"); th.textContent = c; tr.appendChild(th); }
    const body = t.createTBody();
    for (const r of rows) {
      const row = body.insertRow();
      for (const c of r) row.insertCell().textContent = c === null || c === undefined ? "" : c;
    }
    box.append(h, t);
    return t;
  };
  const states = [...new Set(Object.values(st.counts).flatMap((c) => Object.keys(c)))].sort();
  table("Jobs of " + st.site + " by state", ["level", ...states],
        Object.entries(st.counts).map(([lv, c]) => [lv, ...states.map((s) => c[s] || 0)])).id = "jobs";
  table("Products", ["level", "products"], Object.entries(st.products)).id = "products";
  table("Failures", ["job", "level", "tile", "state", "attempts", "error"],
        st.problems.map((p) => [p.key, p.processor, p.tile, p.state, p.attempts, p.error])).id = "failures";
  const more = document.createElement("p");
  more.id = "backlog";
  more.textContent = "Due, not yet in the job store: " + st.due + ". Waiting on inputs: " +
    st.waiting.length + "." + (st.publication_backlog !== undefined && st.publication_backlog !== null
      ? " Publication backlog: " + st.publication_backlog + "." : "");
  box.appendChild(more);
}

function page(which) {
  $("page-map").hidden = which !== "map";
  $("page-status").hidden = which !== "status";
  $("tab-map").setAttribute("aria-pressed", String(which === "map"));
  $("tab-status").setAttribute("aria-pressed", String(which === "status"));
  if (which === "status") guarded(statusPage)();
  else map.updateSize();
}

// ---------------------------------------------------------------------------------- start

async function start() {
  state.config = await call(PREFIX + "/api/config", { what: "portal configuration", auth: false });
  document.title = state.config.title;
  $("title").textContent = state.config.title;
  basemap(state.config);
  $("search").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    message("");
    state.search = searchBody();
    await runSearch(state.search, false);
  }));
  $("more").addEventListener("click", guarded(() => runSearch(state.next, true)));
  $("draw").addEventListener("click", toggleDraw);
  $("clear-area").addEventListener("click", () => { areaSource.clear(); state.area = null; });
  $("hide").addEventListener("click", () => { productLayer.setVisible(false); $("layerbox").hidden = true; });
  $("variable").addEventListener("change", chart);
  $("csv").addEventListener("click", guarded(async (ev) => {
    if (!privateMode()) return;  // a plain link; with private search the CSV needs the token
    ev.preventDefault();
    const url = await pictureURL($("csv").href);
    const a = document.createElement("a");
    a.href = url;
    a.download = "agriseries-series.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
  }));
  $("chart-close").addEventListener("click", () => { $("chartbox").hidden = true; map.updateSize(); });
  $("signin").addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    message("");
    await signIn($("token").value.trim());
  }));
  $("signout").addEventListener("click", signOut);
  $("add-series").addEventListener("click", guarded(addSeries));
  $("zip").addEventListener("click", guarded(async (ev) => { ev.preventDefault(); await download("archive"); }));
  $("list").addEventListener("click", guarded(async (ev) => { ev.preventDefault(); await download("list"); }));
  $("empty").addEventListener("click", guarded(async () => { await call("/basket", { method: "DELETE", what: "empty the basket" }); await basket(); }));
  $("tab-map").addEventListener("click", () => page("map"));
  $("tab-status").addEventListener("click", () => page("status"));
  map.on("singleclick", guarded(async (ev) => {
    if (drawInteraction) return;
    await pixel(ol.proj.toLonLat(ev.coordinate));
  }));
  const o = state.config.oidc;
  if (o && o.error) message(o.error);
  $("sso").hidden = !(o && o.authorization_endpoint);
  $("sso").addEventListener("click", guarded(ssoStart));
  try {
    await ssoFinish();
  } catch (e) {
    message(e.message);
  }
  if (state.token && !state.user) {
    try { await signIn(state.token); } catch (e) { message(e.message); }
  }
  document.body.dataset.ready = "true";
}

guarded(start)();
window.agriseries = { state, map, pixel, showProduct };
