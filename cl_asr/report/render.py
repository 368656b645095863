"""Render a report (a list of blocks) to Markdown and to one self-contained HTML page (images embedded)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "table" | "img" | "code"
    content: object
    alt: str = ""


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row.tolist()) + " |")
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + str(b.content))
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "code":
            out.append("```\n" + str(b.content) + "\n```")
        elif b.kind == "table":
            out.append(markdown_table(b.content))
        elif b.kind == "img":
            out.append(f"![{b.alt}]({b.content})")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;margin:.5em 0}
code,pre{background:#f6f6f6;padding:.15em .35em;border-radius:3px}pre{padding:.8em;overflow-x:auto}
"""


def _inline_md(text: str) -> str:
    """Escape, then the two inline Markdown forms the report uses: `code` and **bold**."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


def to_html(blocks: list[Block], base_dir: Path, title: str) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            parts.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            for para in str(b.content).split("\n\n"):
                lines = para.split("\n")
                if all(line.startswith("- ") for line in lines):
                    parts.append("<ul>" + "".join(f"<li>{_inline_md(line[2:])}</li>" for line in lines) + "</ul>")
                else:
                    parts.append(f"<p>{_inline_md(' '.join(lines))}</p>")
        elif b.kind == "code":
            parts.append(f"<pre><code>{html.escape(str(b.content))}</code></pre>")
        elif b.kind == "table":
            df = b.content
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.tolist()) + "</tr>"
                for _, row in df.iterrows()
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode((base_dir / str(b.content)).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
