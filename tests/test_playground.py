"""The playground's static files: served from web/ only, with their types and caching, and the
page itself checked for what a browser test cannot cheaply see (labels, nothing external).
The browser drives the page in test_playground_browser.py."""

from __future__ import annotations

import fnmatch
import http.client
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi_request import fastapi_request
from starlette.responses import Response

from api import playground

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
BASE = "http://127.0.0.1:7071/api/playground"


def get(path: str | None, url: str | None = None, **headers: str) -> Response:
    """Calls the function as the worker does, with the route's ``path`` parameter."""
    request = fastapi_request(
        "GET",
        url or f"{BASE}/{path or ''}",
        headers=headers,
        route_params={"path": path} if path else {},
    )
    handler: Any = playground.playground.build().get_user_function()
    response: Response = handler(request)
    return response


# ------------------------------------------------------------------------- the function


def test_the_page_and_its_files_with_types_and_caching() -> None:
    page = get(None, url=f"{BASE}/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.body == (WEB / "index.html").read_bytes()
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name, content_type in (
        ("playground.js", "text/javascript; charset=utf-8"),
        ("playground.css", "text/css; charset=utf-8"),
    ):
        response = get(name)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"] == content_type
        assert response.body == (WEB / name).read_bytes()
        assert response.headers["Cache-Control"] == "no-cache"

    # Revalidation: the same ETag answers 304 without a body.
    etag = page.headers["ETag"]
    again = get(None, url=f"{BASE}/", **{"If-None-Match": f'W/"x", {etag}'})
    assert (again.status_code, again.body) == (304, b"")
    assert get(None, url=f"{BASE}/", **{"If-None-Match": '"other"'}).status_code == 200


def test_the_bare_url_redirects_to_the_folder_keeping_the_query() -> None:
    response = get(None, url="http://127.0.0.1:7071/api/playground?source=demo")
    assert response.status_code == 308
    assert response.headers["Location"] == "/api/playground/?source=demo"


@pytest.mark.parametrize(
    "path",
    [
        "../function_app.py",
        "../../etc/passwd",
        "..",
        "./index.html/../../host.json",
        "/etc/passwd",
        "%2e%2e/function_app.py",
        "..\\function_app.py",
        "index.html\x00.png",
        ".hidden.css",
        "missing.js",
        "index.HTML",
        "README.md",
    ],
)
def test_nothing_outside_web_or_of_unknown_type_is_served(path: str) -> None:
    response = get(path)
    assert response.status_code == 404, path
    assert b"root:" not in response.body and b"import" not in response.body


def test_a_link_leading_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "web"
    root.mkdir()
    (root / "ok.css").write_text("body{}")
    secret = tmp_path / "secret.css"
    secret.write_text("secret")
    (root / "leak.css").symlink_to(secret)
    (root / "sub").mkdir()
    assert playground.resolve("ok.css", root) == (root / "ok.css").resolve()
    assert playground.resolve("leak.css", root) is None
    assert playground.resolve("sub", root) is None  # a folder is not a file
    assert playground.resolve("sub/../ok.css", root) is None  # ".." is refused outright


def test_funcignore_deploys_the_web_folder() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (REPO / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for file in WEB.iterdir():
        relative = file.relative_to(REPO).as_posix()
        for pattern in patterns:
            for candidate in (relative, "web", file.name):
                assert not fnmatch.fnmatch(candidate, pattern), (relative, pattern)


# ------------------------------------------------------------------------- through devhost


def test_devhost_serves_the_page_and_prints_its_url(devhost, unique_container, tmp_path) -> None:
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
        },
    )
    assert f"Playground: http://127.0.0.1:{host.port}/api/playground/" in host.log_text()
    page = requests.get(f"{host.base_url}/api/playground", timeout=10)
    assert page.status_code == 200 and page.url == f"{host.base_url}/api/playground/"
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    script = requests.get(f"{host.base_url}/api/playground/playground.js", timeout=10)
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    # Raw paths, as a client that does not normalize them would send them.
    for raw in (
        "/api/playground/../../function_app.py",
        "/api/playground/%2e%2e/%2e%2e/function_app.py",
        "/api/playground/..%2f..%2ffunction_app.py",
        "/api/playground/%2e%2e%5cfunction_app.py",
    ):
        connection = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
        connection.request("GET", raw)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert answer.status == 404, raw
        assert b"register_functions" not in body, raw


# ------------------------------------------------------------------------- the page's source


class _Controls(HTMLParser):
    """Collects ids, label targets, form controls and button texts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.buttons: list[str] = []
        self.urls: list[str] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "label" and attributes.get("for"):
            self.label_for.add(str(attributes["for"]))
        if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.controls.append(attributes)
        if tag == "button":
            self._button = []
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(str(attributes[name]))

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None:
            self.buttons.append("".join(self._button).strip())
            self._button = None


@pytest.fixture(scope="module")
def page() -> _Controls:
    parser = _Controls()
    parser.feed((WEB / "index.html").read_text(encoding="utf-8"))
    return parser


def test_every_control_has_a_label_and_every_button_text(page: _Controls) -> None:
    assert page.controls
    for control in page.controls:
        assert control.get("id") in page.label_for, control
    assert page.buttons and all(page.buttons), page.buttons


def test_the_page_loads_nothing_from_elsewhere(page: _Controls) -> None:
    for url in page.urls:
        assert not re.match(r"^(https?:)?//", url), url
    css = (WEB / "playground.css").read_text()
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:)?//", css)
    assert "@font-face" not in css
    script = (WEB / "playground.js").read_text()
    assert not re.search(r"""["'`](https?:)?//""", script)
    assert "import " not in script and "eval(" not in script and ".innerHTML" not in script


def test_every_element_the_script_names_is_in_the_page(page: _Controls) -> None:
    script = (WEB / "playground.js").read_text()
    named = set(re.findall(r"""\$\(\s*["']([\w-]+)["']\s*\)""", script))
    assert named, "the script looks elements up with $(id)"
    assert named <= page.ids, sorted(named - page.ids)
