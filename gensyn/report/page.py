"""The one report-page writer: builds a page once, writes it as Markdown and as HTML.

Stages add headings, text, tables and figures; :meth:`Page.write` produces ``<name>.md``
and ``<name>.html`` side by side. The Markdown links figures by relative path; the HTML
embeds them as ``data:`` URIs, so the one file can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensyn.base import io


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


#: A number as tables print it: 0.812, +0.03, 1e-05, 0.81 ± 0.02 [0.75, 0.86], p < 0.001, n/a.
_NUMBER = re.compile(r"[-+−]?(\d[\d.,eE+\-]*|n/a|nan)%?")
_NUMERIC_CELL = re.compile(
    rf"\s*(p\s*[<=]\s*)?{_NUMBER.pattern}(\s*(±|\[|,|\]|\*|p\s*[<=]|{_NUMBER.pattern})\s*)*"
)


#: Cells that say "no number here" (the baseline's own Δ): they do not make a column prose.
BLANKS = ("", "—", "–")


def is_numeric(value: Any) -> bool:
    """Whether a table cell is a number (or numbers: 'mean ± sd [ci]', 'p < 0.05'), not prose."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    text = str(value).strip()
    return text in BLANKS or _NUMERIC_CELL.fullmatch(text) is not None


def _data_uri(path: Path, out_dir: Path) -> str:
    """``path``'s bytes as a ``data:`` URI (a relative link if the file does not exist)."""
    if not path.is_file():
        return os.path.relpath(path, out_dir)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


#: The page's look: prose left-aligned, numbers right-aligned (class ``num``), readable width.
CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1180px;"
    "margin:0 auto;padding:0.6em 1.2em;color:#222;line-height:1.4;font-size:15px}"
    "h1{font-size:1.45em;margin:0.2em 0 0.1em}h2{font-size:1.2em;margin:1.4em 0 0.4em;"
    "border-bottom:1px solid #ddd}p{margin:0.35em 0}"
    ".headline{font-size:1.08em;background:#f3f6fa;border-left:4px solid #1f4e79;"
    "padding:0.4em 0.8em;margin:0.4em 0}"
    "table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.92em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#eef1f4}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}caption{caption-side:top;text-align:left;font-style:italic;color:#444;"
    "padding:0.2em 0}figure{margin:0.4em 0 1em}img{max-width:100%}"
    "figcaption{color:#555;font-style:italic;font-size:0.92em}"
)


NUM = " class='num'"


def _html_table(frame: Any, caption: str | None) -> str:
    """One table: numbers right-aligned, prose left-aligned (a column of numbers, its header
    too; in a mixed column, such as a summary's values, each cell by what it holds)."""
    numeric = []
    for column in frame.columns:
        numbers = [str(v).strip() for v in frame[column] if str(v).strip() not in BLANKS]
        numeric.append(bool(numbers) and all(is_numeric(c) for c in numbers))
    cls = [NUM if n else "" for n in numeric]
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append(
        "<tr>"
        + "".join(
            f"<th{k}>{html.escape(str(c))}</th>" for k, c in zip(cls, frame.columns, strict=True)
        )
        + "</tr>"
    )
    for row in frame.itertuples(index=False):
        tds = "".join(
            f"<td{k if k or not is_numeric(_fmt(v)) else NUM}>{html.escape(_fmt(v))}</td>"
            for k, v in zip(cls, row, strict=True)
        )
        parts.append(f"<tr>{tds}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


@dataclass
class Page:
    """A report page: a list of blocks rendered to Markdown and HTML."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading (level 2 = section)."""
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        """Add a paragraph of plain text."""
        self.blocks.append(("text", text))

    def table(self, rows: Any, caption: str | None = None) -> None:
        """Add a table from a pandas DataFrame or a list of dicts."""
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        self.blocks.append(("table", (frame, caption)))

    def headline(self, text: str) -> None:
        """Add the answer a reader should see first (a larger paragraph)."""
        self.blocks.append(("headline", text))

    def link(self, text: str, target: str | os.PathLike[str], before: str = "") -> None:
        """Add a paragraph ``before`` + a link to ``target`` (written relative to the page)."""
        self.blocks.append(("link", (before, text, Path(target))))

    def figure(self, path: str | os.PathLike[str], caption: str = "") -> None:
        """Add an image (PNG) by path; it is linked relative to the page's folder."""
        self.blocks.append(("figure", (Path(path), caption)))

    def markdown(self, out_dir: Path) -> str:
        """The page as Markdown (figure links relative to ``out_dir``)."""
        lines = [f"# {self.title}", ""]
        for kind, data in self.blocks:
            if kind == "heading":
                lines += ["#" * data[0] + " " + data[1], ""]
            elif kind == "text":
                lines += [data, ""]
            elif kind == "headline":
                lines += [f"**{data}**", ""]
            elif kind == "link":
                before, text, target = data
                lines += [f"{before}[{text}]({os.path.relpath(target, out_dir)})", ""]
            elif kind == "table":
                frame, caption = data
                if caption:
                    lines += [f"*{caption}*", ""]
                cols = [str(c) for c in frame.columns]
                lines.append("| " + " | ".join(cols) + " |")
                lines.append("| " + " | ".join("---" for _ in cols) + " |")
                for row in frame.itertuples(index=False):
                    lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
                lines.append("")
            elif kind == "figure":
                path, caption = data
                lines += [f"![{caption}]({os.path.relpath(path, out_dir)})", ""]
                if caption:
                    lines += [f"*{caption}*", ""]
        return "\n".join(lines)

    def html(self, out_dir: Path) -> str:
        """The page as a standalone HTML document (figures embedded as ``data:`` URIs)."""
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, data in self.blocks:
            if kind == "heading":
                level = min(max(data[0], 1), 6)
                parts.append(f"<h{level}>{html.escape(data[1])}</h{level}>")
            elif kind == "text":
                parts.append(f"<p>{html.escape(data)}</p>")
            elif kind == "headline":
                parts.append(f"<p class='headline'>{html.escape(data)}</p>")
            elif kind == "link":
                before, text, target = data
                href = html.escape(Path(os.path.relpath(target, out_dir)).as_posix())
                parts.append(
                    f"<p>{html.escape(before)}<a href='{href}'>{html.escape(text)}</a></p>"
                )
            elif kind == "table":
                parts.append(_html_table(*data))
            elif kind == "figure":
                path, caption = data
                src = html.escape(_data_uri(path, out_dir))
                parts.append(
                    f"<figure><img src='{src}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, out_dir: str | os.PathLike[str], name: str = "report") -> Path:
        """Write ``<name>.md`` and ``<name>.html`` into ``out_dir``; return the HTML path."""
        out = Path(out_dir)
        io.write_text(out / f"{name}.md", self.markdown(out))
        return io.write_text(out / f"{name}.html", self.html(out))
