"""Google Drive links: the URL of a shared file, and the way past Drive's warning page.

A file on Drive too large for its virus scan is not sent at once: the first answer is a web page
("Google Drive can't scan this file for viruses") holding a form (`id="download-form"`) whose
action and hidden inputs (`id`, `export`, `confirm`, `uuid`) make the URL that sends the file.
Older pages carry the link as `href="/uc?export=download&confirm=..."` or as a JSON
`"downloadUrl"`. `confirmation_url(page, url)` finds the next URL in any of the three, as gdown
does (wkentaro/gdown, `get_url_from_gdrive_confirmation`), with the standard library's HTML
parser; a quota or permission page gives its own error text instead (`page_error`).
"""

import html
import re
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

DRIVE_DOWNLOAD = "https://drive.google.com/uc?export=download&id={}"


def drive_url(file_id: str) -> str:
    """The download link of a Drive file shared with "anyone with the link"."""
    return DRIVE_DOWNLOAD.format(file_id)


class _DownloadForm(HTMLParser):
    """The action and hidden inputs of `<form id="download-form">`."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "download-form":
            self.action, self._inside = attrs.get("action") or "", True
        elif (
            tag == "input" and self._inside and attrs.get("type") == "hidden" and attrs.get("name")
        ):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


def confirmation_url(page: str, url: str) -> str | None:
    """The URL that sends the file, from a Drive warning page fetched from `url`; None when the
    page has none (not a warning page: a quota, login or error page)."""
    form = _DownloadForm()
    form.feed(page)
    if form.action is not None:
        parts = urlsplit(urljoin(url, html.unescape(form.action)))
        query = dict(parse_qsl(parts.query))
        query.update(form.fields)
        return urlunsplit(parts._replace(query=urlencode(query)))
    link = re.search(r'href="(/uc\?export=download[^"]+)"', page)
    if link:
        return urljoin(url, html.unescape(link.group(1)))
    direct = re.search(r'"downloadUrl":"([^"]+)"', page)
    if direct:
        return direct.group(1).replace("\\u003d", "=").replace("\\u0026", "&")
    return None


def page_error(page: str) -> str | None:
    """The reason a Drive page gives for not sending the file (quota exceeded, no access)."""
    found = re.search(r'<p class="uc-error-subcaption">(.*?)</p>', page, re.S)
    if not found:
        return None
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())
