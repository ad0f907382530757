"""The model zoo: publish, list, verify, load by name, timm and torch.hub, and downloads over http."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import timm
import torch
import yaml
from torch import nn

from ssl_platform import zoo
from ssl_platform.checkpoint.io import export_backbone
from ssl_platform.cli import main
from ssl_platform.evaluation.report import append_rows, make_row
from ssl_platform.models.backbones import create_backbone, pooled_features
from ssl_platform.provenance import file_sha256
from ssl_platform.zoo import index as zoo_lib
from ssl_platform.zoo import publishing as zoo_publish
from ssl_platform.zoo.backbones import resolve_backbone

ROOT = Path(__file__).resolve().parents[2]
NARROW = [8, 16, 32, 64]
RESNET, VIT, PLAIN = "simclr_resnet18.tiny_1ep", "ijepa_vit_tiny.tiny_1ep", "simclr_resnet18.plain_1ep"
CLEAN_SHA = "c0ffee" + "0" * 34  # the code that trained the fake runs: a commit without uncommitted changes


def small_resnet() -> nn.Module:
    return create_backbone("resnet18", small_input=True, in_chans=1, channels=NARROW)


def plain_resnet() -> nn.Module:  # timm's own stem: plain timm can build it
    return create_backbone("resnet18", in_chans=1, channels=NARROW)


def tiny_vit() -> nn.Module:
    return create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


def make_run(root: Path, name: str, backbone: nn.Module, recipe: dict, git_sha: str = CLEAN_SHA) -> Path:
    """A run directory as the engine leaves it: config.yaml and backbone.safetensors (same exporter)."""
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, **recipe}))
    export_backbone(backbone, run / "backbone.safetensors",
                    {"step": 40, "epoch": 1, "recipe_name": name, "git_sha": git_sha})
    return run


def write_eval(root: Path, dir_name: str, suite: str, backbone: str, sha: str, seeds=(0, 1)) -> Path:
    """runs/eval/<dir_name>: results.jsonl rows of `backbone`, suite.yaml and a plot, as `sslp eval` writes."""
    out = root / "runs" / "eval" / dir_name
    rows = [make_row("fmnist", "knn_k20_t0.07", "top1", 70.0 + s, backbone, s, backbone_sha256=sha, git_sha="abc")
            for s in seeds]
    rows += [make_row("fmnist", "linear", "top1", 60.0 + s, backbone, s, label_fraction=0.1,
                      backbone_sha256=sha, git_sha="abc") for s in seeds]
    append_rows(out / "results.jsonl", rows)
    (out / "suite.yaml").write_text(yaml.safe_dump({"name": suite}))
    (out / "plots").mkdir()
    (out / "plots" / "fmnist-top1-fraction.png").write_bytes(b"\x89PNG fake")
    return out


FMNIST = {"dataset": {"_component_": "ssl_platform.data.datasets.FashionMNIST", "split": "train"},
          "transform": {"_component_": "ssl_platform.data.transforms.SimCLRViews", "size": 28, "channels": 1}}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A zoo with three entries, published from fake runs with fake evaluations; the originals by name."""
    root = tmp_path_factory.mktemp("zoo_src")
    torch.manual_seed(0)
    models = {RESNET: small_resnet(), VIT: tiny_vit(), PLAIN: plain_resnet()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.delenv(zoo_lib.ENV_ZOO, raising=False)
        mp.chdir(root)  # publish looks in ./runs/eval by default
        run = make_run(root, "simclr_resnet18_tiny_1ep", models[RESNET],
                       {"method": {"_component_": "ssl_platform.methods.simclr.SimCLR"}, "data": FMNIST})
        sha = file_sha256(run / "backbone.safetensors")
        write_eval(root, "quick-simclr_resnet18_tiny_1ep", "quick", run.name, sha)
        write_eval(root, "quick-random-simclr_resnet18_tiny_1ep", "quick", f"random-{run.name}", "")
        write_eval(root, "old-simclr_resnet18_tiny_1ep", "old", run.name, "0" * 64)  # another file: not ours
        zoo.publish(run, RESNET, root / "zoo")
        vit_run = make_run(root, "ijepa_vit_tiny_1ep", models[VIT], {
            "method": {"_component_": "ssl_platform.methods.ijepa.IJEPA", "image_size": 32},
            "data": {"dataset": {"_component_": "ssl_platform.data.datasets.Table", "source": "x"}, "transform": None},
        })
        zoo.publish(vit_run, VIT, root / "zoo", license="MIT")
        plain_run = make_run(root, "simclr_resnet18_plain_1ep", models[PLAIN],
                             {"method": {"_component_": "ssl_platform.methods.simclr.SimCLR"}, "data": FMNIST})
        zoo.publish(plain_run, PLAIN, root / "zoo")
    for model in models.values():
        model.eval()
    return root, models


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(zoo_lib.ENV_ZOO, raising=False)
    return tmp_path / "cache" / "ssl_platform"


@pytest.fixture
def zoo_dir(published, tmp_path):
    """A private copy of the published zoo, so a test may damage it."""
    return Path(shutil.copytree(published[0] / "zoo", tmp_path / "zoo"))


def features(model: nn.Module, in_chans: int = 1) -> torch.Tensor:
    x = torch.randn(2, in_chans, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return pooled_features(model.eval(), x)


# ---- publish


def test_publish_records_file_metadata_and_only_this_files_results(published):
    root, _models = published
    entry = zoo.read_index(root / "zoo")[RESNET]
    file = root / "zoo" / entry.file
    assert entry.file == f"{RESNET}-{entry.sha256[:8]}.safetensors" and entry.sha256 == file_sha256(file)
    assert entry.sha256 == file_sha256(root / "runs/simclr_resnet18_tiny_1ep/backbone.safetensors")
    assert entry.size_bytes == file.stat().st_size
    assert (entry.method, entry.architecture, entry.in_chans, entry.num_features) == ("simclr", "resnet18", 1, 64)
    assert entry.arch_kwargs == {"small_input": True, "in_chans": 1, "channels": NARROW}
    assert (entry.input_size, entry.mean, entry.std) == ([1, 28, 28], [0.5], [0.5])
    assert (entry.epochs, entry.steps, entry.pretrain_data, entry.license) == (1, 40, "FashionMNIST", "Apache-2.0")
    assert entry.recipe["name"] == entry.recipe_name == "simclr_resnet18_tiny_1ep" and entry.created
    assert entry.git_sha == CLEAN_SHA and entry.interpolation == "bilinear"  # the file's own record of its code
    assert entry.timm_kwargs is None and "small_input" in entry.timm_note  # timm's stem differs
    # the rows of this file only: the "old" suite measured another file of the same run name
    assert {r["suite"] for r in entry.results} == {"quick"}
    knn = next(r for r in entry.results if r["protocol"] == "knn_k20_t0.07")
    assert (knn["mean"], knn["std"], knn["n"], knn["seeds"], knn["git_shas"]) == (70.5, 0.7071, 2, [0, 1], ["abc"])
    vit = zoo.read_index(root / "zoo")[VIT]
    assert (vit.method, vit.pretrain_data, vit.input_size, vit.license, vit.results) == (
        "ijepa", "Table(x)", [3, 32, 32], "MIT", [])
    assert vit.timm_kwargs == {"in_chans": 3, "img_size": 32, "patch_size": 8, "depth": 2}


def test_card_has_results_beside_random_init_plots_and_recipe(published):
    root, _ = published
    entry = zoo.read_index(root / "zoo")[RESNET]
    card = (root / "zoo" / entry.card).read_text()
    assert entry.card == f"cards/{RESNET}/README.md" and card.startswith("---\nlicense: apache-2.0")
    assert "| metric | simclr_resnet18_tiny_1ep | random-simclr_resnet18_tiny_1ep |" in card
    assert "70.50 ± 0.71 (2)" in card and entry.sha256 in card
    plot = "plots/quick-simclr_resnet18_tiny_1ep/fmnist-top1-fraction.png"
    assert f"]({plot})" in card and (root / "zoo" / "cards" / RESNET / plot).is_file()
    assert "## Recipe" in card and "ssl_platform.methods.simclr.SimCLR" in card
    assert "load_backbone(name)" in card  # the small_input limitation, with what to use instead


def test_publish_refuses_bad_names_remote_zoos_and_another_file_under_a_taken_name(published, tmp_path):
    root, _ = published
    run = root / "runs" / "ijepa_vit_tiny_1ep"
    with pytest.raises(zoo.ZooError, match="arch.tag in lowercase"):
        zoo.publish(run, "Bad-Name", tmp_path / "z")
    with pytest.raises(zoo.ZooError, match="local zoo directory"):
        zoo.publish(run, "a.b", "http://127.0.0.1:1/zoo")
    target = Path(shutil.copytree(root / "zoo", tmp_path / "zoo"))
    old = zoo.read_index(target)[RESNET]
    with pytest.raises(zoo.ZooError, match=r"already has simclr_resnet18.tiny_1ep with another file.*--force"):
        zoo.publish(run, RESNET, target, eval_dirs=[tmp_path])
    assert zoo.read_index(target)[RESNET] == old
    entry = zoo.publish(run, RESNET, target, force=True, eval_dirs=[tmp_path])
    assert entry.architecture == "vit_tiny_patch16_224" and not (target / old.file).exists()
    again = zoo.publish(run, RESNET, target, eval_dirs=[tmp_path])  # the same file: an update, not a clash
    assert again.created == entry.created and zoo.verify(zoo=target) == [
        (n, True, str(target / e.file)) for n, e in sorted(zoo.read_index(target).items())]


def test_publish_refuses_a_url_the_zoo_would_not_download_and_writes_nothing(published, tmp_path):
    run = published[0] / "runs" / "ijepa_vit_tiny_1ep"
    with pytest.raises(zoo.ZooError, match=r"url 'file:///srv/w.safetensors' is refused: only http:// and https://"):
        zoo.publish(run, VIT, tmp_path / "z", url="file:///srv/w.safetensors", eval_dirs=[tmp_path])
    assert list((tmp_path / "z").iterdir()) == []


def test_publish_into_a_clone_whose_cards_link_out_deletes_nothing_there(published, tmp_path):
    """A re-publish empties cards/<name>/ first; through a `cards -> elsewhere` link that was someone else's."""
    target = Path(shutil.copytree(published[0] / "zoo", tmp_path / "zoo"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / VIT).mkdir(parents=True)
    (elsewhere / VIT / "keep.txt").write_text("mine")
    shutil.rmtree(target / "cards")
    (target / "cards").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(zoo.ZooError, match=r"card 'cards/ijepa_vit_tiny.tiny_1ep' .* symbolic link"):
        zoo.publish(published[0] / "runs" / "ijepa_vit_tiny_1ep", VIT, target, eval_dirs=[tmp_path])
    assert (elsewhere / VIT / "keep.txt").read_text() == "mine"


def test_publishing_into_the_shipped_zoo_regenerates_docs_zoo_md(published, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_publish, "REPO_ROOT", tmp_path)
    zoo.publish(published[0] / "runs" / "ijepa_vit_tiny_1ep", VIT, tmp_path / "zoo", eval_dirs=[tmp_path])
    page = (tmp_path / "docs" / "zoo.md").read_text()
    assert "generated by `sslp zoo docs` from ../zoo/index.json" in page and f"[{VIT}](../zoo/cards/{VIT}/README.md)" in page


# ---- list, show, verify, load


def test_load_backbone_by_name_gives_the_trained_weights_and_preprocessing(zoo_dir, published):
    _, models = published
    backbone = zoo.load_backbone(RESNET, zoo_dir)
    torch.testing.assert_close(features(backbone), features(models[RESNET]), rtol=0, atol=0)
    cfg = timm.data.resolve_data_config(model=backbone)
    assert (cfg["input_size"], cfg["mean"], cfg["std"]) == ((1, 28, 28), (0.5,), (0.5,))


def test_unknown_name_lists_the_available_ones(zoo_dir):
    with pytest.raises(zoo.ZooError, match=r"Did you mean simclr_resnet18.tiny_1ep or") as info:
        zoo.load_backbone("simclr_resnet18.tiny_1e", zoo_dir)
    assert f"Available: {VIT}, {PLAIN}, {RESNET} " in str(info.value) and "sslp zoo list" in str(info.value)
    with pytest.raises(zoo.ZooError, match=r"no zoo at .*sslp zoo publish"):
        zoo.list_models(zoo_dir / "nowhere")


def test_tampered_local_file_is_refused_named_and_kept(zoo_dir, capsys):
    entry = zoo.read_index(zoo_dir)[RESNET]
    path = zoo_dir / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.load_backbone(RESNET, zoo_dir)
    message = str(info.value)
    assert str(path) in message and entry.sha256 in message and file_sha256(path) in message
    assert "Restore it" in message and f"--name {RESNET} --force" in message
    assert path.exists()  # the user's own file is never deleted
    assert main(["zoo", "verify", "--zoo", str(zoo_dir)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED  {RESNET}" in out and f"ok      {VIT}" in out and "2 of 3 verified" in out


def test_cli_list_show_verify_pull_docs(zoo_dir, capsys, tmp_path):
    assert main(["zoo", "list", "--zoo", str(zoo_dir)]) == 0
    out = capsys.readouterr().out
    assert RESNET in out and VIT in out and "fmnist/knn_k20_t0.07 70.50" in out and "fmnist/linear@0.1 60.50" in out
    assert main(["zoo", "show", RESNET, "--zoo", str(zoo_dir)]) == 0
    out = capsys.readouterr().out
    assert "70.50 ± 0.71  2" in out and zoo.read_index(zoo_dir)[RESNET].sha256 in out
    assert main(["zoo", "verify", RESNET, "--zoo", str(zoo_dir)]) == 0
    assert "1 of 1 verified" in capsys.readouterr().out
    assert main(["zoo", "pull", VIT, "--zoo", str(zoo_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(zoo_dir / zoo.read_index(zoo_dir)[VIT].file)
    assert main(["zoo", "show", "nope.x", "--zoo", str(zoo_dir)]) == 2
    assert "error: no model 'nope.x'" in capsys.readouterr().err
    docs = tmp_path / "docs" / "zoo.md"
    assert main(["zoo", "docs", "--zoo", str(zoo_dir), "--out", str(docs)]) == 0
    page = docs.read_text()
    assert page.startswith("<!-- generated by `sslp zoo docs` from ../zoo/index.json")
    assert f"| [{RESNET}](../zoo/cards/{RESNET}/README.md) | simclr | `resnet18` | FashionMNIST | 1 |" in page
    assert (docs.parent / f"../zoo/cards/{RESNET}/README.md").is_file()


def test_where_the_zoo_is(tmp_path, monkeypatch, cache):
    fake = tmp_path / "checkout"
    monkeypatch.setattr(zoo_lib, "REPO_ROOT", fake)
    assert zoo.resolve_zoo() == str(cache / "zoo")  # nothing else: the user's own zoo in the cache
    (fake / "zoo").mkdir(parents=True)
    (fake / "pyproject.toml").write_text("")
    (fake / "zoo" / "index.json").write_text(json.dumps({"format": zoo_lib.FORMAT, "models": {}}))
    assert zoo.resolve_zoo() == str(fake / "zoo")  # a checkout's shipped zoo
    monkeypatch.setenv("SSL_PLATFORM_ZOO", "https://example.org/zoo/")
    assert zoo.resolve_zoo() == "https://example.org/zoo"
    assert zoo.resolve_zoo("file:///srv/my%20zoo") == "/srv/my zoo"  # the argument wins


def test_eval_takes_a_zoo_name_and_its_random_twin(zoo_dir):
    backbone, name, sha = resolve_backbone(RESNET, {}, zoo=str(zoo_dir))
    assert (name, sha) == (RESNET, zoo.read_index(zoo_dir)[RESNET].sha256)
    twin, twin_name, twin_sha = resolve_backbone(f"random:{RESNET}", {}, zoo=str(zoo_dir))
    assert (twin_name, twin_sha) == (f"random-{RESNET}", "") and type(twin) is type(backbone)
    with pytest.raises(FileNotFoundError, match=r"nor a name in the model zoo \(no model 'nope.x'"):
        resolve_backbone("nope.x", {}, zoo=str(zoo_dir))


# ---- timm and torch.hub


def test_plain_timm_loads_the_published_file(zoo_dir, published):
    _, models = published
    for name, chans in ((VIT, 3), (PLAIN, 1)):
        entry = zoo.read_index(zoo_dir)[name]
        model = timm.create_model(**zoo.timm_kwargs(name, zoo_dir))
        assert type(model).__module__.startswith("timm.")
        torch.testing.assert_close(features(model, chans), features(models[name], chans), rtol=0, atol=0)
        # the documented one-liner, with the file and the entry's kwargs by hand
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.timm_kwargs.items()}
        by_hand = timm.create_model(entry.architecture, pretrained=True, num_classes=0, **kwargs,
                                    pretrained_cfg_overlay={"file": str(zoo_dir / entry.file)})
        torch.testing.assert_close(features(by_hand, chans), features(models[name], chans), rtol=0, atol=0)
    with pytest.raises(zoo.ZooError, match="small_input=True.*load_backbone"):
        zoo.timm_kwargs(RESNET, zoo_dir)


def test_export_to_timm_hub_folder(zoo_dir, published, tmp_path):
    out = zoo.export_timm(VIT, tmp_path / "export", zoo_dir)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 0
    # the evaluation's resize, where timm's own default for this architecture is bicubic
    assert timm.data.resolve_data_config(model=model)["interpolation"] == "bilinear"
    assert timm.create_model("vit_tiny_patch16_224").pretrained_cfg["interpolation"] == "bicubic"
    torch.testing.assert_close(features(model, 3), features(published[1][VIT], 3), rtol=0, atol=0)


def test_torch_hub_loads_from_the_checkout(zoo_dir, published):
    assert torch.hub.load(str(ROOT), "list_models", zoo=str(zoo_dir), source="local") == sorted([RESNET, VIT, PLAIN])
    model = torch.hub.load(str(ROOT), "backbone", name=RESNET, zoo=str(zoo_dir), source="local")
    torch.testing.assert_close(features(model), features(published[1][RESNET]), rtol=0, atol=0)
    random = torch.hub.load(str(ROOT), "backbone", name=RESNET, zoo=str(zoo_dir), pretrained=False, source="local")
    assert not torch.equal(features(random), features(model))


# ---- http


class ZooHandler(BaseHTTPRequestHandler):
    """Serves the server's `root` directory, with byte ranges unless `server.ranges` is False."""

    def do_GET(self):
        server = self.server
        server.requests.append((urllib.parse.unquote(self.path), self.headers.get("Range")))
        path = server.root / urllib.parse.unquote(self.path.split("/zoo/", 1)[-1])
        if not path.is_file():
            self.send_error(404)
            return
        data, status, start = path.read_bytes(), 200, 0
        if self.headers.get("Range") and server.ranges:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(zoo_dir):
    """The zoo over http on 127.0.0.1 (ephemeral port), at http://127.0.0.1:PORT/zoo."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ZooHandler)
    httpd.root, httpd.requests, httpd.ranges = zoo_dir, [], True
    # a short poll: shutdown() waits for the loop to look, 0.5 s per test at the default
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/zoo"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def weight_requests(server, entry) -> list:
    return [r for r in server.requests if r[0].endswith(entry.file)]


def test_http_load_is_verified_cached_and_not_fetched_twice(server, published, cache):
    entry = zoo.read_index(server.root)[RESNET]
    model = zoo.load_backbone(RESNET, server.url)
    torch.testing.assert_close(features(model), features(published[1][RESNET]), rtol=0, atol=0)
    cached = cache / "files" / entry.file
    assert file_sha256(cached) == entry.sha256 and not cached.with_name(entry.file + ".part").exists()
    zoo.load_backbone(RESNET, server.url)
    assert weight_requests(server, entry) == [(f"/zoo/{entry.file}", None)]  # the cache answered the second time


def test_http_download_resumes_from_a_partial_file(server, published, cache):
    entry = zoo.read_index(server.root)[RESNET]
    part = cache / "files" / f"{entry.file}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((server.root / entry.file).read_bytes()[:1000])
    assert zoo.pull(RESNET, server.url) == cache / "files" / entry.file
    assert weight_requests(server, entry) == [(f"/zoo/{entry.file}", "bytes=1000-")]
    server.ranges = False  # a server that ignores Range: the partial file is rewritten from byte 0
    (cache / "files" / entry.file).rename(part)
    assert file_sha256(zoo.pull(RESNET, server.url)) == entry.sha256


def test_http_tampered_file_is_refused_and_nothing_kept(server, cache):
    entry = zoo.read_index(server.root)[RESNET]
    path = server.root / entry.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.load_backbone(RESNET, server.url)
    message = str(info.value)
    assert f"{server.url}/{entry.file}" in message and entry.sha256 in message and file_sha256(path) in message
    assert "corrupt or was tampered with" in message and "nothing was loaded" in message
    assert sorted(p.name for p in (cache / "files").iterdir()) == [f"{entry.file}.lock"]


def test_corrupt_cached_copy_is_fetched_again(server, cache, capsys):
    entry = zoo.read_index(server.root)[VIT]
    cached = zoo.pull(VIT, server.url)
    cached.write_bytes(b"rotten")
    assert file_sha256(zoo.pull(VIT, server.url)) == entry.sha256
    assert "the cached copy is corrupt" in capsys.readouterr().err and len(weight_requests(server, entry)) == 2


def test_weights_from_an_entry_url_and_the_index_offline(server, tmp_path, cache, capsys):
    """The release layout: index.json in a local directory, the weights on a server (entry `url`)."""
    local = Path(shutil.copytree(server.root, tmp_path / "repo_zoo"))
    entry = zoo.read_index(local)[VIT]
    (local / entry.file).unlink()
    with pytest.raises(zoo.ZooError, match="is missing and its entry has no url"):
        zoo.pull(VIT, local)
    index = json.loads((local / "index.json").read_text())
    index["models"][VIT]["url"] = f"{server.url}/{entry.file}"
    (local / "index.json").write_text(json.dumps(index))
    assert file_sha256(zoo.pull(VIT, local)) == entry.sha256
    assert main(["zoo", "verify", VIT, "--zoo", str(local)]) == 0
    # an http zoo pulled once keeps working when the server is gone
    zoo.pull(VIT, server.url)
    server.shutdown()
    server.server_close()
    assert zoo.load_backbone(VIT, server.url).num_features == 192
    assert "using the copy" in capsys.readouterr().err


def test_concurrent_pulls_download_once(server, cache):
    """Ranks of one torchrun job asking for the same file: one downloads, the others wait and reuse it."""
    entry = zoo.read_index(server.root)[RESNET]
    paths, errors = [], []

    def pull():
        try:
            paths.append(zoo.pull(RESNET, server.url))
        except zoo.IntegrityError as err:  # a download clobbered by another thread would end here
            errors.append(err)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and paths == [cache / "files" / entry.file] * 3
    assert len(weight_requests(server, entry)) == 1


@pytest.mark.slow
def test_pretrain_eval_publish_then_eval_by_zoo_name(tmp_path, monkeypatch, capsys):
    """The whole path with the real engine: a run, its evaluation, `sslp zoo publish`, `sslp eval backbone=NAME`
    (the command's entry point, in this process; the autouse `cache` fixture puts the cache under tmp_path)."""
    monkeypatch.chdir(tmp_path)

    def sslp(*args):
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    run = tmp_path / "runs" / "debug"
    sslp("pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}", "train.max_steps=2")
    suite = [str(ROOT / "eval/digits.yaml"), "eval.protocols=[knn]", "noise.kinds=[]", "noise.rates=[]"]
    sslp("eval", *suite, f"backbone={run}")
    # --force: this checkout may have uncommitted changes, which makes the run's git sha -dirty
    sslp("zoo", "publish", str(run), "--name", "simclr_debug.digits_2steps", "--zoo", "zoo", "--force")
    listing = sslp("zoo", "list", "--zoo", "zoo")
    assert "simclr_debug.digits_2steps" in listing and "digits/knn_k20_t0.07" in listing
    assert "1 of 1 verified" in sslp("zoo", "verify", "--zoo", "zoo")
    sslp("eval", *suite, "backbone=simclr_debug.digits_2steps", "zoo=zoo")
    sha = file_sha256(run / "backbone.safetensors")
    rows = [json.loads(line) for line in
            (tmp_path / "runs/eval/digits-simclr_debug.digits_2steps/results.jsonl").read_text().splitlines()]
    before = [json.loads(line) for line in (tmp_path / "runs/eval/digits-debug/results.jsonl").read_text().splitlines()]
    assert {(r["backbone"], r["backbone_sha256"]) for r in rows} == {("simclr_debug.digits_2steps", sha)}
    assert [r["value"] for r in rows] == [r["value"] for r in before]  # the same weights, the same numbers
