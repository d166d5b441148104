"""Talking to Kaggle: credentials, downloads (data stage) and the ``submit`` stage.

``import kaggle`` authenticates (and prints a banner) at import time, so it happens only inside
``make_api`` and only after ``check_credentials`` has found something to authenticate with. Every
function takes an optional ``api`` (anything with KaggleApi's method names), which tests replace with a
fake since the real service cannot be reached from CI. Each failure becomes one ``StageError`` line that
says what to do; credential values never reach a log line or a file.

    python -m pipelines submit --comp <name> --source kaggle --file submissions/<name>/x.csv --message "..."
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from pipelines import competitions, config
from pipelines.common.io import write_json
from pipelines.common.log import StageError

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings/api"
UPLOAD_FAILED = "Could not submit to competition"  # KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE
CREDENTIAL_PLACES = ("KAGGLE_API_TOKEN (environment)", "~/.kaggle/access_token", "~/.kaggle/kaggle.json",
                     "KAGGLE_USERNAME and KAGGLE_KEY (environment)")
_CONNECTION_ERRORS = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "NewConnectionError",
                      "MaxRetryError", "NameResolutionError", "ProtocolError", "gaierror", "ProxyError", "SSLError",
                      "ChunkedEncodingError", "RemoteDisconnected"}
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ECONNRESET, errno.ETIMEDOUT,
                   errno.ENETDOWN}


def rules_url(slug: str) -> str:
    return f"https://www.kaggle.com/competitions/{slug}/rules"


def _config_dir() -> Path:
    """Where KaggleApi looks for kaggle.json (KAGGLE_CONFIG_DIR, ~/.kaggle, or ~/.config/kaggle)."""
    env = os.environ.get("KAGGLE_CONFIG_DIR")
    if env:
        return Path(env)
    home = Path(os.path.expanduser("~")) / ".kaggle"
    if home.exists():
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path(os.path.expanduser("~")) / ".config") / "kaggle"


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _kaggle_json() -> dict:
    path = _config_dir() / "kaggle.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StageError(f"{path} is not valid JSON: it must read {{\"username\": \"...\", \"key\": \"...\"}}; "
                         f"download a fresh one from {TOKEN_URL}") from None
    return data if isinstance(data, dict) else {}


def credential_sources() -> list[str]:
    """Names (never values) of the places where Kaggle credentials were found, in KaggleApi's order."""
    home = Path(os.path.expanduser("~")) / ".kaggle"
    found = []
    if os.environ.get("KAGGLE_API_TOKEN"):
        found.append("KAGGLE_API_TOKEN")
    for name in ("access_token", "access_token.txt"):
        if _read_token_file(home / name):
            found.append(f"~/.kaggle/{name}")
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        found.append("KAGGLE_USERNAME/KAGGLE_KEY")
    cfg = _kaggle_json()
    if cfg.get("username") and cfg.get("key"):
        found.append(str(_config_dir() / "kaggle.json"))
    if (home / "credentials.json").is_file():  # `kaggle auth login` (OAuth)
        found.append("~/.kaggle/credentials.json")
    return found


def check_credentials() -> list[str]:
    """StageError listing where credentials go when none is found; else the places found."""
    found = credential_sources()
    if not found:
        raise StageError("no Kaggle credentials found: create an API token at "
                         f"{TOKEN_URL} and put it in one of: {', '.join(CREDENTIAL_PLACES)} "
                         "(or run `kaggle auth login`); then run again")
    return found


def secrets() -> list[str]:
    """Credential values present here, so that any text shown to the user can be scrubbed of them."""
    home = Path(os.path.expanduser("~")) / ".kaggle"
    values = [os.environ.get("KAGGLE_API_TOKEN"), os.environ.get("KAGGLE_KEY"),
              _read_token_file(home / "access_token"), _read_token_file(home / "access_token.txt")]
    try:
        values.append(_kaggle_json().get("key"))
    except StageError:
        pass
    return [v for v in values if v and len(v) >= 4]


def redact(text: str) -> str:
    for value in secrets():
        text = text.replace(value, "***")
    return text


def make_api():
    """An authenticated KaggleApi; imported here, after the credential check, never at module import."""
    places = check_credentials()
    captured = io.StringIO()
    try:
        # kaggle prints its own help/warnings on stdout while importing and authenticating: keep them out of
        # the stage's output and log them (scrubbed) at debug level instead.
        with contextlib.redirect_stdout(captured):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise StageError(f"Kaggle did not accept the credentials found in {', '.join(places)}: the token is "
                         f"wrong or expired; create a new one at {TOKEN_URL}") from None
    except ImportError as exc:
        raise StageError(f"the kaggle package is not importable ({exc.name}): run `make setup`") from None
    except Exception as exc:  # noqa: BLE001 - 401, no network, ... as one line
        raise translate(exc, "", "checking the Kaggle credentials") from None
    finally:
        if captured.getvalue().strip():
            log.debug("kaggle: %s", redact(captured.getvalue().strip()))
    return api


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)  # requests.HTTPError (a Response is falsy when >= 400)
    if status is None:
        status = getattr(exc, "status", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException) -> bool:
    for e in _chain(exc):
        if any(k.__name__ in _CONNECTION_ERRORS for k in type(e).__mro__):
            return True
        if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
            return True
    return False


