"""The demo page, as plain text or HTML; pure, and built for the hot path.

Everything that does not change between requests (the node's name and address, the HTML
around the facts) is encoded once, into a bytes ``%`` template. A request then costs one
C-level ``%`` format. The two values that come from request headers (the load balancer's
name and the client address) are attacker-controlled: :func:`clean` cuts them short and
replaces control bytes, and the HTML page also escapes them with :func:`html.escape`.
"""

from __future__ import annotations

import html

#: Longest header-derived value shown on the page, in bytes.
MAX_VALUE_BYTES = 128

# Control bytes (C0 and DEL) become "?": no terminal escapes in curl's output.
_CONTROL = bytes(range(0x20)) + b"\x7f"
_CLEAN_TABLE = bytes.maketrans(_CONTROL, b"?" * len(_CONTROL))

_TEXT = """hapair demo page
served by: {node} ({address})
via load balancer: \0
client: \0
request: \1
"""

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hapair demo page · {node}</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#0f172a;
color:#e2e8f0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}}
main{{background:#1e293b;padding:2rem 2.5rem;border-radius:14px;
box-shadow:0 12px 40px rgba(0,0,0,.45);min-width:20rem}}
h1{{margin:0 0 1.2rem;font-size:1.3rem;letter-spacing:.02em}}
h1 span{{color:#38bdf8}}
dl{{display:grid;grid-template-columns:auto 1fr;gap:.45rem 1.4rem;margin:0}}
dt{{color:#94a3b8}}
dd{{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}}
p{{margin:1.4rem 0 0;color:#64748b;font-size:.85rem}}
</style>
</head>
<body>
<main>
<h1><span>hapair</span> demo page</h1>
<dl>
<dt>served by</dt><dd>{node} ({address})</dd>
<dt>via load balancer</dt><dd>\0</dd>
<dt>client</dt><dd>\0</dd>
<dt>request</dt><dd>\1</dd>
</dl>
<p>Reload to watch the load balancers and web nodes take turns.</p>
</main>
</body>
</html>
"""


def clean(value: bytes) -> bytes:
    """Cut a header value to :data:`MAX_VALUE_BYTES` and replace its control bytes with ``?``.

    :param value: the raw header value.
    :returns: a value safe to print on a terminal (not yet safe for HTML).
    """
    return value[:MAX_VALUE_BYTES].translate(_CLEAN_TABLE)


def _template(text: str) -> bytes:
    """Turn a page with ``\\0`` (a bytes value) and ``\\1`` (a number) holes into a ``%`` format."""
    raw = text.encode("utf-8").replace(b"%", b"%%")
    return raw.replace(b"\0", b"%s").replace(b"\1", b"%d")


class Page:
    """The demo page of one web node, in its two forms.

    :param node: the web node's name.
    :param address: the web node's address.
    """

    __slots__ = ("_html", "_text")

    def __init__(self, node: str, address: str) -> None:
        self._text = _template(_TEXT.format(node=node, address=address))
        self._html = _template(
            _HTML.format(node=html.escape(node, quote=True), address=html.escape(address))
        )

    def text(self, lb: bytes, client: bytes, count: int) -> bytes:
        """The plain-text page.

        :param lb: the load balancer's name, already passed through :func:`clean`.
        :param client: the client address, already passed through :func:`clean`.
        :param count: the request counter.
        :returns: the response body.
        """
        return self._text % (lb, client, count)

    def html(self, lb: bytes, client: bytes, count: int) -> bytes:
        """The HTML page; ``lb`` and ``client`` are escaped here.

        :param lb: the load balancer's name, already passed through :func:`clean`.
        :param client: the client address, already passed through :func:`clean`.
        :param count: the request counter.
        :returns: the response body.
        """
        return self._html % (_escape(lb), _escape(client), count)


def _escape(value: bytes) -> bytes:
    """HTML-escape a header value (invalid UTF-8 becomes U+FFFD)."""
    return html.escape(value.decode("utf-8", "replace"), quote=True).encode("utf-8")
