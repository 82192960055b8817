// The interactive picture written by `archc viz -o FILE.html`.
//
// The page embeds the view (archdsl/viz/model.py) as JSON and Graphviz compiled
// to WebAssembly (vendor/viz-global.js). `emit` below is archdsl/viz/dot.py's
// `emit` in JavaScript and must give the same text for the same expanded set
// (the test suite compares them); a click on a collapsed block (a 3-D box)
// expands it, a click on an expanded block's frame or title collapses it, and
// the page is laid out again. The picture opens fitted to the window; dragging
// pans it and the wheel zooms it (the SVG's viewBox is the visible part of the
// drawing). The search box looks up the view's `index` by scope path; choosing
// a match expands the blocks around it, zooms to it and highlights it. Text
// from the spec only ever enters the page through `textContent`.
"use strict";
(function () {
  const view = JSON.parse(document.getElementById("archviz-view").textContent);
  const initial = JSON.parse(document.getElementById("archviz-state").textContent);

  // ---- DOT, as archdsl/viz/dot.py writes it ------------------------------------------------------

  function quote(text) {
    return '"' + String(text).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  }

  function attrs(a) {
    const parts = Object.keys(a).sort().map((k) => (k === "label" ? `${k}=<${a[k]}>` : `${k}=${quote(a[k])}`));
    return "[" + parts.join(", ") + "]";
  }

  function representative(node, expanded) {
    const chain = [];
    let s = view.owner[node];
    while (s) {
      chain.push(s);
      s = view.scopes[s].parent;
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      if (!expanded.has(chain[i])) return "b:" + chain[i];
    }
    return node;
  }

  function joinLabels(labels) {
    return labels.slice(0, 2).join(", ") + (labels.length > 2 ? ", …" : "");
  }

  function drawnEdges(expanded) {
    const merged = new Map();
    const rank = view.edge_kinds;
    for (const [u, v, kind, label, producer] of view.edges) {
      const t = representative(u, expanded), h = representative(v, expanded);
      if (t === h) continue;
      const key = t + "\u0000" + h;
      if (!merged.has(key)) merged.set(key, [t, h, kind, []]);
      const e = merged.get(key);
      if (rank.indexOf(kind) < rank.indexOf(e[2])) e[2] = kind;
      if (label) e[3].push([producer, label]);
    }
    const out = [], labelled = new Set();
    for (const [t, h, kind, contributions] of merged.values()) {
      const labels = [];
      for (const [producer, label] of contributions) {
        if (!labelled.has(producer)) {
          labelled.add(producer);
          if (!labels.includes(label)) labels.push(label);
        }
      }
      out.push([t, h, kind, joinLabels(labels)]);
    }
    return out;
  }

  function clustersOf(drawn) {
    let s = drawn.startsWith("b:") ? view.scopes[drawn.slice(2)].parent : view.owner[drawn];
    const chain = [];
    while (s) {
      chain.push(s);
      s = view.scopes[s].parent;
    }
    return chain.reverse();
  }

  function routed(expanded) {
    const rank = view.edge_kinds, entries = new Map(), segments = new Map();
    for (const [t, h, kind, label] of drawnEdges(expanded)) {
      const aroundT = new Set(clustersOf(t));
      const entered = clustersOf(h).filter((c) => !aroundT.has(c));
      const path = [t, ...entered.map((c) => `e:${c}/${t}`), h];
      entered.forEach((c, i) => {
        if (!entries.has(c)) entries.set(c, []);
        if (!entries.get(c).includes(path[i + 1])) entries.get(c).push(path[i + 1]);
      });
      for (let i = 0; i + 1 < path.length; i++) {
        const key = path[i] + "\u0000" + path[i + 1];
        if (!segments.has(key)) segments.set(key, [path[i], path[i + 1], kind, []]);
        const seg = segments.get(key);
        if (rank.indexOf(kind) < rank.indexOf(seg[2])) seg[2] = kind;
        if (i === 0 && label && !seg[3].includes(label)) seg[3].push(label);
      }
    }
    const out = [...segments.values()].map(([a, b, kind, labels]) => [a, b, kind, joinLabels(labels)]);
    return [entries, out];
  }

  function emit(expandedList) {
    const expanded = new Set(expandedList);
    const [entries, segments] = routed(expanded);
    const lines = [`digraph ${quote(view.name)} {`, `  graph ${attrs(view.graph)};`,
      `  node ${attrs(view.node)};`, `  edge ${attrs(view.edge)};`];
    const keep = [];
    function items(path, indent) {
      for (const [kind, key] of view.scopes[path].items) {
        if (kind === "n") {
          lines.push(`${indent}${quote(key)} ${attrs(view.nodes[key])};`);
        } else if (expanded.has(key)) {
          const title = "t:" + key, points = entries.get(key) || [];
          lines.push(`${indent}subgraph ${quote("cluster_" + key)} {`);
          lines.push(`${indent}  graph ${attrs(view.scopes[key].cluster)};`);
          lines.push(`${indent}  ${quote(title)} ${attrs(view.scopes[key].title)};`);
          for (const point of points) {
            lines.push(`${indent}  ${quote(point)} ${attrs(Object.assign({}, view.entry, { id: point }))};`);
          }
          if (points.length) {
            lines.push(`${indent}  {rank=same; ${[title, ...points].map(quote).join("; ")};}`);
            for (const point of points) keep.push([title, point]);
          } else {
            const [firstKind, first] = view.scopes[key].items[0];
            keep.push([title, firstKind === "n" ? first : (expanded.has(first) ? "t:" : "b:") + first]);
          }
          items(key, indent + "  ");
          lines.push(`${indent}}`);
        } else {
          lines.push(`${indent}${quote("b:" + key)} ${attrs(view.scopes[key].box)};`);
        }
      }
    }
    items("", "  ");
    for (const [t, h, kind, label] of segments) {
      const a = Object.assign({}, view.edge_styles[kind]);
      if (label) a.label = label;
      if (h.startsWith("e:")) Object.assign(a, { arrowhead: "none", headclip: "false" });
      if (t.startsWith("e:")) a.tailclip = "false";
      lines.push(`  ${quote(t)} -> ${quote(h)} ${attrs(a)};`);
    }
    for (const [t, h] of keep) lines.push(`  ${quote(t)} -> ${quote(h)} [style="invis"];`);
    lines.push("}");
    return lines.join("\n") + "\n";
  }

  // ---- the picture: layout, fitting, pan and zoom ------------------------------------------------

  const scopesAll = Object.keys(view.scopes).filter((p) => p !== "");
  const graphEl = document.getElementById("graph");
  const statusEl = document.getElementById("status");
  const ACTUAL = 4 / 3;                       // screen pixels per point at 100%
  const state = { expanded: new Set(initial), renders: 0, viz: null, size: null, box: null, hit: null };

  function render() {
    const dot = emit([...state.expanded]);
    let svg;
    try {
      svg = state.viz.renderSVGElement(dot);
    } catch (err) {
      statusEl.textContent = "Graphviz failed: " + err;
      throw err;
    }
    state.size = [svg.viewBox.baseVal.width, svg.viewBox.baseVal.height];
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    graphEl.replaceChildren(svg);
    state.hit = null;
    state.renders += 1;
    document.body.dataset.renders = String(state.renders);
    const shown = scopesAll.filter(isCluster).length;
    statusEl.textContent = `${shown} of ${scopesAll.length} blocks expanded`;
  }

  // drawn as a cluster: expanded, and so are all its ancestors
  function isCluster(path) {
    for (let s = path; s; s = view.scopes[s].parent) {
      if (!state.expanded.has(s)) return false;
    }
    return true;
  }

  function viewport() {
    return [Math.max(graphEl.clientWidth, 1), Math.max(graphEl.clientHeight, 1)];
  }

  // show the drawing's point (cx, cy) at the centre, `scale` screen pixels per point
  function show(cx, cy, scale) {
    const svg = graphEl.querySelector("svg");
    if (!svg) return;
    const [w, h] = viewport();
    state.box = { x: cx - w / scale / 2, y: cy - h / scale / 2, scale };
    svg.setAttribute("viewBox", `${state.box.x} ${state.box.y} ${w / scale} ${h / scale}`);
    document.getElementById("zoom-reset").textContent = `${Math.round((scale / ACTUAL) * 100)}%`;
    document.body.dataset.zoom = String(scale);
  }

  function fitScale(w, h, margin) {
    const [vw, vh] = viewport();
    return Math.min((vw - 2 * margin) / Math.max(w, 1), (vh - 2 * margin) / Math.max(h, 1));
  }

  function fit() {                            // the whole drawing, centred, never above 100%
    const [w, h] = state.size;
    show(w / 2, h / 2, Math.max(Math.min(fitScale(w, h, 12), ACTUAL), 0.01));
  }

  function zoomBy(factor, px, py) {           // keep the point under the screen pixel (px, py) in place
    const b = state.box, [w, h] = viewport();
    if (px === undefined) [px, py] = [w / 2, h / 2];
    const scale = Math.min(Math.max(b.scale * factor, 0.01), 20);
    const gx = b.x + px / b.scale, gy = b.y + py / b.scale;
    show(gx - px / scale + w / scale / 2, gy - py / scale + h / scale / 2, scale);
  }

  function extent(el) {                       // an element's box in the drawing's points
    const b = state.box, r = el.getBoundingClientRect(), o = graphEl.getBoundingClientRect();
    return { x: b.x + (r.left - o.left) / b.scale, y: b.y + (r.top - o.top) / b.scale,
      w: r.width / b.scale, h: r.height / b.scale };
  }

  // centre on an element; `zoomIn`: as large as fits (up to 150%), else only zoom out if it does not fit
  function focus(el, zoomIn) {
    const e = extent(el), b = state.box;
    const fits = Math.max(fitScale(e.w, e.h, 40), 0.01);
    const scale = zoomIn ? Math.min(fits, 1.5 * ACTUAL) : Math.min(b.scale, Math.max(fits, 0.01));
    show(e.x + e.w / 2, e.y + e.h / 2, scale);
  }

  function element(id) {
    return [...graphEl.querySelectorAll("g.node, g.cluster")].find((g) => g.id === id) || null;
  }

  function relayout(around) {                 // lay out again, keeping the zoom, centred on `around`
    const scale = state.box ? state.box.scale : null;
    render();
    const el = around && element(around);
    if (el && scale !== null) {
      show(state.size[0] / 2, state.size[1] / 2, scale);
      focus(el, false);
    } else {
      fit();
    }
  }

  function setExpanded(paths) {
    state.expanded = new Set(paths);
    render();
    fit();
  }

  // ---- mouse: click to expand or collapse, drag to pan, wheel to zoom ----------------------------

  let drag = null;
  graphEl.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 || !state.box) return;
    drag = { x: ev.clientX, y: ev.clientY, box: state.box, moved: false };
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 5) return;
    drag.moved = true;
    graphEl.classList.add("panning");
    const [w, h] = viewport(), s = drag.box.scale;
    show(drag.box.x - dx / s + w / s / 2, drag.box.y - dy / s + h / s / 2, s);
  });
  window.addEventListener("pointerup", () => {
    if (drag && drag.moved) state.suppressClick = true;
    drag = null;
    graphEl.classList.remove("panning");
  });
  graphEl.addEventListener("wheel", (ev) => {
    if (!state.box) return;
    ev.preventDefault();
    const o = graphEl.getBoundingClientRect();
    zoomBy(Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.002)), ev.clientX - o.left, ev.clientY - o.top);
  }, { passive: false });

  graphEl.addEventListener("click", (ev) => {
    if (state.suppressClick) {
      state.suppressClick = false;
      return;
    }
    const g = ev.target.closest("g.node, g.cluster");
    if (!g) return;
    if (g.classList.contains("node") && g.id.startsWith("b:")) {
      state.expanded.add(g.id.slice(2));
      relayout("c:" + g.id.slice(2));
    } else if ((g.classList.contains("cluster") && g.id.startsWith("c:")) ||
               (g.classList.contains("node") && g.id.startsWith("t:"))) {
      state.expanded.delete(g.id.slice(2));
      relayout("b:" + g.id.slice(2));
    }
  });

  const depthsEl = document.getElementById("depths");
  for (let d = 0; d <= view.max_depth; d++) {
    const b = document.createElement("button");
    b.textContent = d === view.max_depth ? "all" : String(d);
    b.title = d === view.max_depth ? "expand every block" : `expand blocks down to depth ${d}`;
    b.addEventListener("click", () => setExpanded(scopesAll.filter((p) => view.scopes[p].depth <= d)));
    depthsEl.appendChild(b);
  }
  document.getElementById("zoom-in").addEventListener("click", () => zoomBy(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoomBy(1 / 1.25));
  document.getElementById("zoom-reset").addEventListener("click", () => zoomBy(ACTUAL / state.box.scale));
  document.getElementById("zoom-fit").addEventListener("click", fit);
  window.addEventListener("resize", () => { if (state.box) show(...centre(), state.box.scale); });

  function centre() {
    const b = state.box, [w, h] = viewport();
    return [b.x + w / b.scale / 2, b.y + h / b.scale / 2];
  }

  // ---- search by scope ---------------------------------------------------------------------------

  const searchEl = document.getElementById("search");
  const matchesEl = document.getElementById("matches");
  const MAX_SHOWN = 40;
  let shown = [], active = 0;

  // index entries whose path contains the query (case-insensitive): exact, then prefix, then at a
  // dot, then anywhere; in graph order within each
  function search(query) {
    const q = query.trim().toLowerCase();
    if (!q) return [];
    const ranked = [];
    view.index.forEach((entry, i) => {
      const p = entry[0].toLowerCase();
      const at = p.indexOf(q);
      if (at < 0) return;
      const score = p === q ? 0 : at === 0 ? 1 : p.includes("." + q) ? 2 : 3;
      ranked.push([score, i, entry]);
    });
    ranked.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return ranked.map((r) => r[2]);
  }

  function list(query) {
    const found = search(query);
    shown = found.slice(0, MAX_SHOWN);
    active = 0;
    const items = shown.map(([path, what], i) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.dataset.i = String(i);
      const name = document.createElement("span");
      name.textContent = path;
      const kind = document.createElement("span");
      kind.className = "what";
      kind.textContent = what;
      li.append(name, kind);
      return li;
    });
    if (query.trim() && !found.length) {
      const li = document.createElement("li");
      li.className = "more";
      li.textContent = "no layer or block has that in its scope";
      items.push(li);
    } else if (found.length > shown.length) {
      const li = document.createElement("li");
      li.className = "more";
      li.textContent = `… ${found.length - shown.length} more; type more of the scope`;
      items.push(li);
    }
    matchesEl.replaceChildren(...items);
    matchesEl.hidden = !items.length;
    mark();
    return found;
  }

  function mark() {
    matchesEl.querySelectorAll("li[data-i]").forEach((li) => li.classList.toggle("active", +li.dataset.i === active));
  }

  // expand what is around an index entry, lay out, zoom to it and highlight it; the element's id
  function reveal(entry) {
    const [, , target, open] = entry;
    for (const s of open) state.expanded.add(s);
    render();
    if (!state.box) fit();
    let id = target;
    if (target.startsWith("s:")) {
      const path = target.slice(2);
      id = (isCluster(path) ? "c:" : "b:") + path;
    }
    const el = element(id);
    if (el) {
      show(state.size[0] / 2, state.size[1] / 2, state.box.scale);
      focus(el, true);
      el.classList.add("hit");
      state.hit = id;
      document.body.dataset.hit = id;
    }
    return id;
  }

  function choose(i) {
    if (!shown[i]) return null;
    matchesEl.hidden = true;
    searchEl.value = shown[i][0];
    return reveal(shown[i]);
  }

  searchEl.addEventListener("input", () => list(searchEl.value));
  searchEl.addEventListener("focus", () => { if (searchEl.value) list(searchEl.value); });
  searchEl.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      if (shown.length) active = (active + (ev.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
      mark();
      const li = matchesEl.querySelector("li.active");
      if (li) li.scrollIntoView({ block: "nearest" });
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      if (matchesEl.hidden) list(searchEl.value);
      choose(active);
    } else if (ev.key === "Escape") {
      matchesEl.hidden = true;
    }
  });
  matchesEl.addEventListener("mousedown", (ev) => {
    const li = ev.target.closest("li[data-i]");
    if (!li) return;
    ev.preventDefault();                       // keep the focus in the box
    choose(+li.dataset.i);
  });
  searchEl.addEventListener("blur", () => { matchesEl.hidden = true; });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && document.activeElement !== searchEl) {
      ev.preventDefault();
      searchEl.focus();
      searchEl.select();
    }
  });

  window.archviz = {
    view, emit, state, search, list, reveal, fit,
    focus(id) { const el = element(id); if (el) focus(el, false); return Boolean(el); },
    expand(path) { state.expanded.add(path); relayout("c:" + path); },
    collapse(path) { state.expanded.delete(path); relayout("b:" + path); },
    setExpanded,
    ready: Viz.instance().then((viz) => { state.viz = viz; render(); fit(); return state.renders; }),
  };
})();