def translate(exc: BaseException, slug: str, doing: str) -> StageError:
    """One line saying what went wrong while ``doing`` and how to fix it."""
    status = _http_status(exc)
    where = f" ({slug})" if slug else ""
    if status == 401:
        return StageError(f"Kaggle rejected the credentials (HTTP 401) while {doing}: the token is wrong or expired; "
                          f"create a new one at {TOKEN_URL} and put it in {CREDENTIAL_PLACES[0]} or "
                          f"{CREDENTIAL_PLACES[1]}")
    if status == 403:
        return StageError(f"Kaggle refused access (HTTP 403) while {doing}{where}: accept the competition rules at "
                          f"{rules_url(slug)} with the same account, then run again")
    if status == 404:
        return StageError(f"Kaggle found nothing (HTTP 404) while {doing}{where}: check the competition and file "
                          f"names (the file list is at https://www.kaggle.com/competitions/{slug}/data)")
    if status == 429:
        return StageError(f"Kaggle is rate-limiting requests (HTTP 429) while {doing}: wait a few minutes and run again")
    if status is not None:
        return StageError(f"Kaggle answered HTTP {status} while {doing}{where}: try again later")
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return StageError(f"disk full while {doing}: free some space (or set PIPELINES_ROOT to a bigger disk) "
                              f"and run again; the download resumes where it stopped")
    if _is_network_error(exc):
        return StageError(f"cannot reach Kaggle while {doing} ({type(exc).__name__}): check the network connection "
                          f"(and HTTPS_PROXY if you use a proxy), then run again")
    text = redact(str(exc))
    if "does not match expected size" in text:
        return StageError(f"the download was truncated while {doing} ({text[:120]}): run again to resume it")
    return StageError(f"Kaggle API call failed while {doing}: {type(exc).__name__}: {text[:200]}")


@contextlib.contextmanager
def kaggle_errors(slug: str, doing: str) -> Iterator[None]:
    try:
        yield
    except (StageError, KeyboardInterrupt):
        raise
    except SystemExit:
        raise StageError(f"Kaggle did not accept the credentials while {doing}: create a new token at {TOKEN_URL}") \
            from None
    except Exception as exc:  # noqa: BLE001 - every API failure becomes one line with its fix
        raise translate(exc, slug, doing) from None


# ---------------------------------------------------------------- downloads (data stage)
def download(comp: str, dest: Path, api=None, files: list[str] | None = None, force: bool = False) -> list[Path]:
    """Download the competition's files into ``dest`` (all of them, or just ``files``); returns what is there.

    Without ``force`` an interrupted download resumes (KaggleApi keeps a ``.kaggle-partial`` marker).
    """
    slug = competitions.get(comp).slug
    dest = Path(dest)
    api = api if api is not None else make_api()  # fails on missing credentials before anything is created
    dest.mkdir(parents=True, exist_ok=True)
    what = ", ".join(files) if files else "all files"
    log.info("downloading %s from Kaggle competition %s into %s", what, slug, dest)
    with kaggle_errors(slug, f"downloading {what} of {slug}"):
        if files:
            for name in files:
                api.competition_download_file(slug, name, path=str(dest), force=force, quiet=False)
        else:
            api.competition_download_files(slug, path=str(dest), force=force, quiet=False)
    partial = sorted(dest.glob("*.kaggle-partial"))
    if partial:
        raise StageError(f"the download of {partial[0].name.removesuffix('.kaggle-partial')} did not finish: "
                         f"run again to resume it")
    got = sorted(p for p in dest.iterdir() if p.is_file() and not p.name.startswith("."))
    if not got:
        raise StageError(f"Kaggle sent no files for {slug}: check {rules_url(slug)} (rules accepted?) and run again")
    empty = [p.name for p in got if p.stat().st_size == 0]
    if empty:
        for name in empty:
            (dest / name).unlink()
        raise StageError(f"the download of {empty[0]} is empty (broken transfer): run again to download it again")
    return got


# ---------------------------------------------------------------- submit stage
def _status(sub) -> str:
    status = getattr(sub, "status", None)
    name = getattr(status, "name", status)
    return str(name).rsplit(".", 1)[-1].lower() if name is not None else "unknown"


def _find_submission(subs, ref, file_name: str, message: str):
    subs = [s for s in (subs or []) if s is not None]
    if ref:
        for s in subs:
            if str(getattr(s, "ref", "")) == str(ref):
                return s
    for s in subs:  # newest first, as Kaggle lists them
        if getattr(s, "file_name", None) == file_name and (getattr(s, "description", None) or "") == message:
            return s
    return None


