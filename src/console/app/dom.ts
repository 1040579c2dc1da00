// Small DOM helpers: elements with attributes and children, tables, and the
// overview's bar chart, drawn as inline SVG.

type Child = Node | string | undefined | null | false;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | boolean | ((ev: Event) => void)> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v as EventListener);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false) el.setAttribute(k, v);
  }
  for (const c of children) if (c !== undefined && c !== null && c !== false) el.append(c);
  return el;
}

/** A table with a caption (its accessible name) and a header row. */
export function table(caption: string, head: string[], rows: Child[][], empty = "None."): HTMLElement {
  if (!rows.length) return h("p", { class: "empty" }, `${caption}: ${empty}`);
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))));
}

export const when = (d: Date | undefined) => (d ? d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");

/** A state as a badge whose class colours it. */
export function badge(state: string | undefined): HTMLElement {
  const s = state ?? "UNKNOWN";
  return h("span", { class: `badge state-${s.toLowerCase()}` }, s);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Horizontal bars, one per label, with the value written at each bar's end. */
export function barChart(title: string, data: [string, number][]): SVGElement {
  const rowH = 26, labelW = 120, barW = 260, width = labelW + barW + 50;
  const max = Math.max(1, ...data.map(([, v]) => v));
  const root = svg("svg", { viewBox: `0 0 ${width} ${Math.max(1, data.length) * rowH + 6}`, width, height: Math.max(1, data.length) * rowH + 6, role: "img", "aria-label": `${title}: ${data.map(([k, v]) => `${k} ${v}`).join(", ") || "none"}` });
  root.append(svg("title", {}, title));
  data.forEach(([label, value], i) => {
    const y = i * rowH + 4;
    root.append(svg("text", { x: labelW - 8, y: y + 15, "text-anchor": "end", class: "chart-label" }, label));
    root.append(svg("rect", { x: labelW, y, width: Math.max(2, (value / max) * barW), height: rowH - 8, rx: 3, class: `chart-bar state-${label.toLowerCase()}` }));
    root.append(svg("text", { x: labelW + Math.max(2, (value / max) * barW) + 6, y: y + 15, class: "chart-value" }, String(value)));
  });
  return root;
}
