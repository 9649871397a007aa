"""A model hub on 127.0.0.1 serving local folders: the one seam the models-fill tests fake,
since the real hub cannot be reached from a test machine.

It answers the four calls huggingface_hub makes to download a snapshot (revision info,
the file tree, and HEAD/GET of each file) with the headers it reads (``X-Repo-Commit``,
``ETag``, ``Content-Length``); an unknown repository or revision answers 404 with the
hub's ``X-Error-Code``. Point a process at it with ``HF_ENDPOINT=hub.url``::

    hub = FakeHub({("org/name", "1a2b3c4"): Path("/tmp/tiny-model")}).start()
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def commit_for(revision: str) -> str:
    """The 40-hex commit a revision names: itself if it is one, else a stable stand-in
    that starts with it when it is a short hash (as the real commit would)."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    digest = hashlib.sha1(revision.encode()).hexdigest()
    return (revision + digest)[:40] if re.fullmatch(r"[0-9a-f]+", revision) else digest


class FakeHub:
    def __init__(self, repos: dict[tuple[str, str], Path]) -> None:
        # (repo id, revision) -> folder; the commit of a revision is commit_for(revision).
        self.repos = repos
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def folder(self, repo: str, revision: str) -> tuple[Path, str] | None:
        for (name, rev), folder in self.repos.items():
            commit = commit_for(rev)
            if name == repo and revision in (rev, commit):
                return folder, commit
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server spelling
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _missing(self, code: str, body: bool) -> None:
                data = json.dumps({"error": code}).encode()
                self._send(404, data, {"X-Error-Code": code}, body)

            def _answer(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)(/.*)?", path)
                raw = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
                if api:
                    repo, revision = api.group(1), api.group(3)
                elif raw:
                    repo, revision = raw.group(1), raw.group(2)
                else:
                    return self._missing("RepoNotFound", body)
                found = hub.folder(repo, revision)
                if found is None:
                    known = any(name == repo for name, _ in hub.repos)
                    return self._missing("RevisionNotFound" if known else "RepoNotFound", body)
                folder, commit = found
                files = sorted(p for p in folder.rglob("*") if p.is_file())
                if api and api.group(2) == "revision":
                    info = {
                        "id": repo,
                        "sha": commit,
                        "siblings": [{"rfilename": str(p.relative_to(folder))} for p in files],
                    }
                    return self._send(200, json.dumps(info).encode(), {}, body)
                if api:
                    tree = [
                        {
                            "type": "file",
                            "path": str(p.relative_to(folder)),
                            "size": p.stat().st_size,
                            "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                        }
                        for p in files
                    ]
                    return self._send(200, json.dumps(tree).encode(), {}, body)
                assert raw is not None
                target = folder / raw.group(3)
                if not target.is_file():
                    return self._missing("EntryNotFound", body)
                data = target.read_bytes()
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self._send(200, data, {"X-Repo-Commit": commit, "ETag": etag}, body)

        return Handler
