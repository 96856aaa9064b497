"""Grafana dashboards as code: `aifactory dashboards build` writes dashboards/*.json from boards.py."""

from __future__ import annotations

import json
from pathlib import Path

from .boards import BOARDS

ROOT = Path(__file__).resolve().parent.parent.parent
OUT = ROOT / "dashboards"


def render(name: str) -> str:
    return json.dumps(BOARDS[name]().to_json(), indent=2, sort_keys=True) + "\n"


def build(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in BOARDS:
        path = out / f"aifactory-{name}.json"
        path.write_text(render(name))
        written.append(path)
    return written


def push(url: str, token: str, folder: str = "AI factory", verify: bool = True) -> list[tuple[str, str]]:
    """Create or overwrite every board in Grafana by uid (idempotent), in `folder` (created if missing),
    through grafana-client. Returns (uid, dashboard URL); raises RuntimeError with the cause."""
    from urllib.parse import urlsplit

    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise RuntimeError(f"not a Grafana URL: {url!r}")
    api = GrafanaApi(auth=token, host=u.hostname, port=u.port, protocol=u.scheme,
                     url_path_prefix=u.path.strip("/"), verify=verify, timeout=10.0,
                     user_agent="aifactory-agent")
    out = []
    try:
        existing = [f for f in api.folder.get_all_folders() if f.get("title") == folder]
        folder_uid = existing[0]["uid"] if existing else api.folder.create_folder(folder, uid="aifactory")["uid"]
        for name in BOARDS:
            board = BOARDS[name]().to_json()
            r = api.dashboard.update_dashboard({"dashboard": board, "folderUid": folder_uid, "overwrite": True,
                                                "message": "aifactory dashboards push"})
            out.append((board["uid"], url.rstrip("/") + (r.get("url") or f"/d/{board['uid']}")))
    except GrafanaUnauthorizedError:
        raise RuntimeError(f"Grafana at {url} refused the token (401): check --token-file") from None
    except GrafanaClientError as e:
        raise RuntimeError(f"Grafana at {url} refused the request: {e}") from None
    except GrafanaException as e:
        raise RuntimeError(f"Grafana at {url}: {e}") from None
    except Exception as e:  # connection refused, DNS, TLS: niquests raises its own types
        raise RuntimeError(f"cannot reach Grafana at {url}: {type(e).__name__}: {e}") from None
    return out
