"""A hostile zoo cannot make the zoo read, write or delete anything outside its directory and the cache.

A zoo's index.json comes from someone else's server or repository: every path, URL and kwarg in it is
untrusted. Each test builds a hostile zoo (a local directory, or one served on 127.0.0.1 by a server
that can also lie about sizes and redirect), checks the error and what it names, and checks that every
file under the test's directory outside the zoo and `<cache>` (victims, the export folder) is
byte-identical afterwards: nothing created, changed or deleted.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ssl_platform import zoo
from ssl_platform.zoo import index as zoo_lib

PAYLOAD = b"\x00not weights: the zoo only hashes this file\x00" * 25  # 1100 bytes
NAME = "simclr_resnet18.hostile"
VICTIM = b"precious user data\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(payload: bytes = PAYLOAD, name: str = NAME, **fields) -> dict:
    """An index.json entry that is valid but for `fields`; its weights are `payload`."""
    return {"name": name, "method": "simclr", "architecture": "resnet18", "arch_kwargs": {"in_chans": 1},
            "in_chans": 1, "num_features": 64, "file": f"{name}-{sha(payload)[:8]}.safetensors",
            "sha256": sha(payload), "size_bytes": len(payload), "timm_kwargs": {"in_chans": 1}, **fields}


def index(*entries: dict, **top) -> bytes:
    return json.dumps({"format": zoo_lib.FORMAT, "models": {e["name"]: e for e in entries}, **top}).encode()


def local_zoo(root: Path, *entries: dict, weights: bool = True) -> Path:
    """A zoo directory holding `entries` and, with `weights`, the file of the first one."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.json").write_bytes(index(*entries))
    if weights:
        (root / entries[0]["file"]).write_bytes(PAYLOAD)
    return root


def outside(tmp_path: Path) -> dict[str, object]:
    """Everything under tmp_path except the local zoo and `<cache>`: file bytes, link targets, directories."""
    skip = {tmp_path / "zoo", tmp_path / "cache" / "ssl_platform"}
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(tmp_path):  # does not follow links
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            key = str(path.relative_to(tmp_path))
            out[key] = ("link", os.readlink(path)) if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return out


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """`<cache>` in the test's directory; a victim file beside it, where `../../victim.txt` of `<cache>/files` lands."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(zoo_lib.ENV_ZOO, raising=False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "victim.txt").write_bytes(VICTIM)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "weights.safetensors").write_bytes(PAYLOAD)  # a file with the entry's hash
    return tmp_path / "cache" / "ssl_platform"


# ---- a server that says what it is told to


@dataclasses.dataclass
class Route:
    """One answer: status, headers and body, then `filler` zero bytes more (no Content-Length unless given)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] | None = None
    filler: int = 0
    sent: int = 0
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class HostileHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path, Route(b"not found", 404))
        self.send_response(route.status)
        headers = route.headers if route.headers is not None else (
            {} if route.filler else {"Content-Length": str(len(route.body))})
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(route.body)
            route.sent = len(route.body)
            chunk = bytes(1 << 16)
            while route.sent < len(route.body) + route.filler:
                self.wfile.write(chunk)
                route.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what we want
            pass
        finally:
            route.done.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """http://127.0.0.1:PORT/zoo, answering from `server.routes` (path -> Route)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    httpd.routes, httpd.requests = {}, []
    # a short poll: shutdown() waits for the loop to look, 0.5 s per test at the default
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/zoo"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve(server, *entries: dict, weights: Route | None = None) -> None:
    """index.json of `entries`, and `weights` (default: the payload) at /zoo/payload, which `url="payload"` names."""
    server.routes["/zoo/index.json"] = Route(index(*entries))
    server.routes["/zoo/payload"] = weights or Route(PAYLOAD)


# ---- paths an index names


@pytest.mark.parametrize("file, why", [
    ("../../victim.txt", "'..'"),
    ("files/../../../victim.txt", "'..'"),
    ("{victim}", "absolute"),
    ("..\\..\\victim.txt", "backslash"),
    ("victim\x00.txt", "NUL"),
    ("simclr_resnet18.hostile-00000000.safetensors", "the zoo names this file"),
])
def test_http_index_cannot_make_the_cache_overwrite_a_file_outside_it(server, tmp_path, file, why):
    """Old behaviour: `<cache>/files/../../victim.txt` had "another hash", was deleted as a corrupt cached
    copy and replaced by the server's bytes."""
    victim = tmp_path / "cache" / "victim.txt"
    file = file.format(victim=victim)
    serve(server, entry(file=file, url="payload"))
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError) as info:
        zoo.pull(NAME, server.url)
    message = str(info.value)
    assert f"entry {NAME!r}" in message and f"file {file!r} is refused" in message and why in message
    assert f"{NAME}-{sha(PAYLOAD)[:8]}.safetensors" in message  # what the name has to be
    assert victim.read_bytes() == VICTIM and outside(tmp_path) == before
    assert server.requests == ["/zoo/index.json"]  # refused before any download


