"""What models and data wrote stays text in every page the kit makes: Markdown previews, exported notebooks.

A teacher's reply or a dataset's instruction may hold `<script>`, `<img onerror=...>` or a `javascript:` link. In a
notebook's Markdown output that would be live markup, and `helpers html` would publish it as live HTML next to the
run's report. `markdown_text` turns any text into Markdown that renders as exactly that text; `clean_outputs`
makes an executed notebook safe to export whatever its outputs hold (script outputs dropped, HTML and Markdown
outputs reduced to a safe set of tags, no event handlers, no `javascript:` links). The notebook's own Markdown
cells, written by the kit, are left as they are.
"""
from __future__ import annotations

import html
import re
from typing import Any

# CommonMark lets a backslash escape any ASCII punctuation; these are the characters that start markup.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~^$=:])")

# Outputs that run code or carry raw markup into the page; what is left of a dropped one is its text/plain.
_ACTIVE_OUTPUTS = ("application/javascript", "text/javascript", "application/vnd.jupyter.widget-view+json",
                   "text/vnd.mermaid")
_TAGS = ("a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details", "div",
         "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre",
         "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
         "thead", "tr", "tt", "u", "ul")
_ATTRIBUTES = {"*": ["class", "id", "title", "style", "align"], "a": ["href"], "img": ["src", "alt", "width", "height"],
               "td": ["colspan", "rowspan"], "th": ["colspan", "rowspan", "scope"]}
_ELEMENTS_DROPPED = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_STYLES = ("background", "background-color", "border", "border-right", "border-bottom", "color", "font-family",
           "font-size", "font-weight", "line-height", "text-align", "vertical-align", "padding", "margin", "width")


def markdown_text(text: Any) -> str:
    """`text` as Markdown that renders as exactly this text: no HTML, no links, no emphasis, lines kept."""
    escaped = html.escape(str(text), quote=False)  # <, > and & first: no tag, no entity survives
    escaped = _MARKDOWN_PUNCTUATION.sub(r"\\\1", escaped)
    return "  \n".join(escaped.splitlines())  # hard breaks: each line of the text stays a line


def markdown_quote(text: Any) -> str:
    """`text` as a Markdown block quote whose lines render as exactly the text's lines."""
    return "\n".join("> " + line for line in markdown_text(text).split("\n")) if str(text) else ">"


def clean_html(markup: str) -> str:
    """Markup reduced to tags and attributes that cannot run anything (bleach, the sanitiser nbconvert uses).
    Script and style elements go with their content (pandas tables bring a `<style>` block, which would otherwise
    be left as visible text)."""
    import bleach
    from bleach.css_sanitizer import CSSSanitizer

    markup = _ELEMENTS_DROPPED.sub("", markup)
    return bleach.clean(markup, tags=_TAGS, attributes=_ATTRIBUTES, protocols=["http", "https", "mailto"],
                        css_sanitizer=CSSSanitizer(allowed_css_properties=_STYLES), strip=True, strip_comments=True)


def clean_outputs(nb: Any) -> Any:
    """An executed notebook (nbformat node) whose outputs can be exported as a page that runs nothing: script
    outputs dropped, HTML outputs cleaned, Markdown outputs rendered and cleaned. Changed in place and returned."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            for mime in _ACTIVE_OUTPUTS:
                data.pop(mime, None)
            if "text/markdown" in data:
                rendered = markdown2html_mistune(str(data.pop("text/markdown")))
                data.setdefault("text/html", rendered)
            if "text/html" in data:
                data["text/html"] = clean_html("".join(data["text/html"]) if isinstance(data["text/html"], list)
                                               else str(data["text/html"]))
        cell["outputs"] = [o for o in cell.get("outputs", []) if "data" not in o or o["data"]]
    return nb
