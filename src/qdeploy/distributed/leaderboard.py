"""A sweep's leaderboard: per model, every cell with its facts and the fastest within budget; md, html and json."""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from ..artifacts import write_json
from ..tasks import DEFAULT_TASK, Task, get_task


def _task(rec: dict) -> Task:
    return get_task(rec.get("task") or DEFAULT_TASK)


def _within(rec: dict, cfg) -> bool:
    """A finished cell within its task's gate of the sweep's two budgets."""
    task = _task(rec)
    return rec.get("status") == "ok" and task.cell_within(rec, task.gate(cfg.max_drop, cfg.min_psnr))


def rank(records: list[dict], cfg) -> dict[str, dict]:
    """model -> {"best": cell name or None, "cells": records sorted (ok by latency, then FAILED)}."""
    out: dict[str, dict] = {}
    for rec in records:
        out.setdefault(rec["model"], {"best": None, "cells": []})["cells"].append(rec)
    for m in out.values():
        m["cells"].sort(key=lambda r: (r.get("status") != "ok", r.get("p50_ms") or float("inf"), r["cell"]))
        ok = [r for r in m["cells"] if _within(r, cfg) and r.get("p50_ms")]
        m["best"] = min(ok, key=lambda r: r["p50_ms"])["cell"] if ok else None
    return out


def _fmt(v, spec: str, scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, spec)


def _row(rec: dict, out: Path, best: str | None) -> list[str]:
    link = os.path.relpath(rec["report"], out) if rec.get("report") else ""
    quality = _task(rec).cell_quality(rec)
    speed = (rec["fp32_p50_ms"] / rec["p50_ms"]) if rec.get("p50_ms") and rec.get("fp32_p50_ms") else None
    return [("**best** " if rec["cell"] == best else "") + f"{rec['variant']}@{rec['target']}",
            rec.get("status", "?") + (" (resumed)" if rec.get("resumed") else ""),
            quality if rec.get("status") == "ok" else "–",
            _fmt(rec.get("agreement"), ".2f", 100),
            _fmt(rec.get("size_bytes"), ".2f", 1e-6), _fmt(rec.get("p50_ms"), ".2f"),
            "–" if speed is None else f"{speed:.2f}x",
            rec.get("reason") or (f"[report]({link})" if link else "")]


HEAD = ["cell", "status", "top-1 % (drop) / PSNR", "agreement %", "MB", "p50 ms", "vs FP32", "report / reason"]


def write_leaderboard(out: Path, cfg, records: list[dict], facts: dict) -> dict:
    out = Path(out)
    ranked = rank(records, cfg)
    board = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sweep": cfg.source, "budget": {
        "max_drop_pt": cfg.max_drop, "min_psnr": cfg.min_psnr}, **facts, "models": ranked,
        "failed": sum(r.get("status") != "ok" for r in records), "cells": len(records)}
    write_json(out / "leaderboard.json", board)
    md = [f"# Sweep leaderboard ({cfg.source or 'sweep'})", "",
          f"{len(records)} cells, {board['failed']} failed; backend {facts['backend']}, {facts['ran']} run now and "
          f"{facts['resumed']} finished before (same inputs) in {facts['seconds']:.0f} s. Best: the fastest cell "
          f"within budget (top-1 drop <= {cfg.max_drop} pt, or PSNR >= {cfg.min_psnr} dB). Latency is batch-1 p50, "
          "timed with the machine to itself; `vs FP32` is against the FP32 model timed in the same cell.", ""]
    for model, m in ranked.items():
        md += [f"## {model}: best {m['best'] or 'none within budget'}", "",
               "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        md += ["| " + " | ".join(_row(r, out, m["best"])) + " |" for r in m["cells"]]
        md.append("")
    (out / "leaderboard.md").write_text("\n".join(md) + "\n")
    body = [f"<h1>Sweep leaderboard</h1><p>{html.escape(md[2])}</p>"]
    for model, m in ranked.items():
        body.append(f"<h2>{html.escape(model)}: best {html.escape(m['best'] or 'none within budget')}</h2><table>"
                    "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEAD) + "</tr>")
        for r in m["cells"]:
            cells = _row(r, out, m["best"])
            link = os.path.relpath(r["report"], out) if r.get("report") else None
            cells[-1] = (f'<a href="{html.escape(link)}">report</a>' if link and not r.get("reason")
                         else html.escape(cells[-1]))
            body.append("<tr>" + "".join(f"<td>{c if i == len(cells) - 1 else html.escape(c)}</td>"
                                         for i, c in enumerate(cells)) + "</tr>")
        body.append("</table>")
    (out / "leaderboard.html").write_text(
        "<!doctype html><meta charset=utf-8><title>qdeploy sweep</title><style>body{font-family:sans-serif;"
        "max-width:1100px;margin:auto;padding:8px}table{border-collapse:collapse;width:100%;overflow-x:auto;"
        "display:block}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>" + "".join(body))
    return json.loads(json.dumps(board, default=str))