def test_local_index_cannot_name_a_weights_file_outside_the_zoo(tmp_path):
    """Old behaviour: an absolute `file` with the right hash was "verified" and loaded from outside the zoo."""
    elsewhere = str(tmp_path / "outside" / "weights.safetensors")
    local_zoo(tmp_path / "zoo", entry(file=elsewhere), weights=False)
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match="absolute path") as info:
        zoo.pull(NAME, tmp_path / "zoo")
    assert f"file {elsewhere!r}" in str(info.value) and outside(tmp_path) == before


@pytest.mark.parametrize("card", ["{outside}/README.md", "../outside/README.md", "cards/../../outside/README.md",
                                  "README.md"])
def test_card_other_than_the_zoos_own_path_is_refused_and_export_copies_nothing(tmp_path, card):
    """Old behaviour: `verify` called /etc/passwd a card, and `export_timm` copied the card's whole directory."""
    (tmp_path / "outside" / "README.md").write_text("# not a card\n")
    (tmp_path / "outside" / "id_rsa").write_text("secret\n")
    card = card.format(outside=tmp_path / "outside")
    local_zoo(tmp_path / "zoo", entry(card=card))
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError) as info:
        zoo.export_timm(NAME, tmp_path / "export", tmp_path / "zoo")
    assert f"card {card!r} is refused" in str(info.value) and f"cards/{NAME}/README.md" in str(info.value)
    with pytest.raises(zoo.ZooError, match="card"):
        zoo.verify(zoo=tmp_path / "zoo")
    assert outside(tmp_path) == before and not (tmp_path / "export").exists()


def test_weights_symlink_out_of_a_local_zoo_is_refused(tmp_path):
    """Old behaviour: a link to a file with the recorded hash anywhere on disk was pulled and loaded."""
    zoo_dir = local_zoo(tmp_path / "zoo", entry(), weights=False)
    link = zoo_dir / entry()["file"]
    link.symlink_to(tmp_path / "outside" / "weights.safetensors")
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match="symbolic link") as info:
        zoo.pull(NAME, zoo_dir)
    assert str(link) in str(info.value) and str((tmp_path / "outside").resolve()) in str(info.value)
    assert link.is_symlink() and outside(tmp_path) == before


def test_card_directory_symlink_out_of_a_local_zoo_is_refused(tmp_path):
    """Old behaviour: `cards/<name>` linked to a directory elsewhere was verified and copied by export."""
    zoo_dir = local_zoo(tmp_path / "zoo", entry(card=f"cards/{NAME}/README.md"))
    (tmp_path / "outside" / "README.md").write_text("# a card\n")
    (tmp_path / "outside" / "id_rsa").write_text("secret\n")
    (zoo_dir / "cards").mkdir()
    (zoo_dir / "cards" / NAME).symlink_to(tmp_path / "outside", target_is_directory=True)
    before = outside(tmp_path)
    [(name, ok, message)] = zoo.verify(zoo=zoo_dir)
    assert (name, ok) == (NAME, False) and "card" in message and "symbolic link" in message
    with pytest.raises(zoo.ZooError, match="symbolic link"):
        zoo.export_timm(NAME, tmp_path / "export", zoo_dir)
    assert outside(tmp_path) == before and not (tmp_path / "export").exists()


def test_symlink_inside_a_card_directory_is_not_followed_by_export(tmp_path):
    """Old behaviour: copytree copied the target of `cards/<name>/plots/x.png -> ~/.ssh/id_rsa` into the export."""
    zoo_dir = local_zoo(tmp_path / "zoo", entry(card=f"cards/{NAME}/README.md"))
    card_dir = zoo_dir / "cards" / NAME
    (card_dir / "plots").mkdir(parents=True)
    (card_dir / "README.md").write_text("# a card\n")
    (tmp_path / "outside" / "id_rsa").write_text("secret\n")
    (card_dir / "plots" / "x.png").symlink_to(tmp_path / "outside" / "id_rsa")
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match="symbolic link") as info:
        zoo.export_timm(NAME, tmp_path / "export", zoo_dir)
    assert str(card_dir / "plots" / "x.png") in str(info.value)
    assert outside(tmp_path) == before and not (tmp_path / "export").exists()


# ---- URLs an index names


