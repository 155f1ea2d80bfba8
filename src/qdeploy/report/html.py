"""Minimal Markdown -> self-contained HTML for the shapes the report writes, images inlined."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def to_html(md_text: str, images: dict[str, Path], out: Path, title: str) -> str:
    """Minimal Markdown -> HTML for the shapes we write (headings, tables, bullets, images), images inlined."""
    body, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
            hdr = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{hdr}</tr></thead><tbody>{rows}</tbody></table>")
            table.clear()

    by_rel = {p.relative_to(out).as_posix(): p for p in images.values()}
    for line in md_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<p class='warn'>{_inline(line[2:])}</p>")
        elif line.startswith("!["):
            alt, rel = line[2:].split("](")
            data64 = base64.b64encode(by_rel[rel.rstrip(")")].read_bytes()).decode()
            body.append(f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data64}'></figure>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:14px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}.warn{color:#a40000}"
             "figure{display:inline-block;margin:.5em}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)
