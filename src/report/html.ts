/** The search report: a self-contained HTML page (inline SVG, no network) and a Markdown summary. */
import { describeVerification, verificationWarning } from '../eval/verify';
import { candKey } from '../profiles/profile';
import type { Group } from '../search/groups';
import type { FrontOrder, FrontPoint } from '../search/pareto';
import type { EvaluatedPoint, SearchResult } from '../search/search';

export interface ReportInput {
  result: SearchResult;
  front: FrontPoint[];
  fronts: Record<FrontOrder, FrontPoint[]>;
  groups: Group[];
  homogeneous: EvaluatedPoint[];
  selected: FrontPoint;
  /** Phase-1 SQNR (dB) by group id and candidate. */
  sens: Record<number, Record<string, number>>;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const fmt = (v: number | null | undefined, d = 3) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d));

function frontSvg(r: ReportInput): string {
  const W = 720, H = 400, L = 60, R = 20, T = 20, B = 50;
  const pts = [...r.fronts.sqnr, ...r.fronts.efficiency];
  const xs = [...pts.map((p) => p.rel_bops), ...r.homogeneous.map((h) => h.rel_bops)];
  const ys = pts.map((p) => p.predicted_sqnr_db).filter((y) => y < 200);
  const xmin = 0, xmax = Math.max(...xs, 1) * 1.05;
  const ymin = Math.min(...ys, 0), ymax = Math.max(...ys, 1) * 1.05;
  const X = (x: number) => L + ((x - xmin) / (xmax - xmin)) * (W - L - R);
  const Y = (y: number) => T + (1 - (Math.min(y, ymax) - ymin) / (ymax - ymin)) * (H - T - B);
  const line = (f: FrontPoint[], color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${f.map((p) => `${X(p.rel_bops).toFixed(1)},${Y(p.predicted_sqnr_db).toFixed(1)}`).join(' ')}"/>` +
    f.map((p) => `<circle cx="${X(p.rel_bops).toFixed(1)}" cy="${Y(p.predicted_sqnr_db).toFixed(1)}" r="${p.measured !== null ? 4 : 2}" fill="${color}"><title>point ${p.index}: rel_bops ${fmt(p.rel_bops)}, predicted SQNR ${fmt(p.predicted_sqnr_db, 1)} dB${p.measured !== null ? `, measured ${fmt(p.measured, 4)}` : ''}</title></circle>`).join('');
  const ticks = Array.from({ length: 6 }, (_, i) => xmin + ((xmax - xmin) * i) / 5)
    .map((x) => `<text x="${X(x)}" y="${H - B + 18}" font-size="11" text-anchor="middle">${x.toFixed(2)}</text>`)
    .join('');
  const yticks = Array.from({ length: 6 }, (_, i) => ymin + ((ymax - ymin) * i) / 5)
    .map((y) => `<text x="${L - 6}" y="${Y(y) + 4}" font-size="11" text-anchor="end">${y.toFixed(0)}</text>`)
    .join('');
  const homo = r.homogeneous
    .map((h) => `<line x1="${X(h.rel_bops)}" x2="${X(h.rel_bops)}" y1="${T}" y2="${H - B}" stroke="#999" stroke-dasharray="4 3"/><text x="${X(h.rel_bops) + 3}" y="${T + 12}" font-size="11" fill="#555">${esc(h.name)}</text>`)
    .join('');
  const s = r.selected;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" role="img" aria-label="Pareto front">
<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="#fafafa" stroke="#ccc"/>
${homo}${line(r.fronts.sqnr, '#1f77b4')}${line(r.fronts.efficiency, '#ff7f0e')}
<circle cx="${X(s.rel_bops)}" cy="${Y(s.predicted_sqnr_db)}" r="8" fill="none" stroke="#d62728" stroke-width="2.5"><title>selected</title></circle>
${ticks}${yticks}
<text x="${(L + W - R) / 2}" y="${H - 10}" font-size="12" text-anchor="middle">BOPs relative to W8A8</text>
<text x="14" y="${(T + H - B) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">predicted output SQNR (dB)</text>
<text x="${W - R - 160}" y="${T + 30}" font-size="11" fill="#1f77b4">— SQNR order (paper)</text>
<text x="${W - R - 160}" y="${T + 45}" font-size="11" fill="#ff7f0e">— efficiency order</text>
</svg>`;
}

/** Notes the command recorded with the run (for example: subgraphs of control-flow nodes stay float). */
const notesOf = (res: SearchResult): string[] => {
  const n = (res.options as Record<string, unknown>).notes;
  return Array.isArray(n) ? n.filter((x): x is string => typeof x === 'string') : [];
};

export function renderReport(r: ReportInput): string {
  const res = r.result;
  const sel = r.selected;
  const warning = verificationWarning(res.verification, 'the exported model')?.replace(/^mpq: WARNING: /, '');
  const rows = r.groups
    .map((g, i) => {
      const sens = Object.entries(r.sens[g.id] ?? {}).map(([k, v]) => `${k} ${fmt(v, 1)}`).join(', ');
      return `<tr><td>${g.id}</td><td>${esc(g.act ?? '(weights only)')}</td><td>${esc(g.ops.join(', '))}</td><td>${esc(g.weights.join(', '))}</td><td>${esc(sens)}</td><td><b>${candKey(sel.choice[i])}</b></td></tr>`;
    })
    .join('\n');
  const homo = r.homogeneous.map((h) => `<tr><td>${esc(h.name)}</td><td>${fmt(h.rel_bops)}</td><td>${(h.size_bytes / 1e6).toFixed(3)}</td><td>${fmt(h.metric, 4)}</td></tr>`).join('');
  const evaluated = r.front.filter((p) => p.measured !== null).map((p) => `<tr><td>${p.index}</td><td>${fmt(p.rel_bops)}</td><td>${(p.size_bytes / 1e6).toFixed(3)}</td><td>${fmt(p.predicted_sqnr_db, 1)}</td><td>${fmt(p.measured, 4)}</td></tr>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onnx-mpq search report</title>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}code{background:#f3f3f3;padding:1px 4px}</style>
</head><body>
<h1>Mixed-precision search</h1>
<p>Model <code>${esc(String(res.options.model))}</code>, profile <code>${esc(String(res.options.profile))}</code>, ${res.groups} quantizer groups, front order <b>${res.order}</b>, metric <b>${res.metric}</b> (float: ${fmt(res.float_metric, 4)}).</p>
<p><b>Selected</b>: point ${sel.index}, BOPs ${fmt(sel.rel_bops)} of W8A8, weights ${(sel.size_bytes / 1e6).toFixed(3)} MB, measured ${res.metric} ${fmt(sel.measured, 4)}; target ${esc(JSON.stringify(res.options.target))} ${res.selected.meets_target ? 'met' : '<b>not met</b>'}.</p>
${notesOf(res).map((n) => `<p><b>Note</b>: ${esc(n)}</p>`).join('\n')}
${warning ? `<p style="border:2px solid #c00;background:#fee;padding:8px"><b>Not faithful in ONNX Runtime's default CPU session.</b> ${esc(warning)}</p>` : ''}
<h2>Trade-off</h2>
${frontSvg(r)}
<h2>Homogeneous configurations</h2>
<table><tr><th>config</th><th>rel BOPs</th><th>MB</th><th>${res.metric}</th></tr>${homo}</table>
<h2>Evaluated points on the front</h2>
<table><tr><th>point</th><th>rel BOPs</th><th>MB</th><th>predicted SQNR dB</th><th>${res.metric}</th></tr>${evaluated}</table>
<h2>Per-layer bit-widths</h2>
<table><tr><th>group</th><th>activation</th><th>ops</th><th>weights</th><th>sensitivity: output SQNR (dB) with only this group quantized</th><th>selected</th></tr>
${rows}</table>
<h2>Verification in onnxruntime-node</h2>
${res.verification ? `<pre>${esc(describeVerification(res.verification).join('\n'))}</pre>` : `<p>${esc(res.verification_skipped ?? 'not run')}</p>`}
<h2>Run</h2>
<p>Phase 1: ${res.phase1.computed} computed, ${res.phase1.reused} reused of ${res.phase1.total}. Seconds: ${esc(JSON.stringify(res.seconds))}.</p>
</body></html>
`;
}

export function renderSummary(r: ReportInput): string {
  const res = r.result;
  const lines = [
    '# onnx-mpq search summary',
    '',
    `- model: \`${res.options.model}\``,
    `- profile: ${res.options.profile}; groups: ${res.groups}; front order: ${res.order}`,
    `- metric: ${res.metric}; float: ${fmt(res.float_metric, 4)}`,
    `- selected: point ${res.selected.index}, rel_bops ${fmt(res.selected.rel_bops)}, ${(res.selected.size_bytes / 1e6).toFixed(3)} MB, ${res.metric} ${fmt(res.selected.metric, 4)} (target ${JSON.stringify(res.options.target)} ${res.selected.meets_target ? 'met' : 'NOT met'})`,
    `- phase 1: ${res.phase1.computed} computed, ${res.phase1.reused} reused, ${res.phase1.total} total`,
    ...(res.verification ? ['- ' + describeVerification(res.verification).join('\n  ').trimStart()] : [`- onnxruntime verification: ${res.verification_skipped ?? 'not run'}`]),
    ...(res.verification?.advice ? [`- **WARNING**: ${res.verification.advice}`] : []),
    ...notesOf(res).map((n) => `- note: ${n}`),
    `- seconds: ${Object.entries(res.seconds).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    '',
    '| config | rel BOPs | MB | metric |',
    '|---|---|---|---|',
    ...res.homogeneous.map((h) => `| ${h.name} | ${fmt(h.rel_bops)} | ${(h.size_bytes / 1e6).toFixed(3)} | ${fmt(h.metric, 4)} |`),
    `| **selected (mixed)** | ${fmt(res.selected.rel_bops)} | ${(res.selected.size_bytes / 1e6).toFixed(3)} | ${fmt(res.selected.metric, 4)} |`,
    '',
  ];
  return lines.join('\n');
}