@pytest.mark.parametrize("url, scheme", [
    ("file://{weights}", "file"),
    ("FILE://{weights}", "file"),  # schemes are case-insensitive
    ("data:application/octet-stream;base64,{b64}", "data"),
    ("ftp://127.0.0.1:9/weights.safetensors", "ftp"),
])
def test_url_other_than_http_is_refused(tmp_path, url, scheme):
    """Old behaviour: urlopen read `file://` and `data:` URLs, so a local file with the hash was "downloaded"."""
    url = url.format(weights=tmp_path / "outside" / "weights.safetensors", b64=base64.b64encode(PAYLOAD).decode())
    zoo_dir = local_zoo(tmp_path / "zoo", entry(url=url), weights=False)
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError) as info:
        zoo.pull(NAME, zoo_dir)
    message = str(info.value)
    assert f"url {url!r} is refused" in message and f"not {scheme}:" in message and "http" in message
    assert outside(tmp_path) == before


def test_relative_url_in_a_local_zoo_is_refused(tmp_path):
    """A local zoo has no base URL; old behaviour: urlopen's ValueError ("unknown url type")."""
    zoo_dir = local_zoo(tmp_path / "zoo", entry(url="weights/x.safetensors"), weights=False)
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match=r"url 'weights/x.safetensors' of .* is relative"):
        zoo.pull(NAME, zoo_dir)
    assert outside(tmp_path) == before


def test_relative_url_of_an_http_zoo_lands_under_the_derived_cache_name(server, cache):
    serve(server, entry(url="payload"))
    path = zoo.pull(NAME, server.url)
    assert path == cache / "files" / f"{NAME}-{sha(PAYLOAD)[:8]}.safetensors" and path.read_bytes() == PAYLOAD


def test_a_zoo_the_user_names_as_a_file_url_stays_allowed(tmp_path):
    zoo_dir = local_zoo(tmp_path / "zoo", entry())
    assert zoo.pull(NAME, f"file://{zoo_dir}") == zoo_dir / entry()["file"]


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/weights.safetensors", "file://{victim}"])
def test_redirect_away_from_http_is_refused(server, tmp_path, target):
    """urllib follows redirects to ftp:// on its own (and refuses file:// with a bare HTTP 302)."""
    target = target.format(victim=tmp_path / "cache" / "victim.txt")
    serve(server, entry(url="payload"), weights=Route(status=302, headers={"Location": target, "Content-Length": "0"}))
    before = outside(tmp_path)
    with pytest.raises(zoo.DownloadError) as info:
        zoo.pull(NAME, server.url)
    message = str(info.value)
    assert f"{server.url}/payload redirects to {target}" in message and "only http:// and https://" in message
    assert outside(tmp_path) == before


# ---- sizes


def test_download_stops_at_the_recorded_size_and_keeps_nothing(server, tmp_path, cache):
    """Old behaviour: read all 256 MiB the server sent, then compared hashes."""
    weights = Route(PAYLOAD, filler=256 * 2**20)  # the recorded bytes, then more, without a Content-Length
    serve(server, entry(url="payload"), weights=weights)
    before = outside(tmp_path)
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.pull(NAME, server.url)
    assert f"{server.url}/payload sent more than the {len(PAYLOAD)} bytes" in str(info.value)
    assert weights.done.wait(10) and weights.sent < 64 * 2**20  # the client hung up (socket buffers hold a few MiB)
    assert [p.name for p in (cache / "files").iterdir() if not p.name.endswith(".lock")] == []
    assert outside(tmp_path) == before


def test_content_length_above_the_recorded_size_is_refused_before_reading(server, tmp_path, cache):
    """Old behaviour: read the body whatever size it announced (here the real bytes came, so it passed)."""
    weights = Route(PAYLOAD, headers={"Content-Length": str(10**12)})
    serve(server, entry(url="payload"), weights=weights)
    before = outside(tmp_path)
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.pull(NAME, server.url)
    message = str(info.value)
    assert f"{server.url}/payload announces {10**12} bytes" in message and f"records {len(PAYLOAD)}" in message
    assert [p.name for p in (cache / "files").iterdir() if not p.name.endswith(".lock")] == []
    assert outside(tmp_path) == before


@pytest.mark.parametrize("announced", [True, False])
def test_oversized_remote_index_is_refused_and_not_cached(server, tmp_path, cache, announced):
    """Old behaviour: read and cached an index of any size."""
    body = index(entry(), padding="x" * (17 * 2**20))
    server.routes["/zoo/index.json"] = Route(body, headers={"Content-Length": str(len(body))} if announced else {})
    before = outside(tmp_path)
    with pytest.raises(zoo.DownloadError) as info:
        zoo.list_models(server.url)
    assert f"{server.url}/index.json" in str(info.value) and "16 MiB" in str(info.value)
    assert not (cache / "indexes").exists() and outside(tmp_path) == before