def submit(comp: str, file: Path, message: str, api=None, source: str = "kaggle", poll_seconds: float = 15.0,
           timeout: float = 900.0, sleep=time.sleep, force_upload: bool = False, allow_stale: bool = False) -> dict:
    """Check ``file``'s provenance record, validate it against ``source``'s raw data, upload it, wait for
    Kaggle's public score.

    The record (``pipelines.common.provenance``) must say the file was built from ``source`` (not the
    sample) by runs that are not stale; ``allow_stale`` accepts stale runs, ``force_upload`` any record
    or none (with a warning, kept in the result). Returns {"status", "public_score", "private_score",
    "ref", ...}; with ``timeout`` 0 it does not wait. The result is written to
    ``submissions/<comp>/<stem>.kaggle.json`` and added to the file's record (its "uploads", and as its
    "leaderboard" entry with the time it was read back once Kaggle scored it), which ``make compare``
    shows beside the blend's CV score.
    """
    slug = competitions.get(comp).slug
    file = Path(file)
    if not file.is_file():
        raise StageError(f"submission file {file} not found: run `make blend COMP={comp}` first or pass FILE=<path>")
    if config.source_label(source) == "sample":
        raise StageError("a submission built from the synthetic sample cannot be scored by Kaggle: pass the source "
                         "its predictions come from, e.g. --source kaggle (make submit ... ARGS='--source kaggle')")
    from pipelines.common.provenance import upload_problem

    problem = upload_problem(comp, file, source, allow_stale=allow_stale)
    if problem and not force_upload:
        raise StageError(f"{problem}; pass --force-upload to upload it anyway")
    if problem:
        log.warning("uploading because of --force-upload although %s", problem)
    message = message or f"{file.name} ({config.source_label(source)})"
    from pipelines.common.submission import validate_submission_file  # lazily: a sibling module

    validate_submission_file(comp, file, source)  # raises StageError on a file Kaggle would refuse
    api = api if api is not None else make_api()
    with kaggle_errors(slug, f"uploading {file.name}"):
        response = api.competition_submit(str(file), message, slug, quiet=False)
    reply = getattr(response, "message", response)
    if reply == UPLOAD_FAILED:
        raise StageError(f"Kaggle did not accept the upload of {file.name}: run again (check the network)")
    ref = getattr(response, "ref", None)
    log.info("uploaded %s to %s: %s", file.name, slug, redact(str(reply or "ok")))
    result = {"competition": slug, "file": str(file), "message": message, "ref": ref, "status": "pending",
              "public_score": None, "private_score": None, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "forced_despite": problem}
    deadline = time.monotonic() + timeout
    while timeout > 0:
        with kaggle_errors(slug, "reading the submission's score"):
            subs = api.competition_submissions(slug)
        mine = _find_submission(subs, ref, file.name, message)
        status = _status(mine) if mine is not None else "pending"
        if status == "error":
            reason = getattr(mine, "error_description", None) or "no reason given"
            raise StageError(f"Kaggle could not score {file.name}: {reason}; fix the file and submit again")
        score = getattr(mine, "public_score", None) if mine is not None else None
        if status == "complete" and score not in (None, ""):
            result.update(status="complete", ref=getattr(mine, "ref", ref), public_score=float(score),
                          private_score=_float_or_none(getattr(mine, "private_score", None)))
            break
        if time.monotonic() >= deadline:
            log.warning("Kaggle has not scored %s after %.0f s; see https://www.kaggle.com/competitions/%s/submissions",
                        file.name, timeout, slug)
            break
        sleep(poll_seconds)
    record = config.submissions_dir(comp) / f"{file.stem}.kaggle.json"
    write_json(record, result)
    from pipelines.common.provenance import record_submission

    recorded = record_submission(file, result)  # beside the CSV, for `make compare` (CV vs leaderboard)
    if recorded is not None:
        log.info("recorded the upload%s in %s", " and its public score" if result["public_score"] is not None
                 else "", recorded)
    if result["public_score"] is not None:
        private = f", private {result['private_score']:.5f}" if result["private_score"] is not None else ""
        print(f"{file.name}: public score {result['public_score']:.5f}{private} ({slug})")
    else:
        print(f"{file.name}: submitted to {slug}, score pending (see https://www.kaggle.com/competitions/{slug}/submissions)")
    return result


def _float_or_none(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def add_arguments(parser, comp: str | None = None) -> None:
    parser.add_argument("--file", required=True, type=Path, help="submission CSV (e.g. submissions/<comp>/<name>.csv)")
    parser.add_argument("--message", default="", help="submission description shown on Kaggle")
    parser.add_argument("--poll-seconds", type=float, default=15.0, help="seconds between score checks (default 15)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="stop waiting for the score after this many seconds; 0 = do not wait (default 900)")
    parser.add_argument("--force-upload", action="store_true",
                        help="upload even a file without a record from `make blend`, or whose record says it was "
                             "built from the sample, from another source or from stale runs")
    parser.add_argument("--allow-stale", action="store_true",
                        help="upload a file built from runs whose features or data changed since")


def main(args) -> int:
    submit(args.comp, args.file, args.message, source=args.source, poll_seconds=args.poll_seconds,
           timeout=args.timeout, force_upload=args.force_upload, allow_stale=args.allow_stale)
    return 0
