"""`.install.json`: where an installed plugin came from, and what exactly was installed.

tark's keys come first and in tark's order (shared/reference/tark-core-abi.md §5) so tark can still read the
file; ours follow: the resolved git commit, the last update time and the sha256 of the wasm and the manifest
(fixing tark weakness 22: no pin, no integrity check). Records written by tark lack our keys and still load.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import attrs
import cattrs

from supervisor.atomic_file import write_atomically
from supervisor.plugin import INSTALL_RECORD


class InstallRecordError(Exception):
    """An `.install.json` that exists but cannot be used."""


@attrs.frozen
class InstallRecord:
    is_git: bool
    url: str
    branch: str | None = None  # the git ref as given (branch, tag or commit); None = the remote's default
    path: str | None = None  # subdirectory inside the repository
    installed_at: str = ""
    commit: str | None = None
    updated_at: str | None = None
    wasm_sha256: str | None = None
    manifest_sha256: str | None = None


_CONVERTER = cattrs.Converter(forbid_extra_keys=False)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def record_to_json(record: InstallRecord) -> dict[str, Any]:
    return _CONVERTER.unstructure(record)


def read_install_record(plugin_dir: Path) -> InstallRecord | None:
    """The record of `plugin_dir`, or None when it has none (hand-copied plugins)."""
    path = plugin_dir / INSTALL_RECORD
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InstallRecordError(f"Invalid install metadata {path}: {exc}") from None
    try:
        return _CONVERTER.structure(raw, InstallRecord)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise InstallRecordError(f"Invalid install metadata {path}: {exc}") from None


def write_install_record(plugin_dir: Path, record: InstallRecord) -> None:
    """Write pretty JSON atomically: a crash leaves the old record or the new one, never half of one."""
    write_json_atomic(plugin_dir / INSTALL_RECORD, record_to_json(record))


def write_json_atomic(path: Path, document: Any) -> None:
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomically(path, data, mode=0o644)