# ---- the cache holds only what the zoo downloaded


def test_symlink_at_the_cache_destination_is_refused_and_kept(server, tmp_path, cache):
    victim = tmp_path / "cache" / "victim.txt"
    link = cache / "files" / entry()["file"]
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    serve(server, entry(url="payload"))
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match="symbolic link") as info:
        zoo.pull(NAME, server.url)
    assert str(link) in str(info.value) and str(victim.resolve()) in str(info.value)
    assert link.is_symlink() and victim.read_bytes() == VICTIM and outside(tmp_path) == before


@pytest.mark.parametrize("suffix", [".part", ".lock"])
def test_symlink_beside_the_cache_destination_is_never_written_through(server, tmp_path, cache, suffix):
    """Old behaviour: `.part -> victim` was truncated and overwritten with the download; a dangling
    `.lock` link created its target."""
    victim = tmp_path / "cache" / "victim.txt"
    link = cache / "files" / (entry()["file"] + suffix)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim if suffix == ".part" else tmp_path / "outside" / "created.txt")
    serve(server, entry(url="payload"))
    before = outside(tmp_path)
    with pytest.raises(zoo.DownloadError, match="symbolic link") as info:
        zoo.pull(NAME, server.url)
    assert str(link) in str(info.value)
    assert link.is_symlink() and victim.read_bytes() == VICTIM and outside(tmp_path) == before


def test_hard_link_as_the_partial_download_is_never_written_into(server, tmp_path, cache):
    """Old behaviour: the download was written into the linked inode, that is into the victim."""
    victim = tmp_path / "cache" / "victim.txt"
    part = cache / "files" / (entry()["file"] + ".part")
    part.parent.mkdir(parents=True)
    os.link(victim, part)
    serve(server, entry(url="payload"))
    before = outside(tmp_path)
    with pytest.raises(zoo.DownloadError, match="hard link") as info:
        zoo.pull(NAME, server.url)
    assert str(part) in str(info.value) and victim.read_bytes() == VICTIM and outside(tmp_path) == before


def test_corrupt_cached_copy_is_replaced_but_only_inside_the_cache(server, tmp_path, cache):
    """The one thing the cache deletes: its own copy, a plain file under `<cache>/files`, whose hash is wrong."""
    serve(server, entry(url="payload"))
    cached = zoo.pull(NAME, server.url)
    cached.write_bytes(b"rotten")
    before = outside(tmp_path)
    assert zoo.pull(NAME, server.url).read_bytes() == PAYLOAD and outside(tmp_path) == before


# ---- kwargs an index hands to timm


@pytest.mark.parametrize("field, kwargs, bad", [
    ("arch_kwargs", {"in_chans": 1, "checkpoint_path": "{weights}"}, "checkpoint_path"),
    ("timm_kwargs", {"pretrained_cfg_overlay": {"file": "{weights}"}}, "pretrained_cfg_overlay"),
    ("timm_kwargs", {"model_name": "hf-hub:someone/model"}, "model_name"),
    ("arch_kwargs", {"name": "hf-hub:someone/model"}, "name"),
])
def test_kwargs_that_make_timm_load_files_are_refused(tmp_path, field, kwargs, bad):
    """Old behaviour: `timm_kwargs(name)` passed them on, and timm loaded the file (or the hub model)."""
    weights = str(tmp_path / "outside" / "weights.safetensors")
    kwargs = json.loads(json.dumps(kwargs).replace("{weights}", weights))
    local_zoo(tmp_path / "zoo", entry(**{field: kwargs}))
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError) as info:
        zoo.list_models(tmp_path / "zoo")
    message = str(info.value)
    assert f"entry {NAME!r}" in message and field in message and repr(bad) in message
    assert outside(tmp_path) == before


@pytest.mark.parametrize("architecture", ["hf-hub:someone/model", "local-dir:/tmp/model"])
def test_architecture_that_names_a_timm_source_is_refused(tmp_path, architecture):
    """`timm.create_model("hf-hub:...")` downloads a config and weights; `local-dir:` reads a directory."""
    local_zoo(tmp_path / "zoo", entry(architecture=architecture))
    before = outside(tmp_path)
    with pytest.raises(zoo.ZooError, match=f"architecture {architecture!r} is refused"):
        zoo.list_models(tmp_path / "zoo")
    assert outside(tmp_path) == before
