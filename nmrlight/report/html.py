"""Small HTML helpers shared by the report's pages: escaping, numbers tied to report.json keys,
sortable/filterable tables (a few lines of inline vanilla JavaScript, nothing fetched)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from urllib.parse import quote

from nmrlight.refine.outdir import result_path

CSS = """body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;
text-align:right}th{background:#f4f4f4;cursor:pointer}td.t,th.t{text-align:left}
.bad{color:#b00}.muted{color:#777}.fig{display:inline-block;margin:4px;vertical-align:top}
.cars .car{display:inline-block;margin:4px;font-size:12px;vertical-align:top;text-align:center}
.key span{display:inline-block;width:1em;height:.6em;margin:0 .3em 0 1em}
input.filter{width:28em;padding:3px;margin:.3em 0}"""

# Click a header to sort (numbers by data-v), type in the box to filter: plain text matches any
# cell; "column < 0.5" (or >, <=, >=, =) compares the column whose header starts with that name.
TABLE_JS = """<script>
function nmrSort(th){const t=th.closest('table'),b=t.tBodies[0],i=[...th.parentNode.children].indexOf(th),
d=th.dataset.dir=th.dataset.dir==='asc'?'desc':'asc',s=d==='asc'?1:-1;
const v=r=>{const c=r.children[i];const x=c.dataset.v;return x!==undefined&&x!==''?parseFloat(x):c.textContent};
[...b.rows].sort((p,q)=>{const a=v(p),c=v(q);if(typeof a==='number'&&typeof c==='number')return s*(a-c);
return s*String(a).localeCompare(String(c))}).forEach(r=>b.appendChild(r))}
function nmrFilter(inp,id){const t=document.getElementById(id),q=inp.value.trim(),
m=q.match(/^([a-z][\\w .]*?)\\s*(<=|>=|<|>|=)\\s*(-?[\\d.]+)$/i);let col=-1;
if(m){col=[...t.tHead.rows[0].children].findIndex(h=>h.textContent.toLowerCase().startsWith(m[1].toLowerCase()))}
const x=m?parseFloat(m[3]):0,ql=q.toLowerCase();
for(const r of t.tBodies[0].rows){let ok=true;if(col>=0){const c=r.children[col],v=parseFloat(c.dataset.v);
ok=!isNaN(v)&&({'<':v<x,'>':v>x,'<=':v<=x,'>=':v>=x,'=':v===x})[m[2]]}else if(q){
ok=r.textContent.toLowerCase().includes(ql)}r.style.display=ok?'':'none'}}
</script>"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page_name(image_id: str) -> str:
    """File stem of a photograph's page and asset folder (the same encoding as OUT/images/<ImageId>.json)."""
    return result_path(".", image_id).stem


def href(*parts: str) -> str:
    """A relative link to a file whose path parts are file names on disk ('%' etc. escaped)."""
    return "/".join(quote(p) for p in parts)


def number(value: float | int | None, digits: int = 3, scale: float = 1.0) -> str:
    """A number as shown on the pages: `digits` decimals after multiplying by `scale`; '–' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) and scale == 1.0 and digits == 0:
        return str(value)
    return f"{value * scale:.{digits}f}"


def keyed(key: str, value, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """A number (or text) tied to its report.json key, so tests can check the page against the file."""
    if isinstance(value, str):
        return f"<span data-key='{esc(key)}'>{esc(value)}</span>"
    return (f"<span data-key='{esc(key)}' data-scale='{scale:g}' data-digits='{digits}'>"
            f"{number(value, digits, scale)}</span>{unit}")


def cell(value, digits: int = 3, scale: float = 1.0, text: str | None = None) -> str:
    """A table cell sortable by its number (data-v)."""
    if value is None or isinstance(value, str):
        shown = text if text is not None else ("" if value is None else esc(value))
        return f"<td class='t'>{shown}</td>"
    v = value * scale
    return f"<td data-v='{v:.6g}'>{text if text is not None else number(value, digits, scale)}</td>"


def compact(value) -> str:
    """Any JSON value (a car's extra field) as short text: numbers to 3 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {compact(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    return str(value)


def table(table_id: str, headers: Sequence[str], rows: Sequence[str], placeholder: str) -> str:
    """A sortable, filterable table: `rows` are ready '<tr>...</tr>' strings."""
    head = "".join(f"<th onclick='nmrSort(this)'>{esc(h)}</th>" for h in headers)
    return (f"<input class='filter' placeholder='{esc(placeholder)}' oninput=\"nmrFilter(this,'{table_id}')\">"
            f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows)
            + "\n</tbody></table>")


def page(title: str, body: str, key: str | None = None, script: bool = False) -> str:
    """A whole HTML page; `key` (a fingerprint of its inputs) lets a rebuild skip unchanged pages."""
    meta = f"<meta name='nmrlight-key' content='{esc(key)}'>" if key else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{esc(title)}</title>"
            f"<style>{CSS}</style>{TABLE_JS if script else ''}</head><body>\n{body}\n</body></html>\n")


def page_key(path) -> str | None:
    """The fingerprint stored in an existing page, None when absent."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(400)
    except OSError:
        return None
    marker = "<meta name='nmrlight-key' content='"
    start = head.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = head.find("'", start)
    return html.unescape(head[start:end]) if end > 0 else None


def fingerprint(*parts) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
