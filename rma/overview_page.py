"""``overview.html``: the management overview as one self-contained page.

Management reads it in a browser, perhaps mailed around or opened offline, so the page is
self-contained like ``report.html``: inline CSS, the charts as inline SVG drawn here, no
script, no external URL, and a Content-Security-Policy that forbids fetching anything. Top to
bottom: the totals; open issues per site by stage (stacked bars); the gateway's own issues
(the store's IT's); then per site its open issues (category, stage, each SLA in ``rma.sla``'s
words — due, overdue by so long, paused —, who acts next, the next step and the plan), each
counter's data completeness over 7 and 30 days (bars) and the RMAs in progress; last, which
helpdesk destinations were read.

``render_overview`` renders exactly the data ``agent.overview.overview`` returns (already
scrubbed of secrets); it adds nothing and reads nothing. Times are shown in UTC.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from diagnostics.model import plural
from rma.sla import category_text, line_text

# stage -> (label, colour); the chart's legend and the chips use the same
STAGES: dict[str, tuple[str, str]] = {
    "first_line": ("First line", "#2b6cb0"),
    "second_line": ("Second line", "#805ad5"),
    "third_line": ("Third line", "#1a202c"),
    "not_filed": ("Not filed yet", "#a0aec0"),
    "store_it": ("Store IT", "#d69e2e"),
}
GOOD, FAIR, POOR = "#2f855a", "#dd6b20", "#c53030"  # completeness bar colours
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
* { box-sizing: border-box; }
body { margin:0; background:#eef1f5; color:#1f2933;
  font: 14px/1.45 "DejaVu Sans", "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto 40px; }
header { background:#1e2a3b; color:#fff; padding:20px 28px; }
header h1 { margin:0 0 6px; font-size:22px; }
header p { margin:0; color:#c3cddb; }
.totals { display:flex; gap:12px; flex-wrap:wrap; margin-top:12px; }
.totals div { background:#2c3b52; padding:6px 12px; border-radius:6px; }
.totals b { font-size:18px; margin-right:6px; }
section { background:#fff; margin:14px 0 0; padding:16px 28px 20px; }
h2 { font-size:18px; margin:0 0 10px; }
h3 { font-size:15px; margin:16px 0 6px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; vertical-align:top; padding:5px 8px; border-bottom:1px solid #e2e8f0;
  overflow-wrap:break-word; }
.id, .chip { white-space:nowrap; }
th { background:#f4f6f9; font-weight:600; }
tr.overdue td { background:#fff5f5; }
.chip { display:inline-block; padding:0 8px; border-radius:9px; font-size:12px; color:#fff; }
.late { color:#c53030; font-weight:700; }
.muted { color:#5f6b7a; }
ol { margin:2px 0 0 18px; padding:0; }
figure { margin:6px 0 12px; }
figure svg { width:100%; height:auto; display:block; }
svg text { font-family: "DejaVu Sans", "Segoe UI", Roboto, Arial, sans-serif; }
.legend { display:flex; gap:14px; flex-wrap:wrap; font-size:12px; color:#5f6b7a; }
.legend i { display:inline-block; width:14px; height:10px; margin-right:5px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return f"{datetime.fromisoformat(iso).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def render_overview(data: dict[str, Any]) -> str:
    """The whole page for ``data`` (the shape of ``agent.overview.overview``)."""
    totals = data["totals"]
    now = datetime.fromisoformat(data["at"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ffc-agent overview {_e(_when(data['at']))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<header><h1>Management overview</h1>",
        f"<p>At {_e(_when(data['at']))}, {_e(data['scope'])}.</p>",
        '<div class="totals">',
        *(
            f'<div id="total-{key}"><b>{totals[key]}</b>{_e(label)}</div>'
            for key, label in (
                ("open_issues", "open issues"),
                ("overdue", "overdue"),
                ("rmas_in_progress", "RMAs in progress"),
                ("sites", "sites"),
                ("from_other_gateways", "from other gateways"),
            )
        ),
        "</div></header>",
        _stage_section(data["sites"]),
        _gateway_section(data["gateway"]["issues"], now),
        *(_site_section(site, now) for site in data["sites"]),
        _helpdesk_section(data.get("helpdesk") or []),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


# --- open issues per site by stage --------------------------------------------------------------


def _stage_section(sites: Sequence[dict[str, Any]]) -> str:
    rows = [(s["code"], _count_stages(s["issues"])) for s in sites]
    width, label_w, bar_h, gap = 900, 150, 22, 10
    height = max(1, len(rows)) * (bar_h + gap) + 30
    top = max([sum(c.values()) for _, c in rows] + [1])
    scale = (width - label_w - 60) / top
    svg = [
        f'<svg id="chart-stages" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="open issues per site by stage">'
    ]
    for r, (code, counts) in enumerate(rows):
        y = r * (bar_h + gap) + 6
        svg.append(
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" '
            f'font-size="13">{_e(code)}</text>'
        )
        x = float(label_w)
        for stage, (label, colour) in STAGES.items():
            n = counts.get(stage, 0)
            if not n:
                continue
            svg.append(
                f'<rect class="bar" data-site="{_e(code)}" data-stage="{stage}" '
                f'x="{x:.1f}" y="{y}" width="{n * scale:.1f}" height="{bar_h}" '
                f'fill="{colour}"><title>{_e(code)}: {n} {_e(label.lower())}</title></rect>'
            )
            x += n * scale
        total = sum(counts.values())
        svg.append(f'<text x="{x + 6:.1f}" y="{y + bar_h * 0.7:.1f}" font-size="13">{total}</text>')
    svg.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{_e(label)}</span>'
        for label, colour in STAGES.values()
    )
    return (
        '<section id="stages"><h2>Open issues per site, by stage</h2>'
        f'<div class="legend">{legend}</div><figure>{"".join(svg)}</figure></section>'
    )


def _count_stages(issues: Sequence[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in issues:
        out[i["stage"]] = out.get(i["stage"], 0) + 1
    return out


# --- one site -----------------------------------------------------------------------------------


def _site_section(site: dict[str, Any], now: datetime) -> str:
    where = "" if site["here"] else " (another gateway's site, from the helpdesk)"
    title = site["code"] if site["name"] == site["code"] else f"{site['code']} — {site['name']}"
    parts = [
        f'<section class="site" id="site-{_e(site["code"])}"><h2>{_e(title)}{_e(where)}</h2>',
        _issues_table(site["issues"], now),
    ]
    if site["counters"]:
        parts.append(_completeness_chart(site["code"], site["counters"]))
    if site.get("rmas"):
        parts.append(_rma_table(site["rmas"]))
    parts.append("</section>")
    return "".join(parts)


def _gateway_section(issues: Sequence[dict[str, Any]], now: datetime) -> str:
    if not issues:
        return ""
    return (
        '<section id="gateway"><h2>The gateway and the agent (the store\'s IT)</h2>'
        f"{_issues_table(issues, now)}</section>"
    )


def _issues_table(issues: Sequence[dict[str, Any]], now: datetime) -> str:
    if not issues:
        return '<p class="muted">No open issues.</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Issue", "Ticket", "Category", "Stage", "SLA", "Who acts", "Next action, plan")
    )
    rows = []
    for i in issues:
        t = i["ticket"]
        stage_label, colour = STAGES.get(i["stage"], (i["stage"], "#718096"))
        what = f"<b>{_e(i['title'])}</b>"
        if i["counters"]:
            what += "<br>" + ", ".join(f'<span class="id">{_e(c)}</span>' for c in i["counters"])
        what += f'<br><span class="muted">{_e(i["summary"])}</span>'
        if i["origin"] != "this gateway":
            what += f'<br><span class="muted">filed by {_e(i["origin"])}</span>'
        ticket = "-"
        if t:
            ticket = f'<span class="id">{_e(t["number"] or "queued")}</span><br>{_e(t["status"])}'
        plan = "".join(f"<li>{_e(step)}</li>" for step in i["action"]["plan"])
        rows.append(
            f'<tr class="issue{" overdue" if i["overdue"] else ""}">'
            f"<td>{what}</td><td>{ticket}</td>"
            f"<td>{_e(t['category']) if t else '-'}</td>"
            f'<td><span class="chip" style="background:{colour}">{_e(stage_label)}</span></td>'
            f"<td>{_sla_cell(i['sla'], now)}</td>"
            f"<td>{_e(i['action']['owner'])}</td>"
            f"<td>{_e(i['action']['next'])}{f'<ol>{plan}</ol>' if plan else ''}</td></tr>"
        )
    return f'<table class="issues"><tr>{head}</tr>{"".join(rows)}</table>'


def _sla_cell(sla: dict[str, Any] | None, now: datetime) -> str:
    """The support line with its clock, then the category's: ``rma.sla``'s words."""
    if not sla:
        return "-"
    line = _e(line_text(sla, now))
    if any(x["overdue"] for x in sla["lines"]):
        line = f'<span class="late">{line}</span>'
    category = _e(f"Category {category_text(sla, now)}")
    if sla["category"]["overdue"]:
        category = f'<span class="late">{category}</span>'
    return f"{line}<br>{category}"


def _completeness_chart(code: str, counters: Sequence[dict[str, Any]]) -> str:
    width, label_w, bar_h = 900, 190, 14
    row_h = 2 * bar_h + 14
    height = len(counters) * row_h + 26
    span = width - label_w - 80
    svg = [
        f'<svg class="completeness" data-site="{_e(code)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="data completeness of the counters of {_e(code)}">'
    ]
    for r, c in enumerate(counters):
        y = r * row_h + 4
        svg.append(
            f'<text x="{label_w - 10}" y="{y + bar_h + 4}" text-anchor="end" '
            f'font-size="13">{_e(c["serial"])}</text>'
        )
        for k, key in enumerate(("7d", "30d")):
            w = c["windows"][key]
            yy = y + k * (bar_h + 2)
            ratio = w["ratio"]
            svg.append(
                f'<rect x="{label_w}" y="{yy}" width="{span}" height="{bar_h}" fill="#edf2f7"/>'
            )
            if ratio is not None:
                colour = GOOD if ratio >= 0.98 else FAIR if ratio >= 0.9 else POOR
                svg.append(
                    f'<rect class="bar" data-counter="{_e(c["serial"])}" data-window="{key}" '
                    f'x="{label_w}" y="{yy}" width="{span * ratio:.1f}" height="{bar_h}" '
                    f'fill="{colour}"><title>{_e(c["serial"])}, {key}: {w["recorded"]} of '
                    f"{w['expected']} opening-hours slots</title></rect>"
                )
            text = f"{ratio * 100:.1f} %" if ratio is not None else "no slots due"
            svg.append(
                f'<text x="{label_w + span + 6}" y="{yy + bar_h - 3}" font-size="11">'
                f"{key} {text}</text>"
            )
    svg.append("</svg>")
    return (
        "<h3>Data completeness (opening-hours slots that arrived, last 7 and 30 days)</h3>"
        f"<figure>{''.join(svg)}</figure>"
    )


def _rma_table(rmas: Sequence[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{r['id']}</td><td>{_e(r['counter'])}</td><td>{_e(r['state'])}</td>"
        f"<td>{_e(r['meaning'])}</td><td>{_e(_when(r['opened_at']))}</td></tr>"
        for r in rmas
    )
    return (
        '<h3>RMAs in progress</h3><table class="rmas"><tr><th>RMA</th><th>Counter</th>'
        f"<th>State</th><th>Meaning</th><th>Opened</th></tr>{rows}</table>"
    )


def _helpdesk_section(read: Sequence[dict[str, Any]]) -> str:
    if not read:
        return ""
    items = "".join(
        f"<li>{_e(r['sink'])}: "
        + (f"{plural(r['tickets'], 'open ticket')} read" if r["error"] is None else _e(r["error"]))
        + "</li>"
        for r in read
    )
    return f'<section id="helpdesk"><h2>Helpdesk read</h2><ul>{items}</ul></section>'
