// The interactive picture written by `archc viz -o FILE.html`.
//
// The page embeds the view (archdsl/viz/model.py) as JSON and Graphviz compiled
// to WebAssembly (vendor/viz-global.js). `emit` below is archdsl/viz/dot.py's
// `emit` in JavaScript and must give the same text for the same expanded set
// (the test suite compares them); a click on a collapsed block (a 3-D box)
// expands it, a click on an expanded block's frame or title collapses it, and
// the page is laid out again.
"use strict";
(function () {
  const view = JSON.parse(document.getElementById("archviz-view").textContent);
  const initial = JSON.parse(document.getElementById("archviz-state").textContent);

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
      out.push([t, h, kind, labels.slice(0, 2).join(", ") + (labels.length > 2 ? ", …" : "")]);
    }
    return out;
  }

  function emit(expandedList) {
    const expanded = new Set(expandedList);
    const lines = [`digraph ${quote(view.name)} {`, `  graph ${attrs(view.graph)};`,
      `  node ${attrs(view.node)};`, `  edge ${attrs(view.edge)};`];
    function items(path, indent) {
      for (const [kind, key] of view.scopes[path].items) {
        if (kind === "n") {
          lines.push(`${indent}${quote(key)} ${attrs(view.nodes[key])};`);
        } else if (expanded.has(key)) {
          lines.push(`${indent}subgraph ${quote("cluster_" + key)} {`);
          lines.push(`${indent}  graph ${attrs(view.scopes[key].cluster)};`);
          items(key, indent + "  ");
          lines.push(`${indent}}`);
        } else {
          lines.push(`${indent}${quote("b:" + key)} ${attrs(view.scopes[key].box)};`);
        }
      }
    }
    items("", "  ");
    for (const [t, h, kind, label] of drawnEdges(expanded)) {
      const a = Object.assign({}, view.edge_styles[kind]);
      if (label) a.label = label;
      lines.push(`  ${quote(t)} -> ${quote(h)} ${attrs(a)};`);
    }
    lines.push("}");
    return lines.join("\n") + "\n";
  }

  const scopesAll = Object.keys(view.scopes).filter((p) => p !== "");
  const graphEl = document.getElementById("graph");
  const statusEl = document.getElementById("status");
  const state = { expanded: new Set(initial), zoom: 1, renders: 0, viz: null };

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
    graphEl.replaceChildren(svg);
    applyZoom();
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

  function applyZoom() {
    const svg = graphEl.querySelector("svg");
    if (!svg || !state.size) return;
    svg.setAttribute("width", `${state.size[0] * state.zoom}pt`);
    svg.setAttribute("height", `${state.size[1] * state.zoom}pt`);
    document.getElementById("zoom-reset").textContent = `${Math.round(state.zoom * 100)}%`;
  }

  function setExpanded(paths) {
    state.expanded = new Set(paths);
    render();
  }

  graphEl.addEventListener("click", (ev) => {
    const g = ev.target.closest("g.node, g.cluster");
    if (!g) return;
    if (g.classList.contains("node") && g.id.startsWith("b:")) {
      state.expanded.add(g.id.slice(2));
      render();
    } else if (g.classList.contains("cluster") && g.id.startsWith("c:")) {
      state.expanded.delete(g.id.slice(2));
      render();
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
  document.getElementById("zoom-in").addEventListener("click", () => { state.zoom *= 1.25; applyZoom(); });
  document.getElementById("zoom-out").addEventListener("click", () => { state.zoom /= 1.25; applyZoom(); });
  document.getElementById("zoom-reset").addEventListener("click", () => { state.zoom = 1; applyZoom(); });

  window.archviz = {
    view, emit, state,
    expand(path) { state.expanded.add(path); render(); },
    collapse(path) { state.expanded.delete(path); render(); },
    setExpanded,
    ready: Viz.instance().then((viz) => { state.viz = viz; render(); return state.renders; }),
  };
})();
