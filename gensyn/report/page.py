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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensyn import io


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _data_uri(path: Path, out_dir: Path) -> str:
    """``path``'s bytes as a ``data:`` URI (a relative link if the file does not exist)."""
    if not path.is_file():
        return os.path.relpath(path, out_dir)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


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
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
            "padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}"
            "figcaption{color:#555;font-style:italic}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, data in self.blocks:
            if kind == "heading":
                level = min(max(data[0], 1), 6)
                parts.append(f"<h{level}>{html.escape(data[1])}</h{level}>")
            elif kind == "text":
                parts.append(f"<p>{html.escape(data)}</p>")
            elif kind == "table":
                frame, caption = data
                parts.append("<table>")
                if caption:
                    parts.append(f"<caption>{html.escape(caption)}</caption>")
                parts.append(
                    "<tr>"
                    + "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
                    + "</tr>"
                )
                for row in frame.itertuples(index=False):
                    parts.append(
                        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                    )
                parts.append("</table>")
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
