"""Render a report (a list of blocks) to Markdown, and that Markdown to one self-contained HTML page with
python-markdown (`tables` and `fenced_code` extensions; images embedded as data URIs).

The page is the Markdown file rendered: what report.md says, report.html shows. Text that comes from data
(table cells: transcripts, strategy and set names, failure reasons; headings) is escaped so that it is shown
as it is, never read as formatting; raw HTML is switched off in the page, so a `<` in a transcript is a `<`.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import markdown
import pandas as pd
from markdown.extensions import Extension
from markdown.inlinepatterns import IMAGE_LINK_RE, ImageInlineProcessor


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


def escape_markdown(text: str) -> str:
    """`text` as literal Markdown: backslashes, backticks, asterisks, underscores that could start or end
    emphasis (not those inside a word: `zero_shot` stays as it is), link brackets and table pipes escaped."""
    text = text.replace("\\", "\\\\")
    text = re.sub(r"([`*])", r"\\\1", text)
    text = re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", text)
    return text.replace("](", "]\\(").replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    cols = [escape_markdown(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(escape_markdown(_cell(v)) for v in row.tolist()) + " |")
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + escape_markdown(str(b.content)))
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "code":
            out.append("```\n" + str(b.content) + "\n```")
        elif b.kind == "table":
            out.append(markdown_table(b.content))
        elif b.kind == "img":
            out.append(f"![{escape_markdown(b.alt)}]({b.content})")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;margin:.5em 0}
code,pre{background:#f6f6f6;padding:.15em .35em;border-radius:3px}pre{padding:.8em;overflow-x:auto}
"""


class _EmbeddedImage(ImageInlineProcessor):
    """`![alt](plots/x.png)` -> an <img> whose source is the PNG itself (a data URI): the page is one file."""

    def __init__(self, md: markdown.Markdown, base_dir: Path):
        super().__init__(IMAGE_LINK_RE, md)
        self.base_dir = base_dir

    def handleMatch(self, m, data):
        el, start, end = super().handleMatch(m, data)
        if el is None:
            return el, start, end
        png = base64.b64encode((self.base_dir / el.get("src")).read_bytes()).decode()
        # Stashed as written (the library's way to place ready HTML), not as an element, so the page keeps the
        # attribute form it has always had (single quotes), which tests/test_cli_and_micro_run.py reads.
        tag = f"<img alt='{html.escape(el.get('alt', ''))}' src='data:image/png;base64,{png}'>"
        return self.md.htmlStash.store(tag), start, end


class _ReportPage(Extension):
    """Images embedded; raw HTML in the Markdown shown as text (the report writes none, data might hold some)."""

    def __init__(self, base_dir: Path):
        super().__init__()
        self.base_dir = base_dir

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.inlinePatterns.register(_EmbeddedImage(md, self.base_dir), "image_link", 150)  # replaces the plain one
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


def to_html(blocks: list[Block], base_dir: Path, title: str) -> str:
    body = markdown.markdown(to_markdown(blocks), extensions=["tables", "fenced_code", _ReportPage(Path(base_dir))],
                             output_format="html")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
